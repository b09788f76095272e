"""Frequency-cap counters as the rules name them: a channel's sends in one Tokyo day or one ISO week.

A send on a channel counts in two counters at once, the day's and the week's of the moment it is
decided (`counters_of`); where the deployment caps sends across channels, it also counts in the
total's two (`counters_of(TOTAL, moment)`), taken together with the channel's. The engine reads
them as a `CapView`, asks the cap store to take them, and defers a capped send to
`CapPeriod.next_start`, when the full counter's period is over. How a counter is stored is the
adapter's business (`cems.adapters.dynamodb.keys.cap_sk`).

This module loads no scenario model: the key module builds on it, and functions that never run a
scenario (collect) load the key module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from cems.models import Channel

CAP_ZONE = ZoneInfo("Asia/Tokyo")  # caps count Tokyo days and Monday-start weeks, whatever a scenario's zone


class AllChannels(StrEnum):
    """The scope of the total cap: every send, on whatever channel, counts in its counters."""

    TOTAL = "total"


TOTAL = AllChannels.TOTAL
# What a counter counts: one channel's sends, or every channel's (TOTAL). No channel may be named
# "total": its counters' keys would be the total's (tests/unit/test_total_cap.py checks it).
CapScope = Channel | AllChannels


def tokyo_day(moment: datetime) -> date:
    return moment.astimezone(CAP_ZONE).date()


class CapPeriod(StrEnum):
    """What a counter counts over: a Tokyo calendar day, or a Monday-start ISO week in Tokyo."""

    DAY = "day"
    WEEK = "week"

    def label_of(self, moment: datetime) -> str:
        """The period holding `moment`: `2026-12-03` (a day), `2026-W49` (a week)."""
        return self._label(tokyo_day(moment))

    def next_start(self, moment: datetime) -> datetime:
        """When the period holding `moment` is over (the next Tokyo midnight, or Monday's): a full
        counter allows again, and a stored one may expire."""
        day = tokyo_day(moment)
        days = 1 if self is CapPeriod.DAY else 7 - day.weekday()
        return datetime.combine(day + timedelta(days=days), time(0), tzinfo=CAP_ZONE).astimezone(UTC)

    def _label(self, day: date) -> str:
        if self is CapPeriod.DAY:
            return day.isoformat()
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"


@dataclass(frozen=True, slots=True)
class CapCounter:
    """One counter of sends: on `channel` (TOTAL: on any channel), in the `period` named `label`."""

    channel: CapScope
    period: CapPeriod
    label: str  # CapPeriod.label_of: `2026-12-03`, `2026-W49`


def counters_of(channel: CapScope, moment: datetime) -> tuple[CapCounter, CapCounter]:
    """The day's and the week's counter that a send on `channel` decided at `moment` counts in (TOTAL:
    the counters every send counts in where the deployment caps the total)."""
    day = tokyo_day(moment)
    return (
        CapCounter(channel, CapPeriod.DAY, CapPeriod.DAY._label(day)),
        CapCounter(channel, CapPeriod.WEEK, CapPeriod.WEEK._label(day)),
    )

"""Report counters as values: the metrics counted and the cell (scenario, version, step, variant,
group, channel, day) each is counted in. Stored by cems.adapters.dynamodb.report_counters; reports
read them.

Counters hold no personal data (no customer id), so erasure leaves them; a `once` marker holds only
a hash of what was counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

REVENUE = "revenue"
# Report days are Tokyo days, as the shops' own days (and the frequency caps') are.
REPORT_ZONE = ZoneInfo("Asia/Tokyo")


class Metric(StrEnum):
    ENROLLED = "enrolled"
    HELD_OUT = "held_out"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    CAPPED = "capped"
    DEFERRED = "deferred"
    OPENED = "opened"
    CLICKED = "clicked"
    CONVERTED = "converted"
    # Journeys at each step (issue 12's diagram): arrivals at a step, and the start and end of a
    # stay at a step while the journey waits there (a wait, a wait for an event, a send waiting for
    # its window or its cap). Waiting now is begun minus ended: two counts that only go up, so every
    # count stays an ADD of a positive number under a `once` marker, as all the others are.
    ENTERED = "entered"
    WAIT_BEGUN = "wait_begun"
    WAIT_ENDED = "wait_ended"
    # A `best` send step's choice (issue 13), in the cell of the channel chosen: by the customer's
    # engagement, or by the default order (no engagement in the window, or a tie). Two metrics
    # rather than a reason dimension: cells keep their shape, and the two classes are what a
    # marketer asks ("how often did engagement decide?"); each send's own reason is in the log.
    CHOSEN_BY_ENGAGEMENT = "chosen_by_engagement"
    CHOSEN_BY_DEFAULT = "chosen_by_default"


@dataclass(frozen=True)
class ReportCell:
    scenario_id: str
    version: int
    step_id: str | None = None  # None: the scenario level (enrolled, held_out, a conversion before any send)
    variant: str | None = None  # the A/B variant (None when the scenario has no split)
    holdout: bool = False
    # The channel the fact happened on (a Channel value): a send's and its outcomes' channel; for a
    # conversion, the channel of the last message the scenario sent the customer before it. None:
    # no channel applies (an enrolment, a holdout's conversion, one before any send), or counted
    # before issue 12, when cells had no channel.
    channel: str | None = None
    # The Tokyo day (YYYY-MM-DD) the fact was counted on. Callers leave it None: the counter store
    # dates the cell when it counts it. None when read back: counted before issue 12 (no day kept).
    day: str | None = None


def report_day(at: datetime) -> str:
    """The report day (Tokyo) of an instant."""
    return at.astimezone(REPORT_ZONE).date().isoformat()


def dated(cell: ReportCell, at: datetime) -> ReportCell:
    """The cell as counted at `at`: its own day if it has one, else `at`'s report day."""
    return cell if cell.day is not None else replace(cell, day=report_day(at))

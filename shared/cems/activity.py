"""A customer's recent engagement per channel: folded into the profile as events arrive, read by a
`best` send (which channel to use) and by the engagement stage (how active the customer is).

The profile keeps, per channel, how many opens, clicks, replies and impressions each Tokyo day had,
for the latest ENGAGEMENT_DAYS_KEPT days only (`ChannelEngagement`). Which stored event counts as
which kind on which channel is the profile facts rule set's to say (cems.profile_facts, the one
place ingest and simulate learn from an event); this module only folds counts and reads them, and
never names a channel: the registry's order is the default order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from cems.models import Channel, ChannelEngagement, EngagementKind, Profile

ENGAGEMENT_ZONE = ZoneInfo("Asia/Tokyo")
# The window a `best` send and the engagement stage look back over, and so the days a profile keeps:
# one number for both, so what is kept is exactly what is read (docs/scenarios.md).
ENGAGEMENT_WINDOW_DAYS = 90
ENGAGEMENT_DAYS_KEPT = ENGAGEMENT_WINDOW_DAYS
# How much each kind says about a channel: a click or a reply is the customer answering; an open is
# weaker (mail clients open for privacy, Apple Mail's protection above all) and an impression is the
# page showing a message to someone who was there. Ties go to the default order.
WEIGHTS: Mapping[EngagementKind, int] = {
    EngagementKind.CLICK: 3,
    EngagementKind.REPLY: 3,
    EngagementKind.OPEN: 1,
    EngagementKind.IMPRESSION: 1,
}
# Plurals for reasons an operator reads ("clicks 3").
_PLURAL = {
    EngagementKind.CLICK: "clicks",
    EngagementKind.REPLY: "replies",
    EngagementKind.OPEN: "opens",
    EngagementKind.IMPRESSION: "impressions",
}

# What one write adds: per channel, per day, per kind.
Increments = dict[Channel, dict[str, dict[EngagementKind, int]]]


def engagement_day(at: datetime) -> str:
    """The Tokyo day (YYYY-MM-DD) an engagement is counted on."""
    return at.astimezone(ENGAGEMENT_ZONE).date().isoformat()


def add_engagement(increments: Increments, channel: Channel, kind: EngagementKind, at: datetime) -> None:
    """Count one engagement of `kind` on `channel` at `at` into `increments`."""
    day = increments.setdefault(channel, {}).setdefault(engagement_day(at), {})
    day[kind] = day.get(kind, 0) + 1


def folded(
    before: Mapping[Channel, ChannelEngagement], increments: Increments
) -> dict[Channel, ChannelEngagement]:
    """`before` with `increments` added, each channel keeping only the ENGAGEMENT_DAYS_KEPT days up
    to its latest: bounded whatever arrives, and with no clock (a fold depends only on the facts, so
    ingest and simulate fold alike). Days before that can no longer be in any window that matters
    once a later day is known; until then they are kept and readers skip them by date."""
    out = dict(before)
    for channel, days in increments.items():
        merged = {
            day: dict(kinds) for day, kinds in (before[channel].days if channel in before else {}).items()
        }
        for day, kinds in days.items():
            into = merged.setdefault(day, {})
            for kind, n in kinds.items():
                into[kind] = into.get(kind, 0) + n
        latest = date.fromisoformat(max(merged))
        oldest = (latest - timedelta(days=ENGAGEMENT_DAYS_KEPT - 1)).isoformat()
        out[channel] = ChannelEngagement(days={d: k for d, k in merged.items() if d >= oldest})
    return out


def merged(
    first: Mapping[Channel, ChannelEngagement], second: Mapping[Channel, ChannelEngagement]
) -> dict[Channel, ChannelEngagement]:
    """Two profiles' engagement as one (a merge of two profiles of one person): counts added."""
    return folded(first, {c: {d: dict(k) for d, k in e.days.items()} for c, e in second.items() if e.days})


def counts(
    profile: Profile, channel: Channel, now: datetime, window_days: int = ENGAGEMENT_WINDOW_DAYS
) -> dict[EngagementKind, int]:
    """How many of each kind on `channel` in the `window_days` Tokyo days up to `now` (today included)."""
    state = profile.engagement.get(channel)
    if state is None:
        return {}
    today = now.astimezone(ENGAGEMENT_ZONE).date()
    oldest, newest = (today - timedelta(days=window_days - 1)).isoformat(), today.isoformat()
    out: dict[EngagementKind, int] = {}
    for day, kinds in state.days.items():
        if oldest <= day <= newest:
            for kind, n in kinds.items():
                out[kind] = out.get(kind, 0) + n
    return out


def score(of: Mapping[EngagementKind, int]) -> int:
    """One number to rank channels by: the weighted engagements (WEIGHTS)."""
    return sum(WEIGHTS[kind] * n for kind, n in of.items())


def counts_text(of: Mapping[EngagementKind, int], window_days: int = ENGAGEMENT_WINDOW_DAYS) -> str:
    """`clicks 3, opens 2 in 90d`: the counts behind a choice, strongest kinds first."""
    shown = [
        f"{_PLURAL[k]} {of[k]}"
        for k in sorted(of, key=lambda k: (-WEIGHTS[k], list(WEIGHTS).index(k)))
        if of[k]
    ]
    return f"{', '.join(shown)} in {window_days}d"


class ChoiceBasis(StrEnum):
    """Why a `best` send went where it went: the customer's engagement, or the default order (no
    engagement on any reachable channel in the window, or a tie at the top)."""

    ENGAGEMENT = "engagement"
    DEFAULT = "default"


@dataclass(frozen=True)
class ChannelChoice:
    """A `best` send's channels for one customer: the chosen one first, then the others that reach
    them (the dispatch's fallbacks), and why."""

    channels: tuple[Channel, ...]
    basis: ChoiceBasis
    reason: str  # `best:email(clicks 3 in 90d)`, `best:line(no history, default order)`

    @property
    def channel(self) -> Channel:
        return self.channels[0]


def choose(
    candidates: tuple[Channel, ...],
    profile: Profile,
    now: datetime,
    window_days: int = ENGAGEMENT_WINDOW_DAYS,
) -> ChannelChoice | None:
    """The best of `candidates` (the channels that reach the customer now, in the default order) for
    this customer: the highest score in the window; a tie, or no engagement at all, keeps the
    default order. None when no candidate is given."""
    if not candidates:
        return None
    per = {c: counts(profile, c, now, window_days) for c in candidates}
    scores = {c: score(per[c]) for c in candidates}
    # sorted is stable: equal scores keep the default order.
    ranked = tuple(sorted(candidates, key=lambda c: -scores[c]))
    top = ranked[0]
    if scores[top] == 0:
        return ChannelChoice(ranked, ChoiceBasis.DEFAULT, f"best:{top}(no history, default order)")
    if len(ranked) > 1 and scores[ranked[1]] == scores[top]:
        return ChannelChoice(
            ranked,
            ChoiceBasis.DEFAULT,
            f"best:{top}(tie {counts_text(per[top], window_days)}, default order)",
        )
    return ChannelChoice(ranked, ChoiceBasis.ENGAGEMENT, f"best:{top}({counts_text(per[top], window_days)})")


class EngagementStage(StrEnum):
    """How active a customer is, from what they do (not only what they buy): the engagement stage
    (docs/scenarios.md, "Engagement stage")."""

    ACTIVE = "active"  # engaged on a channel, or bought, within the last 30 days (today included)
    COOLING = "cooling"  # last active 30-89 days ago
    DORMANT = "dormant"  # last active 90 or more days ago
    UNENGAGED = "unengaged"  # no engagement and no order known


ACTIVE_DAYS = 30


def last_active_day(profile: Profile) -> date | None:
    """The latest Tokyo day the customer engaged on any channel or bought."""
    days = [
        date.fromisoformat(d)
        for e in profile.engagement.values()
        for d, kinds in e.days.items()
        if any(kinds.values())
    ]
    if profile.last_purchase_at is not None:
        days.append(profile.last_purchase_at.astimezone(ENGAGEMENT_ZONE).date())
    return max(days, default=None)


def engagement_stage(profile: Profile, now: datetime) -> EngagementStage:
    """The customer's engagement stage now (EngagementStage): by the days since their last engagement
    on any channel or order, whichever is later. A channel's latest engaged day is always kept (the
    fold drops only days well before it), so a customer silent for a year still reads `dormant`."""
    last = last_active_day(profile)
    if last is None:
        return EngagementStage.UNENGAGED
    idle = (now.astimezone(ENGAGEMENT_ZONE).date() - last).days
    if idle < ACTIVE_DAYS:
        return EngagementStage.ACTIVE
    if idle < ENGAGEMENT_WINDOW_DAYS:
        return EngagementStage.COOLING
    return EngagementStage.DORMANT

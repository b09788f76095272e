"""The audience of a scenario before it sends (issue 12): how many customers it would enter, how
many can be reached on each channel, how many the holdout keeps back, and a masked sample.

`AudienceCounter.count(scenario)` reads CustomersTable as a broadcast does (a parallel Scan in
segments sized to the table, pages of live profiles through the same ProfileScanner port), here
with the segments read by threads, and decides every customer with the broadcast's own decision
(`Entrance.decide_page`: blacklist, re-entry, audience, priority; holdout by the deterministic
assignment). So on the same data, at the same moment, `matching` is the number of customers a
broadcast of the scenario enrols, and `holdout` the number of them it keeps back.

What a count does not foresee: sends a frequency cap holds back (the caps are taken when the
journey runs; `sendable` is an upper bound of a first send), and what changes between the count and
the run (new customers, purchases, consent, the clock: a condition such as `within_days` is read at
the count's time). For a trigger other than `broadcast` the count is "who qualifies today": those
triggers enrol a customer when their event (or date) comes, and the count asks whether the
customer would be let in if it came now.

Nothing personal leaves here unmasked: the sample is `masking.masked_profile`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from cems import clock
from cems.channels.registry import plugins
from cems.masking import masked_profile
from cems.models import Channel, Profile
from cems.ports import ProfilePage, ProfileScanner, RequestTally, TableSize
from cems.scenario.broadcast import PAGE_SIZE, segments_for_items
from cems.scenario.config import DEFAULT_BROADCAST_SEGMENTS, DEFAULT_MAX_SEGMENTS, DEFAULT_SEGMENT_CUSTOMERS
from cems.scenario.engine import send_channels
from cems.scenario.entrance import Entrance
from cems.scenario.model import BroadcastTrigger, Scenario
from cems.scenario.problems import bilingual
from cems.topics import left_topic

SAMPLE_SIZE = 10
# Segments read at once: each thread waits on DynamoDB most of the time, so a few more threads than
# cores keep the Scans busy; more would mostly queue on the Lambda's network and throttle less well.
DEFAULT_THREADS = 8

REALTIME_NOTE = bilingual(
    "このシナリオはイベント（または日付）でエントリーします。この数は「いまエントリー条件を満たす顧客」"
    "の数で、実際のエントリーはイベントが起きたときに決まります",
    "This scenario enrols on events (or dates): the count is who qualifies today; customers enter "
    "when their event comes",
)
PARTIAL_NOTE = bilingual(
    "時間内に全顧客を読み切れませんでした。数は読んだ顧客の分だけです（CLI からローカルで数えるか、"
    "デプロイ先でも時間を分けてください）",
    "Not every customer could be read in the time allowed: the counts cover the customers read",
)


class ChannelAudience(BaseModel):
    """One channel's share of the audience: reachable with consent on it (the engine sends only
    then), in all and outside the holdout (those a send on the channel can go to)."""

    channel: Channel
    title: str
    reachable: int
    reachable_outside_holdout: int


class AudienceSample(BaseModel):
    """One matching customer, masked: their group and the channels that reach them."""

    holdout: bool
    reachable: list[Channel]
    profile: dict[str, Any]


class AudienceCount(BaseModel):
    """The audience of one scenario at `counted_at`, and what counting it took."""

    scenario_id: str
    trigger_type: str
    counted_at: datetime
    # True: the counts are of every customer; False: the time allowed ran out (`note` says so).
    complete: bool
    matching: int
    holdout: int
    outside_holdout: int
    # Outside the holdout and reachable on a channel a send step of the scenario may use.
    sendable: int
    channels: list[ChannelAudience]
    # Customers read but not in the audience, by the decision's reason (audience, blacklisted,
    # already_entered, still_enrolled, cooldown, higher_priority_active).
    excluded: dict[str, int]
    sample: list[AudienceSample]
    segments: int
    customers_read: int  # live profiles decided
    items_scanned: int  # every item the Scans read (identities and other items too)
    requests: int | None  # AWS requests the count made (None: not measured)
    elapsed_ms: int
    note: str | None = None
    # A fanned-out count (cems.console.audience_runs): its run id, to ask again for its progress, and
    # how many of its `segments` are counted. None for a count answered at once.
    run: str | None = None
    segments_done: int | None = None
    # A run with no segment counted for a while (one in the dead-letter queue): it will not complete,
    # so whoever asks stops asking (the note says to count again).
    stalled: bool = False


class AudienceTally(BaseModel):
    """Counts of some pages: one segment's (a thread of the count, or a fanned-out run's item per
    segment), summed into the answer. A pydantic model, so a run's segment can be stored as it is."""

    matching: int = 0
    holdout: int = 0
    sendable: int = 0
    reachable: dict[Channel, int] = Field(default_factory=dict)
    reachable_outside: dict[Channel, int] = Field(default_factory=dict)
    excluded: dict[str, int] = Field(default_factory=dict)
    profiles: int = 0
    scanned: int = 0
    sample: list[AudienceSample] = Field(default_factory=list)
    complete: bool = True

    def add(self, other: AudienceTally) -> None:
        self.matching += other.matching
        self.holdout += other.holdout
        self.sendable += other.sendable
        _add_counts(self.reachable, other.reachable)
        _add_counts(self.reachable_outside, other.reachable_outside)
        _add_counts(self.excluded, other.excluded)
        self.profiles += other.profiles
        self.scanned += other.scanned
        self.complete = self.complete and other.complete


def _add_counts(into: dict[Any, int], other: dict[Any, int]) -> None:
    for key, n in other.items():
        into[key] = into.get(key, 0) + n


def count_page(
    tally: AudienceTally,
    entrance: Entrance,
    scenario: Scenario,
    version: int,
    page: ProfilePage,
    now: datetime,
    send_channels: frozenset[Channel],
) -> None:
    """One page of profiles decided as a broadcast page is (`Entrance.decide_page`) and added to
    `tally`: the one per-page rule of the count answered at once and of a fanned-out run's segments
    (cems.console.audience_runs), so both give the same numbers on the same data."""
    entries = entrance.decide_page(scenario, version, page.profiles, now)
    tally.profiles += len(page.profiles)
    tally.scanned += page.scanned
    for entry in entries.entries:
        if not entry.entered:
            reason = entry.decision.reason
            tally.excluded[reason] = tally.excluded.get(reason, 0) + 1
            continue
        assert entry.decision.enrolment is not None
        holdout = entry.decision.enrolment.holdout
        _count_member(tally, entry.customer.profile, holdout, send_channels, scenario.topic)


def audience_answer(
    scenario: Scenario,
    tallies: list[AudienceTally],
    *,
    segments: int,
    counted_at: datetime,
    requests: int | None,
    elapsed_ms: int,
    extra_notes: tuple[str, ...] = (),
    complete: bool | None = None,
) -> AudienceCount:
    """The answer from segments' tallies, in segment order (the sample is the first segments'
    first customers, so the same data gives the same sample). `complete`: given by a fanned-out run
    (every segment counted); else whether every tally read its segment to the end."""
    summed = AudienceTally()
    for tally in tallies:
        summed.add(tally)
    sample = [s for tally in tallies for s in tally.sample][:SAMPLE_SIZE]
    complete = summed.complete if complete is None else complete
    realtime = not isinstance(scenario.trigger, BroadcastTrigger)
    notes = ([REALTIME_NOTE] if realtime else []) + list(extra_notes)
    return AudienceCount(
        scenario_id=scenario.id,
        trigger_type=scenario.trigger.type,
        counted_at=counted_at,
        complete=complete,
        matching=summed.matching,
        holdout=summed.holdout,
        outside_holdout=summed.matching - summed.holdout,
        sendable=summed.sendable,
        channels=[
            ChannelAudience(
                channel=p.channel,
                title=p.title,
                reachable=summed.reachable.get(p.channel, 0),
                reachable_outside_holdout=summed.reachable_outside.get(p.channel, 0),
            )
            for p in plugins()
        ],
        excluded=dict(sorted(summed.excluded.items())),
        sample=sample,
        segments=segments,
        customers_read=summed.profiles,
        items_scanned=summed.scanned,
        requests=requests,
        elapsed_ms=elapsed_ms,
        note=" ".join(notes) or None,
    )


class AudienceCounter:
    def __init__(
        self,
        profiles: ProfileScanner,
        entrance: Entrance,
        *,
        sizing: TableSize | None = None,
        segments: int = DEFAULT_BROADCAST_SEGMENTS,
        segment_customers: int = DEFAULT_SEGMENT_CUSTOMERS,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
        threads: int = DEFAULT_THREADS,
        page_size: int = PAGE_SIZE,
        tally: RequestTally | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """Segments as a broadcast's: sized to the table with `sizing` (one per `segment_customers`
        items, at most `max_segments`), else `segments` (CEMS_BROADCAST_SEGMENTS, fixed)."""
        if min(segments, segment_customers, max_segments, threads, page_size) < 1:
            raise ValueError("segments, customers per segment, threads and page size must be at least 1")
        self.profiles = profiles
        self.entrance = entrance
        self.sizing = sizing
        self.segments = segments
        self.segment_customers = segment_customers
        self.max_segments = max_segments
        self.threads = threads
        self.page_size = page_size
        self.tally = tally
        self.monotonic = monotonic

    def segments_for(self, items: int | None = None) -> int:
        """The segments of a count: sized to `items` (the table's size, read when not given), as a
        broadcast run's; or the fixed number when the counter has no `sizing`."""
        if self.sizing is None:
            return self.segments
        if items is None:
            items = self.sizing.approximate_items()
        return segments_for_items(items, self.segment_customers, self.max_segments)

    def count(
        self,
        scenario: Scenario,
        *,
        version: int | None = None,
        now: datetime | None = None,
        time_budget_s: float | None = None,
    ) -> AudienceCount:
        """The scenario's audience now (`now`: the moment its conditions are read at). `version`:
        the enrolments' version (the scenario file's by default; the decision does not depend on
        it). `time_budget_s`: stop reading pages after that long (an API answering within its
        time-out), the result then `complete: false`."""
        started = self.monotonic()
        deadline = None if time_budget_s is None else started + time_budget_s
        now = now or clock.now()
        requests_before = None if self.tally is None else self.tally.sent()
        total = self.segments_for()
        # Read once here, so the threads share them (the caches hold for the count's `now`).
        self.entrance.summaries(now)
        self.entrance.in_play(now)
        channels = send_channels(scenario)
        version = scenario.version if version is None else version

        def read_segment(segment: int) -> AudienceTally:
            return self._segment(scenario, version, segment, total, now, channels, deadline)

        with ThreadPoolExecutor(max_workers=min(self.threads, total), thread_name_prefix="audience") as pool:
            tallies = list(pool.map(read_segment, range(total)))
        requests = None
        if self.tally is not None and requests_before is not None:
            requests = self.tally.sent() - requests_before
        complete = all(t.complete for t in tallies)
        return audience_answer(
            scenario,
            tallies,
            segments=total,
            counted_at=now,
            requests=requests,
            elapsed_ms=round((self.monotonic() - started) * 1000),
            extra_notes=() if complete else (PARTIAL_NOTE,),
        )

    def _segment(
        self,
        scenario: Scenario,
        version: int,
        segment: int,
        total: int,
        now: datetime,
        send_channels: frozenset[Channel],
        deadline: float | None,
    ) -> AudienceTally:
        """One segment read page by page, as the broadcast worker reads it, each page decided."""
        tally = AudienceTally()
        start: dict[str, Any] | None = None
        while True:
            if deadline is not None and self.monotonic() >= deadline:
                tally.complete = False
                return tally
            page = self.profiles.scan_profile_page(segment, total, start, self.page_size)
            # The tally is this thread's own: no lock (the threads' tallies are summed at the end).
            count_page(tally, self.entrance, scenario, version, page, now, send_channels)
            start = page.next_start
            if start is None:
                return tally


def _count_member(
    tally: AudienceTally,
    profile: Profile,
    holdout: bool,
    send_channels: frozenset[Channel],
    topic: str | None = None,
) -> None:
    reachable = [p.channel for p in plugins() if p.reachable(profile)]
    tally.matching += 1
    tally.holdout += holdout
    _add_counts(tally.reachable, dict.fromkeys(reachable, 1))
    if not holdout:
        _add_counts(tally.reachable_outside, dict.fromkeys(reachable, 1))
        # A customer who left the scenario's topic is sent nothing (the engine's rule, cems.topics).
        tally.sendable += any(c in send_channels for c in reachable) and not left_topic(profile.topics, topic)
    if len(tally.sample) < SAMPLE_SIZE:
        tally.sample.append(
            AudienceSample(holdout=holdout, reachable=reachable, profile=masked_profile(profile))
        )

"""Audience counts of any size (issue 12): a table too large to count within one API call is counted
by a *run* fanned out over segments like a broadcast, and asked for its progress until complete.

`AudienceRuns.count(scenario, document, ...)` (the console and admin API, through
cems.console.actions) answers at once, as `AudienceCounter.count` always did, when CustomersTable is
small enough for one invocation: up to `sync_max_items` items by its size estimate (DescribeTable's
ItemCount; docs/audience.md says how the default was chosen). A larger table gets a run instead:
one item `AUDCOUNT#<run>` / `RUN` holding the validated scenario document, the number of segments,
who started it and when (TTL a day), and one BroadcastQueue message per segment with `kind` "count".
The broadcast function gives such a message to `AudienceSegmentCounter.run_segment`, which reads its
segment page by page with the count's own per-page rule (`audience.count_page`: the broadcast's
entry decision), and writes the segment's tally (`AUDCOUNT#<run>` / `SEG#<n>`) when it is done or,
with its time running low, together with where it stopped, before handing the rest on in a new
message (as a broadcast segment is handed on). `AudienceRuns.status(run)` sums the segments' tallies
so far, in segment order (the sample is the first segments' first customers, as for the count
answered at once), and says how many segments are done: complete when all are.

Why a segment is never counted twice: its tally is cumulative (every page counted so far, with the
cursor after the last one), and each write of it is conditional on the number of pages the writer
read it with (none: that there is no item yet). A redelivered message, a stale one after a hand-on,
or two workers at once on one segment all start from the stored tally and cursor; the first to
write wins and the other's write fails, so it stops without handing on. A worker that dies before
writing leaves the stored tally as it was, and its pages are counted again from the stored cursor.

A count answered at once that runs out of time anyway (the size estimate is up to six hours old:
a table grown since) is not answered partial: a run is started instead, sized to at least four
times the items it read in that time, so the answer is complete, later.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, Field

from cems import clock
from cems.console.audience import (
    AudienceCount,
    AudienceCounter,
    AudienceTally,
    audience_answer,
    count_page,
)
from cems.ports import MessageQueue, ProfileScanner, ServiceUnavailable, TableSize
from cems.scenario.broadcast import (
    MIN_REMAINING_MS,
    PAGE_SIZE,
    SegmentMessage,
    SegmentReport,
    hand_on,
    segments_for_items,
)
from cems.scenario.engine import send_channels
from cems.scenario.entrance import Entrance
from cems.scenario.model import Scenario
from cems.scenario.problems import bilingual

log = logging.getLogger("cems.console")

# A run's items are kept this long (TTL): long enough to be read when done, not kept as data.
RUN_TTL = timedelta(days=1)
# CustomersTable items one invocation counts at once, at most, by the table's size estimate. Measured
# (docs/performance.md, "Issue 12: audience counts"): ~3 items a customer and ~0.29 ms of a 512 MB
# Lambda's time a customer, so 100,000 customers (300,000 items) take the API's whole ~26 s; half
# of that, 150,000 items (~50,000 customers, ~15 s), leaves room for a slower Scan and a size
# estimate up to six hours old. Above it, a run (CEMS_AUDIENCE_SYNC_MAX_ITEMS changes it).
SYNC_MAX_ITEMS = 150_000
# Kept back from a count answered at once, to start a run instead should it run out of time.
START_RESERVE_S = 3.0
# A count that ran out of time at once starts a run of at least this many times the items it read.
GROWN_FACTOR = 4
# A run with no segment counted for this long is said to be stalled (a segment in the dead-letter
# queue after its retries; the broadcast dead-letter alarm says so too).
STALLED_AFTER = timedelta(minutes=15)
RUN_ID = re.compile(r"^[0-9a-f]{32}$")

STALLED_NOTE = bilingual(
    "集計が止まっています（一部のセグメントが処理できませんでした）。もう一度数えてください",
    "the count has stalled (some segments could not be counted); count again",
)


def progress_note(done: int, total: int) -> str:
    return bilingual(
        f"集計中です（{done}/{total} セグメント完了）。完了するまで数は増えていきます",
        f"counting: {done} of {total} segments done; the counts grow until complete",
    )


class AudienceRun(BaseModel):
    """`AUDCOUNT#<run>` / `RUN`: a fanned-out count, started once."""

    run: str
    scenario_id: str
    version: int
    # The scenario document as posted, validated before the run was started (a scenario counted
    # before it is uploaded is stored nowhere else).
    document: str
    segments: int
    created_at: datetime
    started_by: str


class AudienceSegment(BaseModel):
    """`AUDCOUNT#<run>` / `SEG#<n>`: one segment's tally of its pages counted so far, and where the
    next page starts; every write conditional on `pages` as read."""

    run: str
    segment: int
    pages: int = 0
    cursor: dict[str, Any] | None = None
    done: bool = False
    tally: AudienceTally = Field(default_factory=AudienceTally)
    updated_at: datetime | None = None


class AudienceRunStore(Protocol):
    """Fanned-out counts in JourneysTable (cems.adapters.dynamodb.audience_runs)."""

    def start(self, run: AudienceRun, expires_at: datetime) -> None: ...
    def run(self, run_id: str) -> AudienceRun | None: ...
    def segment(self, run_id: str, segment: int) -> AudienceSegment | None:
        """The segment's tally as stored (read consistently: it is what the next write is conditional on)."""
        ...

    def save_segment(self, segment: AudienceSegment, read_pages: int | None, expires_at: datetime) -> bool:
        """Writes the segment's tally if the stored one still has `read_pages` pages (None: there is
        none); False otherwise (another worker counted the segment since: this one stops)."""
        ...

    def segments(self, run_id: str) -> list[AudienceSegment]:
        """The run's segments written so far, in segment order."""
        ...


class AudienceRuns:
    """Counts at once or starts a run (console, admin API), and answers a run's progress."""

    def __init__(
        self,
        counter: AudienceCounter,
        store: AudienceRunStore,
        queue: MessageQueue,
        sizing: TableSize | None,
        *,
        sync_max_items: int = SYNC_MAX_ITEMS,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        """`sizing`: CustomersTable's size estimate (None: always at once, as before runs existed)."""
        self.counter = counter
        self.store = store
        self.queue = queue
        self.sizing = sizing
        self.sync_max_items = sync_max_items
        self.new_id = new_id

    def count(
        self, scenario: Scenario, document: str, *, started_by: str, time_budget_s: float
    ) -> AudienceCount:
        """The count answered at once (`run` None), or a run's first status (`run` set, not complete)."""
        now = clock.now()
        items = None if self.sizing is None else self.sizing.approximate_items()
        if items is not None and items > self.sync_max_items:
            return self.start(
                scenario, document, started_by=started_by, segments=self.counter.segments_for(items)
            )
        if self.sizing is None:
            return self.counter.count(scenario, now=now, time_budget_s=time_budget_s)
        count = self.counter.count(scenario, now=now, time_budget_s=max(time_budget_s - START_RESERVE_S, 1.0))
        if count.complete:
            return count
        # The estimate was old (the table grew since DynamoDB last counted it): a run, sized to what the
        # time allowed to read and then some, rather than a partial answer.
        grown = segments_for_items(
            count.items_scanned * GROWN_FACTOR, self.counter.segment_customers, self.counter.max_segments
        )
        segments = max(self.counter.segments_for(items), grown)
        log.info("audience count ran out of time; started as a run", extra={"segments": segments})
        return self.start(scenario, document, started_by=started_by, segments=segments)

    def start(self, scenario: Scenario, document: str, *, started_by: str, segments: int) -> AudienceCount:
        """Records the run, then puts one message per segment on the queue (ServiceUnavailable when
        they could not all be put: the caller answers 503; the run item expires unread)."""
        now = clock.now()
        run = AudienceRun(
            run=self.new_id(),
            scenario_id=scenario.id,
            version=scenario.version,
            document=document,
            segments=segments,
            created_at=now,
            started_by=started_by,
        )
        self.store.start(run, now + RUN_TTL)
        messages = [
            SegmentMessage(
                scenario_id=scenario.id,
                version=scenario.version,
                run=run.run,
                run_at=now,
                segment=n,
                total_segments=segments,
                kind="count",
            )
            for n in range(segments)
        ]
        try:
            self.queue.send([m.model_dump_json() for m in messages])
        except ValueError as exc:  # the queue's URL is not set here
            raise ServiceUnavailable(str(exc)) from exc
        return _status(run, scenario, [], now)

    def status(self, run_id: str) -> AudienceCount | None:
        """The run's counts so far (None: no such run, or expired): complete when every segment is."""
        if not RUN_ID.match(run_id):
            return None
        run = self.store.run(run_id)
        if run is None:
            return None
        return _status(
            run, Scenario.model_validate_json(run.document), self.store.segments(run_id), clock.now()
        )


def _status(
    run: AudienceRun, scenario: Scenario, segments: list[AudienceSegment], now: datetime
) -> AudienceCount:
    done = sum(1 for s in segments if s.done)
    complete = done == run.segments
    last = max((s.updated_at for s in segments if s.updated_at is not None), default=run.created_at)
    notes: tuple[str, ...] = ()
    stalled = not complete and now - last > STALLED_AFTER
    if not complete:
        notes = (progress_note(done, run.segments),)
        if stalled:
            notes += (STALLED_NOTE,)
    answer = audience_answer(
        scenario,
        [s.tally for s in sorted(segments, key=lambda s: s.segment)],
        segments=run.segments,
        counted_at=run.created_at,
        requests=None,
        elapsed_ms=round(((last if complete else now) - run.created_at).total_seconds() * 1000),
        extra_notes=notes,
        complete=complete,
    )
    return answer.model_copy(update={"run": run.run, "segments_done": done, "stalled": stalled})


class AudienceSegmentCounter:
    """Counts one segment of a run (the broadcast function, for a message of kind "count")."""

    def __init__(
        self,
        entrance: Entrance,
        profiles: ProfileScanner,
        store: AudienceRunStore,
        queue: MessageQueue,
        page_size: int = PAGE_SIZE,
        min_remaining_ms: int = MIN_REMAINING_MS,
    ) -> None:
        self.entrance = entrance
        self.profiles = profiles
        self.store = store
        self.queue = queue
        self.page_size = page_size
        self.min_remaining_ms = min_remaining_ms
        # Runs' scenarios by run id: a container counts many segments of one run (batches, hand-ons).
        self._scenarios: dict[str, tuple[AudienceRun, Scenario]] = {}

    def run_segment(
        self, message: SegmentMessage, remaining_ms: Callable[[], int], now: datetime | None = None
    ) -> SegmentReport:
        """Counts the segment from its stored tally and cursor, page by page, until it is done or the
        time left is short; then writes the tally (conditional on the pages read) and, if not done,
        hands the rest on. `superseded` when another worker wrote the segment since."""
        report = SegmentReport("missing")
        found = self._run(message.run)
        if found is None:
            return report
        run, scenario = found
        stored = self.store.segment(message.run, message.segment)
        read_pages = None if stored is None else stored.pages
        segment = stored or AudienceSegment(
            run=message.run, segment=message.segment, cursor=message.start_key
        )
        if segment.done:
            report.outcome = "done"
            return report
        now = now or clock.now()
        channels = send_channels(scenario)
        while True:
            page = self.profiles.scan_profile_page(
                message.segment, message.total_segments, segment.cursor, self.page_size
            )
            count_page(segment.tally, self.entrance, scenario, run.version, page, now, channels)
            segment.pages += 1
            segment.cursor = page.next_start
            segment.done = segment.cursor is None
            report.pages += 1
            report.profiles += len(page.profiles)
            if segment.done or remaining_ms() < self.min_remaining_ms:
                break
        segment.updated_at = clock.now()
        if not self.store.save_segment(segment, read_pages, run.created_at + RUN_TTL):
            report.outcome = "superseded"
            return report
        if segment.done:
            report.outcome = "done"
            return report
        hand_on(self.queue, message, segment.cursor)
        report.outcome = "continued"
        return report

    def _run(self, run_id: str) -> tuple[AudienceRun, Scenario] | None:
        found = self._scenarios.get(run_id)
        if found is None:
            run = self.store.run(run_id)
            if run is None:
                return None
            found = (run, Scenario.model_validate_json(run.document))
            if len(self._scenarios) >= 16:  # a few runs at a time; an old one is read again if asked
                self._scenarios.clear()
            self._scenarios[run_id] = found
        return found

"""Broadcasts: a scenario's whole audience, once `at` a time or on a `cron`, fanned out in segments;
and the same fan-out for a date trigger's backfill.

`BroadcastStarter.start_due(now)` (run by `tick`) looks at the active broadcast scenarios; when one's
run time has come it starts the run once (a conditional put of `BCAST#<scenario>#<run>` / `RUN`) and
puts one message per segment on BroadcastQueue: segment n of a DynamoDB parallel Scan of
CustomersTable (`Segment` n of `TotalSegments`). The number of segments is sized to the table (issue
11): one per CEMS_BROADCAST_SEGMENT_CUSTOMERS items of CustomersTable (DescribeTable's ItemCount),
at least 1 and at most CEMS_BROADCAST_MAX_SEGMENTS, so a small table is one segment and a large one
is fanned out over as many workers as it needs; CEMS_BROADCAST_SEGMENTS fixes the number instead.

`BroadcastWorker.run_segment(message, remaining_ms)` (the `broadcast` function) scans its segment page
by page (up to PAGE_SIZE live profiles a page: a LINE multicast takes 500 recipients, so a page of
identical sends is one multicast), enrols each page's customers in one batch through the runner
(`ScenarioRunner.enrol_page`: audience, holdout, priority, advance, the sends, the counts, the
conditional writes, on reads made together) and records its progress after each
page (`BCAST#<scenario>#<run>` / `SEG#<n>`: the last evaluated key and counts). A redelivered message
resumes from the recorded key; with little time left the worker puts a message for the rest of its
segment back on the queue. A customer already enrolled at or after the run's time is skipped, so a
page processed again (the function died before recording it) sends nothing twice.

**A page is opened before anything of it is sent** (issue 11): the segment's progress records the
page's range (where it ends: `page_end`) and a 4-byte digest of each of its customers
(`page_customers`): for an invocation's first page by a write of its own, conditional on the pages
read and on no page being open (`BroadcastStorePort.open_page`); for every later page by the write
that records the page before it done (so one write a page, as before, and one more an invocation).
A page done again (the worker died after enqueueing its sends and
before recording it done) reads the same range, however many profiles it holds now
(`ProfileScanner.scan_profile_range`), never the next 500 from its start: a profile created inside
the range in between would end such a page one profile sooner and push the first attempt's last
customer into the next page, under another batch name, so into another shared dispatch (sent
twice). The first attempt's customers are enrolled under the page's batch name, as before (at most
PAGE_SIZE: one dispatch per content, whose frozen plan holds them); customers the first attempt did
not have (created in between) under `<batch>#new<k>`, a name no first attempt uses, the same on
every redo (so their shared dispatch and their counts are theirs, once). `page_split` says why that
is exact.

A **backfill** (run kind `backfill`, run id `backfill-v<version>`) is started by `scenario_loader`
when it activates a date-trigger version that needs one (`BroadcastStarter.start_backfill`): the same
run record and segment messages, but the worker schedules each profile's pending `DATE#` entry with
`ScenarioRunner.schedule_date_trigger` (the rules a date-changing event follows) instead of enrolling,
so customers who had the date before the upload get their moment too. Scheduling is idempotent (an
entry already at its moment is left alone), so a page processed twice writes nothing twice. `tick`
enqueues again a backfill whose messages were not all enqueued (as for a broadcast run).

A message of kind `count` is a segment of a fanned-out audience count (cems.console.audience_runs):
the worker hands it to its `counts` (`SegmentCounter`), which reads the segment with the count's own
rule and hands the rest on as a broadcast segment is (`hand_on`). It enrols and sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from cems import clock
from cems.line.dispatch import MAX_MULTICAST_RECIPIENTS
from cems.models import Profile
from cems.ports import (
    BroadcastStorePort,
    MessageQueue,
    ProfilePage,
    ProfileScanner,
    ScenarioReader,
    TableSize,
)
from cems.scenario.config import DEFAULT_BROADCAST_SEGMENTS, DEFAULT_SEGMENT_CUSTOMERS
from cems.scenario.model import BroadcastTrigger, DateTrigger, Scenario
from cems.scenario.records import ScenarioVersion
from cems.scenario.runner import RunReport, ScenarioRunner
from cems.scenario.timing import cron_next

log = logging.getLogger("cems.scenario")

# A run time missed by more than this (tick down, or a scenario uploaded long after its `at`) is not
# started: a broadcast hours late is more likely unwelcome than wanted.
CATCH_UP = timedelta(hours=1)
# A run whose segment messages were not all enqueued (the starter died) is enqueued again after this.
RESTART_AFTER = timedelta(minutes=5)
# Live profiles a page holds (CustomerStore.scan_profile_page): a LINE multicast's 500 recipients.
PAGE_SIZE = 500
# The table's size is read at most this often (DynamoDB refreshes ItemCount about every six hours).
SIZE_CACHE = timedelta(hours=1)
# With less than this left, the worker hands the rest of its segment to a new message.
MIN_REMAINING_MS = 20_000

# What a run does with each profile of its segments: enrol it (a broadcast), or schedule its date
# trigger's pending entry (the backfill of a newly active date-trigger version).
RunKind = Literal["broadcast", "backfill"]
# What a BroadcastQueue message is a segment of: a run above, or a fanned-out audience count.
MessageKind = Literal["broadcast", "backfill", "count"]
BackfillStart = Literal["started", "pending", "already", "none"]


def run_id(at: datetime) -> str:
    """A run's id: its scheduled time, UTC, to the minute (`20260508T0100Z`)."""
    return clock.iso(at).replace("-", "").replace(":", "")[:13] + "Z"


def backfill_run(version: int) -> str:
    """A backfill's run id: one per version, so an activation seen twice starts it once."""
    return f"backfill-v{version}"


def run_time(scenario: Scenario, uploaded_at: datetime, now: datetime) -> datetime | None:
    """The latest run time at or before `now` and within CATCH_UP of it; None if there is none.
    A cron run before the version was uploaded does not count (uploading is not a reason to send
    the run just missed); a one-off `at` does, within CATCH_UP."""
    trigger = scenario.trigger
    if not isinstance(trigger, BroadcastTrigger):
        return None
    earliest = now - CATCH_UP
    if trigger.at is not None:
        return trigger.at if earliest <= trigger.at <= now else None
    if trigger.cron is None:  # pragma: no cover - the model requires one of them
        return None
    start = max(earliest, uploaded_at) - timedelta(microseconds=1)
    latest: datetime | None = None
    moment = cron_next(trigger.cron, start, scenario.zone)
    while moment is not None and moment <= now:
        latest = moment
        moment = cron_next(trigger.cron, moment, scenario.zone)
    return latest


def segments_for_items(items: int, segment_customers: int, max_segments: int) -> int:
    """How many parallel Scan segments a table of about `items` items is read in: one per
    `segment_customers` items, at least 1, at most `max_segments` (a broadcast run's fan-out, and
    the audience count's, which reads the table as a broadcast does)."""
    wanted = -(-max(items, 0) // segment_customers)
    return max(1, min(max_segments, wanted))


class SegmentMessage(BaseModel):
    """One BroadcastQueue message: a segment of a run (and where to start, when handed on)."""

    model_config = ConfigDict(extra="forbid")

    scenario_id: str
    version: int
    run: str
    run_at: datetime
    segment: int
    total_segments: int
    start_key: dict[str, Any] | None = None
    # Absent in messages from before backfills existed: those are broadcasts.
    kind: MessageKind = "broadcast"


class SegmentProgress(BaseModel):
    """`BCAST#<scenario>#<run>` / `SEG#<n>`: how far a segment got. `pages` is what each write is
    conditional on (two workers on one segment: the slower one stops)."""

    scenario_id: str
    run: str
    segment: int
    pages: int = 0
    last_key: dict[str, Any] | None = None
    done: bool = False
    scanned: int = 0
    profiles: int = 0
    enrolled: int = 0
    dispatched: int = 0
    scheduled: int = 0  # backfills: pending date-trigger entries written or moved
    skipped: int = 0
    updated_at: datetime | None = None
    # A page opened (its range recorded before its sends: `BroadcastWorker`) and not yet recorded
    # done: where it ends (None: at the segment's end) and its customers' digests (`page_digests`).
    page_open: bool = False
    page_end: dict[str, Any] | None = None
    page_customers: bytes | None = None


@dataclass
class StartReport:
    started: int = 0
    restarted: int = 0  # broadcast runs and backfills whose messages were enqueued again
    segments: int = 0


class BroadcastStarter:
    """Starts the broadcast runs whose time has come (tick)."""

    def __init__(
        self,
        scenarios: ScenarioReader,
        store: BroadcastStorePort,
        queue: MessageQueue,
        segments: int = DEFAULT_BROADCAST_SEGMENTS,
        *,
        sizing: TableSize | None = None,
        segment_customers: int = DEFAULT_SEGMENT_CUSTOMERS,
    ) -> None:
        """`segments`: the number of segments of every run; with `sizing` (CustomersTable's size),
        the most a run has, each taking about `segment_customers` items of the table."""
        if segments < 1 or segment_customers < 1:
            raise ValueError("broadcast segments and customers per segment must be at least 1")
        self.scenarios = scenarios
        self.store = store
        self.queue = queue
        self.segments = segments
        self.sizing = sizing
        self.segment_customers = segment_customers
        self._sized: tuple[datetime, int] | None = None

    def segments_for(self, now: datetime) -> int:
        """How many segments a run started now has: ceil(items / segment_customers), at least 1, at
        most `segments` (the table's size read at most once per SIZE_CACHE)."""
        if self.sizing is None:
            return self.segments
        if self._sized is None or not (self._sized[0] <= now < self._sized[0] + SIZE_CACHE):
            items = self.sizing.approximate_items()
            self._sized = (now, segments_for_items(items, self.segment_customers, self.segments))
        return self._sized[1]

    def start_due(self, now: datetime | None = None) -> StartReport:
        """Starts the broadcast runs whose time has come, and enqueues again the runs and backfills
        whose messages were not all enqueued (one consistent read per active date trigger)."""
        now = now or clock.now()
        report = StartReport()
        for summary in self.scenarios.active_summaries():
            if summary.trigger_type == "date":
                self._restart_backfill(summary.scenario_id, summary.version, now, report)
                continue
            if summary.trigger_type != "broadcast":
                continue
            stored = self.scenarios.version(summary.scenario_id, summary.version)
            if stored is None:
                continue
            at = run_time(stored.scenario, stored.uploaded_at, now)
            if at is None:
                continue
            self._start(stored, at, now, report)
        return report

    def _start(self, stored: ScenarioVersion, at: datetime, now: datetime, report: StartReport) -> None:
        run = run_id(at)
        segments, version = self.segments_for(now), stored.version
        if self.store.start_run(stored.scenario_id, run, version, segments, now):
            report.started += 1
        else:
            claimed = self.store.claim_stalled(stored.scenario_id, run, now)
            if claimed is None:
                return
            segments, version = int(claimed["segments"]), int(claimed["version"])
            report.restarted += 1
        self._enqueue(stored.scenario_id, version, run, at, segments, "broadcast")
        report.segments += segments
        log.info("broadcast run started", extra={"scenario_id": stored.scenario_id, "run": run})

    def start_backfill(self, scenario_id: str, version: int, now: datetime | None = None) -> BackfillStart:
        """Starts the backfill of a date-trigger version once (scenario_loader, on activation):
        `started`; `already` when it was started before (an S3 event seen twice); `none` when the
        version is gone or has no date trigger; `pending` when the run is recorded but its messages
        could not all be enqueued, which tick does again after RESTART_AFTER (the version is live
        already, so the loader must not fail over it)."""
        now = now or clock.now()
        stored = self.scenarios.version(scenario_id, version)
        if stored is None or not isinstance(stored.scenario.trigger, DateTrigger):
            return "none"
        run = backfill_run(version)
        segments = self.segments_for(now)
        if not self.store.start_run(scenario_id, run, version, segments, now, kind="backfill"):
            return "already"
        try:
            self._enqueue(scenario_id, version, run, stored.uploaded_at, segments, "backfill")
        except (RuntimeError, ValueError) as exc:  # ServiceUnavailable is a RuntimeError
            log.warning(
                "backfill not enqueued; tick enqueues it again",
                extra={"scenario_id": scenario_id, "run": run, "error": type(exc).__name__},
            )
            return "pending"
        log.info("date trigger backfill started", extra={"scenario_id": scenario_id, "run": run})
        return "started"

    def _restart_backfill(self, scenario_id: str, version: int, now: datetime, report: StartReport) -> None:
        run = backfill_run(version)
        claimed = self.store.claim_stalled(scenario_id, run, now)
        if claimed is None:
            return
        stored = self.scenarios.version(scenario_id, version)
        if stored is None:
            return
        segments = int(claimed["segments"])
        self._enqueue(scenario_id, version, run, stored.uploaded_at, segments, "backfill")
        report.restarted += 1
        report.segments += segments
        log.info("date trigger backfill enqueued again", extra={"scenario_id": scenario_id, "run": run})

    def _enqueue(
        self, scenario_id: str, version: int, run: str, at: datetime, segments: int, kind: RunKind
    ) -> None:
        """One message per segment, then the run marked enqueued (until then tick may redo it)."""
        messages = [
            SegmentMessage(
                scenario_id=scenario_id,
                version=version,
                run=run,
                run_at=at,
                segment=n,
                total_segments=segments,
                kind=kind,
            )
            for n in range(segments)
        ]
        self.queue.send([m.model_dump_json() for m in messages])
        self.store.mark_enqueued(scenario_id, run)


SegmentOutcome = str  # "done", "continued", "superseded", "missing", "stale" (a backfill no longer needed)


@dataclass
class SegmentReport:
    outcome: SegmentOutcome
    pages: int = 0
    profiles: int = 0
    run: RunReport | None = None

    def metrics(self, kind: str) -> dict[str, int]:
        """The counts this segment adds to CloudWatch, by metric name; entries scheduled only for a
        date trigger's backfill (`kind`), which is all such a run does."""
        if kind == "count":  # an audience count enrols and sends nothing
            return {"AudienceCountProfiles": self.profiles}
        run = self.run or RunReport()
        counts = {"BroadcastProfiles": self.profiles, "ScenarioDispatches": run.dispatched}
        if kind == "backfill":
            counts["DateTriggersScheduled"] = run.scheduled
        return counts


def hand_on(queue: MessageQueue, message: SegmentMessage, start_key: dict[str, Any] | None) -> None:
    """Puts the rest of a segment, from `start_key`, back on the queue as a new message: what a
    worker whose time runs low does after recording how far it got (broadcasts, backfills, counts)."""
    queue.send([message.model_copy(update={"start_key": start_key}).model_dump_json()])


class SegmentCounter(Protocol):
    """Counts a segment of a fanned-out audience count (cems.console.audience_runs)."""

    def run_segment(
        self, message: SegmentMessage, remaining_ms: Callable[[], int], now: datetime | None = None
    ) -> SegmentReport: ...


class BroadcastWorker:
    """Works through one segment of a run (the broadcast function)."""

    def __init__(
        self,
        runner: ScenarioRunner,
        store: BroadcastStorePort,
        profiles: ProfileScanner,
        queue: MessageQueue,
        page_size: int = PAGE_SIZE,
        min_remaining_ms: int = MIN_REMAINING_MS,
        counts: SegmentCounter | None = None,
    ) -> None:
        """`counts`: who counts the segments of audience counts (None: such a message is `missing`)."""
        if not 1 <= page_size <= MAX_MULTICAST_RECIPIENTS:
            # A page's customers are one batch, which holds at most one multicast per content.
            raise ValueError(f"a broadcast page holds 1 to {MAX_MULTICAST_RECIPIENTS} profiles")
        self.runner = runner
        self.store = store
        self.profiles = profiles
        self.queue = queue
        self.page_size = page_size
        self.min_remaining_ms = min_remaining_ms
        self.counts = counts

    def run_segment(
        self, message: SegmentMessage, remaining_ms: Callable[[], int], now: datetime | None = None
    ) -> SegmentReport:
        """Works through the segment from its recorded progress, page by page. A broadcast page is
        opened (its range and customers recorded) before its sends, and recorded done after them:
        the invocation's first page by a write of its own (`_open_page`), every later one by the write
        that records the page before it done. Every progress write is conditional on the pages read,
        so of two workers on one segment the slower one stops (`superseded`)."""
        if message.kind == "count":
            if self.counts is None:
                return SegmentReport("missing")
            return self.counts.run_segment(message, remaining_ms, now)
        stored = self.runner.scenarios.version(message.scenario_id, message.version)
        report = SegmentReport("missing", run=RunReport())
        if stored is None:
            return report
        progress = self.store.progress(message.scenario_id, message.run, message.segment)
        read_pages = None if progress is None else progress.pages
        if progress is None:
            progress = SegmentProgress(
                scenario_id=message.scenario_id, run=message.run, segment=message.segment
            )
            progress.last_key = message.start_key
        if progress.done:
            report.outcome = "done"
            return report
        assert report.run is not None
        ahead: ProfilePage | None = None  # the next page, read and recorded open with the last write
        while True:
            if message.kind == "backfill" and not self._backfill_current(stored):
                report.outcome = "stale"
                return report
            batch = page_batch(message, progress.last_key)
            if message.kind == "backfill":
                # Scheduling is idempotent and keyed by nobody's page: a backfill page needs no range.
                page = self.profiles.scan_profile_page(
                    message.segment, message.total_segments, progress.last_key, self.page_size
                )
                end = page.next_start
                done = self.runner.schedule_date_triggers(stored.scenario, page.profiles, now)
                report.run.add(done)
                progress.scheduled += done.scheduled
            else:
                if ahead is not None:  # read and recorded open by this worker's last write
                    page, ahead = ahead, None
                else:
                    opened = self._open_page(message, progress, read_pages)
                    if opened is None:
                        report.outcome = "superseded"
                        return report
                    progress, read_pages, page = opened
                end = progress.page_end
                for part_batch, part in page_split(batch, page.profiles, progress.page_customers):
                    enrolled = self.runner.enrol_page(
                        stored.scenario,
                        stored.version,
                        part,
                        run_at=message.run_at,
                        batch=part_batch,
                        now=now,
                    )
                    report.run.add(enrolled.run)
                    progress.skipped += enrolled.skipped
                    progress.enrolled += enrolled.run.enrolled
                    progress.dispatched += enrolled.run.dispatched
            progress.profiles += len(page.profiles)
            report.profiles += len(page.profiles)
            progress.scanned += page.scanned
            progress.pages += 1
            report.pages += 1
            progress.last_key = end
            progress.page_open, progress.page_end, progress.page_customers = False, None, None
            progress.done = progress.last_key is None
            carry_on = not progress.done and remaining_ms() >= self.min_remaining_ms
            if carry_on and message.kind == "broadcast":
                # The next page is opened by the same write that records this one done: one write a
                # page, as before pages were opened; only an invocation's first page costs one more.
                ahead = self.profiles.scan_profile_page(
                    message.segment, message.total_segments, progress.last_key, self.page_size
                )
                progress.page_open, progress.page_end = True, ahead.next_start
                progress.page_customers = page_digests(p.customer_id for p in ahead.profiles) or None
            progress.updated_at = clock.now()
            if not self.store.save_progress(progress, read_pages):
                report.outcome = "superseded"
                return report
            read_pages = progress.pages
            if progress.done:
                report.outcome = "done"
                return report
            if not carry_on:
                hand_on(self.queue, message, progress.last_key)
                report.outcome = "continued"
                return report

    def _open_page(
        self, message: SegmentMessage, progress: SegmentProgress, read_pages: int | None
    ) -> tuple[SegmentProgress, int, ProfilePage] | None:
        """The segment's next broadcast page, opened: (the progress with the page recorded open, the
        pages its close is conditional on, the page's profiles); None when another worker recorded
        the segment since (this one stops).

        A page not yet open is read as up to `page_size` profiles from the last key, and recorded
        open (its end and its customers' digests) by one conditional write, before any of its sends.
        A page open already (the worker that opened it died, or is still at it) is read again through
        its recorded end, every profile of the range, those created in it since too. When the write
        finds the page opened meanwhile by another worker at the same place, this one does that page
        as recorded (as a redo does; the first to record it done wins)."""
        segment, total = message.segment, message.total_segments
        for _ in range(2):
            if progress.page_open:
                page = self.profiles.scan_profile_range(segment, total, progress.last_key, progress.page_end)
                return progress, progress.pages, page
            page = self.profiles.scan_profile_page(segment, total, progress.last_key, self.page_size)
            opened = progress.model_copy(
                update={
                    "page_open": True,
                    "page_end": page.next_start,
                    "page_customers": page_digests(p.customer_id for p in page.profiles) or None,
                    "updated_at": clock.now(),
                }
            )
            if self.store.open_page(opened, read_pages):
                return opened, opened.pages, page
            stored = self.store.progress(message.scenario_id, message.run, segment)
            if stored is None or stored.pages != (read_pages or 0) or not stored.page_open:
                return None
            progress = stored
        return None  # pragma: no cover - a page found open is read on the second pass

    def _backfill_current(self, stored: ScenarioVersion) -> bool:
        """Whether the scenario still schedules by this version's trigger: it is active, on this
        version or a later one with the same trigger. Stopped, or its trigger changed since (that
        version has a backfill of its own): this one stops, rather than move entries back."""
        active = self.runner.scenarios.active_version(stored.scenario_id)
        return active is not None and active.scenario.trigger == stored.scenario.trigger


def page_batch(message: SegmentMessage, start_key: dict[str, Any] | None) -> str:
    """The name of the page a segment's Scan reads from `start_key`: the same whenever that page is
    done again (a redelivered or handed-on message resumes from the recorded key), so its shared
    sends are queued under the same keys and its counts under the same marker (ScenarioRunner
    .enrol_page). `<scenario>#<run>#s<segment>of<total>#<digest of the start key>`."""
    key = "start" if start_key is None else json.dumps(start_key, sort_keys=True, default=str)
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    return f"{message.scenario_id}#{message.run}#s{message.segment}of{message.total_segments}#{digest}"


# Bytes of a customer's digest in `SegmentProgress.page_customers`: 500 customers are 2,000 bytes, and
# a customer created since the page was opened has a chance of about 1 in 10 million of matching one.
DIGEST_BYTES = 4


def page_digests(customer_ids: Iterable[str]) -> bytes:
    """The page's customers as `page_customers` records them: the first DIGEST_BYTES of each id's
    SHA-256, sorted, one after another."""
    digests = {hashlib.sha256(c.encode("utf-8")).digest()[:DIGEST_BYTES] for c in customer_ids}
    return b"".join(sorted(digests))


def page_split(
    batch: str, profiles: Sequence[Profile], recorded: bytes | None
) -> list[tuple[str, list[Profile]]]:
    """A page's profiles as the batches they are enrolled in: the customers the page was opened with
    (their digests `recorded`) under `batch`, at most MAX_MULTICAST_RECIPIENTS; any others (created
    inside the page's range after it was opened: a redo) under `<batch>#new1`, `#new2`, ... of up to
    MAX_MULTICAST_RECIPIENTS each, in scan order. Empty batches are left out; a page with no record
    (None) is all under `batch`.

    Why a redone page sends nobody twice: a shared dispatch is keyed by its batch and content
    (`cems.line.multicast`), one per content, and its frozen plan sends each customer once. Every
    attempt puts each customer of the first attempt under `batch` (their digests were recorded before
    any send), where that attempt had them; a customer it did not have was sent under no key of this
    page, and every redo puts that customer under the same `#new<k>`, where the sender extends the
    frozen plan (`LineDispatch.sole_chunk`) with whoever is new to it. Their counts fall under that
    batch's own marker, so they are counted too, once. Not exact only where no page of 500 is: more
    than 500 customers created inside one page's range between two attempts (the `#new<k>` are cut
    by position, which a third attempt may shift), or one whose digest matches a recorded one and
    who does not fit in `batch` any more."""
    if recorded is None:
        return [(batch, list(profiles))] if profiles else []
    known = {recorded[n : n + DIGEST_BYTES] for n in range(0, len(recorded), DIGEST_BYTES)}
    first: list[Profile] = []
    new: list[Profile] = []
    for profile in profiles:
        digest = hashlib.sha256(profile.customer_id.encode("utf-8")).digest()[:DIGEST_BYTES]
        fits = digest in known and len(first) < MAX_MULTICAST_RECIPIENTS
        (first if fits else new).append(profile)
    parts = [(batch, first)] if first else []
    size = MAX_MULTICAST_RECIPIENTS
    parts += [(f"{batch}#new{n // size + 1}", new[n : n + size]) for n in range(0, len(new), size)]
    return parts

"""The scenario engine wired to its tables and queues: what `trigger` and `tick` run.

`ScenarioRunner.on_stored_event(event)` (trigger) gives a stored event to the customer's running
journeys (`engine.on_event`: goals, awaited events, opt-outs), enrols the customer in the active
scenarios the event triggers (`engine.enrol`), and runs what is due now (`engine.advance`).
`ScenarioRunner.tick(now)` (tick) advances every enrolment the sharded due index lists as due.
`ScenarioRunner.enrol_page(...)` (broadcast) enrols a page of a broadcast's audience.

Issue 11: `tick` and `enrol_page` decide many journeys on reads made together (BatchGetItems of
enrolments, profiles, cap counters; the history only where `engine.needs_history` says a decision
reads it), and a page takes its caps and writes its enrolments in transactions, its sends in one
`send_batch` and its counts in one `add_many` (docs/scenario-engine.md, "Decisions in batches").
The order below is the same for a batch as for one journey.

Each change follows the same order: decide on what was read; take the frequency-cap counters the
sends need (refused: release what was taken, decide again with fresh counts); enqueue the sends;
write the enrolment on condition that its revision is still the one read. A lost write is decided
once more on a fresh read; its sends were enqueued under the same dispatch keys as the winner's,
which the sender sends once. Each cap take names its send's dispatch key (`CapRequest.key`), so
the winner and the loser of one send share one count, and a journey redone after its worker died
between taking the caps and writing finds its own take allowed, not in the way (counted once, and
not decided "capped" though its message went out). A lost write keeps its keyed takes: its sends
are enqueued, and go out once (`_lost_write_caps`).

Timers (issue 13, cems.scenario.timers): `tick` first starts a timer for each item due within the
look-ahead, and every write of a journey due that soon starts one; `on_timer` advances its one item
at its moment through the same per-journey path as the tick (a consistent read, the conditional
write), so a timer and a tick, or two timers, racing over one journey advance it once.

Traits (`set_trait`) and rich menus (`rich_menu`) are applied only *after* the enrolment's write
succeeded, by the one writer that won: a loser never applies anything, so two racing decisions
(whose rendered trait values or menus may differ) never both land. The cost is at most once: if the
function dies between the write and applying them, they are not applied (the journey has moved on);
a failure is counted (`trait_failures`, `rich_menu_failures`) and logged without ids. Applying the
same value again (a replay) is harmless: a trait is set, not added to; a menu link replaces the last.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from itertools import islice
from typing import Any, Concatenate, ParamSpec, TypeVar

from pydantic import ValidationError

from cems import clock
from cems.channels.plugin import LinkTracker as LinkTracker  # re-exported: wiring names it
from cems.channels.registry import plugins
from cems.models import ORDER_COMPLETED, Channel, MessageType, OrderCompleted, Profile, StoredEvent
from cems.ports import (
    CapStorePort,
    CountDelta,
    CounterPort,
    DispatchSink,
    EnrolmentStorePort,
    EventHistory,
    JourneyCustomers,
    RichMenuLinker,
    ScenarioReader,
    ServiceUnavailable,
    TimerQueue,
)
from cems.reports.counters import Metric, ReportCell
from cems.scenario.caps import TOTAL, CapScope
from cems.scenario.engine import (
    Advance,
    CapRequest,
    CapView,
    EnrolDecision,
    Enrolment,
    EnrolmentState,
    OtherEnrolment,
    advance,
    enrol,
    exit_enrolment,
    is_due,
    on_event,
    send_channels,
    trigger_matches,
)
from cems.scenario.entrance import Customer as _Customer
from cems.scenario.entrance import Entrance, PageEntries
from cems.scenario.model import DateTrigger, FrequencyCaps, QuietHours, Scenario
from cems.scenario.records import CapCounts, DateSchedule, DueKey, ScenarioSummary
from cems.scenario.timers import LOOK_AHEAD, Timer, TimerOutcome, within_look_ahead
from cems.scenario.timing import date_trigger_due

log = logging.getLogger("cems.scenario")
T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")

# Due keys a tick decides on reads made together (a BatchGetItem reads up to 100 keys).
TICK_BATCH = 100
# Timers a tick hands the timer queue at a time (the adapter sends them ten to a request).
TIMER_BATCH = 100
# The most timers one tick's look-ahead starts (about 200 SendMessageBatch calls, a few seconds). A
# wave of journeys due in the same minute (a broadcast's "1d" wait) would otherwise keep the tick in
# its look-ahead past its time-out, and the due pass would never run; what is left over is advanced
# by the due pass when due, at most a minute late, as before timers.
MAX_LOOK_AHEAD_TIMERS = 2_000
# A cap refusal means another send took the last one in between: deciding again with fresh counts
# skips or defers the send, so a second attempt settles it; the third is a safety margin.
MAX_CAP_ATTEMPTS = 3
# Trigger kinds that enrol on an event (date and broadcast triggers enrol without one).
EVENT_TRIGGERS = frozenset({"event", "line_follow", "survey_answer"})

# RunReport's counts and their CloudWatch metric names (the dashboard and alarms use these names).
RUN_METRICS = {
    "events": "ScenarioEventsSeen",
    "enrolled": "ScenarioEnrolments",
    "due": "ScenarioDue",
    "dispatched": "ScenarioDispatches",
    "unsupported": "ScenarioDispatchesUnsupported",
    "scheduled": "DateTriggersScheduled",
    "traits_set": "ScenarioTraitsSet",
    "trait_failures": "ScenarioTraitFailures",
    "rich_menus_linked": "ScenarioRichMenusLinked",
    "rich_menu_failures": "ScenarioRichMenuFailures",
    "conflicts": "ScenarioWriteConflicts",
    "timers": "ScenarioTimersStarted",
}


@dataclass
class RunReport:
    """Counts of what a call did (for logs and metrics: no ids, no content)."""

    events: int = 0
    enrolled: int = 0
    changed: int = 0
    dispatched: int = 0
    unsupported: int = 0  # dispatches for a channel with no queue configured (not sent)
    traits_set: int = 0  # trait values written to profiles
    trait_failures: int = 0  # profile gone, or the write failed
    rich_menus_linked: int = 0
    rich_menus_unreachable: int = 0  # no reachable, consenting LINE contact (or no linker): skipped
    rich_menu_failures: int = 0  # LINE answered an error or did not answer
    conflicts: int = 0
    lost: int = 0  # changes given up after a second lost race (the winner carried on)
    due: int = 0
    scheduled: int = 0  # date trigger entries scheduled or moved (DATE# items in the due index)
    timers: int = 0  # timers started: the tick's look-ahead, and journeys written due within it
    timer_failures: int = 0  # look-ahead timers the queue refused (the tick finds their items when due)
    missing: list[str] = field(default_factory=list)  # e.g. "profile", "version"

    def log_fields(self) -> dict[str, Any]:
        """Every count, for one structured log line (the missing kinds sorted and de-duplicated)."""
        counts: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        counts["missing"] = sorted(set(self.missing))
        return counts

    def metrics(self) -> dict[str, int]:
        """Every count, by its CloudWatch metric name (`trigger`, `tick` and `broadcast` runs alike)."""
        return {name: getattr(self, count) for count, name in RUN_METRICS.items()}

    def add(self, other: RunReport) -> None:
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, mine + theirs)


@dataclass
class PageReport:
    """What a broadcast page did: the runner's counts, and the customers skipped because this run
    had enrolled them already (a page seen again)."""

    run: RunReport = field(default_factory=RunReport)
    skipped: int = 0


class CapContentionError(RuntimeError):
    """Cap counters kept refusing (far more concurrent sends to one customer than is plausible)."""


@dataclass
class _PageDecision:
    """One customer's entry on a broadcast page: the enrolment read (None: new), the journey
    started, what advancing it did, the caps taken for it and the journeys that yield to it."""

    customer: _Customer
    read: Enrolment | None
    start: Enrolment
    result: Advance
    yielding: list[str]
    taken: list[CapRequest] = field(default_factory=list)

    @property
    def results(self) -> list[Advance]:
        entered = Advance(enrolment=self.start, changed=True)
        return [entered, self.result] if self.result.changed else [entered]


def _sends_timers(
    method: Callable[Concatenate[ScenarioRunner, P], R],
) -> Callable[Concatenate[ScenarioRunner, P], R]:
    """A runner entry point that starts, when it ends (however it ends), the timers of the journeys
    it wrote: one SendMessageBatch for many, and none left behind for a later call of this
    long-lived runner to send late."""

    @functools.wraps(method)
    def sending(self: ScenarioRunner, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._flush_timers()

    return sending


class ScenarioRunner:
    def __init__(
        self,
        scenarios: ScenarioReader,
        enrolments: EnrolmentStorePort,
        caps: CapStorePort,
        customers: JourneyCustomers,
        events: EventHistory,
        sink: DispatchSink,
        limits: FrequencyCaps | None = None,
        rich_menus: RichMenuLinker | None = None,
        counters: CounterPort | None = None,
        quiet_hours: QuietHours | None = None,
        timers: TimerQueue | None = None,
        max_look_ahead_timers: int = MAX_LOOK_AHEAD_TIMERS,
    ) -> None:
        self.scenarios = scenarios
        # None: no timers (every due journey waits for the tick, as before issue 13).
        self.timers = timers
        self.max_look_ahead_timers = max_look_ahead_timers
        # Timers of journeys written in this call, started when the call ends (see _sends_timers).
        self._pending_timers: list[Timer] = []
        self.counters = counters
        self.enrolments = enrolments
        self.caps = caps
        self.customers = customers
        self.events = events
        self.sink = sink
        self.limits = limits or FrequencyCaps()
        # The deployment's quiet hours (CEMS_QUIET_HOURS), which every scenario's window narrows.
        self.quiet_hours = quiet_hours
        self.rich_menus = rich_menus
        # Who enters without an event (a broadcast page), and the scenario reads priority needs.
        self.entrance = Entrance(scenarios, enrolments, events)
        # A batch's cap counters by customer, each used by one decision (see _prefetch_caps).
        self._prefetched_caps: dict[str, CapCounts] = {}

    # -- scenarios ------------------------------------------------------------------------------------

    def summaries(self, now: datetime) -> list[ScenarioSummary]:
        """The active scenarios' summaries, read at most once a minute."""
        return self.entrance.summaries(now)

    def _scenario(self, scenario_id: str, version: int) -> Scenario | None:
        return self.entrance.scenario(scenario_id, version)

    # -- trigger --------------------------------------------------------------------------------------

    @_sends_timers
    def on_stored_event(self, event: StoredEvent, now: datetime | None = None) -> RunReport:
        now = now or clock.now()
        report = RunReport(events=1)
        profile = self.customers.profile(event.customer_id)
        if profile is None:
            report.missing.append("profile")
            return report
        customer = _Customer(profile, partial(self._history, profile, event))
        self._schedule_dates(event, profile, now, report)
        enrolments = {e.scenario_id: e for e in self.enrolments.of_customer(profile.customer_id)}
        for read in enrolments.values():
            if read.ended and read.state is not EnrolmentState.COMPLETED:
                continue  # only a completed journey still converts
            self._retry_once(report, read, partial(self._event_for, event, customer, now))
        for summary in self.summaries(now):
            if summary.trigger_type not in EVENT_TRIGGERS:
                continue
            scenario = self._scenario(summary.scenario_id, summary.version)
            if scenario is None:
                report.missing.append("version")
                continue
            if not trigger_matches(scenario, event):
                continue
            # The customer's enrolments read above serve the entry's decision while nothing of this
            # call has written one (an event's change, an entry, a yield): then they are read again.
            untouched = (report.changed, report.conflicts, report.lost, report.enrolled) == (0, 0, 0, 0)
            known = enrolments if untouched else None
            self._enrol(scenario, summary.version, event, customer, now, report, known)
        return report

    def _history(self, profile: Profile, event: StoredEvent) -> list[StoredEvent]:
        history = self.events.history(profile)
        if all(e.message_id != event.message_id for e in history):
            history = sorted([*history, event], key=lambda e: (e.timestamp, e.message_id))
        return history

    def _event_for(
        self, event: StoredEvent, customer: _Customer, now: datetime, read: Enrolment, report: RunReport
    ) -> bool:
        scenario = self._scenario(read.scenario_id, read.version)
        if scenario is None:
            report.missing.append("version")
            return True
        result = on_event(scenario, read, event, customer.profile, now)
        candidate = read if result is None else result.enrolment
        return self._settle(scenario, read, candidate, result, customer, now, report, event)

    def _enrol(
        self,
        scenario: Scenario,
        version: int,
        event: StoredEvent | None,
        customer: _Customer,
        now: datetime,
        report: RunReport,
        known: Mapping[str, Enrolment] | None = None,
    ) -> None:
        """Enrols the customer if `enrol` lets them in, and runs what is due. `known`: every
        enrolment of the customer, by scenario, read consistently in this call with nothing written
        since: the first attempt decides on it instead of reading this one and the others again (a
        lost write, like a stale `known`, is decided again on fresh reads)."""
        customer_id = customer.profile.customer_id
        for attempt in range(2):
            if attempt == 0 and known is not None:
                existing = known.get(scenario.id)
                others = self._others_among(list(known.values()), scenario.id)
            else:
                existing = self.enrolments.get(customer_id, scenario.id)
                others = self._others(customer_id, scenario.id)
            decision = enrol(
                scenario,
                version,
                customer.profile,
                event,
                existing,
                now,
                events=customer.events_for(scenario, None, event),
                others=others,
            )
            if not decision.entered or decision.enrolment is None:
                return
            start = Advance(enrolment=decision.enrolment, changed=True)
            settled = self._settle(
                scenario, existing, decision.enrolment, start, customer, now, report, event, entering=True
            )
            if settled:
                report.enrolled += 1
                for yielding in decision.yield_scenarios:
                    self._yield(customer_id, yielding, scenario.id, now, report)
                return
            report.conflicts += 1
        report.lost += 1

    def _others(self, customer_id: str, scenario_id: str) -> list[OtherEnrolment]:
        return self.entrance.others(customer_id, scenario_id)

    def _others_among(self, enrolments: Sequence[Enrolment], scenario_id: str) -> list[OtherEnrolment]:
        """The customer's journeys other than in `scenario_id`, as far as priority is concerned."""
        return self.entrance.others_among(enrolments, scenario_id)

    def _yield(
        self, customer_id: str, scenario_id: str, winner: str, now: datetime, report: RunReport
    ) -> None:
        for _ in range(2):
            read = self.enrolments.get(customer_id, scenario_id)
            if read is None or read.ended:
                return
            result = exit_enrolment(read, f"yielded:{winner}", now, read.step_id)
            if self._write(read, result.enrolment) is not None:
                self._count_steps(read, [result])  # a journey waiting at a step leaves it
                report.changed += 1
                return
            report.conflicts += 1
        report.lost += 1

    # -- tick -----------------------------------------------------------------------------------------

    def tick(self, now: datetime | None = None) -> RunReport:
        """Advances every enrolment due at `now` (each re-read consistently: the index may lag).

        The due keys are decided TICK_BATCH at a time, each batch on reads made together: the
        enrolments in consistent BatchGetItems, their customers' profiles in BatchGetItems, every cap
        counter of those customers in BatchGetItems, and the event history only of a journey whose
        decision reads it (`engine.needs_history`). Each item is read once; what is read again is
        what a lost race or a refused cap needs fresh, one by one, as before. Writes stay one
        conditional write per journey (a journey's revision is what keeps its sends once), and so do
        its report counts (a few per journey, each under the journey's own `once` name, which a
        tick redone after a crash must find again: a batch of a tick is not the same set twice).

        Before the due work, the look-ahead: a timer for each item due within LOOK_AHEAD, so those
        fire on their second rather than at the next tick (first, so a long due pass delays none; at
        most max_look_ahead_timers of them, so a wave due at once cannot delay the due pass)."""
        now = now or clock.now()
        report = RunReport()
        if self.timers is not None:
            self._look_ahead(self.timers, now, report)
        for batch in _batched(self.enrolments.iter_due(now), TICK_BATCH):
            report.due += len(batch)
            dates = [key for key in batch if key.kind == "date"]
            if dates:
                self._dates_batch(dates, now, report)
            due = [key for key in batch if key.kind != "date"]
            if due:
                self._due_batch(due, now, report)
            # The timers of journeys this batch left due within the look-ahead, now rather than at
            # the end of a long tick.
            self._flush_timers()
        return report

    def _look_ahead(self, timers: TimerQueue, now: datetime, report: RunReport) -> None:
        """A timer for each item of the due index due in (now, now + LOOK_AHEAD]: one more Query per
        shard (the range after `now`); what is due by `now` is the due pass's. A queue that refuses
        ends the look-ahead: the due pass, and the next ticks, still find those items when due."""
        # At most max_look_ahead_timers items are read at all (the due index is read lazily).
        ahead = islice(self.enrolments.iter_due(now + LOOK_AHEAD, after=now), self.max_look_ahead_timers)
        for keys in _batched(ahead, TIMER_BATCH):
            batch = [Timer.of(k.customer_id, k.scenario_id, k.due_at, k.kind) for k in keys]
            try:
                timers.start(batch)
            except ServiceUnavailable as exc:
                report.timer_failures += len(batch)
                log.warning("timers not started", extra={"timers": len(batch), "error": _error_name(exc)})
                return
            report.timers += len(batch)

    # -- timers ---------------------------------------------------------------------------------------

    @_sends_timers
    def on_timer(self, timer: Timer, now: datetime | None = None) -> tuple[TimerOutcome, RunReport]:
        """A timer arrived: advances its one item if it is still due at the timer's moment, on a
        consistent read and the item's conditional write (the per-journey path the tick takes), so a
        timer racing the tick or a second timer for the same item advances it once.

        Early (SQS delivered it before the due time, or this host's clock is behind the sender's):
        started again for the rest of the wait, never advanced before its time (the engine would find
        nothing due, and the timer would be spent). Raises ServiceUnavailable when that fails, so the
        message comes back. Stale (the item moved, was advanced, or is gone): nothing."""
        now = now or clock.now()
        report = RunReport()
        if timer.due_at > now:
            if self.timers is not None:
                self.timers.start([timer])
                report.timers += 1
            return "early", report
        if timer.kind == "date":
            schedule = self.enrolments.schedule(timer.customer_id, timer.scenario_id)
            if schedule is None or not timer.matches(schedule.due_at):
                return "stale", report
            report.due += 1
            customer = self._customers_of([timer.customer_id]).get(timer.customer_id)
            key = DueKey(timer.customer_id, timer.scenario_id, schedule.due_at, kind="date")
            self._date_due(key, now, report, (schedule, customer))
            moved = report.enrolled + report.changed + report.scheduled
            return ("fired" if moved else "idle"), report
        read = self.enrolments.get(timer.customer_id, timer.scenario_id)
        if read is None or read.ended or not timer.matches(read.due_at):
            return "stale", report
        report.due += 1
        customer = self._customers_of([read.customer_id]).get(read.customer_id)
        if customer is None:
            report.missing.append("profile")
            return "stale", report
        self._retry_once(report, read, partial(self._due, customer, now))
        return ("fired" if report.changed else "idle"), report

    def _timer_after_write(self, written: Enrolment, now: datetime, report: RunReport) -> None:
        """A journey just written to wait until within the look-ahead gets its timer from its writer:
        a one-minute wait or time-out begun between two ticks may fall due before any tick looked
        ahead to it. Sent when the call ends, with the others it wrote."""
        if self.timers is not None and within_look_ahead(written.due_at, now):
            assert written.due_at is not None
            self._pending_timers.append(Timer.of(written.customer_id, written.scenario_id, written.due_at))
            report.timers += 1

    def _flush_timers(self) -> None:
        """Starts the timers noted since the last flush. A refusal is logged, not raised: the journeys
        are written, and the tick advances them when due (a minute late at most)."""
        pending, self._pending_timers = self._pending_timers, []
        if not pending or self.timers is None:
            return
        try:
            self.timers.start(pending)
        except ServiceUnavailable as exc:
            log.warning("timers not started", extra={"timers": len(pending), "error": _error_name(exc)})

    def _due_batch(self, keys: Sequence[DueKey], now: datetime, report: RunReport) -> None:
        pairs = list(dict.fromkeys((key.customer_id, key.scenario_id) for key in keys))
        reads = self.enrolments.get_many(pairs)
        live = [reads[pair] for pair in pairs if pair in reads and not reads[pair].ended]
        customers = self._customers_of([read.customer_id for read in live])
        scenarios = (self._scenario(read.scenario_id, read.version) for read in live)
        channels = _send_channels([s for s in scenarios if s is not None])
        self._prefetch_caps([c.profile.customer_id for c in customers.values()], now, channels)
        try:
            for read in live:
                customer = customers.get(read.customer_id)
                if customer is None:
                    report.missing.append("profile")
                    continue
                self._retry_once(report, read, partial(self._due, customer, now))
        finally:
            self._prefetched_caps.clear()

    def _customers_of(self, customer_ids: Sequence[str]) -> dict[str, _Customer]:
        """The customers of these ids, their profiles read in BatchGetItems; an id merged away is
        followed one by one to the profile that holds it now (as `profile` does)."""
        unique = list(dict.fromkeys(customer_ids))
        if not unique:
            return {}
        read = self.customers.profiles(unique)
        customers: dict[str, _Customer] = {}
        for customer_id in unique:
            profile = read.get(customer_id)
            if profile is not None and profile.merged_into:
                profile = self.customers.profile(customer_id)
            if profile is not None:
                customers[customer_id] = _Customer(profile, partial(self.events.history, profile))
        return customers

    def _prefetch_caps(self, customer_ids: Sequence[str], now: datetime, channels: Sequence[Channel]) -> None:
        """The cap counters of `channels` (those the decisions' scenarios can send on: no other is
        ever consulted) of these customers in BatchGetItems: each customer's first decision uses
        them; a later one (after a send was taken) reads fresh, as a refused take does."""
        if customer_ids and channels:
            self._prefetched_caps = dict(
                self.caps.read_caps_many(list(dict.fromkeys(customer_ids)), self._cap_scopes(channels), now)
            )

    def _due(self, customer: _Customer, now: datetime, read: Enrolment, report: RunReport) -> bool:
        scenario = self._scenario(read.scenario_id, read.version)
        if scenario is None:
            report.missing.append("version")
            return True
        return self._settle(scenario, read, read, None, customer, now, report)

    # -- broadcasts -----------------------------------------------------------------------------------

    @_sends_timers
    def enrol_customer(
        self, scenario: Scenario, version: int, profile: Profile, now: datetime | None = None
    ) -> RunReport:
        """Enrols one customer in a scenario without an event (a broadcast's audience member): the
        same path as an event's enrolment (audience, holdout, re-entry, priority; advance; the sends;
        the conditional write), with the customer's history read once."""
        now = now or clock.now()
        report = RunReport()
        customer = _Customer(profile, partial(self.events.history, profile))
        self._enrol(scenario, version, None, customer, now, report)
        return report

    @_sends_timers
    def enrol_page(
        self,
        scenario: Scenario,
        version: int,
        profiles: Sequence[Profile],
        *,
        run_at: datetime,
        batch: str,
        now: datetime | None = None,
    ) -> PageReport:
        """Enrols a broadcast page's audience: the decisions `enrol_customer` makes one by one, made
        for the whole page on reads made together, with the page's sends, counts and writes in
        batches. `batch` names the page (the same when the page is done again: see BroadcastWorker).

        Reads, each item once: the page's enrolments in this scenario in consistent BatchGetItems (a
        customer entered at or after `run_at` was enrolled by this run already, a page seen again:
        skipped); the customers' other journeys for priority (`Entrance.others_of_page`); the cap counters
        (of the channels the scenario sends on) of the customers who enter outside the holdout, in
        BatchGetItems; the event history only for a decision that reads it
        (`engine.needs_history`). The order of the one-by-one path is kept: decide; take the caps
        (`try_consume_many`, transactions; a refused take is decided again on fresh counts, one by
        one); enqueue every send of the page (`sink.send_batch`, identical LINE content shared);
        count the page's facts (`counters.add_many`, ONE aggregated write under a marker named after
        `batch`); then write the enrolments (`write_many`: transactions of conditional puts). Only a
        journey whose write won applies traits and rich menus, and makes lower-priority journeys
        yield. A write that lost keeps its keyed caps (`_lost_write_caps`); a fresh read tells
        whether this run wrote it (another worker on the same page: nothing more to do) or it is
        decided again one by one.

        Why counts stay exact when a page is done again after a crash: the first attempt counted
        every decision of the page, under the page's marker, before writing any enrolment. The
        second attempt skips the customers the first one enrolled and decides the rest again; its
        add_many finds the marker and counts nothing, so each of them is counted once, by the first
        attempt. (Its decisions are the same: holdout and variants are hashes of the ids, and the
        sends carry the same dispatch keys, which the senders send once. A cap the first attempt took
        for a send was taken under the send's dispatch key: the redo's take of it is allowed and
        counts nothing again, and its decision does not see that take in the way, so the journey is
        written as sent, as its message was; see `CapRequest`.) Two workers
        on one page (a redelivery racing the first) share the marker the same way. A profile created
        inside the page's key range between the two attempts is given by the worker under a batch
        of its own (`<batch>#new1`: BroadcastWorker records each page's range and customers before
        its sends), so it is counted once, under that batch's marker. Not exact: a journey the write
        lost to something other than this run is decided again one by one and counted under its own
        journey's names too, which needs a race of a kind a broadcast scenario rarely has (nothing
        else enrols in it)."""
        now = now or clock.now()
        # Who enters: the decisions the audience count makes too (cems.scenario.entrance).
        entries = self.entrance.decide_page(scenario, version, profiles, now, run_at=run_at)
        page = PageReport(skipped=entries.skipped)
        if not entries.entries:
            return page
        try:
            decided = self._decide_page(scenario, entries, now)
        finally:
            self._prefetched_caps.clear()
        self._carry_out_page(scenario, version, decided, run_at, batch, now, page)
        return page

    def _decide_page(self, scenario: Scenario, entries: PageEntries, now: datetime) -> list[_PageDecision]:
        """Each entering customer's journey run, with the caps its sends need taken. The cap
        counters are read (together) only for the customers who enter outside the holdout: a
        holdout journey sends nothing and consults no cap."""
        entering: list[tuple[_Customer, Enrolment | None, EnrolDecision]] = [
            (e.customer, e.read, e.decision) for e in entries.entering
        ]
        sending = [c.profile.customer_id for c, _, d in entering if d.enrolment and not d.enrolment.holdout]
        self._prefetch_caps(sending, now, _send_channels([scenario]))
        decided: list[_PageDecision] = []
        for customer, read, decision in entering:
            assert decision.enrolment is not None
            start = decision.enrolment
            if start.holdout:
                view = CapView(self.limits, {})
            else:
                view = self._cap_view(customer.profile.customer_id, now, scenario)
            events = customer.events_for(scenario, None)
            result = advance(scenario, start, customer.profile, events, now, view, self.quiet_hours)
            decided.append(_PageDecision(customer, read, start, result, list(decision.yield_scenarios)))
        # One take per customer and channel in a transaction; a step sending twice in one activation
        # (rare) takes its caps one by one.
        single = [d for d in decided if len(d.result.caps) == 1]
        outcomes = self.caps.try_consume_many(
            [(d.customer.profile.customer_id, r.channel, r.cap) for d in single for r in d.result.caps],
            now,
            send_keys=[r.key for d in single for r in d.result.caps],
            totals=[r.total for d in single for r in d.result.caps],
        )
        refused = {id(d) for d, outcome in zip(single, outcomes, strict=True) if not outcome.allowed}
        for d in single:
            if id(d) not in refused:
                d.taken = list(d.result.caps)
        again = [d for d in single if id(d) in refused] + [d for d in decided if len(d.result.caps) > 1]
        for d in again:
            customer_id = d.customer.profile.customer_id
            if id(d) in refused:  # decided again on fresh counts (the page's read served once)
                events = d.customer.events_for(scenario, None)
                d.result, d.taken = self._advance_taking_caps(scenario, d.start, d.customer, events, now)
                continue
            taken = self._take_caps(customer_id, d.result.caps, now)
            if taken is None:
                events = d.customer.events_for(scenario, None)
                d.result, d.taken = self._advance_taking_caps(scenario, d.start, d.customer, events, now)
            else:
                d.taken = taken
        return decided

    def _carry_out_page(
        self,
        scenario: Scenario,
        version: int,
        decided: Sequence[_PageDecision],
        run_at: datetime,
        batch: str,
        now: datetime,
        page: PageReport,
    ) -> None:
        report = page.run
        if not decided:
            return
        dispatches = [dispatch for d in decided for result in d.results for dispatch in result.dispatches]
        if dispatches:
            for outcome in self.sink.send_batch(dispatches, batch):
                if outcome == "enqueued":
                    report.dispatched += 1
                else:
                    report.unsupported += 1
        self._count_page(decided, batch)
        answers = self.enrolments.write_many(
            [(d.results[-1].enrolment, None if d.read is None else d.read.revision) for d in decided], now
        )
        for d, stored in zip(decided, answers, strict=True):
            customer_id = d.customer.profile.customer_id
            if stored is not None:
                report.changed += 1
                report.enrolled += 1
                self._apply_to_profile(d.results, d.customer, now, report)
                for yielding in d.yielding:
                    self._yield(customer_id, yielding, scenario.id, now, report)
                continue
            report.conflicts += 1
            self._lost_write_caps(customer_id, d.taken, now)
            fresh = self.enrolments.get(customer_id, scenario.id)
            if fresh is not None and fresh.entered_at >= run_at:
                continue  # this run enrolled them (another worker on the same page)
            self._enrol(scenario, version, None, d.customer, now, report)

    def _count_page(self, decided: Sequence[_PageDecision], batch: str) -> None:
        """The page's report facts summed per cell and metric, in one `add_many` under the page's
        marker (see `enrol_page` for why a page done again counts nothing twice). Unlike one
        journey's counts, which a failure leaves uncounted (the journey matters more), a page's
        ServiceUnavailable fails the page before any of its journeys is written: the segment
        message comes back and the redo counts them under the same marker, which was not written,
        and sends nothing twice (same keys, keyed cap takes, the page's recorded range)."""
        if self.counters is None:
            return
        sums: dict[tuple[ReportCell, Metric], int] = {}
        for d in decided:
            for cell, metric, _, _ in _facts(d.read, d.results, None):
                sums[(cell, metric)] = sums.get((cell, metric), 0) + 1
            for delta in _step_journey_counts(d.read, d.results)[1]:
                sums[(delta.cell, delta.metric)] = sums.get((delta.cell, delta.metric), 0) + delta.n
        if not sums:
            return
        deltas = [CountDelta(cell, metric, n) for (cell, metric), n in sums.items()]
        self.counters.add_many(deltas, once=f"page#{batch}")

    def _in_play(self, now: datetime) -> list[str]:
        """The ids of the scenarios that may have journeys (active or stopped)."""
        return self.entrance.in_play(now)

    # -- date triggers --------------------------------------------------------------------------------

    def _date_scenarios(self, now: datetime) -> list[tuple[ScenarioSummary, Scenario, DateTrigger]]:
        found: list[tuple[ScenarioSummary, Scenario, DateTrigger]] = []
        for summary in self.summaries(now):
            if summary.trigger_type != "date":
                continue
            scenario = self._scenario(summary.scenario_id, summary.version)
            if scenario is not None and isinstance(scenario.trigger, DateTrigger):
                found.append((summary, scenario, scenario.trigger))
        return found

    def _schedule_dates(self, event: StoredEvent, profile: Profile, now: datetime, report: RunReport) -> None:
        """Schedules (or moves) the pending entry of each date trigger whose date this event may have
        changed: only this customer's, never a scan of customers."""
        for _, scenario, trigger in self._date_scenarios(now):
            if _may_change(trigger.date, event):
                report.add(self.schedule_date_trigger(scenario, profile, now))

    def schedule_date_triggers(
        self, scenario: Scenario, profiles: Sequence[Profile], now: datetime | None = None
    ) -> RunReport:
        """`schedule_date_trigger` for a backfill page: the page's pending entries read in
        BatchGetItems (`schedules_many`) first, so a profile whose entry is already at its moment
        costs no request, and one to write costs its conditional write only."""
        now = now or clock.now()
        report = RunReport()
        if not isinstance(scenario.trigger, DateTrigger) or not profiles:
            return report
        read = self.enrolments.schedules_many([(p.customer_id, scenario.id) for p in profiles])
        for profile in profiles:
            found = read.get((profile.customer_id, scenario.id))
            report.add(self.schedule_date_trigger(scenario, profile, now, preread=(found,)))
        return report

    def schedule_date_trigger(
        self,
        scenario: Scenario,
        profile: Profile,
        now: datetime | None = None,
        *,
        preread: tuple[DateSchedule | None] | None = None,
    ) -> RunReport:
        """Schedules (or moves, or drops) one customer's pending entry for a date trigger scenario from
        the profile as it is now: what `_schedule_dates` does after an event that changed the date,
        for a backfill of profiles that had the date before the scenario was uploaded. Idempotent: an
        entry already at the moment is left alone; one already due is left to tick (which re-checks).
        `preread`: the entry as read in a batch (its first attempt decides on it; a conflict reads
        it again)."""
        now = now or clock.now()
        report = RunReport()
        if not isinstance(scenario.trigger, DateTrigger):
            return report
        due = date_trigger_due(scenario.trigger, profile, scenario.zone, now)
        for attempt in range(2):
            if attempt == 0 and preread is not None:
                read = preread[0]
            else:
                read = self.enrolments.schedule(profile.customer_id, scenario.id)
            if read is None and due is None:
                break
            if read is not None and (due == read.due_at or (due is None and read.due_at <= now)):
                break
            if due is None:
                assert read is not None
                done = self.enrolments.delete_schedule(read)
            else:
                done = self.enrolments.put_schedule(profile.customer_id, scenario.id, due, read)
            if done:
                report.scheduled += 0 if due is None else 1
                break
            report.conflicts += 1
        return report

    def _dates_batch(self, keys: Sequence[DueKey], now: datetime, report: RunReport) -> None:
        """A batch's due date entries on reads made together: the entries (`schedules_many`), the
        profiles, the customers' enrolments in every scenario in play (for the entry's re-entry
        rule and priority, as `Entrance.others_of_page` reads them) and their cap counters, in BatchGetItems.
        A customer's second entry in the batch, after the first wrote, reads again one by one."""
        pairs = list(dict.fromkeys((key.customer_id, key.scenario_id) for key in keys))
        schedules = self.enrolments.schedules_many(pairs)
        due = [schedules[pair] for pair in pairs if pair in schedules and schedules[pair].due_at <= now]
        if not due:
            return
        customers = self._customers_of([read.customer_id for read in due])
        ids = list(dict.fromkeys(c.profile.customer_id for c in customers.values()))
        known = self._enrolments_in_play(ids, now)
        self._prefetch_caps(
            ids, now, _send_channels(scenario for _, scenario, _ in self._date_scenarios(now))
        )
        written: set[str] = set()
        try:
            for read in due:
                customer = customers.get(read.customer_id)
                key = DueKey(read.customer_id, read.scenario_id, read.due_at, kind="date")
                theirs = None
                if customer is not None and known is not None and customer.profile.customer_id not in written:
                    theirs = known.get(customer.profile.customer_id, {})
                before = report.enrolled + report.changed + report.conflicts
                self._date_due(key, now, report, (read, customer), theirs)
                if customer is not None and report.enrolled + report.changed + report.conflicts != before:
                    written.add(customer.profile.customer_id)
        finally:
            self._prefetched_caps.clear()

    def _enrolments_in_play(
        self, customer_ids: Sequence[str], now: datetime
    ) -> dict[str, dict[str, Enrolment]]:
        """Every enrolment of these customers in the scenarios in play, by customer and scenario (see
        `Entrance.others_of_page` for why that is all of them)."""
        in_play = self._in_play(now)
        scenario_ids = sorted(set(in_play) | {s.scenario_id for s in self.summaries(now)})
        found: dict[str, dict[str, Enrolment]] = {customer_id: {} for customer_id in customer_ids}
        if customer_ids and scenario_ids:
            pairs = [(c, s) for c in customer_ids for s in scenario_ids]
            for (customer_id, scenario_id), enrolment in self.enrolments.get_many(pairs).items():
                found[customer_id][scenario_id] = enrolment
        return found

    def _date_due(
        self,
        key: DueKey,
        now: datetime,
        report: RunReport,
        preread: tuple[DateSchedule | None, _Customer | None] | None = None,
        known: Mapping[str, Enrolment] | None = None,
    ) -> None:
        """A date trigger's pending entry is due: enrol if the date still gives this moment; if it
        moved, reschedule (or drop a date that is gone). The entry is claimed first (moved to next
        year, or removed) by a conditional write, so two ticks never both enrol. `preread`: the entry
        and the customer read in a batch; `known`: the customer's enrolments (see `_enrol`)."""
        if preread is None:
            read = self.enrolments.schedule(key.customer_id, key.scenario_id)
            profile = None
        else:
            read, customer = preread
            profile = None if customer is None else customer.profile
        if read is None or read.due_at > now:
            return
        match = [found for found in self._date_scenarios(now) if found[0].scenario_id == key.scenario_id]
        if preread is None:
            profile = self.customers.profile(key.customer_id)
        if not match or profile is None:  # the scenario stopped or is no date trigger; the customer is gone
            if profile is None:
                report.missing.append("profile")
            self.enrolments.delete_schedule(read)
            return
        summary, scenario, trigger = match[0]
        due = date_trigger_due(trigger, profile, scenario.zone, read.due_at)
        if due != read.due_at:
            if due is None:
                self.enrolments.delete_schedule(read)
            elif self.enrolments.put_schedule(key.customer_id, key.scenario_id, due, read):
                report.scheduled += 1
            return
        following = (
            date_trigger_due(trigger, profile, scenario.zone, due + timedelta(microseconds=1))
            if trigger.yearly
            else None
        )
        if following is None:
            claimed = self.enrolments.delete_schedule(read)
        else:
            claimed = self.enrolments.put_schedule(key.customer_id, key.scenario_id, following, read)
        if not claimed:
            report.conflicts += 1
            return
        customer = _Customer(profile, partial(self.events.history, profile))
        self._enrol(scenario, summary.version, None, customer, now, report, known)

    # -- carrying out ---------------------------------------------------------------------------------

    def _retry_once(
        self,
        report: RunReport,
        read: Enrolment,
        decide: Callable[[Enrolment, RunReport], bool],
    ) -> None:
        """`decide(read, report)`; on a lost write, once more on a fresh read."""
        if decide(read, report):
            return
        report.conflicts += 1
        fresh = self.enrolments.get(read.customer_id, read.scenario_id)
        if fresh is None or decide(fresh, report):
            return
        report.lost += 1

    def _settle(
        self,
        scenario: Scenario,
        read: Enrolment | None,
        candidate: Enrolment,
        decided: Advance | None,
        customer: _Customer,
        now: datetime,
        report: RunReport,
        event: StoredEvent | None = None,
        *,
        entering: bool = False,
    ) -> bool:
        """Advances `candidate` (the enrolment as `decided` left it, or as read) if it is due now,
        carries out what comes back and writes it on condition of `read` (None: a new enrolment).
        `entering`: `candidate` is a journey `enrol` just started (on `event`, if any).
        False: someone else wrote the enrolment since it was read; nothing of ours stays counted."""
        results = [decided] if decided is not None and decided.changed else []
        taken: list[CapRequest] = []
        events = customer.events_for(scenario, None if entering else candidate, event)
        if not candidate.ended and is_due(candidate, events, now):
            result, taken = self._advance_taking_caps(scenario, candidate, customer, events, now)
            if result.changed:
                results.append(result)
        if not results:
            return True
        for result in results:
            self._carry_out(result, report)
        self._count(read, results, event)
        if self._write(read, results[-1].enrolment) is None:
            self._lost_write_caps(candidate.customer_id, taken, now)
            return False
        self._count_steps(read, results)
        report.changed += 1
        self._timer_after_write(results[-1].enrolment, now, report)
        self._apply_to_profile(results, customer, now, report)
        return True

    def _count(self, read: Enrolment | None, results: Sequence[Advance], event: StoredEvent | None) -> None:
        """Report counters for what these results did (docs/reports.md says how a report reads them).
        Counted before the enrolment write, as sends are enqueued: each fact under a `once` name of
        the journey (customer, scenario, entry, step), so the winner and any loser of a race, or a
        redelivered event, count it once, and a crash after the write loses nothing."""
        if self.counters is None or not results:
            return
        for cell, metric, once, revenue in _facts(read, results, event):
            try:
                self.counters.add(cell, metric, once=once, revenue=revenue)
            except ServiceUnavailable as exc:  # a report is worth less than the journey
                error = type(exc.__cause__ or exc).__name__
                log.warning("report counter not added", extra={"metric": metric, "error": error})

    def _count_steps(self, read: Enrolment | None, results: Sequence[Advance]) -> None:
        """Entered and waiting per step, counted once the change's write has won: a race on one
        revision decided two ways (an order arriving as the wait times out) must count the winner's
        steps, and the marker (named after that revision) lets only the first count in. A crash
        between the write and this count loses the count, as a report may."""
        if self.counters is None or not results:
            return
        marker, deltas = _step_journey_counts(read, results)
        if deltas:
            try:
                self.counters.add_many(deltas, once=marker)
            except ServiceUnavailable as exc:  # a report is worth less than the journey
                error = type(exc.__cause__ or exc).__name__
                log.warning("report counter not added", extra={"metric": "steps", "error": error})

    def _advance_taking_caps(
        self,
        scenario: Scenario,
        candidate: Enrolment,
        customer: _Customer,
        events: Sequence[StoredEvent],
        now: datetime,
    ) -> tuple[Advance, list[CapRequest]]:
        """`advance` on the customer's cap counters, then takes the counters its sends need; refused
        (another send took the last one in between): decided again on fresh counts."""
        for _ in range(MAX_CAP_ATTEMPTS):
            view = self._cap_view(candidate.customer_id, now, scenario)
            result = advance(scenario, candidate, customer.profile, events, now, view, self.quiet_hours)
            consumed = self._take_caps(candidate.customer_id, result.caps, now)
            if consumed is not None:
                return result, consumed
        raise CapContentionError(f"cap counters kept refusing after {MAX_CAP_ATTEMPTS} attempts")

    def _cap_view(self, customer_id: str, now: datetime, scenario: Scenario) -> CapView:
        """The customer's counters of every channel the scenario can send on, in one read (which
        channel a step sends on is decided after; no other channel's counter is ever consulted, and
        a scenario that sends nothing needs none). A batch's read of them serves the customer's
        first decision only (see _prefetch_caps)."""
        channels = _send_channels([scenario])
        if not channels:
            return CapView(self.limits, {})
        read = self._prefetched_caps.pop(customer_id, None)
        if read is None:
            read = self.caps.read_caps_many([customer_id], self._cap_scopes(channels), now)[customer_id]
        return CapView(self.limits, read.counts, read.holders)

    def _cap_scopes(self, channels: Sequence[Channel]) -> list[CapScope]:
        """The counters a decision reads: the channels', and the total's where the deployment caps
        it (the same partition: read in the same BatchGetItem, no request more)."""
        return [*channels, TOTAL] if self.limits.total is not None else list(channels)

    def _take_caps(
        self, customer_id: str, requests: Sequence[CapRequest], now: datetime
    ) -> list[CapRequest] | None:
        """Takes every counter the sends need; None (and nothing taken) if one is refused. A take
        its key had made already (an earlier attempt at the same send, which may have enqueued it)
        is not given back on a refusal: only what this call counted is."""
        taken: list[CapRequest] = []
        counted: list[CapRequest] = []
        for request in requests:
            outcome = self.caps.try_consume(
                customer_id, request.channel, request.cap, now, request.key, request.total
            )
            if not outcome.allowed:
                for done in counted:
                    self.caps.release(customer_id, done.channel, now, done.key, done.total is not None)
                return None
            taken.append(request)
            if not outcome.already:
                counted.append(request)
        return taken

    def _lost_write_caps(self, customer_id: str, taken: Sequence[CapRequest], now: datetime) -> None:
        """The caps taken for a change whose write lost. A keyed take stays: its send was enqueued
        and goes out once (the sender sends a dispatch key once), and the winner deciding the same
        send took it under the same key, so the one message is counted once either way (giving it
        back would leave the winner's message uncounted). An unkeyed take (none that `advance`
        makes) is given back, as the winner took its own."""
        for request in taken:
            if request.key is None:
                self.caps.release(customer_id, request.channel, now, total=request.total is not None)

    def _carry_out(self, result: Advance, report: RunReport) -> None:
        for dispatch in result.dispatches:
            if self.sink.send(dispatch) == "enqueued":
                report.dispatched += 1
            else:
                report.unsupported += 1

    def _apply_to_profile(
        self, results: Sequence[Advance], customer: _Customer, now: datetime, report: RunReport
    ) -> None:
        """Traits and the rich menu of a change whose enrolment write has succeeded (see the module
        docstring for why only then). Several values for one trait: the last; several menus: the last."""
        traits = {t.trait: t.value for result in results for t in result.traits}
        switches = [switch for result in results for switch in result.rich_menus]
        scenario_id = results[-1].enrolment.scenario_id
        if traits:
            try:
                written = self.customers.set_traits(customer.profile.customer_id, traits, now)
            except ServiceUnavailable as exc:  # the enrolment moved on: count and log it
                error = type(exc.__cause__ or exc).__name__
                log.warning("scenario traits not set", extra={"scenario_id": scenario_id, "error": error})
                written = False
            if written:
                report.traits_set += len(traits)
                customer.traits_written(traits)
            else:
                report.trait_failures += len(traits)
        if not switches:
            return
        line_user_id = customer.profile.line_contact()
        if line_user_id is None or self.rich_menus is None:
            report.rich_menus_unreachable += 1
            return
        failure = self.rich_menus.link(line_user_id, switches[-1].rich_menu_id)
        if failure is None:
            report.rich_menus_linked += 1
        else:
            report.rich_menu_failures += 1
            # The scenario and the reason only: never the LINE user id.
            log.warning("rich menu not linked", extra={"scenario_id": scenario_id, "reason": failure})

    def _write(self, read: Enrolment | None, new: Enrolment) -> Enrolment | None:
        if read is None:
            return self.enrolments.create(new.model_copy(update={"revision": 0}))
        return self.enrolments.save(new.model_copy(update={"revision": read.revision}))


def _facts(
    read: Enrolment | None, results: Sequence[Advance], event: StoredEvent | None
) -> list[tuple[ReportCell, Metric, str, Decimal | None]]:
    """The report facts of a journey's change: (cell, metric, the fact's `once` name, revenue)."""
    first = results[0].enrolment
    journey = f"{first.customer_id}#{first.scenario_id}#{first.entry}"
    facts: list[tuple[ReportCell, Metric, str, Decimal | None]] = []
    if read is None:
        cell = ReportCell(first.scenario_id, first.version, holdout=first.holdout)
        facts.append((cell, Metric.ENROLLED, f"enrolled#{journey}", None))
    for result in results:
        e = result.enrolment
        for record in result.log:
            step_cell = ReportCell(e.scenario_id, e.version, record.step_id, e.variant, e.holdout)
            if record.what == "split":
                cell = ReportCell(e.scenario_id, e.version, None, record.detail, e.holdout)
                facts.append((cell, Metric.ENROLLED, f"split#{journey}#{record.step_id}", None))
            elif record.what == "held_out":
                facts.append((step_cell, Metric.HELD_OUT, f"held_out#{journey}#{record.step_id}", None))
            elif record.what in ("capped_skip", "capped_gave_up"):
                facts.append((step_cell, Metric.CAPPED, f"capped#{journey}#{record.step_id}", None))
            elif record.what == "deferred":
                facts.append((step_cell, Metric.DEFERRED, f"deferred#{journey}#{record.step_id}", None))
            elif record.what == EnrolmentState.EXITED.value and record.detail.startswith("unreachable:"):
                # The send was not made: the customer opted out of, or cannot be reached on, the channel.
                once = f"suppressed#{journey}#{record.step_id}"
                facts.append((step_cell, Metric.SUPPRESSED, once, None))
            elif record.what in _CHOICES:
                # The channel chosen is the dispatch's that the step made in this activation.
                sent = next((d for d in result.dispatches if d.step_id == record.step_id), None)
                if sent is not None:
                    cell = ReportCell(
                        e.scenario_id, e.version, record.step_id, e.variant, e.holdout, sent.channel.value
                    )
                    facts.append((cell, _CHOICES[record.what], f"chosen#{sent.key}", None))
            elif record.what == "converted":
                # Attributed to the last send before it (its step and channel); a holdout customer,
                # or one who converts before any send, at the scenario level with no channel.
                channel = e.last_send_channel.value if e.last_send_channel is not None else None
                cell = ReportCell(e.scenario_id, e.version, e.last_send_step, e.variant, e.holdout, channel)
                facts.append((cell, Metric.CONVERTED, f"converted#{journey}", _revenue(event)))
    return facts


# A `best` send's choice as the engine logs it (engine._Run.send), as the report counts it.
_CHOICES = {m.value: m for m in (Metric.CHOSEN_BY_ENGAGEMENT, Metric.CHOSEN_BY_DEFAULT)}


_WAITING_STATES = frozenset({EnrolmentState.WAITING, EnrolmentState.WAITING_EVENT})


def _waiting_at(enrolment: Enrolment | None) -> str | None:
    """The step a journey waits at (a wait, a wait for an event, a send held for its window or its
    cap), or None when it is not waiting."""
    if enrolment is None or enrolment.state not in _WAITING_STATES:
        return None
    return enrolment.step_id


def _step_journey_counts(read: Enrolment | None, results: Sequence[Advance]) -> tuple[str, list[CountDelta]]:
    """Entered and waiting per step, as one count under one `once` marker (the change's): each step
    a result ran is an arrival, except the send step a journey waited at (for its window or its
    cap), which it had entered before; a wait left and a wait begun when the change moves the
    journey. The marker holds the revision the change was decided on, so a step entered again later
    (a loop) counts again, while the winner and the loser of a race on the same revision (the same
    change) count once. One add_many per change, not a transaction per fact: a change of three steps
    and a wait is one write of a few cells."""
    first = results[0].enrolment
    revision = "new" if read is None else str(read.revision)
    marker = f"steps#{first.customer_id}#{first.scenario_id}#{first.entry}#r{revision}"
    deltas: list[CountDelta] = []
    before = read
    for result in results:
        e = result.enrolment
        steps = list(result.steps_run)
        # A journey waiting at a send step (its window, its cap) runs that step again; one at a
        # wait or a wait for an event moves on to another step; an active one (just entered, or
        # paused) is at a step it has not run yet.
        resumed = (
            before is not None
            and before.state is EnrolmentState.WAITING
            and before.entry == e.entry
            and steps[:1] == [before.step_id]
        )
        for step_id in steps[1:] if resumed else steps:
            deltas.append(
                CountDelta(
                    ReportCell(e.scenario_id, e.version, step_id, e.variant, e.holdout), Metric.ENTERED
                )
            )
        before = e
    last = results[-1].enrolment
    left, waiting = _waiting_at(read), _waiting_at(last)
    if read is not None and left is not None and read.entry == last.entry:
        cell = ReportCell(read.scenario_id, read.version, left, read.variant, read.holdout)
        deltas.append(CountDelta(cell, Metric.WAIT_ENDED))
    if waiting is not None:
        cell = ReportCell(last.scenario_id, last.version, waiting, last.variant, last.holdout)
        deltas.append(CountDelta(cell, Metric.WAIT_BEGUN))
    return marker, deltas


def erased_journey_counts(enrolment: Enrolment) -> tuple[str, list[CountDelta]]:
    """The report counts of a journey deleted with its customer (an erasure): a journey waiting at a
    step leaves it. Under the marker a change decided on the same revision would count under, so a
    journey a tick moves while the erasure runs leaves its step once."""
    e = enrolment
    marker = f"steps#{e.customer_id}#{e.scenario_id}#{e.entry}#r{e.revision}"
    waiting = _waiting_at(enrolment)
    if waiting is None:
        return marker, []
    return marker, [
        CountDelta(ReportCell(e.scenario_id, e.version, waiting, e.variant, e.holdout), Metric.WAIT_ENDED)
    ]


def _send_channels(scenarios: Iterable[Scenario]) -> list[Channel]:
    """Every channel a send step of these scenarios may send on (`advance` consults the caps of the
    channel it sends on, always one of its step's): the cap counters worth reading for them."""
    wanted = {channel for scenario in scenarios for channel in send_channels(scenario)}
    return [p.channel for p in plugins() if p.channel in wanted]


def _error_name(exc: BaseException) -> str:
    return type(exc.__cause__ or exc).__name__


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _revenue(event: StoredEvent | None) -> Decimal | None:
    """What a converting `Order Completed` brought in (attributed to the journey it converted)."""
    if event is None or event.type is not MessageType.TRACK or event.event != ORDER_COMPLETED:
        return None
    try:
        return OrderCompleted.model_validate(event.properties).amount()
    except ValidationError:
        return None


def _may_change(source: str, event: StoredEvent) -> bool:
    """Whether a stored event may have changed the profile date a date trigger watches: purchases
    the purchase dates, identify calls the traits; any event may be a customer's first."""
    if source in ("last_purchase_at", "first_purchase_at"):
        return event.type is MessageType.TRACK and event.event == ORDER_COMPLETED
    if source.startswith("traits."):
        return event.type is MessageType.IDENTIFY
    return source == "first_seen_at"

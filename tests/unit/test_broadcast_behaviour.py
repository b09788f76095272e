"""Broadcasts and date-trigger backfills on in-memory stores (tests/fakes; the broadcast store and the
profile scan are held to the DynamoDB adapters' contract by tests/integration/test_broadcast_contract.py):
tick starts a run once; the worker works through the segments of the parallel profile scan, handing
on when time runs low and resuming from recorded progress, so every customer in the audience outside
the holdout gets exactly one dispatch; a backfill schedules each profile's pending date entry once.
The handlers' path (scenario_loader, broadcast, tick under moto) is in tests/integration."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from cems import clock
from cems.line.dispatch import MAX_MULTICAST_RECIPIENTS
from cems.line.sender import LineSender
from cems.models import Profile
from cems.reports.counters import Metric, ReportCell
from cems.scenario.assignment import in_holdout
from cems.scenario.broadcast import (
    BroadcastStarter,
    BroadcastWorker,
    SegmentMessage,
    backfill_run,
    page_digests,
    page_split,
    run_id,
    run_time,
)
from cems.scenario.model import FrequencyCaps, Scenario

from tests.fakes.broadcasts import InMemoryBroadcastStore, InMemoryQueue
from tests.fakes.customers import _segment
from tests.fakes.journey_world import JourneyWorld, line_user_id
from tests.fakes.line import InMemoryLineDeliveries, InMemoryLineGateway
from tests.fakes.scenario_io import InMemoryReportCounters

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
AT = NOW + timedelta(minutes=5)
SCENARIO_ID = "broadcast-test"
HOLDOUT = 10
SEGMENTS = 4
CUSTOMERS = 300

DOCUMENT: dict[str, Any] = {
    "id": SCENARIO_ID,
    "name": "新茶のご案内 (test)",
    "version": 1,
    "priority": 50,
    "trigger": {"type": "broadcast", "at": "2026-05-01T12:05:00+09:00"},
    "audience": {"kind": "reachable", "channel": "line"},
    "entry": {"reentry": "after_exit", "holdout_percent": HOLDOUT},
    "steps": [
        {
            "id": "announce",
            "type": "send",
            "channel": "line",
            "line": [{"type": "text", "text": "新茶が入荷しました🍃"}],
        },
        {"id": "done", "type": "end"},
    ],
}


class Broadcasts(JourneyWorld):
    """A journey world with the broadcast store, BroadcastQueue, a starter and a worker."""

    def __init__(self) -> None:
        super().__init__()
        self.store = InMemoryBroadcastStore()
        self.queue = InMemoryQueue()
        self.starter = BroadcastStarter(self.scenarios, self.store, self.queue, SEGMENTS)
        self.worker = BroadcastWorker(self.runner, self.store, self.customers, self.queue, page_size=15)

    def messages(self) -> list[SegmentMessage]:
        return [SegmentMessage.model_validate_json(body) for body in self.queue.take()]

    def work(self, remaining: list[int] | None = None) -> int:
        """Runs every message on the queue (and those handed on) to the end; the invocations. With
        `remaining`, time runs low after the first page of every other invocation."""
        invocations = 0
        while messages := self.messages():
            for message in messages:
                invocations += 1
                ms = iter(remaining if remaining and invocations % 2 else [])
                self.worker.run_segment(message, partial(next, ms, 60_000))
        return invocations

    def recipients(self) -> Counter[str]:
        return Counter(r for dispatch in self.sent() for r in dispatch["recipients"])


@pytest.fixture
def world() -> Iterator[Broadcasts]:
    clock.freeze(NOW)
    yield Broadcasts()
    clock.reset()


def _audience(world: Broadcasts) -> set[str]:
    """300 customers: every third without LINE (outside the audience); the rest, less the holdout."""
    expected: set[str] = set()
    for n in range(CUSTOMERS):
        customer_id = f"cus_{n:04d}"
        line = n % 3 != 0
        world.customer(customer_id, line=line)
        if line and not in_holdout(SCENARIO_ID, customer_id, HOLDOUT):
            expected.add(customer_id)
    return expected


# ------------------------------------------------------------------------------------------ broadcasts


def test_a_broadcast_reaches_every_customer_in_its_audience_once(world: Broadcasts) -> None:
    world.upload(DOCUMENT)
    expected = _audience(world)
    assert 150 < len(expected) < 200  # some outside the audience, some held out

    assert world.starter.start_due().started == 0  # not yet
    clock.advance(6 * 60)
    first, second = world.starter.start_due(), world.starter.start_due()
    assert (first.started, first.segments) == (1, SEGMENTS)
    assert (second.started, second.restarted, second.segments) == (0, 0, 0)  # started once

    messages = world.messages()
    assert sorted(m.segment for m in messages) == list(range(SEGMENTS))
    world.queue.send([m.model_dump_json() for m in messages])
    assert world.work(remaining=[1_000]) > SEGMENTS  # segments were handed on when time ran low

    recipients = world.recipients()
    assert set(recipients) == expected and set(recipients.values()) == {1}
    run = run_id(AT)
    progress = [world.store.progress(SCENARIO_ID, run, n) for n in range(SEGMENTS)]
    assert all(p is not None and p.done for p in progress)
    assert sum(p.profiles for p in progress if p is not None) == CUSTOMERS
    assert sum(p.dispatched for p in progress if p is not None) == len(expected)

    # A segment message delivered again sends nothing: finished segments are not scanned again...
    for message in messages:
        report = world.worker.run_segment(message, lambda: 60_000)
        assert report.outcome == "done" and report.profiles == 0
    # ...and a segment whose progress was lost (died before recording) skips who this run enrolled.
    world.store.forget_progress(SCENARIO_ID, run, 0)
    report = world.worker.run_segment(messages[0], lambda: 60_000)
    assert report.outcome == "done" and report.profiles > 0
    assert report.run is not None and report.run.dispatched == 0
    assert world.sent() == [] and world.queue.bodies == []


def test_a_redelivered_segment_resumes_where_it_stopped(world: Broadcasts) -> None:
    world.upload(DOCUMENT)
    expected = _audience(world)
    clock.advance(6 * 60)
    world.starter.start_due()
    messages = world.messages()
    # The first invocation of segment 0 stops after a page (its hand-on message is lost) ...
    first = world.worker.run_segment(messages[0], lambda: 0)
    assert first.outcome == "continued" and first.pages == 1
    world.queue.take()
    # ... and the original message, redelivered, carries on from the recorded page.
    assert world.worker.run_segment(messages[0], lambda: 60_000).outcome == "done"
    for message in messages[1:]:
        world.worker.run_segment(message, lambda: 60_000)
    recipients = world.recipients()
    assert set(recipients) == expected and set(recipients.values()) == {1}


def test_two_workers_on_one_segment_the_slower_one_stops(world: Broadcasts) -> None:
    world.upload(DOCUMENT)
    _audience(world)
    clock.advance(6 * 60)
    world.starter.start_due()
    message = world.messages()[0]
    save = world.store.save_progress
    raced = False

    def racing_save(progress: Any, read_pages: int | None) -> bool:
        nonlocal raced
        if not raced:  # the other worker records its first page in between
            raced = True
            assert world.worker.run_segment(message, lambda: 0).outcome == "continued"
        return save(progress, read_pages)

    world.store.save_progress = racing_save  # type: ignore[method-assign]
    assert world.worker.run_segment(message, lambda: 60_000).outcome == "superseded"


def test_a_broadcast_run_not_enqueued_in_full_is_enqueued_again_after_a_while_once(world: Broadcasts) -> None:
    world.upload(DOCUMENT)
    clock.advance(6 * 60)
    world.queue.unavailable = True
    with pytest.raises(RuntimeError):
        world.starter.start_due()
    world.queue.unavailable = False
    assert world.starter.start_due().restarted == 0  # not before RESTART_AFTER
    clock.advance(6 * 60)
    report = world.starter.start_due()
    assert (report.started, report.restarted, report.segments) == (0, 1, SEGMENTS)
    assert len(world.messages()) == SEGMENTS
    clock.advance(6 * 60)
    assert world.starter.start_due().restarted == 0


def test_run_times() -> None:
    scenario = Scenario.model_validate({**DOCUMENT, "trigger": {"type": "broadcast", "cron": "0 10 * * *"}})
    uploaded = datetime(2026, 4, 1, tzinfo=UTC)
    ten_jst = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    assert run_time(scenario, uploaded, ten_jst - timedelta(minutes=1)) is None
    assert run_time(scenario, uploaded, ten_jst) == ten_jst
    assert run_time(scenario, uploaded, ten_jst + timedelta(minutes=30)) == ten_jst
    assert run_time(scenario, uploaded, ten_jst + timedelta(hours=2)) is None  # too late to catch up
    assert run_time(scenario, ten_jst + timedelta(minutes=1), ten_jst + timedelta(minutes=30)) is None
    assert run_id(ten_jst) == "20260501T0100Z"


# ------------------------------------------------------------------------------- date-trigger backfills

REFILL = "refill-30d"
# Bought 2026-04-21 12:00 JST: 30 days later at 10:00 JST = 2026-05-21 01:00 UTC.
RECENT_BUYER_DUE = datetime(2026, 5, 21, 1, 0, tzinfo=UTC)


def _refill(offset: str = "30d", text: str = "そろそろ") -> dict[str, Any]:
    return {
        "id": REFILL,
        "name": "Refill reminder",
        "trigger": {"type": "date", "date": "last_purchase_at", "offset": offset, "at": "10:00"},
        "entry": {"reentry": "never"},
        "steps": [
            {"id": "remind", "type": "send", "channel": "line", "line": [{"type": "text", "text": text}]},
            {"id": "done", "type": "end"},
        ],
    }


def _buyers(world: Broadcasts) -> dict[str, str]:
    people = {}
    for name, days in (("recent", 10), ("newer", 2), ("long_ago", 60), ("never_bought", None)):
        customer_id = world.customer(f"cus_bf_{name}")
        if days is not None:
            clock.freeze(NOW - timedelta(days=days))
            world.purchase(customer_id, f"o-{name}")
            clock.freeze(NOW)
        people[name] = customer_id
    return people


def test_a_backfill_schedules_the_profiles_that_had_the_date_once_and_tick_enrols_them(
    world: Broadcasts,
) -> None:
    people = _buyers(world)
    world.upload(_refill())
    assert world.starter.start_backfill(REFILL, 1) == "started"
    assert world.starter.start_backfill(REFILL, 1) == "already"  # an S3 event seen twice
    messages = world.messages()
    assert {(m.kind, m.run) for m in messages} == {("backfill", backfill_run(1))}
    world.queue.send([m.model_dump_json() for m in messages])
    world.work()

    recent = world.enrolments.schedule(people["recent"], REFILL)
    assert recent is not None and recent.due_at == RECENT_BUYER_DUE
    assert world.enrolments.schedule(people["newer"], REFILL) is not None
    assert world.enrolments.schedule(people["long_ago"], REFILL) is None  # its moment has passed
    assert world.enrolments.schedule(people["never_bought"], REFILL) is None
    assert world.sent() == []  # a backfill schedules; it sends nothing itself

    # Delivered again, and with its progress lost: the same schedules, not written again.
    before = {name: world.enrolments.schedule(c, REFILL) for name, c in people.items()}
    for n in range(SEGMENTS):
        world.store.forget_progress(REFILL, backfill_run(1), n)
    world.queue.send([m.model_dump_json() for m in messages])
    world.work()
    assert {name: world.enrolments.schedule(c, REFILL) for name, c in people.items()} == before

    clock.freeze(RECENT_BUYER_DUE)
    assert world.runner.tick().dispatched == 1
    assert [d["recipients"] for d in world.sent()] == [[people["recent"]]]


def test_a_backfill_of_a_version_whose_trigger_changed_since_stops(world: Broadcasts) -> None:
    people = _buyers(world)
    world.upload(_refill())
    world.starter.start_backfill(REFILL, 1)
    old_run = world.messages()
    world.upload(_refill(offset="40d"))
    assert world.starter.start_backfill(REFILL, 2) == "started"
    world.work()
    recent = world.enrolments.schedule(people["recent"], REFILL)
    assert recent is not None and recent.due_at == RECENT_BUYER_DUE + timedelta(days=10)
    # The first version's backfill, delivered late, stops: its trigger is no longer the live one.
    reports = [world.worker.run_segment(m, lambda: 60_000) for m in old_run]
    assert {r.outcome for r in reports} == {"stale"}
    assert world.enrolments.schedule(people["recent"], REFILL) == recent


def test_a_backfill_that_could_not_be_enqueued_is_enqueued_by_tick_once(world: Broadcasts) -> None:
    people = _buyers(world)
    world.upload(_refill())
    world.queue.unavailable = True
    assert world.starter.start_backfill(REFILL, 1) == "pending"
    world.queue.unavailable = False
    assert world.starter.start_due(NOW + timedelta(minutes=1)).restarted == 0  # not before RESTART_AFTER
    assert world.starter.start_due(NOW + timedelta(minutes=6)).restarted == 1
    assert len(world.queue.bodies) == SEGMENTS
    assert world.starter.start_due(NOW + timedelta(minutes=12)).restarted == 0  # enqueued once
    world.work()
    recent = world.enrolments.schedule(people["recent"], REFILL)
    assert recent is not None and recent.due_at == RECENT_BUYER_DUE


def test_a_long_backfill_segment_is_handed_on_and_everyone_is_scheduled_once(world: Broadcasts) -> None:
    buyers = []
    for n in range(12):
        buyers.append(world.customer(f"cus_bf_many{n:02d}"))
        clock.freeze(NOW - timedelta(days=n % 5))
        world.purchase(buyers[-1], f"o-{n}")
        clock.freeze(NOW)
    world.worker.page_size = 2
    world.upload(_refill())
    world.starter.start_backfill(REFILL, 1)
    invocations = 0
    while messages := world.messages():
        assert {m.kind for m in messages} == {"backfill"}
        for message in messages:
            invocations += 1
            world.worker.run_segment(message, lambda: 0)  # time runs low after every page
    assert invocations > SEGMENTS
    for n, customer in enumerate(buyers):
        schedule = world.enrolments.schedule(customer, REFILL)  # written once, 30 days after the purchase
        assert schedule is not None and schedule.revision == 1
        assert schedule.due_at == datetime(2026, 5, 31, 1, 0, tzinfo=UTC) - timedelta(days=n % 5)


# ---------------------------------------------------------------------------- a page done again


def _one_segment_page_crashed(
    world: Broadcasts, crashed: int = 1
) -> tuple[SegmentMessage, list[dict[str, Any]]]:
    """100 customers (even ids), everyone in the audience; segment 0's page number `crashed` is
    opened, its sends enqueued, and the worker dies before writing any of its journeys (the pages
    before it done). The LINE bodies enqueued, that page's last."""
    world.limits = FrequencyCaps.model_validate({"line": {"per_day": 100, "per_week": 100}})
    world.runner = world.another_runner()
    world.worker.runner = world.runner
    world.worker.page_size = 8  # segment 0's 22 customers: pages of 8, 8 and 6
    world.upload(dict(DOCUMENT, entry={"reentry": "after_exit", "holdout_percent": 0}))
    for n in range(0, 200, 2):
        world.customer(f"cus_{n:04d}")
    clock.advance(6 * 60)
    world.starter.start_due()
    messages = world.messages()
    world.queue.send([m.model_dump_json() for m in messages if m.segment != 0])
    segment = next(m for m in messages if m.segment == 0)
    real = world.enrolments.write_many
    pages = 0

    def dies_on_the_crashed_page(batch: Any, at: Any = None) -> Any:
        nonlocal pages
        pages += 1
        if pages == crashed:
            raise RuntimeError("the function died")
        return real(batch, at)

    world.enrolments.write_many = dies_on_the_crashed_page  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.worker.run_segment(segment, lambda: 60_000)
    world.enrolments.write_many = real  # type: ignore[method-assign]
    return segment, world.sent()


def _sent_once(world: Broadcasts, bodies: list[dict[str, Any]], customers: set[str]) -> None:
    """Every body through the LINE sender (each delivered twice): each customer messaged once."""
    counts = InMemoryReportCounters()
    line = InMemoryLineGateway()
    sender = LineSender(
        world.customers, InMemoryLineDeliveries(), line, retry_base_seconds=1, counters=counts
    )
    for body in [*bodies, *bodies]:
        sender.handle(json.dumps(body))
    assert line.received.keys() == {line_user_id(c) for c in customers}
    assert all(len(m) == 1 for m in line.received.values())
    assert counts.count(ReportCell(SCENARIO_ID, 1, "announce", None), Metric.SENT) == len(customers)


@pytest.mark.parametrize("crashed", [1, 2])
def test_a_page_redone_with_profiles_created_inside_it_messages_and_counts_everyone_once(
    world: Broadcasts, crashed: int
) -> None:
    """The worker died between enqueueing a page's sends and recording the page (the segment's first
    page, opened by a write of its own; its second, opened by the write that recorded the first);
    profiles were created inside the page's key range meanwhile. The redo reads the page's recorded
    range, not 8 profiles from its start (which would end sooner, so the first attempt's last
    customer would fall into the next page, under another batch name: messaged twice). The first
    attempt's customers go under the page's batch again, the new ones under `#new1`: everyone is
    messaged, enrolled and counted once."""
    segment, first = _one_segment_page_crashed(world, crashed)
    assert len(first) == crashed
    page = first[-1]["recipients"]
    assert len(page) == world.worker.page_size
    run = run_id(AT)
    opened = world.store.progress(SCENARIO_ID, run, 0)
    assert opened is not None and opened.page_open and opened.pages == crashed - 1
    assert opened.page_end == {"after": page[-1]}
    # Created inside the page's range, between its customers: its first 8 end sooner now.
    created = [c for c in (f"cus_{n:04d}" for n in range(1, 200, 2)) if _segment(c, SEGMENTS) == 0]
    created = [c for c in created if page[0] < c < page[-1]][:2]
    assert len(created) == 2
    for customer_id in created:
        world.customer(customer_id)

    world.queue.send([segment.model_dump_json()])
    world.work()
    again = world.sent()
    everyone = {f"cus_{n:04d}" for n in range(0, 200, 2)} | set(created)
    _sent_once(world, [*first, *again], everyone)
    # The page's batch has the first attempt's key (those not enrolled yet); the new ones their own.
    keys = {b["idempotency_key"]: b["recipients"] for b in again}
    assert keys[first[-1]["idempotency_key"]] == page
    assert [r for k, r in keys.items() if "#new1#" in k] == [created]
    # Everyone enrolled and counted once: the counts are those of one run with the new ones in it.
    assert all(world.enrolment(c, SCENARIO_ID).sends == 1 for c in everyone)
    enrolled = world.counters.count(ReportCell(SCENARIO_ID, 1), Metric.ENROLLED)
    assert enrolled == len(everyone)
    progress = [world.store.progress(SCENARIO_ID, run, n) for n in range(SEGMENTS)]
    assert all(p is not None and p.done and not p.page_open for p in progress)
    assert sum(p.profiles for p in progress if p is not None) == len(everyone)


def test_a_page_opened_by_another_worker_meanwhile_is_done_as_it_was_opened(world: Broadcasts) -> None:
    """Two workers on one segment, both before its first page: the other one opens the page, sends
    and dies; a profile is created inside it; this one's page (8 profiles from the start) now ends
    sooner, its open write finds the page open and it does the page as recorded."""
    segment, first = _one_segment_page_crashed(world)
    page = first[0]["recipients"]
    run = run_id(AT)
    world.store.forget_progress(SCENARIO_ID, run, 0)
    created = next(c for c in (f"cus_{n:04d}" for n in range(1, 200, 2)) if _segment(c, SEGMENTS) == 0)
    assert created < page[-1]
    real_open = world.store.open_page
    scans: list[dict[str, Any] | None] = []

    def opened_meanwhile(progress: Any, read_pages: int | None) -> bool:
        scans.append(progress.page_end)
        if len(scans) == 1:  # the other worker opens the page it had read (the crashed attempt's)
            other = progress.model_copy(update={"page_end": {"after": page[-1]}})
            other.page_customers = page_digests(page)
            assert real_open(other, read_pages)
        return real_open(progress, read_pages)

    world.customer(created)
    world.store.open_page = opened_meanwhile  # type: ignore[method-assign]
    assert world.worker.run_segment(segment, lambda: 60_000).outcome == "done"
    assert scans[0] != {"after": page[-1]}  # this worker's own page ended sooner
    world.work()
    everyone = {f"cus_{n:04d}" for n in range(0, 200, 2)} | {created}
    _sent_once(world, [*first, *world.sent()], everyone)
    assert all(world.enrolment(c, SCENARIO_ID).sends == 1 for c in everyone)


def test_a_worker_whose_page_cannot_be_opened_on_the_pages_it_read_stops(world: Broadcasts) -> None:
    world.upload(DOCUMENT)
    _audience(world)
    clock.advance(6 * 60)
    world.starter.start_due()
    message = world.messages()[0]
    real_open = world.store.open_page
    raced = False

    def racing_open(progress: Any, read_pages: int | None) -> bool:
        nonlocal raced
        if not raced:  # the other worker records a page in between
            raced = True
            assert world.worker.run_segment(message, lambda: 0).outcome == "continued"
        return real_open(progress, read_pages)

    world.store.open_page = racing_open  # type: ignore[method-assign]
    report = world.worker.run_segment(message, lambda: 60_000)
    assert report.outcome == "superseded" and report.pages == 0
    assert world.sent() and all(len(b["recipients"]) <= world.worker.page_size for b in world.sent())


def test_a_page_is_split_into_its_first_attempts_customers_and_those_created_since() -> None:
    def profiles(ids: list[str]) -> list[Profile]:
        return [Profile(customer_id=c, first_seen_at=NOW, updated_at=NOW) for c in ids]

    first = [f"cus_{n:04d}" for n in range(0, 40, 2)]
    assert page_split("b", profiles(first), None) == [("b", profiles(first))]
    assert page_split("b", [], page_digests([])) == []
    redo = sorted([*first, "cus_0005", "cus_0031"])
    assert page_split("b", profiles(redo), page_digests(first)) == [
        ("b", profiles(first)),
        ("b#new1", profiles(["cus_0005", "cus_0031"])),
    ]
    many = [f"new_{n:04d}" for n in range(MAX_MULTICAST_RECIPIENTS + 2)]
    parts = page_split("b", profiles([*first, *many]), page_digests(first))
    assert [(name, len(part)) for name, part in parts] == [
        ("b", len(first)),
        ("b#new1", MAX_MULTICAST_RECIPIENTS),
        ("b#new2", 2),
    ]
    with pytest.raises(ValueError):
        BroadcastWorker(Any, Any, Any, Any, page_size=MAX_MULTICAST_RECIPIENTS + 1)  # type: ignore[arg-type]

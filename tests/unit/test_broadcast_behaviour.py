"""Broadcasts and date-trigger backfills on in-memory stores (tests/fakes; the broadcast store and the
profile scan are held to the DynamoDB adapters' contract by tests/integration/test_broadcast_contract.py):
tick starts a run once; the worker works through the segments of the parallel profile scan, handing
on when time runs low and resuming from recorded progress, so every customer in the audience outside
the holdout gets exactly one dispatch; a backfill schedules each profile's pending date entry once.
The handlers' path (scenario_loader, broadcast, tick under moto) is in tests/integration."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from cems import clock
from cems.scenario.assignment import in_holdout
from cems.scenario.broadcast import (
    BroadcastStarter,
    BroadcastWorker,
    SegmentMessage,
    backfill_run,
    run_id,
    run_time,
)
from cems.scenario.model import Scenario

from tests.fakes.broadcasts import InMemoryBroadcastStore, InMemoryQueue
from tests.fakes.journey_world import JourneyWorld

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

"""Timers on the second (issue 13) on the in-memory fakes: the tick's look-ahead, the timer a journey
gets when it is written due soon, and a timer arriving early, on time, late, twice, after the tick,
racing the tick, or after its journey moved: advanced once, at its moment, never before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.scenario import engine
from cems.scenario.runner import ScenarioRunner
from cems.scenario.timers import LOOK_AHEAD, MAX_DELAY_SECONDS, Timer, within_look_ahead

from tests.fakes.journey_world import JourneyWorld
from tests.fakes.journeys import InMemoryEnrolmentStore
from tests.fakes.timers import RecordingTimerQueue

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday: inside every send window
SCENARIO = "timer-test"


def _scenario(wait: dict[str, Any]) -> dict[str, Any]:
    """Entered on `Cart`, waits as given, then sends one LINE text."""
    return {
        "id": SCENARIO,
        "name": SCENARIO,
        "trigger": {"type": "event", "event": "Cart"},
        "frequency_cap": {"when_capped": "skip"},
        "steps": [
            {"id": "wait", **wait},
            {"id": "remind", "type": "send", "channel": "line", "line": [{"type": "text", "text": "カート"}]},
            {"id": "done", "type": "end"},
        ],
    }


WAIT_2M = {"type": "wait", "duration": "2m"}
WAIT_1M = {"type": "wait", "duration": "1m"}
ORDER_WITHIN_1M = {
    "type": "wait_for_event",
    "event": "Order Completed",
    "timeout": "1m",
    "on_event": "done",
    "on_timeout": "remind",
}


class Timed:
    """A JourneyWorld whose runner has a timer queue (and a second runner for races)."""

    def __init__(self, world: JourneyWorld) -> None:
        self.world = world
        self.queue = RecordingTimerQueue()
        self.runner = self.another_runner()

    def another_runner(self) -> ScenarioRunner:
        runner = self.world.another_runner()
        runner.timers = self.queue
        return runner

    def enter(self, customer_id: str) -> None:
        self.world.customer(customer_id)
        self.runner.on_stored_event(self.world.event(customer_id, "Cart"))


@pytest.fixture
def timed() -> Iterator[Timed]:
    clock.freeze(NOW)
    yield Timed(JourneyWorld())
    clock.reset()


def _customers(count: int, prefix: str = "cus_timer_") -> list[str]:
    return [f"{prefix}{n:03d}" for n in range(count)]


def _due(timed: Timed, customer_id: str) -> datetime:
    due = timed.world.enrolment(customer_id, SCENARIO).due_at
    assert due is not None
    return due


# ------------------------------------------------------------------------------- starting timers


def test_tick_starts_a_timer_for_each_journey_due_within_the_look_ahead_and_none_for_later(
    timed: Timed,
) -> None:
    timed.world.upload(_scenario(WAIT_2M))
    early, late = _customers(2)
    timed.enter(early)
    clock.advance(40)
    timed.enter(late)
    assert timed.queue.take() == []  # a two-minute wait is beyond the look-ahead when written

    clock.freeze(NOW + timedelta(seconds=45))  # early due in 75 s, late in 115 s
    report = timed.runner.tick()
    assert report.timers == 1 and report.changed == 0
    ((timer, delay),) = timed.queue.started
    assert (timer.customer_id, timer.scenario_id, timer.kind) == (early, SCENARIO, "enrolment")
    assert timer.due_at == _due(timed, early) and delay == 75

    timed.queue.started.clear()
    clock.freeze(NOW + timedelta(seconds=105))  # the next tick: early due in 15 s, late in 55 s
    assert timed.runner.tick().timers == 2  # the overlap starts the early one's timer again
    assert sorted(delay for _, delay in timed.queue.started) == [15, 55]


def test_a_wave_due_at_once_fills_the_look_ahead_only_up_to_its_limit_and_the_tick_goes_on(
    timed: Timed,
) -> None:
    """A tick's look-ahead stops at its limit (a wave of journeys due in one minute must not keep
    the tick from its due pass); the rest are advanced when due, by the due pass."""
    timed.world.upload(_scenario(WAIT_2M))
    customers = _customers(5)
    for customer in customers:
        timed.enter(customer)
    timed.runner.max_look_ahead_timers = 2
    clock.freeze(NOW + timedelta(seconds=45))
    report = timed.runner.tick()
    assert report.timers == 2 and len(timed.queue.take()) == 2
    clock.freeze(NOW + timedelta(minutes=2))
    assert timed.runner.tick().changed == len(customers)


def test_the_look_ahead_leaves_what_is_due_now_to_the_tick_itself(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_2M))
    (customer,) = _customers(1)
    timed.enter(customer)
    clock.freeze(_due(timed, customer))
    report = timed.runner.tick()
    assert report.timers == 0 and report.changed == 1 and report.dispatched == 1
    assert timed.queue.take() == []


def test_a_journey_written_due_within_the_look_ahead_gets_its_timer_from_its_writer(timed: Timed) -> None:
    timed.world.upload(_scenario(ORDER_WITHIN_1M))
    customers = _customers(3)
    for customer in customers:
        timed.enter(customer)
    timers = timed.queue.take()
    assert [t.customer_id for t in timers] == customers
    assert all(t.due_at == NOW + timedelta(minutes=1) and t.kind == "enrolment" for t in timers)
    assert {delay for _, delay in timed.queue.started} <= {60}


def test_a_journey_written_to_wait_beyond_the_look_ahead_gets_no_timer_until_a_tick_looks_ahead(
    timed: Timed,
) -> None:
    timed.world.upload(_scenario({"type": "wait", "duration": "1h"}))
    (customer,) = _customers(1)
    timed.enter(customer)
    assert timed.queue.take() == []
    assert not within_look_ahead(NOW + timedelta(hours=1), NOW)
    assert within_look_ahead(NOW + LOOK_AHEAD, NOW) and not within_look_ahead(NOW, NOW)


def test_the_timers_of_one_call_go_out_together_when_it_ends(timed: Timed) -> None:
    """The tick's due batch writes many journeys: their timers go in one start, not one each."""
    document = _scenario(WAIT_1M)
    document["steps"].insert(1, {"id": "again", "type": "wait", "duration": "1m"})
    timed.world.upload(document)
    calls: list[int] = []
    start = timed.queue.start
    timed.queue.start = lambda timers: (calls.append(len(timers)), start(timers))[1]  # type: ignore[method-assign]
    for customer in _customers(5):
        timed.enter(customer)
    assert calls == [1] * 5  # one event, one journey, one timer
    calls.clear()
    clock.advance(60)
    # Each journey's first wait ends and the second begins: five timers, one start, after the batch.
    report = timed.runner.tick()
    assert report.changed == 5 and report.timers == 5
    assert calls == [5]


# ------------------------------------------------------------------------------- a timer arrives


def test_a_timer_on_its_second_advances_its_journey_once(timed: Timed) -> None:
    timed.world.upload(_scenario(ORDER_WITHIN_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()

    clock.freeze(timer.due_at)
    outcome, report = timed.runner.on_timer(timer)
    assert outcome == "fired" and report.changed == 1 and report.dispatched == 1
    assert timed.world.sent_keys() == [f"{customer}#{SCENARIO}#v1#remind#e1"]
    assert timed.world.enrolment(customer, SCENARIO).state is engine.EnrolmentState.COMPLETED
    # The tick after it finds nothing due.
    assert timed.runner.tick().changed == 0 and timed.world.sent() == []


def test_an_early_timer_is_started_again_for_the_rest_and_advances_nothing(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()

    clock.freeze(timer.due_at - timedelta(milliseconds=400))
    outcome, report = timed.runner.on_timer(timer)
    assert outcome == "early" and report.changed == 0
    assert timed.queue.started == [(timer, 1)]  # the rest of the wait, rounded up: never early twice
    assert timed.world.sent() == []
    assert timed.world.enrolment(customer, SCENARIO).state is engine.EnrolmentState.WAITING

    clock.freeze(timer.due_at + timedelta(milliseconds=600))
    assert timed.runner.on_timer(timer)[0] == "fired"
    assert len(timed.world.sent()) == 1


def test_a_late_timer_still_advances_its_journey(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()
    clock.freeze(timer.due_at + timedelta(seconds=40))
    assert timed.runner.on_timer(timer)[0] == "fired"
    assert len(timed.world.sent()) == 1


def test_a_duplicate_timer_finds_its_journey_advanced_and_does_nothing(timed: Timed) -> None:
    """Two ticks looked ahead to the same journey, or a tick and its writer: two timers, one advance."""
    timed.world.upload(_scenario(WAIT_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()
    twin = Timer.from_body(timer.body())
    assert twin == timer

    clock.freeze(timer.due_at)
    assert timed.runner.on_timer(timer)[0] == "fired"
    outcome, report = timed.another_runner().on_timer(twin)
    assert outcome == "stale" and report.changed == 0 and report.dispatched == 0
    assert len(timed.world.sent()) == 1


def test_a_timer_after_the_tick_advanced_its_journey_does_nothing(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()
    clock.freeze(timer.due_at + timedelta(seconds=1))
    assert timed.runner.tick().changed == 1
    outcome, report = timed.runner.on_timer(timer)
    assert outcome == "stale" and report.changed == 0 and report.dispatched == 0
    assert len(timed.world.sent()) == 1


def test_a_timer_racing_the_tick_over_one_journey_advances_it_once(timed: Timed) -> None:
    """The timer reads the journey; the tick advances and writes it before the timer writes: the
    timer's conditional write loses, it reads again and finds nothing due. Its send shared the
    tick's dispatch key, which the sender sends once."""
    timed.world.upload(_scenario(WAIT_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()
    clock.freeze(timer.due_at)

    store = timed.world.enrolments
    tick_runner = timed.another_runner()
    real_get = InMemoryEnrolmentStore.get
    raced: list[bool] = []

    def get_then_tick(customer_id: str, scenario_id: str) -> engine.Enrolment | None:
        read = real_get(store, customer_id, scenario_id)
        if not raced:
            raced.append(True)
            assert tick_runner.tick().changed == 1  # the tick wins the write
        return read

    store.get = get_then_tick  # type: ignore[method-assign]
    outcome, report = timed.runner.on_timer(timer)
    del store.get
    assert outcome == "idle" and report.changed == 0 and report.conflicts == 1 and report.lost == 0
    keys = timed.world.sent_keys()
    assert set(keys) == {f"{customer}#{SCENARIO}#v1#remind#e1"}  # at most the one key, twice
    assert timed.world.enrolment(customer, SCENARIO).sends == 1


def test_a_timer_whose_journey_moved_is_stale(timed: Timed) -> None:
    """The awaited order came before the time-out: the journey moved on, the timer does nothing."""
    timed.world.upload(_scenario(ORDER_WITHIN_1M))
    (customer,) = _customers(1)
    timed.enter(customer)
    (timer,) = timed.queue.take()
    clock.advance(20)
    timed.world.purchase(customer, "o-1")
    timed.runner.on_stored_event(timed.world.event(customer, "Order Completed", order_id="o-1"))
    assert timed.world.enrolment(customer, SCENARIO).state is engine.EnrolmentState.COMPLETED

    clock.freeze(timer.due_at)
    assert timed.runner.on_timer(timer)[0] == "stale"
    assert timed.world.sent() == []


def test_a_timer_for_a_journey_or_customer_that_is_gone_is_stale(timed: Timed) -> None:
    clock.freeze(NOW)
    gone = Timer.of("cus_nobody", SCENARIO, NOW)
    assert timed.runner.on_timer(gone)[0] == "stale"
    assert timed.runner.on_timer(Timer.of("cus_nobody", SCENARIO, NOW, "date"))[0] == "stale"


def test_a_date_entry_timer_enrols_at_its_moment(timed: Timed) -> None:
    document = _scenario(WAIT_1M)
    document["trigger"] = {"type": "date", "date": "last_purchase_at", "offset": "1d", "at": "12:00"}
    document["steps"] = document["steps"][1:]
    timed.world.upload(document)
    customer = timed.world.customer("cus_timer_date")
    timed.runner.on_stored_event(timed.world.purchase(customer, "o-1"))
    schedule = timed.world.enrolments.schedule(customer, SCENARIO)
    assert schedule is not None

    clock.freeze(schedule.due_at - timedelta(seconds=30))
    assert timed.runner.tick().timers == 1
    (timer,) = timed.queue.take()
    assert timer.kind == "date" and timer.due_at == schedule.due_at

    clock.freeze(schedule.due_at)
    outcome, report = timed.runner.on_timer(timer)
    assert outcome == "fired" and report.enrolled == 1 and report.dispatched == 1
    assert timed.runner.on_timer(timer)[0] == "stale"  # the entry was claimed


# ------------------------------------------------------------------------------- when the queue fails


def test_a_refusing_queue_loses_no_journey_the_tick_advances_it_when_due(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_2M))
    (customer,) = _customers(1)
    timed.enter(customer)
    timed.queue.refusing = True
    clock.advance(60)
    report = timed.runner.tick()
    assert report.timer_failures == 1 and report.timers == 0
    clock.advance(60)
    report = timed.runner.tick()
    assert report.changed == 1 and report.dispatched == 1


def test_a_journey_whose_timer_could_not_be_started_is_still_written(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_1M))
    timed.queue.refusing = True
    (customer,) = _customers(1)
    timed.enter(customer)
    assert timed.world.enrolment(customer, SCENARIO).state is engine.EnrolmentState.WAITING
    clock.advance(60)
    assert timed.runner.tick().dispatched == 1


def test_without_a_timer_queue_the_runner_starts_none_and_the_tick_does_it_all(timed: Timed) -> None:
    timed.world.upload(_scenario(WAIT_1M))
    (customer,) = _customers(1)
    timed.world.customer(customer)
    report = timed.world.runner.on_stored_event(timed.world.event(customer, "Cart"))
    assert report.timers == 0 and timed.queue.take() == []
    clock.advance(30)
    assert timed.world.runner.tick().timers == 0


# ------------------------------------------------------------------------------- the message


def test_a_timer_is_delayed_to_its_second_rounded_up_at_most_fifteen_minutes() -> None:
    timer = Timer.of("c", "s", NOW + timedelta(seconds=4, milliseconds=300))
    assert timer.delay_seconds(NOW) == 5
    assert timer.delay_seconds(NOW + timedelta(seconds=5)) == 0
    assert Timer.of("c", "s", NOW + timedelta(hours=1)).delay_seconds(NOW) == MAX_DELAY_SECONDS
    # Kept to the millisecond, as the due index stores it: a timer matches its item exactly.
    precise = Timer.of("c", "s", NOW + timedelta(microseconds=1_234_567))
    assert precise.due_at == NOW + timedelta(milliseconds=1234)
    assert precise.matches(NOW + timedelta(microseconds=1_234_999))
    assert not precise.matches(NOW + timedelta(milliseconds=1235)) and not precise.matches(None)


def test_a_timer_message_carries_no_more_than_its_item_and_reads_back() -> None:
    timer = Timer.of("cus_1", "s-1", NOW, "date")
    assert json.loads(timer.body()) == {
        "customer_id": "cus_1",
        "scenario_id": "s-1",
        "due_at": "2026-05-01T03:00:00.000Z",
        "kind": "date",
    }
    assert Timer.from_body(timer.body()) == timer
    for bad in ('{"customer_id": "c", "scenario_id": "s", "due_at": "x"}', "{}", '{"kind": "other"}'):
        with pytest.raises((ValueError, KeyError)):
            Timer.from_body(bad)

"""A journey redone after its worker took the frequency caps, enqueued the sends and died before
writing the enrolment (issue 11): each cap take is keyed by its send's dispatch key, so the redo finds
its own take allowed, not in the way. With the default LINE cap of one a day, the redo writes the
journeys as sent (their messages went out), counts nothing twice, and no later tick sends the step
again: every customer is messaged once, through the LINE sender. A broadcast page (`enrol_page`) and
the one-by-one path (a trigger's enrolment, a tick's advance); on the in-memory fakes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.line.sender import LineSender
from cems.models import Channel
from cems.reports.counters import Metric
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.caps import counters_of
from cems.scenario.model import FrequencyCaps

from tests.fakes.journey_world import JourneyWorld, line_user_id
from tests.fakes.line import InMemoryLineDeliveries, InMemoryLineGateway

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday
RUN_AT = NOW - timedelta(minutes=1)
PAGE = "redo-page"
HOLDOUT = 20

BROADCAST: dict[str, Any] = {
    "id": PAGE,
    "name": "page",
    "version": 1,
    "trigger": {"type": "broadcast", "at": "2026-05-01T11:59:00+09:00"},
    "audience": {"kind": "reachable", "channel": "line"},
    "entry": {"reentry": "after_exit", "holdout_percent": HOLDOUT},
    "steps": [
        {"id": "announce", "type": "send", "channel": "line", "line": [{"type": "text", "text": "新茶🍃"}]},
        {"id": "done", "type": "end"},
    ],
}


def _triggered(scenario_id: str, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """An event-triggered scenario without holdout, deferring a capped send (the default)."""
    return {
        "id": scenario_id,
        "name": scenario_id,
        "trigger": {"type": "event", "event": "Product Viewed"},
        "steps": steps,
    }


SEND = {
    "id": "hello",
    "type": "send",
    "channel": "line",
    "line": [{"type": "text", "text": "いらっしゃいませ"}],
}
END = {"id": "done", "type": "end"}


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


class Line:
    """The LINE sender over what the runner enqueued, and what each LINE user received."""

    def __init__(self, world: JourneyWorld) -> None:
        self.world = world
        self.gateway = InMemoryLineGateway()
        self.sender = LineSender(
            world.customers, InMemoryLineDeliveries(), self.gateway, retry_base_seconds=1
        )

    def deliver(self, bodies: list[dict[str, Any]]) -> None:
        for body in bodies:
            self.sender.handle(json.dumps(body))

    def received(self) -> dict[str, int]:
        return {user: len(messages) for user, messages in self.gateway.received.items()}


def _died(*_: Any, **__: Any) -> Any:
    raise RuntimeError("the function died")


def _ticks_for_days(world: JourneyWorld, line: Line, days: int) -> int:
    """Each following day's tick run, and its sends delivered; how many it enqueued."""
    enqueued = 0
    for day in range(1, days + 1):
        clock.freeze(NOW + timedelta(days=day))
        enqueued += world.runner.tick().dispatched
        line.deliver(world.sent())
    clock.freeze(NOW)
    return enqueued


def _facts(world: JourneyWorld, scenario_id: str, metric: Metric) -> int:
    return sum(int(counts.get(metric, 0)) for _, counts in world.counters.cells(scenario_id))


def test_a_page_redone_after_its_worker_took_the_caps_and_died_writes_the_journeys_as_sent() -> None:
    world = JourneyWorld()  # the default caps: one LINE send a day
    world.upload(BROADCAST)
    stored = world.scenarios.version(PAGE, 1)
    assert stored is not None
    ids = [world.customer(f"cus_{n:03d}") for n in range(30)]
    messaged = {c for c in ids if not in_holdout(PAGE, c, HOLDOUT)}
    assert messaged and len(messaged) < len(ids)
    line = Line(world)

    real_write_many = world.enrolments.write_many
    world.enrolments.write_many = _died  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.runner.enrol_page(
            stored.scenario, 1, [world.profile(c) for c in ids], run_at=RUN_AT, batch="b1"
        )
    world.enrolments.write_many = real_write_many  # type: ignore[method-assign]
    first = world.sent()
    line.deliver(first)  # the first attempt's messages went out
    assert all(world.caps.counts(c, Channel.LINE, NOW) == (1, 1) for c in messaged)

    page = world.runner.enrol_page(
        stored.scenario, 1, [world.profile(c) for c in ids], run_at=RUN_AT, batch="b1"
    )
    assert page.run.enrolled == len(ids)
    redo = world.sent()
    assert [b["idempotency_key"] for b in redo] == [b["idempotency_key"] for b in first]
    line.deliver(redo)
    for customer_id in ids:
        journey = world.enrolment(customer_id, PAGE)
        assert journey.state is engine.EnrolmentState.COMPLETED and journey.due_at is None
        assert journey.sends == (1 if customer_id in messaged else 0)
        # The redo's take was its own first take: counted once, not refused.
        assert world.caps.counts(customer_id, Channel.LINE, NOW) == (
            (1, 1) if customer_id in messaged else (0, 0)
        )
    assert _facts(world, PAGE, Metric.DEFERRED) == _facts(world, PAGE, Metric.CAPPED) == 0

    # Nothing is left for the following days' ticks: nobody is messaged twice.
    assert _ticks_for_days(world, line, 2) == 0
    assert line.received() == {line_user_id(c): 1 for c in messaged}


def test_a_trigger_enrolment_redone_after_its_worker_died_before_writing_sends_once() -> None:
    world = JourneyWorld()
    world.upload(_triggered("hello", [SEND, END]))
    customer = world.customer("cus_one")
    event = world.event(customer, "Product Viewed")
    line = Line(world)

    real_create = world.enrolments.create
    world.enrolments.create = _died  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.runner.on_stored_event(event)
    world.enrolments.create = real_create  # type: ignore[method-assign]
    first = world.sent()
    line.deliver(first)
    assert world.caps.counts(customer, Channel.LINE, NOW) == (1, 1)

    report = world.runner.on_stored_event(event)  # the stream delivers the event again
    assert (report.enrolled, report.dispatched) == (1, 1)
    redo = world.sent()
    assert [b["idempotency_key"] for b in redo] == [b["idempotency_key"] for b in first]
    line.deliver(redo)
    journey = world.enrolment(customer, "hello")
    assert (journey.state, journey.sends, journey.deferred_since) == (
        engine.EnrolmentState.COMPLETED,
        1,
        None,
    )
    assert world.caps.counts(customer, Channel.LINE, NOW) == (1, 1)
    assert _facts(world, "hello", Metric.DEFERRED) == _facts(world, "hello", Metric.CAPPED) == 0

    assert _ticks_for_days(world, line, 2) == 0
    assert line.received() == {line_user_id(customer): 1}


def test_a_tick_redone_after_its_worker_died_before_writing_sends_once() -> None:
    world = JourneyWorld()
    world.upload(_triggered("later", [{"id": "pause", "type": "wait", "duration": "1h"}, SEND, END]))
    customer = world.customer("cus_one")
    assert world.runner.on_stored_event(world.event(customer, "Product Viewed")).enrolled == 1
    assert world.sent() == []
    line = Line(world)
    clock.advance(3600 + 60)
    at = clock.now()

    real_save = world.enrolments.save
    world.enrolments.save = _died  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.runner.tick()
    world.enrolments.save = real_save  # type: ignore[method-assign]
    first = world.sent()
    line.deliver(first)

    assert world.runner.tick().dispatched == 1  # the due index still lists it: the tick again
    redo = world.sent()
    assert [b["idempotency_key"] for b in redo] == [b["idempotency_key"] for b in first]
    line.deliver(redo)
    journey = world.enrolment(customer, "later")
    assert (journey.state, journey.sends) == (engine.EnrolmentState.COMPLETED, 1)
    assert world.caps.counts(customer, Channel.LINE, at) == (1, 1)
    assert _facts(world, "later", Metric.DEFERRED) == 0

    assert _ticks_for_days(world, line, 2) == 0
    assert line.received() == {line_user_id(customer): 1}


def test_a_send_whose_key_took_a_full_counter_is_decided_sent_and_another_send_capped() -> None:
    """The decision's view: a counter full by this very send's key lets that send through (its take
    answers allowed, counting nothing), and still holds any other send back."""
    world = JourneyWorld()
    world.upload(_triggered("first", [SEND, END]))
    world.upload(_triggered("second", [SEND, END]))
    customer = world.customer("cus_one")
    event = world.event(customer, "Product Viewed")
    real_create = world.enrolments.create
    world.enrolments.create = _died  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.runner.on_stored_event(event)
    world.enrolments.create = real_create  # type: ignore[method-assign]
    (taken,) = world.sent_keys()

    world.runner.on_stored_event(event)
    sends = {s: world.enrolment(customer, s).sends for s in ("first", "second")}
    assert sorted(sends.values()) == [0, 1]  # one a day: the send that took the counter, only
    assert world.sent_keys() == [taken]
    assert world.caps.counts(customer, Channel.LINE, NOW) == (1, 1)


def test_a_refused_take_gives_back_only_what_its_activation_counted() -> None:
    """Two sends in one activation take their caps one by one; another send takes the last one in
    between, so the second is refused: the first take, which this call counted, is given back (the
    key with it), and the journey is decided again on fresh counts: one send, within the cap."""
    world = JourneyWorld()
    world.limits = FrequencyCaps.model_validate({"line": {"per_day": 2, "per_week": 10}})
    world.runner = world.another_runner()
    second = {**SEND, "id": "again"}
    world.upload({**_triggered("twice", [SEND, second, END]), "frequency_cap": {"when_capped": "skip"}})
    customer = world.customer("cus_one")
    real = world.caps.try_consume
    calls: list[str | None] = []

    def racing(
        customer_id: str, channel: Any, cap: Any, at: Any = None, key: Any = None, total: Any = None
    ) -> Any:
        calls.append(key)
        if len(calls) == 2:  # another send takes the customer's last one first
            real(customer_id, channel, cap, at, "someone-else", total)
        return real(customer_id, channel, cap, at, key, total)

    world.caps.try_consume = racing  # type: ignore[method-assign]
    report = world.runner.on_stored_event(world.event(customer, "Product Viewed"))
    assert report.dispatched == 1
    journey = world.enrolment(customer, "twice")
    assert (journey.state, journey.sends) == (engine.EnrolmentState.COMPLETED, 1)
    assert world.caps.counts(customer, Channel.LINE, NOW) == (2, 2)  # someone else's and this one
    day, _ = counters_of(Channel.LINE, NOW)
    (sent,) = world.sent_keys()
    assert world.caps.holders[(customer, day)] == {"someone-else", sent}

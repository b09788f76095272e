"""A broadcast page decided in batches (`ScenarioRunner.enrol_page`, issue 11) comes out as the
one-by-one path (`enrol_customer`) does: the holdout gets nothing, caps hold, re-entry rules and
priority (a higher-priority journey keeps the customer; a lower one that yields leaves) apply; and
a page done again after a crash sends and counts nothing twice, also when the redo holds a profile the
first attempt never saw (through the LINE sender). On the in-memory fakes."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.line.sender import LineSender
from cems.models import Channel
from cems.reports.counters import Metric, ReportCell
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.caps import counters_of
from cems.scenario.model import ChannelCap, FrequencyCaps
from cems.scenario.runner import RunReport

from tests.fakes.journey_world import JourneyWorld, line_user_id
from tests.fakes.line import InMemoryLineDeliveries, InMemoryLineGateway
from tests.fakes.scenario_io import InMemoryReportCounters

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
RUN_AT = NOW - timedelta(minutes=1)
SCENARIO_ID = "page-test"
HOLDOUT = 20
CUSTOMERS = 60

DOCUMENT: dict[str, Any] = {
    "id": SCENARIO_ID,
    "name": "page",
    "version": 1,
    "priority": 100,
    "trigger": {"type": "broadcast", "at": "2026-05-01T11:59:00+09:00"},
    "audience": {"kind": "reachable", "channel": "line"},
    "entry": {"reentry": "after_exit", "holdout_percent": HOLDOUT},
    "steps": [
        {"id": "announce", "type": "send", "channel": "line", "line": [{"type": "text", "text": "新茶🍃"}]},
        {"id": "done", "type": "end"},
    ],
}


def _other(scenario_id: str, priority: int, *, yields: bool) -> dict[str, Any]:
    return {
        "id": scenario_id,
        "name": scenario_id,
        "version": 1,
        "priority": priority,
        "trigger": {"type": "event", "event": "Signed Up"},
        "exit": {"yield_to_higher_priority": yields},
        "steps": [{"id": "pause", "type": "wait", "duration": "3d"}, {"id": "end", "type": "end"}],
    }


def _arrange(world: JourneyWorld) -> list[str]:
    """Customers in every case the decision has: no LINE (outside the audience), held out, capped
    already today, in a higher-priority journey, in a lower one that yields, in an ended journey of
    this scenario (re-enters) and in a running one (still enrolled)."""
    world.limits = FrequencyCaps.model_validate({"line": {"per_day": 1}})
    world.runner = world.another_runner()
    world.upload(DOCUMENT)
    world.upload(_other("vip", 500, yields=False))
    world.upload(_other("drip", 10, yields=True))
    ids = []
    for n in range(CUSTOMERS):
        customer_id = world.customer(f"cus_{n:03d}", line=n % 7 != 0)
        ids.append(customer_id)
        if n % 5 == 1:
            world.caps.try_consume(customer_id, Channel.LINE, ChannelCap(per_day=1), NOW)
        for scenario_id, every in (("vip", 6), ("drip", 4)):
            if n % every == 2:
                world.enrolments.create(_running(customer_id, scenario_id))
        if n % 9 == 3:
            ended = _running(customer_id, SCENARIO_ID).model_copy(
                update={"state": engine.EnrolmentState.COMPLETED, "due_at": None}
            )
            world.enrolments.create(ended)
        if n % 11 == 4:
            world.enrolments.create(_running(customer_id, SCENARIO_ID))
    # Someone's cap counted under the rule this test sets.
    return ids


def _running(customer_id: str, scenario_id: str) -> engine.Enrolment:
    return engine.Enrolment(
        customer_id=customer_id,
        scenario_id=scenario_id,
        version=1,
        step_id="pause",
        state=engine.EnrolmentState.WAITING,
        entered_at=NOW - timedelta(days=10),
        due_at=NOW + timedelta(days=1),
    )


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


def _outcome(world: JourneyWorld, ids: list[str]) -> dict[str, Any]:
    enrolments = {
        (cid, sid): (e.state, e.step_id, e.holdout, e.entry, e.exit_reason)
        for (cid, sid), e in world.enrolments.enrolments.items()
    }
    caps = {cid: world.caps.counts(cid, Channel.LINE, NOW) for cid in ids}
    return {
        "enrolments": enrolments,
        "sent": sorted(d.key for d in world.sink.dispatches),
        "caps": caps,
        "counts": {cell: dict(c) for cell, c in world.counters.counts.items()},
    }


def test_a_page_decided_in_batches_comes_out_as_one_by_one() -> None:
    one_by_one, batched = JourneyWorld(), JourneyWorld()
    ids = _arrange(one_by_one)
    assert _arrange(batched) == ids
    scenario = one_by_one.scenarios.version(SCENARIO_ID, 1)
    assert scenario is not None
    reports = RunReport()
    for customer_id in ids:
        profile = one_by_one.profile(customer_id)
        reports.add(one_by_one.runner.enrol_customer(scenario.scenario, 1, profile, NOW))
    profiles = [batched.profile(customer_id) for customer_id in ids]
    page = batched.runner.enrol_page(scenario.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)

    expected, got = _outcome(one_by_one, ids), _outcome(batched, ids)
    assert got["enrolments"] == expected["enrolments"]
    assert got["sent"] == expected["sent"]
    assert got["caps"] == expected["caps"]
    assert got["counts"] == expected["counts"]
    # The cases were all there: held out, capped, kept by a higher priority, yielded, re-entered.
    states = got["enrolments"]
    assert any(in_holdout(SCENARIO_ID, cid, HOLDOUT) and (cid, SCENARIO_ID) in states for cid in ids)
    assert any(reason == "yielded:page-test" for (_, _, _, _, reason) in states.values())
    assert any(entry == 2 for (_, sid), (_, _, _, entry, _) in states.items() if sid == SCENARIO_ID)
    assert ("cus_002", SCENARIO_ID) not in states  # vip (priority 500) keeps them; this one yields
    assert (page.run.enrolled, page.run.dispatched) == (reports.enrolled, reports.dispatched)
    # Every customer's enrolment in this scenario was read in one batch, not one by one.
    assert batched.enrolments.batch_reads <= 3


def test_a_page_done_again_after_a_crash_sends_and_counts_nothing_twice() -> None:
    world = JourneyWorld()
    ids = _arrange(world)
    stored = world.scenarios.version(SCENARIO_ID, 1)
    assert stored is not None
    profiles = [world.profile(customer_id) for customer_id in ids]
    writes: list[Any] = []
    real_write_many = world.enrolments.write_many

    def crash(batch: Any, at: Any = None) -> Any:  # the worker dies once the first 10 are written
        writes.append(len(batch))
        real_write_many(batch[:10], at)
        raise RuntimeError("the function died")

    world.enrolments.write_many = crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    first_counts = {cell: dict(c) for cell, c in world.counters.counts.items()}
    first_sent = sorted(d.key for d in world.sink.dispatches)
    world.enrolments.write_many = real_write_many  # type: ignore[method-assign]

    again = world.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    assert again.skipped == 10
    final_counts = {cell: dict(c) for cell, c in world.counters.counts.items()}

    def of_page(counts: dict[Any, Any]) -> dict[Any, Any]:
        # The journeys yielded in the other scenario are left there (and counted) only by the redo.
        return {cell: c for cell, c in counts.items() if cell.scenario_id == SCENARIO_ID}

    assert of_page(final_counts) == of_page(first_counts)
    # The sends of the second attempt carry the same dispatch keys (the senders send each once).
    assert set(d.key for d in world.sink.dispatches) == set(first_sent)
    # ...and the counts are those of one uninterrupted run.
    clean = JourneyWorld()
    _arrange(clean)
    clean.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    # Known corner: a journey in a lower-priority scenario that should have yielded to one of the
    # 10 written before the crash is not made to yield by the redo (the page skips them), so the
    # other scenario's counts are compared only for the page's own.
    clean_counts = {cell: dict(c) for cell, c in clean.counters.counts.items()}
    assert of_page(clean_counts) == of_page(final_counts)
    assert sum(1 for (_, sid) in world.enrolments.enrolments if sid == SCENARIO_ID) == sum(
        1 for (_, sid) in clean.enrolments.enrolments if sid == SCENARIO_ID
    )
    assert writes[0] > 10


def test_a_page_whose_counts_cannot_be_written_fails_and_its_redo_counts_it_once() -> None:
    """Report counters down: the page fails before any journey is written (nothing is counted, so
    nothing is lost); the redo, counters back, comes out as one uninterrupted run."""
    from cems.ports import ServiceUnavailable

    world = JourneyWorld()
    ids = _arrange(world)
    stored = world.scenarios.version(SCENARIO_ID, 1)
    assert stored is not None
    profiles = [world.profile(customer_id) for customer_id in ids]
    world.counters.unavailable = True
    with pytest.raises(ServiceUnavailable):
        world.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    assert not any(
        sid == SCENARIO_ID and e.entered_at >= RUN_AT for (_, sid), e in world.enrolments.enrolments.items()
    )
    first_sent = {d.key for d in world.sink.dispatches}
    world.counters.unavailable = False
    world.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    clean = JourneyWorld()
    _arrange(clean)
    clean.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    assert _outcome(world, ids)["counts"] == _outcome(clean, ids)["counts"]
    assert _outcome(world, ids)["enrolments"] == _outcome(clean, ids)["enrolments"]
    # The redo enqueued the same sends (the senders send each key once).
    assert {d.key for d in world.sink.dispatches} == first_sent == {d.key for d in clean.sink.dispatches}


def test_a_cap_taken_by_someone_else_meanwhile_is_decided_again_on_fresh_counts() -> None:
    world = JourneyWorld()
    ids = _arrange(world)
    stored = world.scenarios.version(SCENARIO_ID, 1)
    assert stored is not None
    racer = next(
        cid
        for n, cid in enumerate(ids)
        if n % 7 and n % 5 != 1 and n % 6 != 2 and n % 11 != 4 and not in_holdout(SCENARIO_ID, cid, HOLDOUT)
    )
    real = world.caps.try_consume_many

    def racing(takes: Any, at: Any = None, **named: Any) -> Any:  # another send takes the racer's last one
        world.caps.try_consume(racer, Channel.LINE, ChannelCap(per_day=1), NOW)
        return real(takes, at, **named)

    world.caps.try_consume_many = racing  # type: ignore[method-assign]
    profiles = [world.profile(customer_id) for customer_id in ids]
    world.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)
    racer_enrolment = world.enrolment(racer, SCENARIO_ID)
    assert racer_enrolment.sends == 0  # capped: skipped on fresh counts, never sent past the cap
    assert not [d for d in world.sink.dispatches if d.customer_id == racer]
    day, _ = counters_of(Channel.LINE, NOW)
    assert world.caps.counters[(racer, day)] == 1


def test_two_workers_racing_over_one_page_enrol_and_count_each_customer_once() -> None:
    """A redelivered page racing the first worker (threads, each with a runner of its own): every
    customer ends with one enrolment, every send has one key, the counts are one run's, and each
    send's caps are counted once (both workers took them under the send's dispatch key: the
    second take was allowed as made already, and the lost write keeps it for the winner's message).
    (Caps with room: at a cap's last send, the worker
    whose take is refused decides a skip, as two racing deciders of one journey always have.)"""
    roomy = FrequencyCaps.model_validate({"line": {"per_day": 100, "per_week": 100}})
    world = JourneyWorld()
    ids = _arrange(world)
    world.limits = roomy
    stored = world.scenarios.version(SCENARIO_ID, 1)
    assert stored is not None
    profiles = [world.profile(customer_id) for customer_id in ids]
    clean = JourneyWorld()
    _arrange(clean)
    clean.runner = clean.another_runner(roomy)
    clean.runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW)

    runners = [world.another_runner(world.limits) for _ in range(2)]
    barrier = threading.Barrier(2)
    reports: list[Any] = []
    # Both workers have decided, sent and counted the page before either writes an enrolment.
    write_many = world.enrolments.write_many
    both_decided = threading.Barrier(2)

    def racing_write_many(writes: Any, at: Any = None) -> Any:
        both_decided.wait(timeout=30)
        return write_many(writes, at)

    world.enrolments.write_many = racing_write_many  # type: ignore[method-assign]

    def work(runner: Any) -> None:
        barrier.wait(timeout=30)
        reports.append(runner.enrol_page(stored.scenario, 1, profiles, run_at=RUN_AT, batch="b1", now=NOW))

    threads = [threading.Thread(target=work, args=(runner,)) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 2
    # Each customer's write was won by one worker; the other left it (their takes were one).
    assert sum(r.run.conflicts for r in reports) == sum(r.run.enrolled for r in reports) > 0
    mine = {k: (e.state, e.step_id, e.holdout, e.entry) for k, e in world.enrolments.enrolments.items()}
    theirs = {k: (e.state, e.step_id, e.holdout, e.entry) for k, e in clean.enrolments.enrolments.items()}
    assert mine == theirs
    assert {d.key for d in world.sink.dispatches} == {d.key for d in clean.sink.dispatches}
    assert {c: dict(n) for c, n in world.counters.counts.items()} == {
        c: dict(n) for c, n in clean.counters.counts.items()
    }
    assert {cid: world.caps.counts(cid, Channel.LINE, NOW) for cid in ids} == {
        cid: clean.caps.counts(cid, Channel.LINE, NOW) for cid in ids
    }


def test_a_page_redone_with_a_profile_the_first_attempt_never_saw_messages_each_customer_once() -> None:
    """The worker enqueued the page's sends and died before writing any journey; meanwhile a profile
    was created inside the page's key range, so the redo's page holds it. The redo's shared dispatch
    has the first attempt's key (same batch, same content), and the sender adds the new customer to
    that key's frozen plan: everyone in the page, the new customer too, is messaged and counted once."""
    world = JourneyWorld()
    # Caps with room (at one a day, the redo finds its own keyed takes allowed as well:
    # tests/unit/test_cap_takes_redone.py).
    world.limits = FrequencyCaps.model_validate({"line": {"per_day": 100, "per_week": 100}})
    world.runner = world.another_runner()
    world.upload(DOCUMENT)
    stored = world.scenarios.version(SCENARIO_ID, 1)
    assert stored is not None
    ids = [world.customer(f"cus_{n:03d}") for n in range(0, 40, 2)]

    def died(batch: Any, at: Any = None) -> Any:
        raise RuntimeError("the function died")

    real_write_many = world.enrolments.write_many
    world.enrolments.write_many = died  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        world.runner.enrol_page(
            stored.scenario, 1, [world.profile(c) for c in ids], run_at=RUN_AT, batch="b1", now=NOW
        )
    world.enrolments.write_many = real_write_many  # type: ignore[method-assign]
    first_bodies = world.sent()
    new = world.customer("cus_017")  # in the page's key range, created between the attempts
    assert not in_holdout(SCENARIO_ID, new, HOLDOUT)
    redo = sorted([*ids, new])
    world.runner.enrol_page(
        stored.scenario, 1, [world.profile(c) for c in redo], run_at=RUN_AT, batch="b1", now=NOW
    )
    redo_bodies = world.sent()
    assert [b["idempotency_key"] for b in redo_bodies] == [b["idempotency_key"] for b in first_bodies]
    assert world.enrolment(new, SCENARIO_ID).sends == 1

    deliveries, line, sender_counts = (
        InMemoryLineDeliveries(),
        InMemoryLineGateway(),
        InMemoryReportCounters(),
    )
    sender = LineSender(world.customers, deliveries, line, retry_base_seconds=1, counters=sender_counts)
    for body in [*first_bodies, *redo_bodies, *first_bodies]:  # each delivered, one of them again
        sender.handle(json.dumps(body))
    messaged = {c for c in redo if not in_holdout(SCENARIO_ID, c, HOLDOUT)}
    assert new in messaged
    assert line.received.keys() == {line_user_id(c) for c in messaged}
    assert all(len(m) == 1 for m in line.received.values())
    cell = ReportCell(SCENARIO_ID, 1, "announce", None)
    assert sender_counts.count(cell, Metric.SENT) == len(messaged)
    # Every customer the runner wrote as sent was sent, and only they.
    sent_journeys = {c for c in redo if world.enrolment(c, SCENARIO_ID).sends == 1}
    assert sent_journeys == messaged

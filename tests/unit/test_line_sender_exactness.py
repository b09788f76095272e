"""Each customer messaged once, recorded once and counted once, whatever happens between the sender's
writes: a worker stopping after any one write (plan, unit claim and finish, the unit's report count,
its recipient records, half of them), LINE answering 429 and 5xx, and SQS delivering the dispatch
again. For a mix of personalised and identical content, and recipients who cannot be reached at plan
time or only at send time. And a shared dispatch done again (a redone broadcast page) with fewer
recipients, or naming customers its frozen plan never had, also with two attempts racing to add them.
On the in-memory ports (tests/fakes), which keep the stores' contracts."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from cems import clock
from cems.line.deliveries import (
    FINAL_UNIT_STATUSES,
    DispatchPlan,
    PlanUnit,
    RecipientRecord,
    RecipientStatus,
    UnitStatus,
    retry_key,
)
from cems.line.dispatch import LineDispatch
from cems.line.sender import CLAIM_LEASE, LineSender
from cems.models import ChannelState, Profile
from cems.ports import CountDelta
from cems.reports.counters import Metric, ReportCell

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.line import Answer, InMemoryLineDeliveries, InMemoryLineGateway
from tests.fakes.scenario_io import InMemoryReportCounters

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SHARED = {"type": "text", "text": "茶寮みどりです。新茶のセットが入荷しました。"}
CELL = ReportCell("spring-tea", 1, "announce", None)
SHARED_CUSTOMERS = range(0, 7)  # identical content: one multicast
PERSONAL_CUSTOMERS = range(7, 10)  # their own content: a push each
NO_CONSENT = 10  # skipped by the plan
LEAVES = 3  # unfollows after the plan is made: skipped when its unit is sent


class WorkerStopped(Exception):
    """The worker's execution environment ends (time-out, crash) right here."""


class Tripwire:
    """Counts the sender's writes (to DeliveriesTable and the report counters) and stops the worker
    at the `at`-th one: before it is made (`after` False) or just after."""

    def __init__(self, at: int | None, after: bool) -> None:
        self.at = at
        self.after = after
        self.writes = 0

    def write(self, action: Any) -> Any:
        self.writes += 1
        tripped = self.writes == self.at
        if tripped and not self.after:
            raise WorkerStopped
        result = action()
        if tripped:
            raise WorkerStopped
        return result


class StoppingDeliveries:
    def __init__(self, inner: InMemoryLineDeliveries, trip: Tripwire) -> None:
        self.inner = inner
        self.trip = trip

    def state(self, idempotency_key: str) -> Any:
        return self.inner.state(idempotency_key)

    def extend_plan(self, plan: DispatchPlan) -> bool:
        return bool(self.trip.write(lambda: self.inner.extend_plan(plan)))

    def claim(self, idempotency_key: str, unit: PlanUnit, lease: Any, skipped: Any = None) -> Any:
        return self.trip.write(lambda: self.inner.claim(idempotency_key, unit, lease, skipped))

    def create_plan(self, plan: DispatchPlan) -> bool:
        return bool(self.trip.write(lambda: self.inner.create_plan(plan)))

    def finish(
        self, idempotency_key: str, unit: PlanUnit, token: str, status: UnitStatus, **fields: Any
    ) -> bool:
        return bool(
            self.trip.write(lambda: self.inner.finish(idempotency_key, unit, token, status, **fields))
        )

    def record(
        self, idempotency_key: str, records: Iterable[RecipientRecord], metadata: Mapping[str, Any]
    ) -> None:
        # Written in two halves (BatchWriteItem writes 25 a call): a worker may stop between them.
        records = list(records)
        half = len(records) // 2
        self.trip.write(lambda: self.inner.record(idempotency_key, records[:half], metadata))
        self.trip.write(lambda: self.inner.record(idempotency_key, records[half:], metadata))


class StoppingCounters:
    def __init__(self, inner: InMemoryReportCounters, trip: Tripwire) -> None:
        self.inner = inner
        self.trip = trip

    def add(self, cell: ReportCell, metric: Metric, **kwargs: Any) -> bool:
        return bool(self.trip.write(lambda: self.inner.add(cell, metric, **kwargs)))

    def add_many(self, deltas: Sequence[CountDelta], *, once: str) -> bool:
        return bool(self.trip.write(lambda: self.inner.add_many(deltas, once=once)))


class World:
    def __init__(self) -> None:
        self.customers = InMemoryCustomers()
        self.deliveries = InMemoryLineDeliveries()
        self.line = InMemoryLineGateway()
        self.counters = InMemoryReportCounters()
        for n in [*SHARED_CUSTOMERS, *PERSONAL_CUSTOMERS]:
            self.put(n)
        self.put(NO_CONSENT, consent=False)

    def put(self, n: int, *, reachable: bool = True, consent: bool = True) -> None:
        state = ChannelState(reachable=reachable, consent=consent, updated_at=clock.now())
        self.customers.put_profile(
            Profile(
                customer_id=f"cus_{n:03d}",
                line_user_id=f"U{n:032x}",
                channels={"line": state},
                first_seen_at=NOW,
                updated_at=clock.now(),
            )
        )

    def sender(self, trip: Tripwire | None = None) -> LineSender:
        """A worker: one that may stop (with the tripwire), or a fresh one on a redelivery."""
        deliveries: Any = StoppingDeliveries(self.deliveries, trip) if trip else self.deliveries
        counters: Any = StoppingCounters(self.counters, trip) if trip else self.counters
        return LineSender(self.customers, deliveries, self.line, retry_base_seconds=1, counters=counters)


def body() -> str:
    return LineDispatch.model_validate(
        {
            "idempotency_key": "spring-tea#r1#p0000#announce#abc#0000",
            "recipients": [f"cus_{n:03d}" for n in [*SHARED_CUSTOMERS, *PERSONAL_CUSTOMERS, NO_CONSENT]],
            "messages": [SHARED],
            "personalised": {
                f"cus_{n:03d}": [{"type": "text", "text": f"{n}様、新茶が入荷しました"}]
                for n in PERSONAL_CUSTOMERS
            },
            "scenario_id": "spring-tea",
            "version": 1,
            "step_id": "announce",
        }
    ).to_sqs_body()


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


def run_until_done(world: World, faults: Sequence[Answer], stop_at: int | None, after: bool) -> None:
    """The first attempt (which may stop at a write) and then SQS's redeliveries, each after the
    backoff or lease, until the dispatch needs nothing more; the follower leaves after the plan."""
    world.line.answer_next(*faults)
    trip = Tripwire(stop_at, after)
    first = world.sender(trip)
    key = LineDispatch.model_validate_json(body()).idempotency_key
    plan_seen = False

    def unfollow_once_planned() -> None:
        nonlocal plan_seen
        if not plan_seen and world.deliveries.state(key).plan is not None:
            plan_seen = True
            world.put(LEAVES, reachable=False)

    world.line.on_call = unfollow_once_planned
    with contextlib.suppress(WorkerStopped):
        first.handle(body())
    unfollow_once_planned()
    for receive_count in range(2, 30):
        clock.advance(CLAIM_LEASE.total_seconds() + 600)
        report = world.sender().handle(body(), receive_count=receive_count)
        state = world.deliveries.state(key)
        done = state.plan is not None and all(
            (u := state.units.get(unit.unit_id)) is not None and u.status in FINAL_UNIT_STATUSES
            for unit in state.plan.units
        )
        if done and report.retry_after is None:
            return
    raise AssertionError("the dispatch never finished")


def check_exact(world: World) -> None:
    key = LineDispatch.model_validate_json(body()).idempotency_key
    # Messaged once each: the leaver possibly before it left (it was reachable when its unit went).
    received = {user: len(messages) for user, messages in world.line.received.items()}
    assert all(n == 1 for n in received.values()), received
    outcomes = world.deliveries.outcomes(key)
    assert set(outcomes) == {f"cus_{n:03d}" for n in [*SHARED_CUSTOMERS, *PERSONAL_CUSTOMERS, NO_CONSENT]}
    assert outcomes[f"cus_{NO_CONSENT:03d}"] == RecipientStatus.SKIPPED_NO_CONSENT
    sent = {c for c, s in outcomes.items() if s == RecipientStatus.SENT}
    assert {f"U{int(c[4:]):032x}" for c in sent} == set(received)
    tally = Counter(outcomes.values())
    assert world.counters.count(CELL, Metric.SENT) == tally[RecipientStatus.SENT] == len(received)
    assert world.counters.count(CELL, Metric.SUPPRESSED) == (
        tally[RecipientStatus.SKIPPED_NO_CONSENT] + tally[RecipientStatus.SKIPPED_UNREACHABLE]
    )
    assert world.counters.count(CELL, Metric.FAILED) == 0
    assert sum(tally.values()) == 11


def writes_of_a_clean_run() -> int:
    clock.freeze(NOW)
    world = World()
    trip = Tripwire(None, False)
    world.sender(trip).handle(body())
    clock.reset()
    return trip.writes


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("stop_at", range(1, writes_of_a_clean_run() + 1))
def test_a_worker_stopping_at_any_write_leaves_every_customer_messaged_recorded_and_counted_once(
    stop_at: int, after: bool
) -> None:
    world = World()
    run_until_done(world, [], stop_at, after)
    check_exact(world)


@pytest.mark.parametrize("stop_at", [None, 3, 6, 9])
def test_429_and_5xx_storms_with_redeliveries_still_message_and_count_each_customer_once(
    stop_at: int | None,
) -> None:
    faults = [Answer(429), Answer(500), Answer(503), Answer(200, lost_after_accepting=True), Answer(502)]
    world = World()
    run_until_done(world, faults, stop_at, after=True)
    check_exact(world)
    assert len(world.line.calls) >= 4  # one multicast and three pushes, some of them again


# -- a redone shared dispatch: fewer recipients, or customers its frozen plan never had ------------

REDO_KEY = "spring-tea#r1#s0of1#0123456789abcdef#announce#0123456789abcdef0123#0000"
FIRST = [*SHARED_CUSTOMERS, NO_CONSENT]
NEW = 20  # a profile created in the page's key range between the attempts: reachable
NEW_NO_CONSENT = 21
NEW_SAME_ACCOUNT = 22  # linked to the LINE account of cus_000, who was sent the message already
# The redo: the journeys of 0-2 were written before the worker stopped, so they are not in it.
REDO = [3, 4, 5, 6, NO_CONSENT, NEW, NEW_NO_CONSENT, NEW_SAME_ACCOUNT]


def shared_body(customers: Iterable[int], *, sole_chunk: bool = True) -> str:
    """A shared dispatch as cems.line.multicast.group makes it (a sole chunk of its batch)."""
    return LineDispatch(
        idempotency_key=REDO_KEY,
        recipients=[f"cus_{n:03d}" for n in customers],
        messages=[SHARED],
        scenario_id="spring-tea",
        version=1,
        step_id="announce",
        sole_chunk=sole_chunk,
    ).to_sqs_body()


def redo_world() -> World:
    """The first attempt's dispatch sent (clean), then the new profiles created."""
    world = World()
    world.sender().handle(shared_body(FIRST))
    world.put(NEW)
    world.put(NEW_NO_CONSENT, consent=False)
    state = ChannelState(reachable=True, consent=True, updated_at=clock.now())
    world.customers.put_profile(
        Profile(
            customer_id=f"cus_{NEW_SAME_ACCOUNT:03d}",
            line_user_id=f"U{0:032x}",
            channels={"line": state},
            first_seen_at=NOW,
            updated_at=clock.now(),
        )
    )
    return world


def deliver_until_done(world: World, bodies: Sequence[str]) -> None:
    """SQS's redeliveries of `bodies`, each after the backoff or lease, until nothing is left."""
    for receive_count in range(2, 30):
        clock.advance(CLAIM_LEASE.total_seconds() + 600)
        reports = [world.sender().handle(b, receive_count=receive_count) for b in bodies]
        state = world.deliveries.state(REDO_KEY)
        assert state.plan is not None
        done = all(
            (u := state.units.get(unit.unit_id)) is not None and u.status in FINAL_UNIT_STATUSES
            for unit in state.plan.units
        )
        if done and all(r.retry_after is None for r in reports):
            return
    raise AssertionError("the dispatch never finished")


def check_redo_exact(world: World, *, added: set[int]) -> None:
    """Everyone of the first attempt and of `added` messaged, recorded and counted once."""
    received = {user: len(messages) for user, messages in world.line.received.items()}
    sent = {n for n in [*SHARED_CUSTOMERS, *added] if n not in (NO_CONSENT, NEW_NO_CONSENT, NEW_SAME_ACCOUNT)}
    assert received == {f"U{n:032x}": 1 for n in sent}
    outcomes = world.deliveries.outcomes(REDO_KEY)
    expected = {f"cus_{n:03d}": "sent" for n in sent}
    expected[f"cus_{NO_CONSENT:03d}"] = "skipped_no_consent"
    if NEW_NO_CONSENT in added:
        expected[f"cus_{NEW_NO_CONSENT:03d}"] = "skipped_no_consent"
    if NEW_SAME_ACCOUNT in added:
        expected[f"cus_{NEW_SAME_ACCOUNT:03d}"] = "skipped_unreachable"
    assert outcomes == expected
    tally = Counter(outcomes.values())
    assert world.counters.count(CELL, Metric.SENT) == tally["sent"]
    assert (
        world.counters.count(CELL, Metric.SUPPRESSED)
        == tally["skipped_no_consent"] + tally["skipped_unreachable"]
    )
    assert world.counters.count(CELL, Metric.FAILED) == 0


def test_a_redo_with_fewer_recipients_sends_and_counts_nothing_more() -> None:
    world = redo_world()
    calls = len(world.line.calls)
    report = world.sender().handle(shared_body([3, 4, NO_CONSENT]))
    assert report.content_mismatch and report.added_to_plan == 0 and report.api_calls == 0
    assert len(world.line.calls) == calls
    plan = world.deliveries.state(REDO_KEY).plan
    assert plan is not None and plan.extensions == ()
    check_redo_exact(world, added=set())


def writes_of_a_clean_redo() -> int:
    clock.freeze(NOW)
    world = redo_world()
    trip = Tripwire(None, False)
    world.sender(trip).handle(shared_body(REDO))
    clock.reset()
    return trip.writes


@pytest.mark.parametrize("after", [False, True], ids=["before", "after"])
@pytest.mark.parametrize("stop_at", [None, *range(1, writes_of_a_clean_redo() + 1)])
def test_a_redo_naming_new_customers_adds_them_once_and_messages_and_counts_each_once(
    stop_at: int | None, after: bool
) -> None:
    world = redo_world()
    first_calls = len(world.line.calls)
    with contextlib.suppress(WorkerStopped):
        world.sender(Tripwire(stop_at, after)).handle(shared_body(REDO))
    # The redo's body again, and the first attempt's (its message may come again too).
    deliver_until_done(world, [shared_body(REDO), shared_body(FIRST)])
    check_redo_exact(world, added={NEW, NEW_NO_CONSENT, NEW_SAME_ACCOUNT})
    plan = world.deliveries.state(REDO_KEY).plan
    assert plan is not None and len(plan.extensions) == 1
    assert [u.unit_id for u in plan.units] == ["m0000", "x01m0000"]
    assert dict(plan.extensions[0].skipped).keys() == {
        f"cus_{NEW_NO_CONSENT:03d}",
        f"cus_{NEW_SAME_ACCOUNT:03d}",
    }
    # The new customer's one call, under the retry key of its own unit (a 409 on a repeat).
    new_calls = world.line.calls[first_calls:]
    assert {c.to for c in new_calls} == {(f"U{NEW:032x}",)}
    assert {c.retry_key for c in new_calls} == {retry_key(REDO_KEY, "x01m0000")}


class RacingDeliveries:
    """Lets another worker do a whole attempt just before this one's extension is written: both
    read the plan without the new customers, and the other one extends it first."""

    def __init__(self, inner: InMemoryLineDeliveries, rival: Callable[[], Any]) -> None:
        self.inner = inner
        self.rival: Callable[[], Any] | None = rival
        self.extensions_tried = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def extend_plan(self, plan: DispatchPlan) -> bool:
        self.extensions_tried += 1
        rival, self.rival = self.rival, None
        if rival is not None:
            rival()
        return self.inner.extend_plan(plan)


@pytest.mark.parametrize("same_body", [True, False], ids=["same-redo", "two-redos"])
def test_two_attempts_racing_to_add_new_customers_agree_on_one_extension(same_body: bool) -> None:
    world = redo_world()
    first_calls = len(world.line.calls)
    # The same redone dispatch delivered twice at once; or two redos each with a customer of its own.
    mine = shared_body(REDO)
    theirs = mine if same_body else shared_body([3, NEW_NO_CONSENT])
    racing = RacingDeliveries(world.deliveries, lambda: world.sender().handle(theirs))
    sender = LineSender(world.customers, racing, world.line, retry_base_seconds=1, counters=world.counters)  # type: ignore[arg-type]
    report = sender.handle(mine)
    # Its first write lost to the rival's; read again, it adds what is still missing (if anything).
    assert racing.extensions_tried == (1 if same_body else 2)
    deliver_until_done(world, [mine, theirs])
    check_redo_exact(world, added={NEW, NEW_NO_CONSENT, NEW_SAME_ACCOUNT})
    plan = world.deliveries.state(REDO_KEY).plan
    assert plan is not None
    if same_body:
        assert report.added_to_plan == 0 and len(plan.extensions) == 1
        assert [u.unit_id for u in plan.units] == ["m0000", "x01m0000"]
    else:
        # The rival added its customer (no consent: no unit), this attempt the other two.
        assert report.added_to_plan == 2 and len(plan.extensions) == 2
        assert [u.unit_id for u in plan.units] == ["m0000", "x02m0000"]
    assert [c.to for c in world.line.calls[first_calls:]] == [(f"U{NEW:032x}",)]


def test_a_dispatch_that_is_not_a_sole_chunk_or_a_plan_stored_before_keeps_its_plan_frozen() -> None:
    # A dispatch made by hand (not a sole chunk) naming customers its plan never had: left out.
    world = redo_world()
    report = world.sender().handle(shared_body(REDO, sole_chunk=False))
    assert report.content_mismatch and report.added_to_plan == 0
    check_redo_exact(world, added=set())
    # A plan stored from a dispatch that was not a sole chunk (before extensions existed): kept too.
    world = World()
    world.sender().handle(shared_body(FIRST, sole_chunk=False))
    world.put(NEW)
    report = world.sender().handle(shared_body(REDO))
    assert report.added_to_plan == 0
    plan = world.deliveries.state(REDO_KEY).plan
    assert plan is not None and not plan.extendable and plan.extensions == ()
    assert f"U{NEW:032x}" not in world.line.received


@pytest.mark.parametrize("same_body", [True, False], ids=["same-redo", "two-redos"])
def test_two_workers_extending_at_once_in_threads_message_and_count_each_customer_once(
    same_body: bool,
) -> None:
    """Two workers (threads, a sender each) that both read the plan without the new customers and
    write their extensions together: one extension per read plan is stored, nobody is sent twice."""
    world = redo_world()
    bodies = [shared_body(REDO), shared_body(REDO if same_body else [3, NEW, NEW_NO_CONSENT])]
    both_read = threading.Barrier(2)
    first_try: set[int] = set()

    class Together:
        def __getattr__(self, name: str) -> Any:
            return getattr(world.deliveries, name)

        def extend_plan(self, plan: DispatchPlan) -> bool:
            if threading.get_ident() not in first_try:  # each worker's first write waits for the other's
                first_try.add(threading.get_ident())
                both_read.wait(timeout=30)
            return world.deliveries.extend_plan(plan)

    reports: list[Any] = []

    def work(body: str) -> None:
        sender = LineSender(
            world.customers, Together(), world.line, retry_base_seconds=1, counters=world.counters
        )  # type: ignore[arg-type]
        reports.append(sender.handle(body))

    threads = [threading.Thread(target=work, args=(b,)) for b in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(reports) == 2
    assert sum(r.added_to_plan for r in reports) == 3  # each new customer added once
    deliver_until_done(world, bodies)
    check_redo_exact(world, added={NEW, NEW_NO_CONSENT, NEW_SAME_ACCOUNT})
    plan = world.deliveries.state(REDO_KEY).plan
    assert plan is not None and 1 <= len(plan.extensions) <= 2

"""The batched reads and writes of the journey stores (issue 11) keep one contract on the in-memory
fakes and on DynamoDB (moto): enrolments read many at once, every customer's cap counters read at
once, cap takes and enrolment writes of many customers in transactions where a refused one (its
condition failed) takes or writes nothing and the rest go through."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cems import clock
from cems.adapters.dynamodb.journeys import MAX_ATTEMPTS, CapStore, EnrolmentStore
from cems.models import Channel
from cems.ports import CapStorePort, EnrolmentStorePort
from cems.scenario import engine
from cems.scenario.caps import counters_of
from cems.scenario.model import ChannelCap

from tests.fakes.journeys import InMemoryCapStore, InMemoryEnrolmentStore

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, empty_stores, module_dynamodb  # noqa: F401

TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
IMPLEMENTATIONS = ["fake", "moto"]


@pytest.fixture(autouse=True)
def frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture(params=IMPLEMENTATIONS)
def enrolments(request: pytest.FixtureRequest) -> EnrolmentStorePort:
    if request.param == "fake":
        return InMemoryEnrolmentStore[engine.Enrolment]()
    return EnrolmentStore(TABLE, request.getfixturevalue("empty_dynamodb"), 4, model=engine.Enrolment)


@pytest.fixture(params=IMPLEMENTATIONS)
def caps(request: pytest.FixtureRequest) -> CapStorePort:
    if request.param == "fake":
        return InMemoryCapStore()
    return CapStore(TABLE, request.getfixturevalue("empty_dynamodb"))


def enrolment(customer_id: str, scenario_id: str = "s1", **fields: Any) -> engine.Enrolment:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "scenario_id": scenario_id,
        "version": 1,
        "step_id": "first",
        "state": engine.EnrolmentState.ACTIVE,
        "entered_at": NOW,
    }
    return engine.Enrolment.model_validate(values | fields)


def test_many_enrolments_are_read_at_once_and_missing_ones_left_out(enrolments: EnrolmentStorePort) -> None:
    for n in range(130):  # more than one BatchGetItem's 100 keys
        enrolments.create(enrolment(f"c{n:03d}", "s1" if n % 2 else "s2"))
    pairs = [(f"c{n:03d}", "s1") for n in range(130)] + [("nobody", "s1")]
    found = enrolments.get_many(pairs)
    assert sorted(found) == [(f"c{n:03d}", "s1") for n in range(130) if n % 2]
    assert found[("c001", "s1")] == enrolments.get("c001", "s1")


def test_writes_in_a_transaction_create_and_save_and_refuse_only_the_stale_ones(
    enrolments: EnrolmentStorePort,
) -> None:
    enrolments.create(enrolment("taken"))  # someone else created it first
    existing = enrolments.create(enrolment("again", step_id="old"))
    assert existing is not None
    writes: list[tuple[engine.Enrolment, int | None]] = [
        (enrolment(f"new{n:03d}"), None)
        for n in range(120)  # more than one transaction's 100
    ]
    writes += [
        (enrolment("taken", step_id="mine"), None),
        (enrolment("again", step_id="new"), existing.revision),
    ]
    writes += [(enrolment("stale", step_id="x"), 7)]  # saved on a revision never written
    answers = enrolments.write_many(writes)
    assert [a is None for a in answers[-3:]] == [True, False, True]
    assert all(a is not None and a.revision == 1 for a in answers[:120])
    assert enrolments.get("new119", "s1") is not None
    taken = enrolments.get("taken", "s1")
    assert taken is not None and taken.step_id == "first"  # the first writer's stands
    again = enrolments.get("again", "s1")
    assert again is not None and again.step_id == "new" and again.revision == existing.revision + 1
    assert enrolments.get("stale", "s1") is None


def test_one_enrolment_twice_in_one_transaction_is_refused(enrolments: EnrolmentStorePort) -> None:
    with pytest.raises(ValueError, match="twice"):
        enrolments.write_many([(enrolment("c1"), None), (enrolment("c1"), None)])
    assert enrolments.get("c1", "s1") is None


def test_many_customers_cap_counters_read_at_once_match_each_ones(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=5, per_week=9)
    customers = [f"c{n:02d}" for n in range(40)]  # 40 x 4 counters: more than one BatchGetItem
    for n, customer in enumerate(customers):
        for _ in range(n % 3):
            assert caps.try_consume(customer, Channel.LINE, cap, NOW).allowed
    read = caps.counts_of_many(customers, [Channel.LINE, Channel.EMAIL], NOW)
    assert sorted(read) == customers
    for customer in customers:
        assert read[customer] == caps.counts_of(customer, [Channel.LINE, Channel.EMAIL], NOW)
    day, week = counters_of(Channel.LINE, NOW)
    assert (read["c02"][day], read["c02"][week]) == (2, 2)


def test_cap_takes_in_a_transaction_refuse_the_full_ones_and_count_the_rest(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=1, per_week=5)
    assert caps.try_consume("full", Channel.LINE, cap, NOW).allowed
    takes = [(f"c{n:02d}", Channel.LINE, cap) for n in range(60)]  # 120 updates: two transactions
    takes.insert(30, ("full", Channel.LINE, cap))
    outcomes = caps.try_consume_many(takes, NOW)
    assert [o.allowed for o in outcomes] == [customer != "full" for customer, _, _ in takes]
    assert caps.counts("full", Channel.LINE, NOW) == (1, 1)  # nothing more counted for the refused
    assert all(caps.counts(f"c{n:02d}", Channel.LINE, NOW) == (1, 1) for n in range(60))
    again = caps.try_consume_many([("c00", Channel.LINE, cap), ("c01", Channel.EMAIL, cap)], NOW)
    assert [o.allowed for o in again] == [False, True]
    assert caps.counts("c00", Channel.LINE, NOW) == (1, 1)


def test_a_customer_and_channel_twice_in_one_transaction_is_refused(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=3)
    with pytest.raises(ValueError, match="one take"):
        caps.try_consume_many([("c1", Channel.LINE, cap), ("c1", Channel.LINE, cap)], NOW)


def test_many_date_entries_are_read_at_once_as_one_by_one(enrolments: EnrolmentStorePort) -> None:
    for n in range(110):
        assert enrolments.put_schedule(f"c{n:03d}", "birthday", NOW + timedelta(days=n), None)
    first = enrolments.schedule("c000", "birthday")
    assert first is not None
    assert enrolments.put_schedule("c000", "birthday", NOW, first)  # revision 2
    pairs = [(f"c{n:03d}", "birthday") for n in range(110)] + [("c000", "other"), ("nobody", "birthday")]
    found = enrolments.schedules_many(pairs)
    assert sorted(found) == [(f"c{n:03d}", "birthday") for n in range(110)]
    assert all(found[pair] == enrolments.schedule(*pair) for pair in found)
    assert found[("c000", "birthday")].revision == 2


class _Colliding:
    """A DynamoDB client whose first `times` transactions are cancelled as colliding with another
    transaction (TransactionConflict on every item, nothing written), as DynamoDB does under contention."""

    def __init__(self, client: Any, times: int) -> None:
        self._client = client
        self.times = times
        self.cancelled = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def transact_write_items(self, **request: Any) -> Any:
        if self.cancelled < self.times:
            self.cancelled += 1
            reasons = [{"Code": "TransactionConflict"} for _ in request["TransactItems"]]
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": reasons,
                },  # type: ignore[typeddict-item]
                "TransactWriteItems",
            )
        return self._client.transact_write_items(**request)


@pytest.mark.parametrize("times", [2, MAX_ATTEMPTS])
def test_transactions_colliding_with_others_are_tried_again_then_written_one_by_one(
    request: pytest.FixtureRequest, times: int
) -> None:
    """Retried while they collide; still colliding after MAX_ATTEMPTS, each goes on its own: every
    take and write lands once, none twice."""
    client = _Colliding(request.getfixturevalue("empty_dynamodb"), times)
    caps = CapStore(TABLE, client)  # type: ignore[arg-type]
    cap = ChannelCap(per_day=1, per_week=5)
    outcomes = caps.try_consume_many([(f"c{n}", Channel.LINE, cap) for n in range(3)], NOW)
    assert all(o.allowed for o in outcomes)
    assert all(caps.counts(f"c{n}", Channel.LINE, NOW) == (1, 1) for n in range(3))
    client.cancelled = 0
    store = EnrolmentStore(TABLE, client, 4, model=engine.Enrolment)  # type: ignore[arg-type]
    answers = store.write_many([(enrolment(f"c{n}"), None) for n in range(3)])
    assert all(a is not None and a.revision == 1 for a in answers)
    assert all(store.get(f"c{n}", "s1") is not None for n in range(3))

"""Aggregated report counts (`CounterPort.add_many`, issue 11) keep one contract on the in-memory
fake and on the DynamoDB adapter under moto: deltas summed per cell, one `once` marker for the lot
(a redo counts nothing), a count too large for one transaction split so that a redo still counts
each part once, bad input refused with nothing stored, and exact totals under racing workers that
redeliver each other's counts while DynamoDB cancels some of their transactions. What only the
adapter has (shards, the layout before sharding, the transactions it sends) is tested on moto
below the contract."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

import pytest
from botocore.exceptions import ClientError
from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.report_counters import (
    BACKOFF_CAP,
    CELLS_PER_TRANSACTION,
    MAX_ATTEMPTS,
    ReportCounters,
    cell_sk,
)
from cems.ports import CountDelta, CounterPort, ReportReader, ServiceUnavailable
from cems.reports.counters import Metric, ReportCell, report_day

from tests.fakes.scenario_io import InMemoryReportCounters

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, module_dynamodb  # noqa: F401

TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def read(counters: ReportReader, scenario_id: str) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
    """`counters.cells` with each cell's day checked (the store dates a count with the Tokyo day it
    was counted on: NOW's, here) and left out, so expectations name cells as callers give them."""
    found = counters.cells(scenario_id)
    assert all(cell.day == report_day(NOW) for cell, _ in found)
    return [(replace(cell, day=None), counts) for cell, counts in found]


IMPLEMENTATIONS = ["fake", "moto"]


class Counters(CounterPort, ReportReader, Protocol):
    pass


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


class DynamoDBAsRaced:
    """moto's client as DynamoDB answers racing writers. moto produces no TransactionConflict and is
    not safe to call from several threads, so calls reach moto one at a time, and:
    - a transaction touching an item of the transaction moto is running at that moment is cancelled
      with TransactionConflict on that item, as DynamoDB cancels one that meets another in progress;
    - the first `cancel_first` attempts carrying each marker are cancelled with TransactionConflict
      whatever else runs: `planted`, a number fixed by the facts counted, not by timing;
    - `always_conflict`: every transaction is cancelled (collisions outlasting every retry).
    Overlaps cancel at most OVERLAP_CONFLICTS attempts per marker (later ones wait their turn), so a
    transaction is cancelled fewer times than the adapter tries, and no outcome depends on timing.
    `transactions` records what moto ran; `fail(call number)` plants an outage."""

    OVERLAP_CONFLICTS = 6

    def __init__(
        self,
        client: Any,
        *,
        cancel_first: int = 0,
        always_conflict: bool = False,
        fail: Callable[[int], bool] | None = None,
    ):
        self._client = client
        self._moto = threading.Lock()
        self._state = threading.Lock()
        self._running: set[tuple[str, str]] = set()
        self._cancel_first = cancel_first
        self._always_conflict = always_conflict
        self._fail = fail
        self._planted_on: Counter[tuple[str, str]] = Counter()
        self._overlaps_on: Counter[tuple[str, str]] = Counter()
        self.calls = 0
        self.planted = 0
        self.overlaps = 0
        self.transactions: list[list[dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def update_item(self, **kwargs: Any) -> Any:
        with self._moto:
            return self._client.update_item(**kwargs)

    def put_item(self, **kwargs: Any) -> Any:
        with self._moto:
            return self._client.put_item(**kwargs)

    def transact_write_items(self, **kwargs: Any) -> Any:
        actions = kwargs["TransactItems"]
        items = [_item_of(action) for action in actions]
        marker = items[0]
        with self._state:
            self.calls += 1
            if self._fail is not None and self._fail(self.calls):
                raise ClientError(
                    {"Error": {"Code": "InternalServerError", "Message": "planted outage"}},
                    "TransactWriteItems",
                )
            if self._always_conflict or self._planted_on[marker] < self._cancel_first:
                self._planted_on[marker] += 1
                self.planted += 1
                raise _conflict([i == 1 for i in range(len(items))])
            busy = [item in self._running for item in items]
            if any(busy) and self._overlaps_on[marker] < self.OVERLAP_CONFLICTS:
                self._overlaps_on[marker] += 1
                self.overlaps += 1
                raise _conflict(busy)
        with self._moto:
            with self._state:
                self._running = set(items)
            try:
                answer = self._client.transact_write_items(**kwargs)
                self.transactions.append(actions)
                return answer
            finally:
                with self._state:
                    self._running = set()


def _conflict(on: list[bool]) -> ClientError:
    """DynamoDB's answer to a transaction that met another in progress on the items `on`."""
    return ClientError(
        {
            "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
            "CancellationReasons": [{"Code": "TransactionConflict" if hit else "None"} for hit in on],
        },
        "TransactWriteItems",
    )


def _item_of(action: dict[str, Any]) -> tuple[str, str]:
    body = next(iter(action.values()))
    key = body.get("Key") or body["Item"]
    return key["pk"]["S"], key["sk"]["S"]


@pytest.fixture(params=IMPLEMENTATIONS)
def counters(request: pytest.FixtureRequest) -> Counters:
    if request.param == "fake":
        return InMemoryReportCounters()
    return ReportCounters(TABLE, request.getfixturevalue("empty_dynamodb"))


# ------------------------------------------------------------------------------------------ contract


def test_deltas_are_summed_per_cell_and_metric(counters: Counters) -> None:
    mail = ReportCell("s1", 1, "mail", "A")
    level = ReportCell("s1", 1, variant="A")
    assert counters.add_many(
        [
            CountDelta(mail, Metric.SENT, 3),
            CountDelta(mail, Metric.SENT, 2),
            CountDelta(mail, Metric.FAILED),
            CountDelta(level, Metric.ENROLLED, 4),
            CountDelta(level, Metric.CONVERTED, 1, Decimal("1500.5")),
            CountDelta(level, Metric.CONVERTED, 1, Decimal("3000")),
        ],
        once="page#1",
    )
    assert counters.add_many([CountDelta(mail, Metric.SENT, 10)], once="page#2")
    # A single add goes on counting the same cells.
    assert counters.add(mail, Metric.OPENED, once="opened#d1")
    assert read(counters, "s1") == [
        (level, {"enrolled": 4, "converted": 2, "revenue": Decimal("4500.5")}),
        (mail, {"sent": 15, "failed": 1, "opened": 1}),
    ]
    assert counters.scenario_ids() == ["s1"]


def test_a_marker_there_already_counts_nothing(counters: Counters) -> None:
    cell = ReportCell("s1", 1, "mail")
    assert counters.add_many([CountDelta(cell, Metric.SENT, 5)], once="page#1")
    # Redelivered, even with other deltas: nothing counted.
    assert not counters.add_many([CountDelta(cell, Metric.SENT, 5)], once="page#1")
    assert not counters.add_many([CountDelta(ReportCell("s1", 2), Metric.ENROLLED)], once="page#1")
    # A marker is per scenario, and is the one a single add of the same fact uses.
    assert not counters.add(cell, Metric.SENT, once="page#1")
    assert counters.add_many([CountDelta(ReportCell("s2", 1), Metric.ENROLLED)], once="page#1")
    assert read(counters, "s1") == [(cell, {"sent": 5})]


def test_nothing_to_count_writes_nothing(counters: Counters) -> None:
    assert counters.add_many([], once="page#1")
    assert read(counters, "s1") == [] and counters.scenario_ids() == []


def test_bad_deltas_are_refused_with_nothing_stored(counters: Counters) -> None:
    cell = ReportCell("s1", 1, "mail")
    with pytest.raises(ValueError, match="one scenario"):
        counters.add_many(
            [CountDelta(cell, Metric.SENT), CountDelta(ReportCell("s2", 1), Metric.SENT)], once="p"
        )
    with pytest.raises(ValueError, match="cannot go down"):
        counters.add_many([CountDelta(cell, Metric.SENT, 2), CountDelta(cell, Metric.FAILED, -1)], once="p")
    assert read(counters, "s1") == [] and counters.cells("s2") == []
    # The marker was not taken either: the same fact counts when it comes right.
    assert counters.add_many([CountDelta(cell, Metric.SENT, 2)], once="p")
    assert read(counters, "s1") == [(cell, {"sent": 2})]


def _wide_page(scenario: str, cells: int) -> list[CountDelta]:
    return [CountDelta(ReportCell(scenario, 1, f"step-{i:03d}"), Metric.SENT, i + 1) for i in range(cells)]


def test_more_cells_than_a_transaction_holds_count_once(counters: Counters) -> None:
    cells = CELLS_PER_TRANSACTION + 10
    assert counters.add_many(_wide_page("s1", cells), once="page#wide")
    assert not counters.add_many(_wide_page("s1", cells), once="page#wide")
    counted = read(counters, "s1")
    assert len(counted) == cells
    assert sum(int(c["sent"]) for _, c in counted) == cells * (cells + 1) // 2
    assert counted[7] == (ReportCell("s1", 1, "step-007"), {"sent": 8})


def test_each_count_is_dated_with_its_tokyo_day_and_keeps_its_channel(counters: Counters) -> None:
    """Issue 12: a day and a channel are part of the cell. The day is the Tokyo day of the count
    (15:30 UTC is already the next day in Tokyo); a page's deltas share it, so a day adds no cell
    to a transaction; a redelivery the next day is still refused by its marker."""
    push = ReportCell("s1", 1, "push", channel="line")
    assert counters.add_many(
        [CountDelta(push, Metric.SENT, 500), CountDelta(push, Metric.FAILED, 2)], once="u#1"
    )
    clock.freeze(datetime(2026, 5, 1, 15, 30, tzinfo=UTC))
    assert not counters.add_many([CountDelta(push, Metric.SENT, 500)], once="u#1")
    assert counters.add(push, Metric.CLICKED, once="clicked#d1")
    assert counters.add(ReportCell("s1", 1), Metric.ENROLLED)
    assert counters.cells("s1") == [
        (ReportCell("s1", 1, day="2026-05-02"), {"enrolled": 1}),
        (replace(push, day="2026-05-01"), {"sent": 500, "failed": 2}),
        (replace(push, day="2026-05-02"), {"clicked": 1}),
    ]


@dataclass(frozen=True)
class Fact:
    """One thing a worker counts: an aggregated page (add_many) or a single fact (add)."""

    once: str
    deltas: tuple[CountDelta, ...]

    def count(self, counters: Counters) -> bool:
        if len(self.deltas) == 1 and self.once.startswith("opened#"):
            delta = self.deltas[0]
            return counters.add(delta.cell, delta.metric, once=self.once, revenue=delta.revenue)
        return counters.add_many(self.deltas, once=self.once)


def _racing_facts(scenario: str) -> list[Fact]:
    """Pages of a broadcast over the same few cells, two pages wider than one transaction, and
    single opens: every one of them touches cells the others touch."""
    facts: list[Fact] = []
    for page in range(40):
        deltas: list[CountDelta] = []
        for recipient in range(page % 7 + 1):
            variant = "AB"[recipient % 2]
            held = recipient % 5 == 4
            deltas.append(CountDelta(ReportCell(scenario, 1, variant=variant, holdout=held), Metric.ENROLLED))
            if not held:
                deltas.append(CountDelta(ReportCell(scenario, 1, "mail", variant), Metric.SENT))
        if page % 4 == 0:
            deltas.append(
                CountDelta(ReportCell(scenario, 1, variant="A"), Metric.CONVERTED, 1, Decimal("250"))
            )
        facts.append(Fact(f"page#{page}", tuple(deltas)))
    for wide in range(2):
        facts.append(Fact(f"page#wide{wide}", tuple(_wide_page(scenario, CELLS_PER_TRANSACTION + 20))))
    for dispatch in range(30):
        cell = ReportCell(scenario, 1, "mail", "AB"[dispatch % 2])
        facts.append(Fact(f"opened#d{dispatch}", (CountDelta(cell, Metric.OPENED),)))
    return facts


def _expected(facts: list[Fact]) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
    totals: dict[ReportCell, dict[str, int | Decimal]] = {}
    for fact in facts:
        for delta in fact.deltas:
            counts = totals.setdefault(delta.cell, {})
            counts[delta.metric.value] = int(counts.get(delta.metric.value, 0)) + delta.n
            if delta.revenue is not None:
                counts["revenue"] = Decimal(counts.get("revenue", 0)) + delta.revenue
    return sorted(totals.items(), key=lambda item: cell_sk(item[0]))


@pytest.fixture(params=IMPLEMENTATIONS)
def raced(request: pytest.FixtureRequest) -> tuple[Counters, DynamoDBAsRaced | None]:
    if request.param == "fake":
        return InMemoryReportCounters(), None
    client = DynamoDBAsRaced(request.getfixturevalue("empty_dynamodb"), cancel_first=2)
    return ReportCounters(TABLE, client), client


def test_report_counters_exact_under_racing_workers(raced: tuple[Counters, DynamoDBAsRaced | None]) -> None:
    """12 workers count 72 facts (broadcast pages over the same cells, two of them split in two
    transactions, and single opens), each fact delivered three times, shuffled across the workers;
    on moto the first two attempts of every transaction, and attempts that meet another transaction
    in progress on an item, are cancelled by a TransactionConflict. Every fact counts exactly once."""
    counters, client = raced
    facts = _racing_facts("race")
    deliveries = [fact for fact in facts for _ in range(3)]
    random.Random(11).shuffle(deliveries)
    start = threading.Barrier(12)

    def worker(share: list[Fact]) -> list[tuple[str, bool]]:
        start.wait(timeout=60)
        return [(fact.once, fact.count(counters)) for fact in share]

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = [a for done in pool.map(worker, [deliveries[i::12] for i in range(12)]) for a in done]

    # Each fact answered True exactly once, however its deliveries interleaved.
    counted = Counter(once for once, fresh in answers if fresh)
    assert counted == Counter(fact.once for fact in facts)
    assert read(counters, "race") == _expected(facts)
    if client is not None:
        # Every transaction's first two attempts were cancelled (and retried): two per marker, the
        # parts of the two wide pages each under its own.
        markers = len(facts) + 2
        assert client.planted == 2 * markers


# ------------------------------------------------------------------------------- the adapter only


@pytest.fixture
def dynamodb(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("empty_dynamodb")


def test_a_split_count_redone_after_a_failure_counts_each_part_once(dynamodb: Any) -> None:
    """Three transactions for 208 cells, the part under `once` itself last; the second fails (an
    outage): the first stays counted under its marker, and the redo counts only the two parts not
    counted yet, answering True (`once` was not there: the fact had not been counted whole)."""
    client = DynamoDBAsRaced(dynamodb, fail=lambda call: call == 2)
    counters = ReportCounters(TABLE, client)
    page = _wide_page("s1", 2 * CELLS_PER_TRANSACTION + 10)
    with pytest.raises(ServiceUnavailable):
        counters.add_many(page, once="page#wide")
    assert len(read(counters, "s1")) == CELLS_PER_TRANSACTION
    assert counters.add_many(page, once="page#wide")
    assert not counters.add_many(page, once="page#wide")
    assert read(counters, "s1") == InMemoryCells.of(page)
    # Each transaction: the marker, then at most 99 cell updates, every metric of a cell in one.
    assert [len(t) for t in client.transactions] == [100, 11, 100]
    assert all("Put" in t[0] and all("Update" in a for a in t[1:]) for t in client.transactions)


class InMemoryCells:
    @staticmethod
    def of(deltas: list[CountDelta]) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
        fake = InMemoryReportCounters()
        fake.add_many(deltas, once="x")
        return read(fake, deltas[0].cell.scenario_id)


def test_a_cell_is_one_update_per_transaction_with_all_its_metrics(dynamodb: Any) -> None:
    client = DynamoDBAsRaced(dynamodb)
    counters = ReportCounters(TABLE, client)
    cell = ReportCell("s1", 1, "mail")
    counters.add_many(
        [
            CountDelta(cell, Metric.SENT, 400),
            CountDelta(cell, Metric.FAILED, 3),
            CountDelta(cell, Metric.SENT, 97),
        ],
        once="unit#1",
    )
    [transaction] = client.transactions
    assert len(transaction) == 2
    update = transaction[1]["Update"]
    assert update["UpdateExpression"].endswith("ADD #m0 :n0, #m1 :n1")
    assert update["ExpressionAttributeValues"][":n1"] == {"N": "497"}  # failed, sent: key order
    assert read(counters, "s1") == [(cell, {"sent": 497, "failed": 3})]


def test_writes_of_one_cell_are_spread_over_its_shards(dynamodb: Any) -> None:
    """160 pages counting into the same cell: no single item takes every write. Placement follows
    the marker's hash, so the spread is the same on every run."""
    client = DynamoDBAsRaced(dynamodb)
    counters = ReportCounters(TABLE, client)
    cell = ReportCell("s1", 1, "mail")
    for page in range(160):
        counters.add_many([CountDelta(cell, Metric.SENT, 500)], once=f"page#{page}")
    writes = Counter(_item_of(t[1]) for t in client.transactions)
    assert {pk for pk, _ in writes} <= {keys.report_shard_pk("s1", k) for k in range(keys.REPORT_SHARDS)}
    assert len(writes) == keys.REPORT_SHARDS
    assert max(writes.values()) <= 160 // keys.REPORT_SHARDS * 2
    assert read(counters, "s1") == [(cell, {"sent": 80_000})]


def test_cells_counted_before_sharding_are_still_read(dynamodb: Any) -> None:
    """A stage's cells written in the layout before issue 11 (one item per cell in `RPT#<scenario>`,
    as that adapter wrote them) are read beside what the shards count after the deploy."""
    old = ReportCell("s1", 1, "mail", "A")
    only_old = ReportCell("s1", 1, variant="A", holdout=True)
    for cell, counts in ((old, {"sent": 7, "opened": 2}), (only_old, {"enrolled": 3})):
        names = {f"#m{i}": m for i, m in enumerate(counts)}
        dynamodb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": keys.report_pk("s1")}, "sk": {"S": cell_sk(cell)}},
            UpdateExpression="SET #scn = :scn, #ver = :ver, #step = :step, #var = :var, #hold = :hold ADD "
            + ", ".join(f"#m{i} :n{i}" for i in range(len(counts))),
            ExpressionAttributeNames={
                **names,
                "#scn": "scenario_id",
                "#ver": "version",
                "#step": "step_id",
                "#var": "variant",
                "#hold": "holdout",
            },
            ExpressionAttributeValues={
                **{f":n{i}": {"N": str(n)} for i, n in enumerate(counts.values())},
                ":scn": {"S": "s1"},
                ":ver": {"N": "1"},
                ":step": {"S": cell.step_id} if cell.step_id else {"NULL": True},
                ":var": {"S": "A"},
                ":hold": {"BOOL": cell.holdout},
            },
        )
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": keys.REPORT_INDEX_PK}, "sk": {"S": "s1"}})
    counters = ReportCounters(TABLE, dynamodb)
    counters.add_many([CountDelta(old, Metric.SENT, 5), CountDelta(old, Metric.DELIVERED, 4)], once="page#1")
    counters.add(old, Metric.OPENED, once="opened#d9")
    # The old items come back as cells without a day (counted before issue 12), the new counts as
    # the same cell dated: a report adds them up.
    today = report_day(NOW)
    assert counters.cells("s1") == [
        (only_old, {"enrolled": 3}),
        (old, {"sent": 7, "opened": 2}),
        (replace(old, day=today), {"sent": 5, "delivered": 4, "opened": 1}),
    ]
    assert counters.scenario_ids() == ["s1"]


def test_a_scenario_whose_id_extends_another_keeps_its_own_cells(dynamodb: Any) -> None:
    counters = ReportCounters(TABLE, dynamodb)
    counters.add_many([CountDelta(ReportCell("s1", 1), Metric.ENROLLED, 2)], once="p")
    counters.add_many([CountDelta(ReportCell("s1-1", 1), Metric.ENROLLED, 5)], once="p")
    assert read(counters, "s1") == [(ReportCell("s1", 1), {"enrolled": 2})]
    assert read(counters, "s1-1") == [(ReportCell("s1-1", 1), {"enrolled": 5})]


def test_collisions_on_every_attempt_end_in_service_unavailable(dynamodb: Any) -> None:
    """Bounded: after MAX_ATTEMPTS cancelled transactions (each on another shard than the one
    before, after a jittered wait no longer than the cap) the count is refused, not dropped quietly;
    nothing was counted, so the same fact counts when asked again."""
    client = DynamoDBAsRaced(dynamodb, always_conflict=True)
    waits: list[float] = []
    counters = ReportCounters(TABLE, client, sleep=waits.append)
    cell = ReportCell("s1", 1, "mail")
    with pytest.raises(ServiceUnavailable, match="not added: TransactionCanceledException"):
        counters.add_many([CountDelta(cell, Metric.SENT, 3)], once="page#1")
    assert client.calls == MAX_ATTEMPTS and len(waits) == MAX_ATTEMPTS - 1
    assert all(0 <= wait <= BACKOFF_CAP for wait in waits)
    assert read(counters, "s1") == []
    counters = ReportCounters(TABLE, dynamodb)
    assert counters.add_many([CountDelta(cell, Metric.SENT, 3)], once="page#1")
    assert read(counters, "s1") == [(cell, {"sent": 3})]


def test_a_count_without_a_marker_moves_shard_on_a_collision(dynamodb: Any) -> None:
    collided: list[str] = []
    real = dynamodb.update_item

    def update_item(**kwargs: Any) -> Any:
        collided.append(kwargs["Key"]["pk"]["S"])
        if len(collided) == 1:
            raise ClientError(
                {"Error": {"Code": "TransactionConflictException", "Message": "conflict"}}, "UpdateItem"
            )
        return real(**kwargs)

    client = DynamoDBAsRaced(dynamodb)
    client.update_item = update_item  # type: ignore[method-assign]
    counters = ReportCounters(TABLE, client, sleep=lambda _: None)
    cell = ReportCell("s1", 1)
    assert counters.add(cell, Metric.ENROLLED)
    assert len(collided) == 2 and collided[0] != collided[1]
    assert read(counters, "s1") == [(cell, {"enrolled": 1})]

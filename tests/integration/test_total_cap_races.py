"""The total cap across channels under racing sends (issue 13), on DynamoDB (moto): many sends for one
customer on LINE and email at once, from many threads, take exactly the total's limit, never more,
and each channel's counters count only the sends the total let through."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cems import clock
from cems.adapters.dynamodb.journeys import CapStore
from cems.models import Channel
from cems.scenario.caps import TOTAL
from cems.scenario.model import ChannelCap
from cems.scenario.records import CapOutcome

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, module_dynamodb  # noqa: F401

TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday
CHANNEL_CAP = ChannelCap(per_day=10, per_week=10)  # roomy: only the total is in the way
TOTAL_CAP = ChannelCap(per_day=3, per_week=5)
SENDS_PER_CHANNEL = 8


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


class Contended:
    """moto's client as DynamoDB answers racing writers. moto is not safe to call from several
    threads, so calls reach it one at a time (each transaction is then atomic, as DynamoDB's is);
    DynamoDB also cancels a transaction that meets another in progress on one of its items
    (TransactionConflict, nothing written), which moto never does: every other transaction's first
    attempt is cancelled so, and the adapter must try it again."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()
        self.transactions = 0
        self.conflicts = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def serialized(**kwargs: Any) -> Any:
            with self._lock:
                return method(**kwargs)

        return serialized

    def transact_write_items(self, **kwargs: Any) -> Any:
        with self._lock:
            self.transactions += 1
            if self.transactions % 2 == 0:
                self.conflicts += 1
                raise ClientError(
                    {
                        "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                        "CancellationReasons": [
                            {"Code": "TransactionConflict"} for _ in kwargs["TransactItems"]
                        ],
                    },  # type: ignore[typeddict-item]
                    "TransactWriteItems",
                )
            return self._client.transact_write_items(**kwargs)


def race(caps: CapStore, sends: list[tuple[Channel, str]]) -> list[CapOutcome]:
    """Every send taken from its own thread, all released at once."""
    start = threading.Barrier(len(sends))
    outcomes: list[CapOutcome | None] = [None] * len(sends)

    def take(i: int, channel: Channel, key: str) -> None:
        start.wait()
        outcomes[i] = caps.try_consume("c1", channel, CHANNEL_CAP, NOW, key, total=TOTAL_CAP)

    threads = [threading.Thread(target=take, args=(i, *send)) for i, send in enumerate(sends)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None]


def test_racing_sends_on_two_channels_take_exactly_the_total_and_never_more(
    request: pytest.FixtureRequest,
) -> None:
    client = Contended(request.getfixturevalue("empty_dynamodb"))
    caps = CapStore(TABLE, client)  # type: ignore[arg-type]
    sends = [
        (channel, f"{channel}-{n}")
        for n in range(SENDS_PER_CHANNEL)
        for channel in (Channel.LINE, Channel.EMAIL)
    ]
    outcomes = race(caps, sends)
    allowed = [send for send, o in zip(sends, outcomes, strict=True) if o.allowed]
    assert len(allowed) == TOTAL_CAP.per_day
    assert all(o.capped_scope is TOTAL for o in outcomes if not o.allowed)
    assert caps.counts("c1", TOTAL, NOW) == (3, 3)
    line, email = caps.counts("c1", Channel.LINE, NOW), caps.counts("c1", Channel.EMAIL, NOW)
    assert line[0] + email[0] == 3  # the channels count only what the total let through
    assert client.conflicts > 0  # the collisions DynamoDB answers with were met, and tried again

    # The same sends again (the winners redone after a crash, the losers decided again): the winners
    # are allowed without counting, the rest still refused.
    again = race(caps, sends)
    assert sorted(s for s, o in zip(sends, again, strict=True) if o.allowed) == sorted(allowed)
    assert all(o.already for o in again if o.allowed)
    assert caps.counts("c1", TOTAL, NOW) == (3, 3)


def test_a_broadcast_pages_takes_racing_a_trigger_on_another_channel_keep_the_total(
    request: pytest.FixtureRequest,
) -> None:
    """A page takes its customers' LINE sends in transactions while `trigger` sends them email: the
    total's counters are shared, and none passes its limit."""
    caps = CapStore(TABLE, Contended(request.getfixturevalue("empty_dynamodb")))  # type: ignore[arg-type]
    customers = [f"c{n}" for n in range(20)]
    one = ChannelCap(per_day=1, per_week=None)
    start = threading.Barrier(2)
    page: list[CapOutcome] = []
    emails: list[CapOutcome] = []

    def broadcast() -> None:
        start.wait()
        takes = [(c, Channel.LINE, CHANNEL_CAP) for c in customers]
        page.extend(
            caps.try_consume_many(takes, NOW, send_keys=[f"{c}-line" for c in customers], totals=[one] * 20)
        )

    def trigger() -> None:
        start.wait()
        emails.extend(
            caps.try_consume(c, Channel.EMAIL, CHANNEL_CAP, NOW, f"{c}-mail", total=one) for c in customers
        )

    threads = [threading.Thread(target=broadcast), threading.Thread(target=trigger)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for customer, line, email in zip(customers, page, emails, strict=True):
        assert line.allowed != email.allowed, customer  # exactly one of the two a day
        assert caps.counts(customer, TOTAL, NOW) == (1, 0)

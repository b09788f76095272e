"""Broadcasts through the Lambda handlers under moto: tick's `lambda_handler` starts the run of
examples/scenarios/broadcast_new_tea.json (segment messages on BroadcastQueue), and the broadcast
function's `lambda_handler` is given those messages as the SQS records Lambda delivers. Every customer
in the audience gets one LINE dispatch, nobody outside it gets any, a redelivered record sends nothing
twice, and a later tick does not start the run again."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from types import ModuleType
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.adapters.dynamodb.keys import broadcast_segment_key
from cems.local.pollers import sqs_record
from cems.models import OrderSummary
from cems.scenario.assignment import in_holdout
from cems.scenario.broadcast import SegmentReport, run_id
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import RunReport

from tests.integration.journeys import drain_queue, put_customer, put_track_event
from tests.integration.test_trigger_tick_handlers import ROOT, FakeLambdaContext, _load
from tests.lambda_context import FakeContext

EXAMPLE = ROOT / "examples" / "scenarios" / "broadcast_new_tea.json"
SCENARIO_ID = "broadcast-shincha-2026"
HOLDOUT = 5
AT = datetime(2026, 5, 8, 1, 0, tzinfo=UTC)  # the example's 2026-05-08 10:00 in Tokyo
UPLOADED = AT - timedelta(days=2)
SEGMENTS = 4
TABLE = "JourneysTable"


def sqs_records(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    """The queue's messages as the SQS records Lambda hands a function (deleted from the queue, as
    Lambda does after a batch without failures)."""
    records: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"])
        messages = answer.get("Messages", [])
        if not messages:
            return records
        for message in messages:
            records.append(sqs_record(message, "arn:aws:sqs:ap-northeast-1:123456789012:BroadcastQueue"))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


@dataclass
class BroadcastHandlers:
    tick: ModuleType
    broadcast: ModuleType
    sqs: Any
    line_url: str
    broadcast_url: str
    stores: Stores

    def tick_once(self) -> dict[str, Any]:
        event = {"detail-type": "Scheduled Event"}
        answer: dict[str, Any] = self.tick.lambda_handler(event, FakeLambdaContext())
        return answer

    def receive(self) -> list[dict[str, Any]]:
        return sqs_records(self.sqs, self.broadcast_url)

    def deliver(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """One invocation of the broadcast function with these records (batch size 10, as configured)."""
        answer: dict[str, Any] = self.broadcast.lambda_handler({"Records": records}, FakeLambdaContext())
        return answer

    def recipients(self) -> Counter[str]:
        return Counter(r for dispatch in drain_queue(self.sqs, self.line_url) for r in dispatch["recipients"])


@pytest.fixture
def handlers(dynamodb: Any, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Iterator[BroadcastHandlers]:
    clock.freeze(UPLOADED)
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    line_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    broadcast_url = sqs.create_queue(QueueName="BroadcastQueue")["QueueUrl"]
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "LINE_SEND_QUEUE_URL": line_url,
        "BROADCAST_QUEUE_URL": broadcast_url,
        "JOURNEYS_TABLE": TABLE,
        "CEMS_DUE_SHARDS": "4",
        "CEMS_BROADCAST_SEGMENTS": str(SEGMENTS),
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    document = json.loads(EXAMPLE.read_text("utf-8"))
    ScenarioStore(TABLE, dynamodb).put_version(
        Scenario.model_validate(document), document, ScenarioSource(f"scenarios/{SCENARIO_ID}.json", "e1")
    )
    yield BroadcastHandlers(_load("tick"), _load("broadcast"), sqs, line_url, broadcast_url, stores)
    for function in ("tick", "broadcast"):
        sys.modules.pop(f"cems_{function}_app_under_test", None)
    aws.dynamodb.cache_clear()


def _green_tea_buyer(stores: Stores, customer_id: str, bought_at: datetime, *, line: bool = True) -> None:
    put_customer(stores.customers, customer_id, AT, line=line)
    profile = stores.customers.profile(customer_id)
    assert profile is not None
    bought = profile.model_copy(
        update={
            "orders": {f"o-{customer_id}": OrderSummary(at=bought_at, amount=Decimal(1620))},
            "categories_bought": {"緑茶"},
        }
    )
    stores.customers.client.put_item(TableName="CustomersTable", Item=stores.customers.profile_item(bought))


def _customer_id(prefix: str, *, holdout: bool = False) -> str:
    """The first `<prefix>-<n>` in (or outside) the example's 5 % holdout."""
    return next(
        c for c in (f"{prefix}-{n:03d}" for n in range(500)) if in_holdout(SCENARIO_ID, c, HOLDOUT) == holdout
    )


def _customers(handlers: BroadcastHandlers) -> tuple[set[str], set[str]]:
    """(the audience outside the holdout, everyone else) for the example's conditions: LINE
    reachable, bought green tea or viewed it 3 times in 60 days, not dormant."""
    stores = handlers.stores
    audience: set[str] = set()
    for n in range(3):
        buyer = _customer_id(f"cus_buyer{n}")
        _green_tea_buyer(stores, buyer, AT - timedelta(days=20 + n))
        audience.add(buyer)
    viewer = _customer_id("cus_viewer")
    put_customer(stores.customers, viewer, AT)
    for n in range(3):
        put_track_event(
            stores.events, viewer, "Product Viewed", f"m-{viewer}-{n}", category="緑茶", name="八女煎茶"
        )
    audience.add(viewer)

    others: set[str] = set()
    held_out = _customer_id("cus_held", holdout=True)
    _green_tea_buyer(stores, held_out, AT - timedelta(days=10))
    no_line = _customer_id("cus_noline")
    _green_tea_buyer(stores, no_line, AT - timedelta(days=10), line=False)
    dormant = _customer_id("cus_dormant")
    _green_tea_buyer(stores, dormant, AT - timedelta(days=200))
    browsed_once = _customer_id("cus_browsed")
    put_customer(stores.customers, browsed_once, AT)
    put_track_event(stores.events, browsed_once, "Product Viewed", f"m-{browsed_once}", category="緑茶")
    unfollowed = _customer_id("cus_unfollowed")
    put_customer(stores.customers, unfollowed, AT, reachable=False)
    others |= {held_out, no_line, dormant, browsed_once, unfollowed}
    for n in range(4):  # LINE friends who never bought nor browsed
        stranger = _customer_id(f"cus_stranger{n}")
        put_customer(stores.customers, stranger, AT)
        others.add(stranger)
    return audience, others


def test_tick_and_the_broadcast_handler_send_to_the_audience_once(handlers: BroadcastHandlers) -> None:
    audience, others = _customers(handlers)

    clock.freeze(AT - timedelta(minutes=1))
    handlers.tick_once()
    assert handlers.receive() == []  # not yet

    clock.freeze(AT + timedelta(seconds=30))
    handlers.tick_once()
    records = handlers.receive()
    assert sorted(json.loads(r["body"])["segment"] for r in records) == list(range(SEGMENTS))
    assert handlers.deliver(records) == {"batchItemFailures": []}

    recipients = handlers.recipients()
    assert set(recipients) == audience
    assert set(recipients.values()) == {1}
    assert not others & set(recipients)
    assert handlers.receive() == []  # every segment finished within its invocation

    # SQS delivers at least once: the same records again send nothing...
    assert handlers.deliver(records) == {"batchItemFailures": []}
    # ...nor does a segment whose progress was lost (the function died before recording its page).
    handlers.stores.customers.client.delete_item(
        TableName=TABLE, Key=broadcast_segment_key(SCENARIO_ID, run_id(AT), 0)
    )
    assert handlers.deliver(records[:1]) == {"batchItemFailures": []}
    assert handlers.recipients() == Counter()

    # Later ticks (and one past the restart delay) do not start the run again.
    for minutes in (1, 2, 10):
        clock.freeze(AT + timedelta(minutes=minutes))
        handlers.tick_once()
        assert handlers.receive() == []
    assert handlers.recipients() == Counter()


def test_a_record_the_worker_cannot_read_is_reported_and_the_rest_go_on(handlers: BroadcastHandlers) -> None:
    audience, _ = _customers(handlers)
    clock.freeze(AT + timedelta(seconds=30))
    handlers.tick_once()
    records = handlers.receive()
    bad = {**records[0], "messageId": "not-a-segment", "body": json.dumps({"scenario_id": SCENARIO_ID})}
    answer = handlers.deliver([bad, *records])
    assert answer == {"batchItemFailures": [{"itemIdentifier": "not-a-segment"}]}
    assert set(handlers.recipients()) == audience


def test_the_messages_of_one_invocation_share_its_time(
    handlers: BroadcastHandlers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several segment messages an invocation (BatchSize > 1), one after another: each may use the
    time left less a floor kept for every message after it, so the last ones still read a page."""
    _customers(handlers)
    clock.freeze(AT + timedelta(seconds=30))
    handlers.tick_once()
    records = handlers.receive()
    assert len(records) == SEGMENTS
    seen: list[int] = []

    def run_segment(message: Any, remaining_ms: Any, now: Any = None) -> SegmentReport:
        seen.append(remaining_ms())
        return SegmentReport("done", run=RunReport())

    monkeypatch.setattr(handlers.broadcast.worker, "run_segment", run_segment)
    context = partial(FakeContext, "cems-dev-BroadcastFunction", remaining_ms=300_000)()
    assert handlers.broadcast.lambda_handler({"Records": records}, context) == {"batchItemFailures": []}
    floor = handlers.broadcast.RECORD_FLOOR_MS
    assert seen == [300_000 - n * floor for n in reversed(range(SEGMENTS))]

"""The trigger and tick handlers under moto: stream records built from real Events table items
(what EventsTable's NEW_IMAGE stream carries), a schedule event, and what reaches LineSendQueue."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores, stored_event_from_image
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.models import ChannelState, MessageType, Profile, StoredEvent
from cems.scenario.assignment import in_holdout
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


FakeLambdaContext = partial(FakeContext, "cems-dev-TriggerFunction", remaining_ms=60_000)


def _load(function: str) -> ModuleType:
    name = f"cems_{function}_app_under_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Handlers:
    trigger: ModuleType
    tick: ModuleType
    sqs: Any
    queue_url: str
    stores: Stores

    def sent(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in answer.get("Messages", [])]


@pytest.fixture
def handlers(dynamodb: Any, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Iterator[Handlers]:
    clock.freeze(NOW)
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    queue_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "LINE_SEND_QUEUE_URL": queue_url,
        "JOURNEYS_TABLE": "JourneysTable",
        "CEMS_DUE_SHARDS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    document = json.loads((ROOT / "examples" / "scenarios" / "cart_abandonment.json").read_text("utf-8"))
    ScenarioStore("JourneysTable", dynamodb).put_version(
        Scenario.model_validate(document), document, ScenarioSource("scenarios/cart.json", "e1")
    )
    yield Handlers(_load("trigger"), _load("tick"), sqs, queue_url, stores)
    for function in ("trigger", "tick"):
        sys.modules.pop(f"cems_{function}_app_under_test", None)
    aws.dynamodb.cache_clear()


def _customer(dynamodb: Any, stores: Stores) -> str:
    customer_id = next(
        c for c in (f"cus_h{n:03d}" for n in range(100)) if not in_holdout("cart-abandonment", c, 5)
    )
    profile = Profile(
        customer_id=customer_id,
        line_user_id="U" + "a" * 32,
        channels={"line": ChannelState(reachable=True, consent=True, updated_at=NOW)},
        first_seen_at=NOW - timedelta(days=3),
        updated_at=NOW,
    )
    dynamodb.put_item(TableName="CustomersTable", Item=stores.customers.profile_item(profile))
    return customer_id


def _record(stores: Stores, event: StoredEvent, name: str = "INSERT") -> dict[str, Any]:
    """Stores the event as collect does, and returns the stream record DynamoDB would emit."""
    item = stores.events.event_action(event)["Put"]["Item"]
    stores.events.client.put_item(TableName="EventsTable", Item=item)
    return {
        "eventID": f"id-{event.message_id}",
        "eventName": name,
        "eventSource": "aws:dynamodb",
        "awsRegion": "ap-northeast-1",
        "eventSourceARN": "arn:aws:dynamodb:ap-northeast-1:123456789012:table/EventsTable/stream/2026",
        "dynamodb": {
            "Keys": {"customer_id": item["customer_id"], "sk": item["sk"]},
            "NewImage": item,
            "SequenceNumber": f"{len(event.message_id)}00",
            "SizeBytes": 100,
            "StreamViewType": "NEW_IMAGE",
        },
    }


def _event(customer_id: str, message_id: str, event_name: str, **properties: Any) -> StoredEvent:
    return StoredEvent(
        customer_id=customer_id,
        site_id="shop",
        type=MessageType.TRACK,
        message_id=message_id,
        event=event_name,
        timestamp=clock.now(),
        received_at=clock.now(),
        properties=properties,
    )


def test_a_stream_image_reads_back_as_the_stored_event(dynamodb: Any, stores: Stores) -> None:
    clock.freeze(NOW)  # stored to the millisecond
    event = _event("cus_1", "m-1", "Product Added", name="玉露", price=1200.5, quantity=2)
    item = stores.events.event_action(event)["Put"]["Item"]
    back = stored_event_from_image(item)
    assert back.model_dump(exclude={"properties"}) == event.model_dump(exclude={"properties"})
    assert back.properties == {"name": "玉露", "price": 1200.5, "quantity": 2}


def test_trigger_enrols_and_tick_reminds_once(handlers: Handlers, dynamodb: Any) -> None:
    customer = _customer(dynamodb, handlers.stores)
    added = _record(handlers.stores, _event(customer, "m-1", "Product Added", name="煎茶"))
    answer = handlers.trigger.lambda_handler({"Records": [added]}, FakeLambdaContext())
    assert answer == {"batchItemFailures": []}
    assert handlers.sent() == []
    clock.advance(2 * 3600)
    assert (
        handlers.tick.lambda_handler({"detail-type": "Scheduled Event"}, FakeLambdaContext())["dispatched"]
        == 1
    )
    assert handlers.tick.lambda_handler({}, FakeLambdaContext())["dispatched"] == 0
    # A redelivered batch (and a MODIFY the filter would have dropped) sends nothing more.
    modify = {**added, "eventName": "MODIFY", "eventID": "id-other"}
    assert handlers.trigger.lambda_handler({"Records": [added, modify]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    sent = handlers.sent()
    assert [d["recipients"] for d in sent] == [[customer]]


def test_a_failing_record_is_reported_and_the_rest_go_on(
    handlers: Handlers, dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = _customer(dynamodb, handlers.stores)
    good = _record(handlers.stores, _event(customer, "m-good", "Product Added"))
    bad = _record(handlers.stores, _event(customer, "m-bad", "Product Added"))
    bad["dynamodb"]["NewImage"] = {**bad["dynamodb"]["NewImage"], "timestamp": {"S": "not a time"}}
    answer = handlers.trigger.lambda_handler({"Records": [bad, good]}, FakeLambdaContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": bad["dynamodb"]["SequenceNumber"]}]}


def test_the_sample_events_run_through_trigger_and_tick(handlers: Handlers) -> None:
    """events/trigger and events/tick are what the stream and the schedule deliver."""
    stream = json.loads((ROOT / "events" / "trigger" / "product_added_insert.json").read_text("utf-8"))
    event = stored_event_from_image(stream["Records"][0]["dynamodb"]["NewImage"])
    assert (event.event, event.properties["sku"]) == ("Product Added", "TEA-001")
    # The sample's customer has no profile here: the record is handled (skipped), not failed.
    assert handlers.trigger.lambda_handler(stream, FakeLambdaContext()) == {"batchItemFailures": []}
    scheduled = json.loads((ROOT / "events" / "tick" / "scheduled.json").read_text("utf-8"))
    assert handlers.tick.lambda_handler(scheduled, FakeLambdaContext())["dispatched"] == 0
    assert handlers.sent() == []


def test_the_broadcast_sample_carries_a_segment_message() -> None:
    from cems.scenario.broadcast import SegmentMessage

    sample = json.loads((ROOT / "events" / "broadcast" / "segment.json").read_text("utf-8"))
    segment = SegmentMessage.model_validate_json(sample["Records"][0]["body"])
    document = json.loads((ROOT / "examples" / "scenarios" / "broadcast_new_tea.json").read_text("utf-8"))
    assert (segment.scenario_id, segment.segment, segment.total_segments) == (document["id"], 0, 16)

"""Timers on moto: the SQS adapter (a delay per message, ten to a request, refusals as
ServiceUnavailable) held to the in-memory fake's delays, and the real trigger, tick and timer handlers
carrying a one-minute wait from its writer and the tick's look-ahead to the journey's advance."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.adapters.sqs import SqsTimerQueue
from cems.ports import ServiceUnavailable
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.timers import Timer

from tests.fakes.timers import RecordingTimerQueue
from tests.integration.test_trigger_tick_handlers import FakeLambdaContext, _customer, _event, _load, _record

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
SCENARIO: dict[str, Any] = {
    "id": "timer-minute",
    "name": "one-minute wait",
    "trigger": {"type": "event", "event": "Product Added"},
    "steps": [
        {"id": "wait", "type": "wait", "duration": "1m"},
        {"id": "remind", "type": "send", "channel": "line", "line": [{"type": "text", "text": "カート"}]},
        {"id": "done", "type": "end"},
    ],
}


@pytest.fixture
def sqs(aws: None) -> Any:
    return boto3.client("sqs", region_name="ap-northeast-1")


def _delays_sent(sqs: Any) -> list[list[int]]:
    """The DelaySeconds of each SendMessageBatch call's entries, as sent."""
    calls: list[list[int]] = []
    sqs.meta.events.register(
        "provide-client-params.sqs.SendMessageBatch",
        lambda params, **_: calls.append([e["DelaySeconds"] for e in params["Entries"]]),
    )
    return calls


def test_each_timer_is_delayed_to_its_due_second_ten_to_a_request_as_the_fake_delays_it(sqs: Any) -> None:
    clock.freeze(NOW)
    url = sqs.create_queue(QueueName="TimerQueue")["QueueUrl"]
    calls = _delays_sent(sqs)
    timers = [Timer.of(f"cus_{n}", "s", NOW + timedelta(milliseconds=7_500 * n)) for n in range(12)]
    SqsTimerQueue(sqs, url).start(timers)
    fake = RecordingTimerQueue()
    fake.start(timers)
    assert [len(c) for c in calls] == [10, 2]
    assert [d for c in calls for d in c] == [delay for _, delay in fake.started]
    assert calls[0][:3] == [0, 8, 15]

    # The one due now is there at once, and reads back as the timer; the others wait in the queue.
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert Timer.from_body(message["Body"]) == timers[0]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessagesDelayed"])
    assert attributes["Attributes"]["ApproximateNumberOfMessagesDelayed"] == "11"


def test_a_queue_that_refuses_is_service_unavailable(sqs: Any) -> None:
    url = sqs.create_queue(QueueName="TimerQueue")["QueueUrl"]
    with pytest.raises(ServiceUnavailable):
        SqsTimerQueue(sqs, url.replace("TimerQueue", "NoSuchQueue")).start([Timer.of("c", "s", NOW)])
    with pytest.raises(ValueError, match="TIMER_QUEUE_URL"):
        SqsTimerQueue(sqs, "")


@dataclass
class Handlers:
    trigger: Any
    tick: Any
    timer: Any
    sqs: Any
    line_queue: str
    timer_queue: str

    def sent(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(QueueUrl=self.line_queue, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in answer.get("Messages", [])]

    def timer_records(self, wait_seconds: int = 0) -> list[dict[str, Any]]:
        """The timer messages visible now (waiting up to `wait_seconds` for one), as Lambda's records."""
        answer = self.sqs.receive_message(
            QueueUrl=self.timer_queue, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds
        )
        return [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:ap-northeast-1:123456789012:TimerQueue",
                "awsRegion": "ap-northeast-1",
            }
            for m in answer.get("Messages", [])
        ]

    def delayed(self) -> int:
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=self.timer_queue, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]
        return int(attributes["ApproximateNumberOfMessagesDelayed"])


@pytest.fixture
def handlers(dynamodb: Any, stores: Stores, sqs: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Handlers]:
    clock.freeze(NOW)
    line_queue = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    timer_queue = sqs.create_queue(QueueName="TimerQueue")["QueueUrl"]
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "LINE_SEND_QUEUE_URL": line_queue,
        "TIMER_QUEUE_URL": timer_queue,
        "JOURNEYS_TABLE": "JourneysTable",
        "CEMS_DUE_SHARDS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    ScenarioStore("JourneysTable", dynamodb).put_version(
        Scenario.model_validate(SCENARIO), SCENARIO, ScenarioSource("scenarios/timer.json", "e1")
    )
    functions = ("trigger", "tick", "timer")
    yield Handlers(*(_load(f) for f in functions), sqs, line_queue, timer_queue)
    for function in functions:
        sys.modules.pop(f"cems_{function}_app_under_test", None)
    aws.dynamodb.cache_clear()


def test_a_one_minute_wait_is_advanced_by_its_timer_at_its_second(
    handlers: Handlers, dynamodb: Any, stores: Stores
) -> None:
    customer = _customer(dynamodb, stores)
    added = _record(stores, _event(customer, "m-1", "Product Added"))
    assert handlers.trigger.lambda_handler({"Records": [added]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    # The writer's own timer, a minute out.
    assert handlers.delayed() == 1 and handlers.timer_records() == []

    # The tick a second before the wait ends looks ahead: one more timer, due in a second.
    clock.freeze(NOW + timedelta(seconds=59))
    assert handlers.tick.lambda_handler({}, FakeLambdaContext())["dispatched"] == 0
    (record,) = handlers.timer_records(wait_seconds=20)  # a generous bound, not a timing
    assert Timer.from_body(record["body"]).due_at == NOW + timedelta(minutes=1)

    # Delivered early by this host's clock: sent again for the rest, nothing advanced.
    clock.freeze(NOW + timedelta(seconds=59, milliseconds=500))
    assert handlers.timer.lambda_handler({"Records": [record]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert handlers.sent() == []

    clock.freeze(NOW + timedelta(seconds=60, milliseconds=300))
    assert handlers.timer.lambda_handler({"Records": [record]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    (dispatch,) = handlers.sent()
    assert dispatch["recipients"] == [customer]
    # The same timer again (SQS delivers at least once), and the tick: nothing more.
    assert handlers.timer.lambda_handler({"Records": [record]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert handlers.tick.lambda_handler({}, FakeLambdaContext())["dispatched"] == 0
    assert handlers.sent() == []


def test_a_message_that_is_no_timer_is_a_batch_item_failure(handlers: Handlers) -> None:
    good = {
        "messageId": "good",
        "receiptHandle": "r1",
        "body": Timer.of("cus_nobody", "timer-minute", NOW).body(),
        "attributes": {},
        "messageAttributes": {},
        "eventSource": "aws:sqs",
    }
    bad = {**good, "messageId": "bad", "body": "not json"}
    answer = handlers.timer.lambda_handler({"Records": [bad, good]}, FakeLambdaContext())
    assert answer == {"batchItemFailures": [{"itemIdentifier": "bad"}]}

"""The send_line handler under moto (DynamoDB, SQS) against the fake LINE API on a local port.

Each test imports functions/send_line/app.py afresh inside mock_aws and feeds it SQS records that
were really sent to and received from a moto queue, so ChangeMessageVisibility acts on them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from cems.adapters import aws
from cems.adapters.dynamodb.customers import CustomerStore
from cems.adapters.dynamodb.line_deliveries import DeliveryStore
from cems.line.deliveries import RecipientStatus, UnitStatus
from cems.line.dispatch import LineDispatch
from cems.local.fake_line import MONTHLY_LIMIT_MESSAGE, FakeLine, FakeLineServer
from cems.local.pollers import sqs_record
from cems.models import ChannelState, Profile

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
APP = ROOT / "functions" / "send_line" / "app.py"
EVENTS = ROOT / "events" / "send_line"
TOKEN = "integration-channel-access-token"
TEXT = {"type": "text", "text": "茶寮みどりです。新茶のセットが入荷しました。"}


FakeLambdaContext = partial(FakeContext, "cems-dev-SendLineFunction")


def line_user_id(n: int) -> str:
    return f"U{n:032x}"


class Harness:
    def __init__(self, module: ModuleType, fake: FakeLine, dynamodb: Any, sqs: Any, queue_url: str) -> None:
        self.module = module
        self.fake = fake
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.queue_url = queue_url
        self.customers = CustomerStore("CustomersTable", dynamodb)
        self.deliveries = DeliveryStore("DeliveriesTable", dynamodb, module.sender.deliveries.retention)

    def customer(self, n: int, *, reachable: bool = True, consent: bool = True) -> str:
        now = datetime.now(UTC)
        customer_id = f"cus_{n:06d}"
        profile = Profile(
            customer_id=customer_id,
            line_user_id=line_user_id(n),
            channels={"line": ChannelState(reachable=reachable, consent=consent, updated_at=now)},
            first_seen_at=now,
            updated_at=now,
        )
        self.dynamodb.put_item(TableName="CustomersTable", Item=self.customers.profile_item(profile))
        return customer_id

    def customers_bulk(self, numbers: range) -> list[str]:
        now = datetime.now(UTC)
        ids = []
        for start in range(numbers.start, numbers.stop, 25):
            requests = []
            for n in range(start, min(start + 25, numbers.stop)):
                profile = Profile(
                    customer_id=f"cus_{n:06d}",
                    line_user_id=line_user_id(n),
                    channels={"line": ChannelState(reachable=True, consent=True, updated_at=now)},
                    first_seen_at=now,
                    updated_at=now,
                )
                requests.append({"PutRequest": {"Item": self.customers.profile_item(profile)}})
                ids.append(profile.customer_id)
            self.dynamodb.batch_write_item(RequestItems={"CustomersTable": requests})
        return ids

    def enqueue(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def receive(self) -> list[dict[str, Any]]:
        """What Lambda's poller would hand the function now: visible messages as SQS records."""
        records = []
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            )
            messages = answer.get("Messages", [])
            records += [
                sqs_record(m, "arn:aws:sqs:ap-northeast-1:123456789012:LineSendQueue") for m in messages
            ]
            if len(messages) < 10:
                return records

    def invoke(self, records: list[dict[str, Any]]) -> set[str]:
        """Runs the handler on `records`, deletes the successes as Lambda does; returns the failures."""
        response = self.module.lambda_handler({"Records": copy.deepcopy(records)}, FakeLambdaContext())
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
        return failed

    def deliver(self) -> set[str]:
        return self.invoke(self.receive())

    def calls(self, endpoint: str | None = None) -> list[dict[str, Any]]:
        return [c for c in self.fake.snapshot()["calls"] if endpoint is None or c["endpoint"] == endpoint]

    def received(self) -> dict[str, list[dict[str, Any]]]:
        by_recipient: dict[str, list[dict[str, Any]]] = self.fake.snapshot()["by_recipient"]
        return by_recipient

    def outcomes(self, key: str) -> dict[str, RecipientStatus]:
        return {c: r.status for c, r in self.deliveries.recipients(key).items()}


@pytest.fixture
def fake_line() -> Iterator[FakeLine]:
    fake = FakeLine(TOKEN)
    server = FakeLineServer(fake).start()
    fake.url = server.url  # type: ignore[attr-defined]
    yield fake
    server.stop()


@pytest.fixture
def harness(dynamodb: Any, fake_line: FakeLine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    queue_url = sqs.create_queue(QueueName="LineSendQueue", Attributes={"VisibilityTimeout": "180"})[
        "QueueUrl"
    ]
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "CEMS_LINE_API_URL": fake_line.url,  # type: ignore[attr-defined]
        "CEMS_LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
        "LINE_SEND_QUEUE_URL": queue_url,
        "DELIVERIES_TABLE": "DeliveriesTable",
        "CUSTOMERS_TABLE": "CustomersTable",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    name = "cems_send_line_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield Harness(module, fake_line, dynamodb, sqs, queue_url)
    sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()


def dispatch(key: str, recipients: list[str], **extra: Any) -> str:
    return LineDispatch.model_validate(
        {"idempotency_key": key, "recipients": recipients, "messages": [TEXT], **extra}
    ).to_sqs_body()


def visible_count(h: Harness) -> int:
    attributes = h.sqs.get_queue_attributes(QueueUrl=h.queue_url, AttributeNames=["All"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


def redeliver_now(h: Harness, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same messages again, as SQS hands them out once their backoff is over."""
    for record in records:
        h.sqs.change_message_visibility(
            QueueUrl=h.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
        )
    return h.receive()


# --- through the handler (the sender's rules: tests/unit/test_line_sender_behaviour.py) -----------


def test_the_same_sqs_message_delivered_three_times_sends_once(harness: Harness) -> None:
    recipients = [harness.customer(n) for n in (1, 2, 3)]
    harness.enqueue(dispatch("thrice", recipients))
    first = harness.receive()
    assert harness.invoke(first) == set()
    # At-least-once delivery: the very same record comes again (twice), and in one batch with itself.
    assert harness.invoke(first) == set()
    assert harness.invoke(first + first) == set()
    assert len(harness.calls()) == 1
    assert {to: len(m) for to, m in harness.received().items()} == {line_user_id(n): 1 for n in (1, 2, 3)}
    assert set(harness.outcomes("thrice").values()) == {RecipientStatus.SENT}


def test_the_monthly_limit_defers_for_an_hour_and_raises_a_metric(
    harness: Harness, capsys: pytest.CaptureFixture[str]
) -> None:
    recipients = [harness.customer(n) for n in (1, 2)]
    other = harness.customer(3)
    harness.enqueue(dispatch("monthly", recipients), dispatch("monthly-2", [other]))
    harness.fake.fail(429, count=1, message=MONTHLY_LIMIT_MESSAGE)
    records = harness.receive()
    assert harness.invoke(records) == {r["messageId"] for r in records}
    # One call only: the second dispatch was deferred without calling LINE again.
    assert len(harness.calls()) == 1
    assert set(harness.outcomes("monthly").values()) == {RecipientStatus.DEFERRED}
    assert set(harness.outcomes("monthly-2").values()) == {RecipientStatus.DEFERRED}
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m["LineMonthlyLimitReached"] for m in metrics if "LineMonthlyLimitReached" in m] == [[1.0]]
    assert harness.receive() == []  # back in an hour, not now
    # The next month (or a bigger plan): a new execution environment sends them.
    harness.module.sender._paused_until = 0.0
    assert harness.invoke(redeliver_now(harness, records)) == set()
    assert set(harness.received()) == {line_user_id(n) for n in (1, 2, 3)}
    assert set(harness.outcomes("monthly").values()) == {RecipientStatus.SENT}


def test_a_time_out_is_retried(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    recipients = [harness.customer(n) for n in (1, 2)]
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    try:
        from cems.line.api import messaging_api
        from cems.line.config import LineSettings

        settings = LineSettings(api_url=f"http://127.0.0.1:{silent.getsockname()[1]}")
        gateway = harness.module.sender.gateway
        monkeypatch.setattr(gateway, "_api_factory", lambda: messaging_api(settings, TOKEN))
        monkeypatch.setattr(gateway, "_api", None)
        monkeypatch.setattr(gateway, "timeout", (0.5, 0.5))
        harness.enqueue(dispatch("time-out", recipients))
        records = harness.receive()
        assert harness.invoke(records) == {records[0]["messageId"]}
    finally:
        silent.close()
    assert harness.outcomes("time-out") == {}
    units = harness.deliveries.state("time-out").units
    assert units["m0000"].status is UnitStatus.RETRY
    assert "Timeout" in (units["m0000"].reason or "")


def test_invalid_dispatch_is_dropped_not_retried(harness: Harness) -> None:
    event = json.loads((EVENTS / "invalid.json").read_text(encoding="utf-8"))
    response = harness.module.lambda_handler(event, FakeLambdaContext())
    assert response["batchItemFailures"] == []
    assert harness.calls() == []


@pytest.mark.parametrize("name", ["multicast.json", "personalised.json", "test_send.json", "duplicated.json"])
def test_sample_events(harness: Harness, name: str) -> None:
    event = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    customers = {c for r in event["Records"] for c in json.loads(r["body"])["recipients"]}
    numbers = {c: 100 + i for i, c in enumerate(sorted(customers))}
    now = datetime.now(UTC)
    for customer_id, n in numbers.items():
        profile = Profile(
            customer_id=customer_id,
            line_user_id=line_user_id(n),
            channels={"line": ChannelState(reachable=True, consent=True, updated_at=now)},
            first_seen_at=now,
            updated_at=now,
        )
        harness.dynamodb.put_item(TableName="CustomersTable", Item=harness.customers.profile_item(profile))
    # Receipt handles in the samples are made up: ChangeMessageVisibility would fail, so none may retry.
    response = harness.module.lambda_handler(event, FakeLambdaContext())
    assert response["batchItemFailures"] == []
    received = harness.received()
    assert set(received) == {line_user_id(n) for n in numbers.values()}
    assert all(1 <= len(m) <= 2 for m in received.values())


# --- AWS requests of a multicast, as moto receives them --------------------------------------


def _requests_of(action: Any) -> Counter[str]:
    """`table:operation` of each request moto answers during `action`, whichever client sent it (as
    bench.aws_requests.MotoRequests counts: what DynamoDB and SQS would receive and bill)."""
    from unittest import mock

    from moto.core.botocore_stubber import BotocoreStubber

    counted: Counter[str] = Counter()
    original = BotocoreStubber.process_request

    def process_request(stubber: Any, request: Any) -> Any:
        response = original(stubber, request)
        if response is not None:
            target = request.headers.get("X-Amz-Target") or b""
            target = target.decode() if isinstance(target, bytes) else str(target)
            body = request.body.decode() if isinstance(request.body, bytes) else str(request.body or "")
            if target:
                table = (json.loads(body or "{}").get("TableName") or "").removesuffix("Table")
                counted[f"{table or 'batch'}:{target.rsplit('.', 1)[-1]}"] += 1
            else:
                counted[
                    f"sqs:{(dict(p.split('=', 1) for p in body.split('&') if '=' in p)).get('Action')}"
                ] += 1
        return response

    with mock.patch.object(BotocoreStubber, "process_request", process_request):
        action()
    return counted


def test_a_500_recipient_multicast_costs_a_few_requests_per_unit(harness: Harness) -> None:
    """send_line as its handler wires it (report counters on): one plan, one claim and one finish
    for the unit, its count in one transaction, profiles read 100 a request and records written 25
    a request. Counted from what moto receives."""
    recipients = harness.customers_bulk(range(500))
    body = dispatch("multicast-500", recipients, scenario_id="spring-tea", version=1, step_id="announce")
    harness.enqueue(body)
    records = harness.receive()
    handler = harness.module.lambda_handler
    requests = _requests_of(lambda: handler({"Records": copy.deepcopy(records)}, FakeLambdaContext()))
    assert len(harness.calls()) == 1 and len(harness.outcomes("multicast-500")) == 500
    assert {k: n for k, n in requests.items() if not k.startswith("Journeys:")} == {
        "Deliveries:Query": 1,  # the dispatch's state (nothing yet)
        "batch:BatchGetItem": 5,  # 500 profiles, 100 a request
        "Deliveries:PutItem": 1,  # the plan
        "Deliveries:UpdateItem": 2,  # the unit's claim and finish
        "batch:TransactWriteItems": 1,  # the unit's report counts, under one marker
        "batch:BatchWriteItem": 20,  # 500 recipient records, 25 a request
    }
    # The counters' own bookkeeping (the scenario index), written by ReportCounters.
    assert sum(n for k, n in requests.items() if k.startswith("Journeys:")) <= 1
    # Delivered again: the dispatch's state is read, and nothing else is done.
    again = _requests_of(lambda: handler({"Records": copy.deepcopy(records)}, FakeLambdaContext()))
    assert again == Counter({"Deliveries:Query": 1})
    assert len(harness.calls()) == 1

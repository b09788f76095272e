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
import threading
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
from cems.line.deliveries import RecipientStatus, UnitStatus, retry_key
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
        self.deliveries = DeliveryStore(
            "DeliveriesTable", dynamodb, module.services.sender.deliveries.retention
        )

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


# --- the checks the issue names -------------------------------------------------------------------


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


def test_the_same_dispatch_enqueued_three_times_sends_once(harness: Harness) -> None:
    recipients = [harness.customer(n) for n in (1, 2)]
    body = dispatch("enqueued-thrice", recipients)
    harness.enqueue(body, body, body)
    assert harness.deliver() == set()
    assert len(harness.calls()) == 1
    assert visible_count(harness) == 0


def test_a_429_storm_then_recovery_loses_nothing_and_duplicates_nothing(harness: Harness) -> None:
    harness.customers_bulk(range(1, 1201))
    personal = [harness.customer(n) for n in (2001, 2002, 2003)]
    harness.enqueue(dispatch("storm-multicast", [f"cus_{n:06d}" for n in range(1, 1201)]))
    harness.enqueue(
        LineDispatch.model_validate(
            {
                "idempotency_key": "storm-personal",
                "recipients": personal,
                "personalised": {c: [{"type": "text", "text": f"{c} 様へ"}] for c in personal},
            }
        ).to_sqs_body()
    )
    harness.fake.fail(429, count=5)
    records = harness.receive()
    failed = harness.invoke(records)
    assert failed == {r["messageId"] for r in records}
    # Backoff: both came back invisible for a while (ChangeMessageVisibility), not at once.
    assert harness.receive() == []
    rounds = 1
    while failed:
        records = redeliver_now(harness, [r for r in records if r["messageId"] in failed])
        failed = harness.invoke(records)
        rounds += 1
        assert rounds < 10
    received = harness.received()
    assert len(received) == 1203
    assert all(len(messages) == 1 for messages in received.values())
    assert received[line_user_id(2002)] == [{"type": "text", "text": "cus_002002 様へ"}]
    accepted = [c for c in harness.calls() if c["status"] == 200]
    assert len([c for c in accepted if c["endpoint"] == "multicast"]) == 3
    assert len([c for c in accepted if c["endpoint"] == "push"]) == 3
    assert len([c for c in harness.calls() if c["status"] == 429]) == 5
    assert set(harness.outcomes("storm-multicast").values()) == {RecipientStatus.SENT}
    assert set(harness.outcomes("storm-personal").values()) == {RecipientStatus.SENT}
    assert visible_count(harness) == 0


def test_a_retry_reuses_each_units_retry_key(harness: Harness) -> None:
    recipients = [harness.customer(n) for n in (1, 2)]
    harness.enqueue(dispatch("same-key", recipients))
    harness.fake.fail(500, count=1)
    records = harness.receive()
    assert harness.invoke(records)
    assert harness.invoke(redeliver_now(harness, records)) == set()
    keys = [c["retry_key"] for c in harness.calls()]
    assert keys == [retry_key("same-key", "m0000")] * 2
    assert [c["status"] for c in harness.calls()] == [500, 200]


def test_a_400_is_recorded_with_lines_message_and_not_retried(harness: Harness) -> None:
    recipients = [harness.customer(n) for n in (1, 2)]
    harness.enqueue(dispatch("bad-request", recipients))
    harness.fake.fail(400, message="The property, 'messages[0].text', in the request body is invalid")
    records = harness.receive()
    assert harness.invoke(records) == set()
    assert visible_count(harness) == 0
    # Delivered again anyway: the failed unit is final, LINE is not called again.
    assert harness.invoke(records) == set()
    assert len(harness.calls()) == 1
    assert harness.received() == {}
    records_by_customer = harness.deliveries.recipients("bad-request")
    assert {r.status for r in records_by_customer.values()} == {RecipientStatus.FAILED}
    assert "messages[0].text" in (records_by_customer[recipients[0]].reason or "")


def test_an_unfollowed_user_receives_nothing(harness: Harness) -> None:
    following = harness.customer(1)
    unfollowed = harness.customer(2, reachable=False)
    no_consent = harness.customer(3, consent=False)
    unknown = "cus_nobody"
    harness.enqueue(dispatch("unfollowed", [following, unfollowed, no_consent, unknown]))
    assert harness.deliver() == set()
    assert set(harness.received()) == {line_user_id(1)}
    assert harness.outcomes("unfollowed") == {
        following: RecipientStatus.SENT,
        unfollowed: RecipientStatus.SKIPPED_UNREACHABLE,
        no_consent: RecipientStatus.SKIPPED_NO_CONSENT,
        unknown: RecipientStatus.SKIPPED_UNREACHABLE,
    }
    # A lone reachable recipient of common content is a push, not a multicast.
    assert [c["endpoint"] for c in harness.calls()] == ["push"]


def test_1200_identical_recipients_take_exactly_3_multicast_calls(harness: Harness) -> None:
    recipients = harness.customers_bulk(range(1, 1201))
    harness.enqueue(dispatch("twelve-hundred", recipients))
    assert harness.deliver() == set()
    calls = harness.calls()
    assert [(c["endpoint"], c["recipients"]) for c in calls] == [
        ("multicast", 500),
        ("multicast", 500),
        ("multicast", 200),
    ]
    assert len(harness.received()) == 1200


# --- more outcomes --------------------------------------------------------------------------------


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
    harness.module.services.sender._paused_until = 0.0
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
        from cems.settings import LineSettings

        settings = LineSettings(api_url=f"http://127.0.0.1:{silent.getsockname()[1]}")
        gateway = harness.module.services.sender.gateway
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


def test_a_call_lost_after_line_accepted_it_is_counted_once_through_409(harness: Harness) -> None:
    recipients = [harness.customer(n) for n in (1, 2)]
    harness.enqueue(dispatch("lost-record", recipients))
    records = harness.receive()
    assert harness.invoke(records) == set()
    # As if the worker died right after LINE accepted the call: no unit or recipient record.
    for sk in ("UNIT#m0000", *(f"RCPT#{c}" for c in recipients)):
        harness.dynamodb.delete_item(
            TableName="DeliveriesTable", Key={"pk": {"S": "DISPATCH#lost-record"}, "sk": {"S": sk}}
        )
    assert harness.invoke(records) == set()
    assert [c["status"] for c in harness.calls()] == [200, 409]
    assert all(len(m) == 1 for m in harness.received().values())
    assert set(harness.outcomes("lost-record").values()) == {RecipientStatus.SENT}


def test_a_retry_with_a_changed_audience_keeps_the_frozen_plan(harness: Harness) -> None:
    harness.customers_bulk(range(1, 603))
    first = [f"cus_{n:06d}" for n in range(1, 602)]
    harness.enqueue(dispatch("frozen", first))
    harness.fake.fail(503, count=1)  # the first chunk fails, the second goes through
    records = harness.receive()
    assert harness.invoke(records)
    # The producer enqueues the dispatch again with a different audience under the same key.
    changed = [f"cus_{n:06d}" for n in range(2, 603)]
    harness.enqueue(dispatch("frozen", changed))
    harness.invoke(redeliver_now(harness, records) + harness.receive())
    accepted = [c for c in harness.calls() if c["status"] == 200]
    assert [c["retry_key"] for c in accepted] == [retry_key("frozen", "m0001"), retry_key("frozen", "m0000")]
    assert [c["recipients"] for c in accepted] == [101, 500]
    received = harness.received()
    assert line_user_id(1) in received and line_user_id(602) not in received
    assert all(len(m) == 1 for m in received.values())


def test_an_unfollow_between_attempts_is_respected(harness: Harness) -> None:
    stays, leaves = harness.customer(1), harness.customer(2)
    harness.enqueue(dispatch("unfollow-later", [stays, leaves]))
    harness.fake.fail(429, count=1)
    records = harness.receive()
    assert harness.invoke(records)
    harness.customer(2, reachable=False)
    assert harness.invoke(redeliver_now(harness, records)) == set()
    assert set(harness.received()) == {line_user_id(1)}
    assert harness.outcomes("unfollow-later") == {
        stays: RecipientStatus.SENT,
        leaves: RecipientStatus.SKIPPED_UNREACHABLE,
    }


def test_concurrent_deliveries_call_line_once(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    recipients = [harness.customer(n) for n in range(1, 6)]
    body = dispatch("concurrent", recipients)
    sender = harness.module.services.sender
    # In-process moto is not thread-safe; DynamoDB applies each request atomically, and so does this.
    client = sender.deliveries.client
    make_api_call = client._make_api_call
    lock = threading.Lock()

    def atomic(*args: Any) -> Any:
        with lock:
            return make_api_call(*args)

    monkeypatch.setattr(client, "_make_api_call", atomic)
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(sender.handle(body))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert len([c for c in harness.calls() if c["status"] == 200]) == 1
    assert all(len(m) == 1 for m in harness.received().values())


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

"""The send_email handler under moto (DynamoDB, SQS, SES v2).

Each test imports functions/send_email/app.py afresh inside mock_aws and feeds it SQS records that
were really sent to and received from a moto queue, so ChangeMessageVisibility acts on them. Mail
SES accepted is read back from moto's SES backend (`sent_messages`, the raw MIME). SES's refusals
are moto's own (an unverified sender) or injected with a botocore `before-call` hook.
"""

from __future__ import annotations

import copy
import email
import importlib.util
import json
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from botocore.exceptions import ReadTimeoutError
from cems.adapters import aws
from cems.adapters.dynamodb.customers import CustomerStore
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.dynamodb.suppression import SuppressionStore, address_hash
from cems.email.dispatch import EmailDispatch
from cems.local.pollers import sqs_record
from cems.models import ChannelState, Profile
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
APP = ROOT / "functions" / "send_email" / "app.py"
REGION = "ap-northeast-1"
SENDER = "shop@midori-tea.example.jp"
SECRET = "integration-tracking-secret"
BASE = "https://engage.midori-tea.example.jp"
HTML = (
    "<html><body><p>{name}様、新茶のご案内です。</p>"
    '<p><a href="https://shop.example.jp/products/shincha">見てみる</a></p></body></html>'
)
ADDRESS_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


FakeLambdaContext = partial(FakeContext, "cems-dev-SendEmailFunction")


def address(n: int) -> str:
    return f"customer{n:04d}@example.com"


class Harness:
    def __init__(self, module: ModuleType, dynamodb: Any, sqs: Any, queue_url: str) -> None:
        self.module = module
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.queue_url = queue_url
        self.customers = CustomerStore("CustomersTable", dynamodb)
        self.suppressions = SuppressionStore("CustomersTable", dynamodb)
        self.counters = ReportCounters("JourneysTable", dynamodb)
        self.ses_backend = ses_backends[DEFAULT_ACCOUNT_ID][REGION]

    # Customers ----------------------------------------------------------------------------------

    def customer(self, n: int, *, consent: bool = True, email: str | None = "default", **state: Any) -> str:
        now = datetime.now(UTC)
        customer_id = f"cus_{n:06d}"
        traits = {"name": f"顧客{n}"}
        if email is not None:
            traits["email"] = address(n) if email == "default" else email
        profile = Profile(
            customer_id=customer_id,
            traits=traits,
            channels={
                "email": ChannelState(
                    reachable=state.get("reachable", True), consent=consent, updated_at=now, reason="identify"
                )
            },
            first_seen_at=now,
            updated_at=now,
        )
        self.dynamodb.put_item(TableName="CustomersTable", Item=self.customers.profile_item(profile))
        return customer_id

    # The queue ----------------------------------------------------------------------------------

    def enqueue(self, *bodies: str) -> None:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)

    def receive(self) -> list[dict[str, Any]]:
        records = []
        while True:
            answer = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
            )
            messages = answer.get("Messages", [])
            records += [
                sqs_record(m, "arn:aws:sqs:ap-northeast-1:123456789012:EmailSendQueue") for m in messages
            ]
            if len(messages) < 10:
                return records

    def invoke(self, records: list[dict[str, Any]]) -> set[str]:
        response = self.module.lambda_handler({"Records": copy.deepcopy(records)}, FakeLambdaContext())
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
        return failed

    def deliver(self) -> set[str]:
        return self.invoke(self.receive())

    def redeliver_now(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for record in records:
            self.sqs.change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )
        return self.receive()

    # What happened ------------------------------------------------------------------------------

    def sent(self) -> list[tuple[list[str], EmailMessage]]:
        mails = []
        for raw in self.ses_backend.sent_messages:
            parsed = email.message_from_string(raw.raw_data, policy=default)
            assert isinstance(parsed, EmailMessage)
            mails.append((list(dict.fromkeys(raw.destinations)), parsed))
        return mails

    def record(self, key: str) -> dict[str, Any]:
        item = self.dynamodb.get_item(
            TableName="DeliveriesTable", Key={"pk": {"S": f"DISPATCH#{key}"}, "sk": {"S": "EMAIL"}}
        ).get("Item")
        assert item is not None
        return {k: next(iter(v.values())) for k, v in item.items()}

    def counts(self, scenario_id: str = "scn_shincha") -> dict[str, int]:
        found: Counter[str] = Counter()
        for _, counts in self.counters.cells(scenario_id):
            found.update({k: int(v) for k, v in counts.items()})
        return dict(found)

    def ses_client(self) -> Any:
        return self.module.sender.gateway.client()

    def fail_ses(self, *answers: tuple[int, str] | Exception) -> list[int]:
        """The next SendEmail calls answer `answers` in turn (HTTP status and SES error code, or an
        exception raised); later calls reach moto. Returns the list of calls made (grows)."""
        pending = list(answers)
        calls: list[int] = []

        def hook(**kwargs: Any) -> Any:
            calls.append(1)
            if not pending:
                return None
            answer = pending.pop(0)
            if isinstance(answer, Exception):
                raise answer
            status, code = answer
            return (
                _Http(status),
                {
                    "Error": {"Code": code, "Message": f"{code} for {address(1)}"},
                    "ResponseMetadata": {"HTTPStatusCode": status},
                },
            )

        self.ses_client().meta.events.register("before-call.sesv2.SendEmail", hook)
        return calls


@dataclass
class _Http:
    status_code: int
    headers: dict[str, str] | None = None
    content: bytes = b""
    text: str = ""


@pytest.fixture
def harness(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="EmailSendQueue", Attributes={"VisibilityTimeout": "180"})[
        "QueueUrl"
    ]
    ses = boto3.client("sesv2", region_name=REGION)
    ses.create_email_identity(EmailIdentity="midori-tea.example.jp")
    ses.create_configuration_set(ConfigurationSetName="cems-dev")
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "EMAIL_SEND_QUEUE_URL": queue_url,
        "EMAIL_FROM_ADDRESS": SENDER,
        "EMAIL_FROM_NAME": "茶寮みどり",
        "EMAIL_POSTAL_ADDRESS": "〒604-8005 京都府京都市中京区恵比須町 1-2",
        "EMAIL_CONTACT": "075-000-0000",
        "SES_CONFIGURATION_SET": "cems-dev",
        "ENGAGE_BASE_URL": BASE,
        "CEMS_TRACKING_SECRET": SECRET,
        "CEMS_EMAIL_RETRY_BASE_SECONDS": "2",
        "DELIVERIES_TABLE": "DeliveriesTable",
        "CUSTOMERS_TABLE": "CustomersTable",
        "JOURNEYS_TABLE": "JourneysTable",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages.clear()
    name = "cems_send_email_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield Harness(module, dynamodb, sqs, queue_url)
    sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()


def dispatch(key: str, customer_id: str, **extra: Any) -> str:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "customer_id": customer_id,
        "subject": "新茶のご案内",
        "html": HTML.format(name=customer_id),
        "text": f"{customer_id}様、新茶のご案内です。\nhttps://shop.example.jp/products/shincha\n",
        "scenario_id": "scn_shincha",
        "version": 1,
        "step_id": "step_1",
        "variant": "A",
    }
    values.update(extra)
    return EmailDispatch.model_validate(values).to_sqs_body()


# --- at most once through the handler (the sender's rules: tests/unit/test_email_sender_behaviour.py)


def test_the_same_sqs_message_delivered_three_times_sends_once(harness: Harness) -> None:
    customer = harness.customer(1)
    harness.enqueue(dispatch("thrice", customer))
    first = harness.receive()
    assert harness.invoke(first) == set()
    assert harness.invoke(first) == set()
    assert harness.invoke(first + first) == set()
    assert len(harness.sent()) == 1
    assert harness.counts() == {"sent": 1}


def test_throttling_then_success_sends_once(harness: Harness) -> None:
    customer = harness.customer(1)
    calls = harness.fail_ses((429, "TooManyRequestsException"), (400, "LimitExceededException"))
    harness.enqueue(dispatch("throttled", customer))
    records = harness.receive()
    assert harness.invoke(records) == {records[0]["messageId"]}
    assert harness.record("throttled")["status"] == "retry"
    assert harness.record("throttled")["error_code"] == "TooManyRequestsException"
    # Backoff: it is invisible for a while (ChangeMessageVisibility), not back at once.
    assert harness.receive() == []
    records = harness.redeliver_now(records)
    assert records[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert harness.invoke(records) == {records[0]["messageId"]}
    records = harness.redeliver_now(records)
    assert harness.invoke(records) == set()
    assert len(calls) == 3
    assert len(harness.sent()) == 1
    record = harness.record("throttled")
    assert record["status"] == "sent" and int(record["attempts"]) == 3 and "error_code" not in record
    assert harness.counts() == {"sent": 1}


def test_an_unverified_sender_is_a_permanent_failure(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.module.sender.settings = type(harness.module.sender.settings)(
        **{**harness.module.sender.settings.__dict__, "from_address": "news@unverified.example.jp"}
    )
    customer = harness.customer(1)
    harness.enqueue(dispatch("unverified", customer))
    assert harness.deliver() == set()
    assert harness.sent() == []
    record = harness.record("unverified")
    assert record["status"] == "failed" and record["error_code"] == "MessageRejected"
    assert "@" not in record["reason"]


# --- the suppression list ------------------------------------------------------------------------


def test_suppression_store(harness: Harness) -> None:
    at = datetime(2026, 11, 1, tzinfo=UTC)
    assert harness.suppressions.reason(address(9)) is None
    assert harness.suppressions.suppress(address(9), "bounce", at) is True
    assert harness.suppressions.suppress(f" {address(9).upper()} ", "complaint", at) is False
    assert harness.suppressions.reason(address(9)) == "bounce"
    item = harness.dynamodb.get_item(
        TableName="CustomersTable",
        Key={"pk": {"S": f"SUPPRESS#{address_hash(address(9))}"}, "sk": {"S": "SUPPRESS"}},
    )["Item"]
    assert "@" not in str(item)


# --- cost and privacy -----------------------------------------------------------------------------


def test_aws_requests_per_mail_sent(harness: Harness) -> None:
    customers = [harness.customer(n) for n in range(1, 4)]
    harness.enqueue(dispatch("warm-up", customers[0]))  # the first count of a scenario also indexes it
    assert harness.deliver() == set()
    requests: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        requests[f"{model.service_model.service_name}.{model.name}"] += 1

    for client in (aws.dynamodb(), harness.ses_client()):
        client.meta.events.register("before-call", count)
    harness.enqueue(*(dispatch(f"counted-{c}", c) for c in customers[1:]))
    assert harness.deliver() == set()
    per_mail = {name: n / 2 for name, n in requests.items()}
    print(f"AWS requests per email sent: {sum(per_mail.values()):g} {dict(sorted(per_mail.items()))}")
    assert per_mail == {
        "dynamodb.GetItem": 2,  # the profile, the suppression list
        "dynamodb.UpdateItem": 2,  # the claim, the outcome
        "sesv2.SendEmail": 1,
        "dynamodb.TransactWriteItems": 1,  # the report counter, once per dispatch
    }


def test_no_email_address_in_the_logs(
    harness: Harness, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    harness.customer(1)
    harness.customer(2, consent=False)
    harness.customer(3)
    harness.suppressions.suppress(address(3), "complaint", datetime.now(UTC))
    harness.customer(4)
    harness.enqueue(
        dispatch("log-1", "cus_000001"),
        dispatch("log-2", "cus_000002"),
        dispatch("log-3", "cus_000003"),
        dispatch("log-4", "cus_000004"),
        dispatch("log-test", "sample", test=True, to_address="staff@midori-tea.example.jp"),
        '{"idempotency_key": "bad", "customer_id": "c", "subject": "s", "to_address": "leak@example.com"}',
    )
    harness.fail_ses((400, "MessageRejected"))
    assert harness.deliver() == set()
    # Every record as the function's JSON formatter writes it (the handler's stream is the one of
    # the first test that imported Powertools), and the metrics it printed.
    formatter = harness.module.logger.registered_formatter
    logs = "\n".join(formatter.format(r) for r in caplog.records) + capsys.readouterr().out
    for expected in ('"skip_reason":"suppressed_complaint"', '"error_code":"MessageRejected"', "dropped"):
        assert expected in logs
    assert ADDRESS_IN_TEXT.findall(logs) == []


def test_the_sample_events_run(harness: Harness) -> None:
    """events/send_email/*.json as Lambda passes them (`sam local invoke -e` uses the same files)."""
    for customer_id, n in (("cus_tea_0001", 1), ("cus_tea_0002", 2)):
        harness.customer(n)
        profile = harness.customers.profile(f"cus_{n:06d}")
        assert profile is not None
        harness.dynamodb.put_item(
            TableName="CustomersTable",
            Item=harness.customers.profile_item(profile.model_copy(update={"customer_id": customer_id})),
        )
    events = ROOT / "events" / "send_email"
    for name in ("step_mail", "test_send", "no_tracking", "invalid"):
        event = json.loads((events / f"{name}.json").read_text())
        assert harness.module.lambda_handler(event, FakeLambdaContext()) == {"batchItemFailures": []}
    mails = harness.sent()
    assert [to for to, _ in mails] == [[address(1)], ["staff@shop.example.jp"], [address(2)]]
    assert mails[2][1].get_content_type() == "text/plain"
    assert f"{BASE}/r/" not in mails[2][1].get_content()
    assert harness.counts("scn_repeat_30d") == {"sent": 1}


def test_metrics_per_outcome(harness: Harness, capsys: pytest.CaptureFixture[str]) -> None:
    harness.customer(1)
    harness.customer(2, consent=False)
    harness.customer(3)
    harness.customer(4)
    harness.fail_ses(
        (400, "MessageRejected"),
        (429, "TooManyRequestsException"),
        ReadTimeoutError(endpoint_url="https://email.ap-northeast-1.amazonaws.com"),
    )
    harness.enqueue(
        dispatch("m-failed", "cus_000001"),
        dispatch("m-skipped", "cus_000002"),
        dispatch("m-retry", "cus_000003"),
        dispatch("m-unknown", "cus_000004"),
        dispatch("m-test", "sample", test=True, to_address="staff@midori-tea.example.jp"),
        "{}",
    )
    failed = harness.deliver()
    assert len(failed) == 1
    metrics = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    totals: Counter[str] = Counter()
    for document in metrics:
        for definition in document["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                totals[metric["Name"]] += int(sum(document[metric["Name"]]))
    assert {name: n for name, n in totals.items() if n} == {
        "EmailFailed": 1,
        "EmailSkipped": 1,
        "EmailRetries": 1,
        "EmailOutcomeUnknown": 1,
        "EmailTestSent": 1,
        "EmailDispatchesInvalid": 1,
    }

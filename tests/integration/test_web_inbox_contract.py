"""The on-site inbox under moto (adapters.dynamodb.web_inbox) and the send_web handler.

The inbox's rules run on the DynamoDB adapter and on the in-memory fake (tests/fakes/web.py) alike,
so the fake the sender's unit tests use cannot lie. The handler is imported afresh inside mock_aws
and fed SQS records really sent to and received from a moto queue.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.customers import CustomerStore
from cems.adapters.dynamodb.web_inbox import WebInboxStore
from cems.local.pollers import sqs_record
from cems.models import Profile
from cems.ports import WebInbox
from cems.web.dispatch import WebDispatch, WebMessage
from cems.web.inbox import InboxItem, InboxOwner, due

from tests.fakes.web import InMemoryWebInbox

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, module_dynamodb  # noqa: F401
from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
APP = ROOT / "functions" / "send_web" / "app.py"
REGION = "ap-northeast-1"
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
MESSAGE = WebMessage(
    kind="slide_in",
    title="新茶が入荷しました",
    body="<img src=x onerror=alert(1)>",
    buttons=[{"label": "見る", "url": "https://shop.example.jp/shincha"}],
    pages=["/products/*"],
    expires_seconds=86400,
)
FakeLambdaContext = partial(FakeContext, "cems-dev-SendWebFunction")


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture(params=["fake", "dynamodb"])
def inbox(request: pytest.FixtureRequest) -> WebInbox:
    if request.param == "fake":
        return InMemoryWebInbox()
    return WebInboxStore("CustomersTable", request.getfixturevalue("empty_dynamodb"))


def item(key: str, owner: InboxOwner | None = None, **update: Any) -> InboxItem:
    made = InboxItem(
        owner=owner or InboxOwner.customer("cus_1"),
        dispatch_key=key,
        customer_id="cus_1",
        message=MESSAGE,
        written_at=NOW,
        expires_at=NOW + timedelta(days=1),
        scenario_id="s",
        version=3,
        step_id="hello",
    )
    return made.model_copy(update=update)


def test_an_item_is_written_once_and_read_back_as_it_was(inbox: WebInbox) -> None:
    assert inbox.put(item("k1")) is True
    assert inbox.put(item("k1", written_at=NOW + timedelta(minutes=5))) is False
    [read] = inbox.items(InboxOwner.customer("cus_1"), 10)
    assert read == item("k1")
    assert inbox.items(InboxOwner.customer("cus_2"), 10) == []


def test_the_first_impression_and_dismissal_win_and_a_put_never_undoes_them(inbox: WebInbox) -> None:
    owner = InboxOwner.customer("cus_1")
    inbox.put(item("k1"))
    assert inbox.mark(owner, "k1", "shown_at", NOW) is True
    assert inbox.mark(owner, "k1", "shown_at", NOW + timedelta(minutes=1)) is False
    assert inbox.mark(owner, "k1", "dismissed_at", NOW) is True
    assert inbox.mark(owner, "missing", "dismissed_at", NOW) is False
    assert inbox.put(item("k1")) is False
    [read] = inbox.items(owner, 10)
    assert read.shown_at == NOW and read.dismissed_at == NOW
    assert due([read], "https://shop.example.jp/products/a", NOW) is None


def test_a_preview_inbox_is_apart_from_every_customers(inbox: WebInbox) -> None:
    preview = InboxOwner.of_preview("t" * 32)
    inbox.put(item("test#s#hello#1", owner=preview, test=True))
    assert [i.dispatch_key for i in inbox.items(preview, 10)] == ["test#s#hello#1"]
    assert inbox.items(InboxOwner.customer("cus_1"), 10) == []


def test_a_read_is_bounded(inbox: WebInbox) -> None:
    for n in range(5):
        inbox.put(item(f"k{n}"))
    assert len(inbox.items(InboxOwner.customer("cus_1"), 3)) == 3


def test_the_stored_item_expires_by_ttl_and_holds_neither_token_nor_address(
    request: pytest.FixtureRequest,
) -> None:
    dynamodb = request.getfixturevalue("empty_dynamodb")
    token = "s" * 32
    WebInboxStore("CustomersTable", dynamodb).put(item("k", owner=InboxOwner.of_preview(token)))
    [raw] = dynamodb.scan(TableName="CustomersTable")["Items"]
    assert raw["pk"]["S"].startswith(keys.WEB_PREVIEW_PREFIX) and token not in str(raw)
    assert int(raw["expires_at"]["N"]) == int((NOW + timedelta(days=1)).timestamp())


# ---------------------------------------------------------------------------------- the handler


class Harness:
    def __init__(self, module: Any, dynamodb: Any, sqs: Any, queue_url: str) -> None:
        self.module = module
        self.dynamodb = dynamodb
        self.sqs = sqs
        self.queue_url = queue_url
        self.inbox = WebInboxStore("CustomersTable", dynamodb)

    def visitor(self, customer_id: str) -> None:
        profile = Profile(
            customer_id=customer_id, first_seen_at=NOW, updated_at=NOW, anonymous_ids={f"a-{customer_id}"}
        )
        store = CustomerStore("CustomersTable", self.dynamodb)
        self.dynamodb.put_item(TableName="CustomersTable", Item=store.profile_item(profile))

    def deliver(self, *bodies: str) -> set[str]:
        for body in bodies:
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        )
        records = [
            sqs_record(m, "arn:aws:sqs:ap-northeast-1:123456789012:WebSendQueue")
            for m in answer.get("Messages", [])
        ]
        response = self.module.lambda_handler({"Records": copy.deepcopy(records)}, FakeLambdaContext())
        failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
        for record in records:
            if record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=record["receiptHandle"])
        return failed


@pytest.fixture
def harness(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    dynamodb = request.getfixturevalue("empty_dynamodb")
    sqs = boto3.client("sqs", region_name=REGION)
    queue_url = sqs.create_queue(QueueName="WebSendQueue", Attributes={"VisibilityTimeout": "180"})[
        "QueueUrl"
    ]
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "WEB_SEND_QUEUE_URL": queue_url,
        "DELIVERIES_TABLE": "DeliveriesTable",
        "CUSTOMERS_TABLE": "CustomersTable",
        "JOURNEYS_TABLE": "JourneysTable",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    name = "cems_send_web_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield Harness(module, dynamodb, sqs, queue_url)
    sys.modules.pop(name, None)
    sqs.delete_queue(QueueUrl=queue_url)
    aws.dynamodb.cache_clear()


def _body(key: str, customer_id: str) -> str:
    return WebDispatch(
        idempotency_key=key,
        customer_id=customer_id,
        message=MESSAGE,
        scenario_id="s",
        version=1,
        step_id="hello",
    ).to_sqs_body()


def test_send_web_writes_each_dispatch_into_its_visitors_inbox_once(
    harness: Harness, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    harness.visitor("cus_1")
    assert harness.deliver(_body("k1", "cus_1"), _body("k1", "cus_1"), _body("k2", "cus_unknown")) == set()
    [written] = harness.inbox.items(InboxOwner.customer("cus_1"), 10)
    assert written.message == MESSAGE and written.expires_at == NOW + timedelta(days=1)
    assert harness.inbox.items(InboxOwner.customer("cus_unknown"), 10) == []
    # Every record as the function's JSON formatter writes it (the handler's stream is the one of the
    # first test that imported Powertools), and the metrics it printed.
    formatter = harness.module.logger.registered_formatter
    logs = "\n".join(formatter.format(r) for r in caplog.records) + capsys.readouterr().out
    # Keys and outcomes are logged; content never.
    assert '"skip_reason":"no_profile"' in logs and "新茶" not in logs and "onerror" not in logs

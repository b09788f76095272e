"""LINE sending against the local stack: dispatches enqueued on LineSendQueue with boto3, sent by
SendLineFunction through the stack's fake LINE API, read back from /_local/line/messages."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from cems.adapters.dynamodb.customers import CustomerStore
from cems.line.dispatch import LineDispatch
from cems.models import ChannelState, Profile

from tests.e2e.conftest import LocalStackClient, eventually

pytestmark = pytest.mark.e2e
TEXT = {"type": "text", "text": "茶寮みどりです。新茶のセットが入荷しました。"}


class Line:
    def __init__(self, stack: LocalStackClient) -> None:
        self.stack = stack
        self.sqs = stack.client("sqs")
        self.queue_url = self.sqs.get_queue_url(QueueName="LineSendQueue")["QueueUrl"]
        self.customers = CustomerStore("CustomersTable", stack.dynamodb)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.stack.http_url + path,
            method="POST",
            data=json.dumps(body or {}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    def snapshot(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.stack.http_url + "/_local/line/messages", timeout=30) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result

    def profiles(self, prefix: str, count: int, *, reachable: bool = True) -> list[tuple[str, str]]:
        """`count` customers with a LINE contact: (customer id, LINE user id)."""
        now = datetime.now(UTC)
        made = []
        for start in range(0, count, 25):
            requests = []
            for n in range(start, min(start + 25, count)):
                line_user_id = f"U{prefix}{n:0{32 - len(prefix)}x}"
                profile = Profile(
                    customer_id=f"cus_{prefix}_{n}",
                    line_user_id=line_user_id,
                    channels={"line": ChannelState(reachable=reachable, consent=True, updated_at=now)},
                    first_seen_at=now,
                    updated_at=now,
                )
                requests.append({"PutRequest": {"Item": self.customers.profile_item(profile)}})
                made.append((profile.customer_id, line_user_id))
            self.stack.dynamodb.batch_write_item(RequestItems={"CustomersTable": requests})
        return made

    def enqueue(self, key: str, customer_ids: list[str], **extra: Any) -> str:
        body = LineDispatch.model_validate(
            {"idempotency_key": key, "recipients": customer_ids, "messages": [TEXT], **extra}
        ).to_sqs_body()
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        return body

    def wait_until(self, done: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
        """The fake LINE API's snapshot once `done` holds for it (the stack is drained each time)."""

        def probe() -> dict[str, Any] | None:
            self.stack.drain()
            snapshot = self.snapshot()
            return snapshot if done(snapshot) else None

        return eventually(probe, what)

    def queue_empty(self) -> bool:
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["All"])[
            "Attributes"
        ]
        return (
            int(attributes["ApproximateNumberOfMessages"])
            + int(attributes["ApproximateNumberOfMessagesNotVisible"])
            == 0
        )


@pytest.fixture
def line(local_stack: LocalStackClient) -> Iterator[Line]:
    helper = Line(local_stack)
    helper.post("/_local/line/reset")
    yield helper
    helper.post("/_local/line/reset")


def test_the_same_sqs_message_delivered_three_times_sends_once(line: Line) -> None:
    people = line.profiles("a1", 3)
    body = line.enqueue("e2e-thrice", [c for c, _ in people])
    line.sqs.send_message(QueueUrl=line.queue_url, MessageBody=body)
    line.sqs.send_message(QueueUrl=line.queue_url, MessageBody=body)
    line.stack.drain()
    snapshot = line.snapshot()
    assert [c["endpoint"] for c in snapshot["calls"]] == ["multicast"]
    assert {to: len(m) for to, m in snapshot["by_recipient"].items()} == {u: 1 for _, u in people}


def test_a_429_storm_then_recovery_loses_nothing_and_duplicates_nothing(line: Line) -> None:
    people = line.profiles("b2", 3)
    personal = line.profiles("b3", 2)
    line.post("/_local/line/fail", {"status": 429, "count": 4})
    line.enqueue("e2e-storm", [c for c, _ in people])
    line.enqueue(
        "e2e-storm-personal",
        [c for c, _ in personal],
        messages=[],
        personalised={c: [{"type": "text", "text": f"{c} 様"}] for c, _ in personal},
    )
    expected = {u for _, u in people + personal}
    snapshot = line.wait_until(
        lambda s: set(s["by_recipient"]) == expected and line.queue_empty(), "every recipient sent to"
    )
    assert set(snapshot["by_recipient"]) == expected
    assert all(len(m) == 1 for m in snapshot["by_recipient"].values())
    statuses = [c["status"] for c in snapshot["calls"]]
    assert statuses.count(429) == 4
    assert statuses.count(200) == 3  # one multicast, two pushes
    assert line.queue_empty()


def test_a_400_is_not_retried(line: Line) -> None:
    people = line.profiles("c4", 2)
    line.post("/_local/line/fail", {"status": 400, "count": 1, "message": "The request body has 1 error(s)"})
    line.enqueue("e2e-400", [c for c, _ in people])
    line.stack.drain()
    # After the drain the message was handled once. A message kept for a retry would still be on
    # the queue (in flight) and come back: an empty queue means it was let go.
    eventually(line.queue_empty, "the LINE send queue empty")
    snapshot = line.snapshot()
    assert [c["status"] for c in snapshot["calls"]] == [400]
    assert snapshot["by_recipient"] == {}
    items = line.stack.dynamodb.query(
        TableName="DeliveriesTable",
        KeyConditionExpression="pk = :pk AND begins_with(sk, :r)",
        ExpressionAttributeValues={":pk": {"S": "DISPATCH#e2e-400"}, ":r": {"S": "RCPT#"}},
    )["Items"]
    assert {i["status"]["S"] for i in items} == {"failed"}
    assert all("400 The request body has 1 error(s)" in i["reason"]["S"] for i in items)


def test_an_unfollowed_user_receives_nothing(line: Line) -> None:
    following = line.profiles("d5", 1)
    unfollowed = line.profiles("d6", 1, reachable=False)
    line.enqueue("e2e-unfollowed", [following[0][0], unfollowed[0][0]])
    line.stack.drain()
    snapshot = line.snapshot()
    assert set(snapshot["by_recipient"]) == {following[0][1]}


def test_1200_identical_recipients_take_exactly_3_multicast_calls(line: Line) -> None:
    people = line.profiles("e7", 1200)
    line.enqueue("e2e-1200", [c for c, _ in people])
    line.stack.drain()
    snapshot = line.snapshot()
    assert [(c["endpoint"], c["recipients"]) for c in snapshot["calls"]] == [
        ("multicast", 500),
        ("multicast", 500),
        ("multicast", 200),
    ]
    assert len(snapshot["by_recipient"]) == 1200


def test_the_messages_page_lists_what_was_sent(line: Line) -> None:
    people = line.profiles("f8", 1)
    line.enqueue("e2e-page", [people[0][0]])
    line.stack.drain()
    with urllib.request.urlopen(line.stack.http_url + "/_local/line", timeout=30) as answer:
        page = answer.read().decode("utf-8")
    assert "LINE 送信メッセージ / LINE messages sent" in page
    assert people[0][1] in page and "新茶のセット" in page

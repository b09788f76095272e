"""Where the engine's dispatches go (cems.adapters.sqs_dispatch.QueueDispatchSink, as wiring builds
it): each to its channel's queue, LINE with its links through the click tracker, email to
EmailSendQueue."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.email.channel import EmailMessage
from cems.email.dispatch import EmailDispatch
from cems.engagement.config import EngagementSettings
from cems.engagement.tokens import TokenKind, TokenSigner
from cems.line.dispatch import LineDispatch
from cems.models import Channel
from cems.ports import ServiceUnavailable
from cems.scenario.engine import Dispatch
from cems.settings import Settings
from cems.wiring import line_link_tracker

from tests.integration.journeys import drain_queue

BASE = "https://links.midori-tea.example.jp"
BUTTONS = {
    "type": "template",
    "altText": "カートに商品が残っています",
    "template": {
        "type": "buttons",
        "text": "カートに商品が残っています",
        "actions": [{"type": "uri", "label": "カートを見る", "uri": "https://shop.example.jp/cart"}],
    },
}


@pytest.fixture
def queues(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, str, str]:
    monkeypatch.setenv("ENGAGE_BASE_URL", BASE)
    monkeypatch.setenv("CEMS_TRACKING_SECRET", "sink-test-secret")
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    line = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    email = sqs.create_queue(QueueName="EmailSendQueue")["QueueUrl"]
    return sqs, line, email


def _dispatch(**extra: Any) -> Dispatch:
    fields: dict[str, Any] = {
        "key": "cus_1#cart-abandonment#v2#remind#e1",
        "channel": "line",
        "customer_id": "cus_1",
        "scenario_id": "cart-abandonment",
        "version": 2,
        "step_id": "remind",
        "entry": 1,
        "variant": "b",
    }
    fields.update(extra)
    if fields["channel"] != "email":
        fields["messages"] = {
            Channel.LINE: LineDispatch(
                idempotency_key=fields["key"],
                recipients=["cus_1"],
                messages=[BUTTONS],
                scenario_id="cart-abandonment",
            )
        }
    return Dispatch(**fields)


def test_line_links_go_through_the_click_tracker_with_the_dispatch_in_the_token(
    queues: tuple[Any, str, str],
) -> None:
    sqs, line, email = queues
    sink = QueueDispatchSink(
        sqs, {Channel.LINE: line, Channel.EMAIL: email}, links=line_link_tracker(Settings.from_environ())
    )
    assert sink.send(_dispatch()) == "enqueued"
    [sent] = drain_queue(sqs, line)
    uri = sent["messages"][0]["template"]["actions"][0]["uri"]
    assert uri.startswith(f"{BASE}/r/")
    token = TokenSigner(Settings.from_environ().area(EngagementSettings).secret).verify(
        uri.rsplit("/", 1)[1], TokenKind.CLICK
    )
    assert (token.url, token.channel, token.customer_id) == ("https://shop.example.jp/cart", "line", "cus_1")
    assert (token.scenario_id, token.version, token.step_id, token.variant) == (
        "cart-abandonment",
        2,
        "remind",
        "b",
    )
    assert token.dispatch_key == "cus_1#cart-abandonment#v2#remind#e1"


def test_a_scenario_without_click_tracking_keeps_its_links(queues: tuple[Any, str, str]) -> None:
    sqs, line, email = queues
    sink = QueueDispatchSink(
        sqs, {Channel.LINE: line, Channel.EMAIL: email}, links=line_link_tracker(Settings.from_environ())
    )
    assert sink.send(_dispatch(track_clicks=False)) == "enqueued"
    [sent] = drain_queue(sqs, line)
    assert sent["messages"] == [BUTTONS]


def test_email_goes_to_the_email_queue_with_the_scenarios_tracking(queues: tuple[Any, str, str]) -> None:
    sqs, line, email = queues
    sink = QueueDispatchSink(sqs, {Channel.LINE: line, Channel.EMAIL: email})
    mail = EmailMessage(
        subject="カートに商品が残っています", text="カートを見る https://shop.example.jp/cart"
    )
    assert (
        sink.send(_dispatch(channel="email", messages={Channel.EMAIL: mail}, track_opens=False)) == "enqueued"
    )
    assert drain_queue(sqs, line) == []
    [sent] = drain_queue(sqs, email)
    dispatch = EmailDispatch.model_validate_json(json.dumps(sent))
    assert (dispatch.idempotency_key, dispatch.customer_id, dispatch.version) == (
        "cus_1#cart-abandonment#v2#remind#e1",
        "cus_1",
        2,
    )
    assert dispatch.track_clicks and not dispatch.track_opens and not dispatch.test
    # Without an email queue configured, an email dispatch is not sent (and says so).
    unconfigured = QueueDispatchSink(sqs, {Channel.LINE: line, Channel.EMAIL: ""})
    assert unconfigured.send(_dispatch(channel="email", messages={Channel.EMAIL: mail})) == "unsupported"


# -- a batch: identical LINE content shared, SendMessageBatch ----------------------------------


def _customer_dispatch(n: int, text: str | None = None, **extra: Any) -> Dispatch:
    customer = f"cus_{n:05d}"
    key = f"{customer}#spring-tea#v1#announce#e1"
    content = [{"type": "text", "text": text}] if text else [BUTTONS]
    return Dispatch(
        key=key,
        channel=Channel.LINE,
        customer_id=customer,
        scenario_id="spring-tea",
        version=1,
        step_id="announce",
        entry=1,
        messages={
            Channel.LINE: LineDispatch(
                idempotency_key=key,
                recipients=[customer],
                messages=content,
                scenario_id="spring-tea",
                version=1,
                step_id="announce",
            )
        },
        per_customer_clicks=False,
        **extra,
    )


class CountingSqs:
    """The moto SQS client, counting SendMessageBatch calls and refusing the entries `refuse` picks
    (as SQS answers `Failed` for some entries of a batch it took in part)."""

    def __init__(self, sqs: Any, refuse: Any = None) -> None:
        self.sqs = sqs
        self.refuse = refuse
        self.batches: list[int] = []

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        self.batches.append(len(Entries))
        refused = [e for e in Entries if self.refuse is not None and self.refuse(e)]
        taken = [e for e in Entries if e not in refused]
        answer = self.sqs.send_message_batch(QueueUrl=QueueUrl, Entries=taken) if taken else {}
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try again"}
            for e in refused
        ]
        return {"Successful": answer.get("Successful", []), "Failed": failed}


def test_a_batch_of_three_shared_contents_goes_as_three_multicast_dispatches(
    queues: tuple[Any, str, str],
) -> None:
    sqs, line, email = queues
    counting = CountingSqs(sqs)
    sink = QueueDispatchSink(
        counting,  # type: ignore[arg-type]
        {Channel.LINE: line, Channel.EMAIL: email},
        links=line_link_tracker(Settings.from_environ()),
    )
    # Three contents (the step's variants a, b and c) of up to 500 customers each (a broadcast page
    # holds at most 500 profiles; more of one content in a batch is refused, nothing sent).
    variants = ["a"] * 500 + ["b"] * 500 + ["c"] * 200
    batch = [_customer_dispatch(n, variant=v) for n, v in enumerate(variants)]
    with pytest.raises(ValueError, match="more than 500 customers of one shared content"):
        sink.send_batch([_customer_dispatch(n) for n in range(501)], "spring-tea#r1#s00#p0000")
    assert counting.batches == []
    results = sink.send_batch(batch, "spring-tea#r1#s00#p0000")
    assert results == ["enqueued"] * 1200
    assert counting.batches == [3]  # one SendMessageBatch call
    sent = drain_queue(sqs, line)
    assert sorted(len(b["recipients"]) for b in sent) == [200, 500, 500]
    assert all(b["sole_chunk"] for b in sent)
    signer = TokenSigner(Settings.from_environ().area(EngagementSettings).secret)
    for body in sent:
        uri = body["messages"][0]["template"]["actions"][0]["uri"]
        token = signer.verify(uri.rsplit("/", 1)[1], TokenKind.CLICK)
        # A multicast's link names the shared dispatch and its report cell, no customer.
        assert token.shared and token.customer_id == ""
        assert token.dispatch_key == body["idempotency_key"]
        assert (token.scenario_id, token.version, token.step_id, token.url) == (
            "spring-tea",
            1,
            "announce",
            "https://shop.example.jp/cart",
        )


def test_a_batch_keeps_personal_dispatches_alone_and_answers_in_order(queues: tuple[Any, str, str]) -> None:
    sqs, line, _ = queues
    counting = CountingSqs(sqs)
    sink = QueueDispatchSink(counting, {Channel.LINE: line, Channel.EMAIL: ""})  # type: ignore[arg-type]
    personal = [_customer_dispatch(n, f"{n}様、新茶が入荷しました") for n in range(12)]
    mail = _dispatch(channel="email", messages={Channel.EMAIL: EmailMessage(subject="s", text="t")})
    batch = [*personal[:6], mail, _customer_dispatch(100), *personal[6:], _customer_dispatch(101)]
    results = sink.send_batch(batch, "spring-tea#r1#s00#p0001")
    assert results == ["enqueued"] * 6 + ["unsupported"] + ["enqueued"] * 8
    assert counting.batches == [10, 3]  # 13 messages: 12 pushes and one shared dispatch
    sent = drain_queue(sqs, line)
    assert sorted(len(b["recipients"]) for b in sent) == [1] * 12 + [2]


def test_entries_sqs_refuses_are_sent_again_then_the_batch_is_refused(queues: tuple[Any, str, str]) -> None:
    sqs, line, _ = queues
    once: set[str] = set()

    def first_time_only(entry: dict[str, Any]) -> bool:
        body = entry["MessageBody"]
        if body in once:
            return False
        once.add(body)
        return entry["Id"] == "1"

    flaky = CountingSqs(sqs, refuse=first_time_only)
    sink = QueueDispatchSink(flaky, {Channel.LINE: line})  # type: ignore[arg-type]
    batch = [_customer_dispatch(n, f"{n}様") for n in range(3)]
    assert sink.send_batch(batch, "b1") == ["enqueued"] * 3
    assert flaky.batches == [3, 1]
    assert len(drain_queue(sqs, line)) == 3
    # Refused every time: ServiceUnavailable, so the caller writes no journeys (a redo sends again,
    # under the same keys).
    down = CountingSqs(sqs, refuse=lambda entry: entry["Id"] == "0")
    sink = QueueDispatchSink(down, {Channel.LINE: line})  # type: ignore[arg-type]
    with pytest.raises(ServiceUnavailable, match="1 dispatch messages not enqueued"):
        sink.send_batch(batch, "b2")
    assert down.batches == [3, 1, 1]


def test_a_batch_call_holds_at_most_256_kib_of_bodies(queues: tuple[Any, str, str]) -> None:
    sqs, line, _ = queues
    counting = CountingSqs(sqs)
    sink = QueueDispatchSink(counting, {Channel.LINE: line})  # type: ignore[arg-type]
    long_text = "新茶" * 2500  # 5,000 characters, 15 KB in UTF-8
    batch = []
    for n in range(4):
        dispatch = _customer_dispatch(n, f"{n}{long_text[1:]}")
        line_dispatch = dispatch.messages[Channel.LINE]
        five = [{"type": "text", "text": f"{n}{i}{long_text[2:]}"} for i in range(5)]
        batch.append(
            dispatch.model_copy(
                update={"messages": {Channel.LINE: line_dispatch.model_copy(update={"messages": five})}}
            )
        )
    assert sink.send_batch(batch, "b-large") == ["enqueued"] * 4
    assert counting.batches == [3, 1]  # about 75 KB each: three fit in one call, not four
    assert len(drain_queue(sqs, line)) == 4

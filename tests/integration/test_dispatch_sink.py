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

"""A URL written in a LINE text message, all the way: the dispatch sink (wiring's click tracker, as
for `uri` actions: tests/integration/test_dispatch_sink.py) → LineSendQueue → the send_line handler →
the fake LINE API, which receives the text with the URL tracked; a tap on it at the engage handler
redirects to the page and counts the click (the customer's own link on a push, the shared link of a
multicast). The rewriting rules themselves: tests/unit/test_line_links.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pytest
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.engagement.tokens import TokenKind
from cems.line.dispatch import LineDispatch
from cems.models import Channel
from cems.scenario.engine import Dispatch
from cems.settings import Settings
from cems.wiring import line_link_tracker

from tests.integration.test_engage_handler import Engage, engage  # noqa: F401 - the fixture
from tests.integration.test_send_line import Harness, fake_line, harness, line_user_id  # noqa: F401 - fixtures

BASE = "https://links.midori-tea.example.jp"
PAGE = "https://shop.example.jp/shincha?utm_source=line"
TEXT = f"新茶が入荷しました。詳しくは「{PAGE}」をご覧ください。お電話はtel:0120000000まで"
TRACKED = re.compile(re.escape(BASE) + r"/r/[A-Za-z0-9_.-]+")


def _dispatch(customer_id: str, **extra: Any) -> Dispatch:
    key = f"{customer_id}#shincha-news#v1#announce#e1"
    return Dispatch(
        key=key,
        channel=Channel.LINE,
        customer_id=customer_id,
        scenario_id="shincha-news",
        version=1,
        step_id="announce",
        entry=1,
        messages={
            Channel.LINE: LineDispatch(
                idempotency_key=key,
                recipients=[customer_id],
                messages=[{"type": "text", "text": TEXT}],
                scenario_id="shincha-news",
                version=1,
                step_id="announce",
            )
        },
        **extra,
    )


def _clicked(handler: Engage) -> int:
    return sum(int(c.get("clicked", 0)) for _, c in handler.counters.cells("shincha-news"))


@dataclass
class Path:
    harness: Harness  # the send_line handler and the fake LINE API (test_send_line.py)
    engage: Engage  # the engage handler (test_engage_handler.py)
    sink: QueueDispatchSink


@pytest.fixture
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    handler: Engage = request.getfixturevalue("engage")
    sender: Harness = request.getfixturevalue("harness")
    # After `engage`: the links are made at its frozen time, so they are not expired when tapped.
    monkeypatch.setenv("ENGAGE_BASE_URL", BASE)
    links = line_link_tracker(Settings.from_environ())
    return Path(sender, handler, QueueDispatchSink(sender.sqs, {Channel.LINE: sender.queue_url}, links=links))


def test_a_url_in_a_pushed_text_arrives_tracked_and_its_click_is_the_customers(path: Path) -> None:
    sender, clicks, sink = path.harness, path.engage, path.sink
    customer = sender.customer(1)
    assert sink.send(_dispatch(customer)) == "enqueued"
    assert sender.deliver() == set()
    [message] = sender.received()[line_user_id(1)]
    [link] = TRACKED.findall(message["text"])
    # Only the URL changed: the brackets, the sentence and the tel: number are as written.
    assert message["text"] == TEXT.replace(PAGE, link)
    answer = clicks.get(link.removeprefix(BASE))
    assert (answer.status, answer.headers["location"]) == (302, PAGE)
    assert _clicked(clicks) == 1
    # The customer's own link: it names them (a shared one names nobody).
    token = clicks.module.engagement.signer.verify(link.rsplit("/", 1)[1], TokenKind.CLICK)
    assert (token.customer_id, token.dispatch_key, token.url) == (
        customer,
        f"{customer}#shincha-news#v1#announce#e1",
        PAGE,
    )
    clicks.get(link.removeprefix(BASE))  # a second tap: the same fact, counted once
    assert _clicked(clicks) == 1


def test_a_url_in_a_multicast_text_is_the_shared_dispatchs_link_counted_per_visitor(path: Path) -> None:
    sender, clicks, sink = path.harness, path.engage, path.sink
    customers = [sender.customer(n) for n in (2, 3)]
    batch = [_dispatch(c, per_customer_clicks=False) for c in customers]
    assert sink.send_batch(batch, "shincha-news#r1#s00#p0000") == ["enqueued"] * 2
    assert sender.deliver() == set()
    assert [c["endpoint"] for c in sender.calls()] == ["multicast"]
    received = sender.received()
    [first], [second] = received[line_user_id(2)], received[line_user_id(3)]
    assert first == second  # one multicast: the same bytes to both
    [link] = TRACKED.findall(first["text"])
    assert first["text"] == TEXT.replace(PAGE, link)
    # As a multicast's uri actions: the shared dispatch's link, naming no customer.
    token = clicks.module.engagement.signer.verify(link.rsplit("/", 1)[1], TokenKind.CLICK)
    assert token.shared and token.url == PAGE
    answer = clicks.get(link.removeprefix(BASE))
    assert (answer.status, answer.headers["location"]) == (302, PAGE)
    assert _clicked(clicks) == 1

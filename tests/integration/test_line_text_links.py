"""A URL written in a LINE text message, all the way: the dispatch sink (wiring's click tracker, as
for `uri` actions: tests/integration/test_dispatch_sink.py) → LineSendQueue → the send_line handler,
which stores the text's short link (`LINK#<code>` in DeliveriesTable) before it calls → the fake LINE
API, which receives the text with the URL as a short tracked link; a tap on it at the engage handler
(one GetItem) redirects to the page and counts the click (the customer's own link on a push, the
shared link of a multicast). The rewriting rules themselves: tests/unit/test_line_links.py and
tests/unit/test_line_short_links.py."""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.short_links import ShortLinkStore
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.engagement.tokens import TokenKind, TrackingToken
from cems.line.dispatch import LineDispatch
from cems.models import Channel
from cems.scenario.engine import Dispatch
from cems.settings import Settings
from cems.wiring import line_link_tracker

from tests.fakes.line import InMemoryShortLinks
from tests.integration.test_engage_handler import BROWSER, Engage, engage  # noqa: F401 - the fixture
from tests.integration.test_send_line import (  # noqa: F401 - fixtures
    FakeLambdaContext,
    Harness,
    _requests_of,
    fake_line,
    harness,
    line_user_id,
)

BASE = "https://links.midori-tea.example.jp"
PAGE = "https://shop.example.jp/shincha?utm_source=line"
TEXT = f"新茶が入荷しました。詳しくは「{PAGE}」をご覧ください。お電話はtel:0120000000まで"
# The short form: the engage host, /r/ and a 16-character code (no signed token in the text).
TRACKED = re.compile(re.escape(BASE) + r"/r/[0-9A-Za-z]{16}(?![0-9A-Za-z])")


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


def _short_links(sender: Harness) -> dict[str, dict[str, Any]]:
    """Every short link item in DeliveriesTable, by pk (a test may Scan; CEMS never does)."""
    items = sender.dynamodb.scan(TableName="DeliveriesTable")["Items"]
    return {i["pk"]["S"]: i for i in items if i["pk"]["S"].startswith("LINK#")}


@dataclass
class Path:
    harness: Harness  # the send_line handler and the fake LINE API (test_send_line.py)
    engage: Engage  # the engage handler (test_engage_handler.py)
    sink: QueueDispatchSink

    def token(self, link: str) -> TrackingToken:
        """What a short link stands for: the signed token stored under its code, verified."""
        stored = ShortLinkStore("DeliveriesTable", self.harness.dynamodb).token(link.rsplit("/", 1)[1])
        assert stored is not None
        verified: TrackingToken = self.engage.module.engagement.signer.verify(stored, TokenKind.CLICK)
        return verified


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
    # Readable: the engage host and 19 characters, where the signed token was about 250 more.
    assert len(link) == len(BASE) + len("/r/") + 16
    # The customer's own link: it names them (a shared one names nobody).
    token = path.token(link)
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
    # As a multicast's uri actions: the shared dispatch's link, naming no customer; one stored item
    # for the dispatch, not one per recipient.
    token = path.token(link)
    assert token.shared and token.url == PAGE
    assert len(_short_links(sender)) == 1
    answer = clicks.get(link.removeprefix(BASE))
    assert (answer.status, answer.headers["location"]) == (302, PAGE)
    assert _clicked(clicks) == 1


def test_a_text_link_costs_one_put_per_dispatch_and_one_get_per_tap(path: Path) -> None:
    """The overhead, counted from what moto receives (docs/performance.md): a multicast's text link
    is one PutItem for the shared dispatch whatever its recipients; a redelivery of the finished
    dispatch adds nothing; a tap is one GetItem more than a long link's."""
    sender, clicks, sink = path.harness, path.engage, path.sink
    customers = [sender.customer(n) for n in range(10, 16)]
    batch = [_dispatch(c, per_customer_clicks=False) for c in customers]
    assert sink.send_batch(batch, "shincha-news#r2#s00#p0000") == ["enqueued"] * 6
    records = sender.receive()
    handler = sender.module.lambda_handler
    requests = _requests_of(lambda: handler({"Records": copy.deepcopy(records)}, FakeLambdaContext()))
    assert requests["Deliveries:PutItem"] == 2  # the plan, and the one short link
    assert len(_short_links(sender)) == 1 and len(sender.calls()) == 1
    again = _requests_of(lambda: handler({"Records": copy.deepcopy(records)}, FakeLambdaContext()))
    assert again == Counter({"Deliveries:Query": 1})
    [link] = TRACKED.findall(sender.received()[line_user_id(10)][0]["text"])
    tap = _requests_of(lambda: clicks.get(link.removeprefix(BASE)))
    assert (
        tap["Deliveries:GetItem"] == 1 and sum(n for k, n in tap.items() if k.startswith("Deliveries:")) == 1
    )


def test_a_redelivered_send_writes_no_second_item_and_changes_nothing(path: Path) -> None:
    sender, sink = path.harness, path.sink
    customer = sender.customer(4)
    assert sink.send(_dispatch(customer)) == "enqueued"
    records = sender.receive()
    assert sender.invoke(records) == set()
    stored = _short_links(sender)
    assert len(stored) == 1
    # SQS hands the same message out again, and the runner redoes the batch a minute later (a new
    # body under the same dispatch key): the same code, the item as it was, nothing sent again.
    assert sender.invoke(records) == set()
    clock.freeze(clock.now() + timedelta(minutes=1))
    assert sink.send(_dispatch(customer)) == "enqueued"
    assert sender.deliver() == set()
    assert _short_links(sender) == stored
    assert len(sender.calls()) == 1


def test_an_unknown_or_expired_code_is_404_never_500(path: Path) -> None:
    clicks = path.engage
    for accept in (BROWSER, "*/*"):
        answer = clicks.get("/r/" + "0" * 16, accept)
        assert answer.status == 404 and "location" not in answer.headers
        assert answer.headers["x-cems-error"] == "unknown_link"
    page = clicks.get("/r/" + "0" * 16, BROWSER).text
    assert page.index("リンクが見つかりません") < page.index("This link was not found")
    assert clicks.get("/r/" + "0" * 16).json()["error"] == "unknown_link"
    # Not a code (15 characters): read as a long token, refused as one.
    assert clicks.get("/r/" + "0" * 15).status == 400
    assert _clicked(clicks) == 0


def test_a_stored_link_past_its_window_leads_on_and_counts_nothing(path: Path) -> None:
    sender, clicks, sink = path.harness, path.engage, path.sink
    customer = sender.customer(5)
    assert sink.send(_dispatch(customer)) == "enqueued"
    assert sender.deliver() == set()
    [message] = sender.received()[line_user_id(5)]
    [link] = TRACKED.findall(message["text"])
    # TTL deletes the item within days of its expiry; until then it is found, and answers as the
    # long link does after its expiry.
    clock.freeze(clock.now() + timedelta(days=401))
    answer = clicks.get(link.removeprefix(BASE))
    assert (answer.status, answer.headers["location"]) == (302, PAGE)
    assert _clicked(clicks) == 0
    [item] = _short_links(sender).values()
    assert int(item["expires_at"]["N"]) == path.token(link).expires_at


@pytest.mark.parametrize("kind", ["dynamodb", "memory"])
def test_the_short_link_store_and_its_fake_keep_one_contract(kind: str, dynamodb: Any) -> None:
    store = ShortLinkStore("DeliveriesTable", dynamodb) if kind == "dynamodb" else InMemoryShortLinks()
    code = "AbCdEfGh01234567"
    assert store.token(code) is None
    assert store.put(code, "token-1", 1_900_000_000) is True
    assert store.put(code, "token-2", 1_900_000_060) is False  # a redo: kept as it was
    assert store.token(code) == "token-1"

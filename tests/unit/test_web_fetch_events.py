"""The tag's fetch of on-site messages and its reports on them, on in-memory ports: a browser is
known by its anonymous id only, a page view gets at most one message (for its page, neither expired
nor dismissed), tokens are signed for their own purpose and honoured until the message expires, and
shown, clicked and dismissed count and store once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from cems import clock
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken
from cems.errors import ClientError
from cems.ingest import Ingestor
from cems.models import Profile
from cems.reports.counters import Metric, ReportCell
from cems.web.dispatch import WebMessage
from cems.web.events import WebEventKind, WebEventRequest, WebEvents, read_web_event
from cems.web.fetch import WebFetch, WebFetchRequest
from cems.web.inbox import InboxItem, InboxOwner
from cems.web.tokens import WebToken, WebTokenSigner

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.scenario_io import InMemoryReportCounters
from tests.fakes.web import InMemoryWebInbox

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
SECRET = b"unit-secret"
SIGNER = WebTokenSigner(lambda: SECRET)
CELL = ReportCell("cart-web", 1, "remind", None, channel="web")
PREVIEW = "p" * 32


def message(**changes: object) -> WebMessage:
    fields: dict[str, object] = {
        "kind": "banner",
        "title": "カートに商品が残っています",
        "buttons": [{"label": "カートを見る", "url": "https://shop.example.jp/cart"}],
        "expires_seconds": 86400,
    }
    return WebMessage.model_validate({**fields, **changes})


def item(key: str, owner: InboxOwner | None = None, **changes: object) -> InboxItem:
    owner = owner or InboxOwner.customer("cus_1")
    fields: dict[str, object] = {
        "owner": owner,
        "dispatch_key": key,
        "customer_id": "cus_1",
        "message": message(),
        "written_at": NOW - timedelta(hours=1),
        "expires_at": NOW + timedelta(days=1),
        "scenario_id": "cart-web",
        "version": 1,
        "step_id": "remind",
    }
    return InboxItem.model_validate({**fields, **changes})


class World:
    def __init__(self) -> None:
        self.inbox = InMemoryWebInbox()
        self.inbox.browsers["anon-1"] = "cus_1"
        self.customers = InMemoryCustomers()
        self.customers.put_profile(
            Profile(customer_id="cus_1", anonymous_ids={"anon-1"}, first_seen_at=NOW, updated_at=NOW)
        )
        self.counters = InMemoryReportCounters()
        self.fetch = WebFetch(self.inbox, self.inbox, SIGNER)
        self.events = WebEvents(SIGNER, Ingestor(self.customers), self.customers, self.counters, self.inbox)

    def due(
        self, url: str = "https://shop.example.jp/", anonymous_id: str = "anon-1"
    ) -> dict[str, object] | None:
        found = self.fetch.due_message(WebFetchRequest.of(anonymous_id, url, None), clock.now())
        return None if found is None else found.body()

    def report(self, token: str, kind: str, **extra: object) -> object:
        return self.events.record(
            WebEventRequest.model_validate({"token": token, "kind": kind, **extra}), clock.now()
        )

    def stored(self, name: str) -> int:
        return sum(1 for e in self.customers.events_of("cus_1") if e.event == name)


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture
def world() -> World:
    return World()


# -- which message a page view gets ----------------------------------------------------------------


def test_a_browser_gets_its_owners_oldest_due_message_for_the_page_as_text_and_a_token(world: World) -> None:
    world.inbox.put(item("k-new", written_at=NOW - timedelta(minutes=5)))
    world.inbox.put(
        item("k-old", message=message(title="先に届いたもの"), written_at=NOW - timedelta(hours=2))
    )
    world.inbox.put(
        item("k-other-page", message=message(pages=["/cart"]), written_at=NOW - timedelta(days=1))
    )
    body = world.due("https://shop.example.jp/products/tea")
    assert body is not None
    assert body["message"] == {
        "kind": "banner",
        "title": "先に届いたもの",
        "buttons": [{"label": "カートを見る", "url": "https://shop.example.jp/cart"}],
    }
    token = SIGNER.verify(str(body["token"]), NOW)
    assert (token.owner_id, token.dispatch_key, token.test) == ("cus_1", "k-old", False)
    # One identity read and one inbox read per fetch.
    assert (world.inbox.owner_reads, world.inbox.item_reads) == (1, 1)


def test_nothing_is_due_for_an_unknown_browser_an_expired_or_dismissed_message(world: World) -> None:
    assert world.due(anonymous_id="anon-never-seen") is None
    world.inbox.put(item("expired", expires_at=NOW))
    world.inbox.put(item("dismissed", dismissed_at=NOW - timedelta(minutes=1)))
    assert world.due() is None


def test_a_preview_token_reads_its_preview_inbox_on_any_page_and_gets_a_test_token(world: World) -> None:
    world.inbox.put(
        item("t1", owner=InboxOwner.of_preview(PREVIEW), message=message(pages=["/never"]), test=True)
    )
    found = world.fetch.due_message(WebFetchRequest.of(None, None, PREVIEW), NOW)
    assert found is not None and found.body()["preview"] is True
    assert SIGNER.verify(found.token, NOW).test


@pytest.mark.parametrize(
    ("anonymous_id", "url", "preview", "field"),
    [
        (None, None, None, "anonymousId"),
        ("", None, None, "anonymousId"),
        ("a" * 101, None, None, "anonymousId"),
        ("has space", None, None, "anonymousId"),
        ("anon-1", "https://x/" + "a" * 2048, None, "url"),
        (None, None, "short", "preview"),
    ],
)
def test_a_malformed_fetch_is_refused_naming_the_field(
    anonymous_id: str | None, url: str | None, preview: str | None, field: str
) -> None:
    with pytest.raises(ClientError) as refused:
        WebFetchRequest.of(anonymous_id, url, preview)
    assert (refused.value.status, refused.value.field) == (400, field)


# -- tokens ------------------------------------------------------------------------------------------


def web_token(**changes: object) -> str:
    fields: dict[str, object] = {
        "owner_id": "cus_1",
        "dispatch_key": "k1",
        "expires_at": int((NOW + timedelta(days=1)).timestamp()),
        "scenario_id": "cart-web",
        "version": 1,
        "step_id": "remind",
    }
    return SIGNER.sign(WebToken.model_validate({**fields, **changes}))


def test_a_token_is_honoured_until_its_message_expires_and_not_after() -> None:
    value = web_token(expires_at=int((NOW + timedelta(seconds=10)).timestamp()))
    assert SIGNER.verify(value, NOW).dispatch_key == "k1"
    with pytest.raises(Exception, match="expired") as expired:
        SIGNER.verify(value, NOW + timedelta(seconds=10))
    assert getattr(expired.value, "code", None) == "expired_token"


def test_a_token_changed_by_one_byte_or_signed_with_another_secret_or_for_clicks_is_refused() -> None:
    value = web_token()
    payload, mac = value.split(".")
    forged = json.dumps({"o": "cus_2", "d": "k1", "x": 9999999999}).encode()
    import base64

    forged_payload = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    other = WebTokenSigner(lambda: b"another secret").sign(SIGNER.verify(value, NOW))
    click = TokenSigner(lambda: SECRET).sign(
        TrackingToken(
            kind=TokenKind.CLICK, dispatch_key="k1", customer_id="cus_1", channel="web", url="https://x.jp/"
        )
    )
    for bad in (f"{forged_payload}.{mac}", other, click, "x", "", f"{payload}.{mac}x"):
        with pytest.raises(Exception) as refused:
            SIGNER.verify(bad, NOW)
        assert getattr(refused.value, "code", None) in ("invalid_signature", "malformed_token")


# -- events --------------------------------------------------------------------------------------------


def test_shown_counts_an_impression_once_per_dispatch_and_stores_one_event(world: World) -> None:
    world.inbox.put(item("k1"))
    value = web_token()
    first = world.report(value, "shown")
    again = world.report(value, "shown")
    assert (first.counted, first.stored) == (True, True)  # type: ignore[attr-defined]
    assert (again.counted, again.stored) == (False, False)  # type: ignore[attr-defined]
    assert world.counters.count(CELL, Metric.SENT) == 1
    assert world.stored("Web Message Shown") == 1
    [shown] = world.inbox.items(InboxOwner.customer("cus_1"), 10)
    assert shown.shown_at == NOW


def test_clicked_counts_once_and_stores_the_button(world: World) -> None:
    value = web_token()
    world.report(value, "clicked", button=1)
    world.report(value, "clicked", button=0)
    assert world.counters.count(CELL, Metric.CLICKED) == 1
    [event] = [e for e in world.customers.events_of("cus_1") if e.event == "Web Message Clicked"]
    assert event.properties["button"] == 1 and event.properties["channel"] == "web"
    assert event.site_id == "engage"  # a source no write key can be


def test_a_dismissed_message_is_never_due_again(world: World) -> None:
    world.inbox.put(item("k1"))
    assert world.due() is not None
    recorded = world.report(web_token(), "dismissed")
    assert recorded.dismissed  # type: ignore[attr-defined]
    assert world.due() is None
    assert world.stored("Web Message Dismissed") == 1
    assert not world.report(web_token(), "dismissed").dismissed  # type: ignore[attr-defined]


def test_a_forged_or_expired_token_is_refused_and_nothing_is_stored(world: World) -> None:
    world.inbox.put(item("k1"))
    other = WebTokenSigner(lambda: b"not ours")
    forged = other.sign(SIGNER.verify(web_token(), NOW))
    for bad, status in ((forged, 403), (web_token(expires_at=int(NOW.timestamp())), 403), ("nonsense", 400)):
        with pytest.raises(ClientError) as refused:
            world.report(bad, "dismissed")
        assert (refused.value.status, refused.value.field) == (status, "token")
    assert world.customers.events_of("cus_1") == [] and world.counters.counts == {}
    assert world.due() is not None


def test_a_preview_token_answers_and_records_nothing(world: World) -> None:
    recorded = world.report(web_token(test=True), "shown")
    assert recorded.test and not recorded.counted  # type: ignore[attr-defined]
    assert world.customers.events_of("cus_1") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"kind": "shown"}', "token"),
        (b'{"token": "x", "kind": "opened"}', "kind"),
        (b'{"token": "x", "kind": "clicked", "button": 7}', "button"),
        (b"[1]", "body"),
        (b"\xff", "body"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_field(body: bytes, field: str) -> None:
    with pytest.raises(ClientError) as refused:
        read_web_event(body)
    assert (refused.value.status, refused.value.field) == (400, field)


def test_a_report_kind_reads_as_one_of_three() -> None:
    assert [k.value for k in WebEventKind] == ["shown", "clicked", "dismissed"]

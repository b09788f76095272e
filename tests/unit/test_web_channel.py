"""The web channel's rules: its content and checks (Japanese and English), rendering with Liquid as
text, who it reaches, which message a page shows, and the test send's preview link."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.channels.plugin import SendContext
from cems.channels.registry import plugin, route
from cems.models import Channel, ChannelState, Profile
from cems.scenario.engine import render_step
from cems.scenario.model import Scenario, SendStep
from cems.scenario.test_send import build_test_send, describe, render_preview
from cems.scenario.validation import validate_document
from cems.templates import RenderError
from cems.web.channel import reachable
from cems.web.dispatch import WebDispatch, WebMessage
from cems.web.inbox import InboxItem, InboxOwner, due, glob_matches, page_matches
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
SEND = SendContext(key="s#remind#cus_1#e1", customer_id="cus_1", scenario_id="s", version=1, step_id="remind")


def step(**web: Any) -> SendStep:
    return SendStep.model_validate({"id": "remind", "type": "send", "channel": "web", "web": web})


def profile(**update: Any) -> Profile:
    base = Profile(customer_id="cus_1", first_seen_at=NOW, updated_at=NOW, anonymous_ids={"a-1"})
    return base.model_copy(update=update)


def test_a_step_renders_every_text_and_url_with_liquid_as_plain_text() -> None:
    web = step(
        kind="banner",
        title="{{ profile.traits.last_name }}様",
        body="<b>{{ event.properties.name }}</b>",
        buttons=[{"label": "見る", "url": "https://shop.example.jp/p/{{ event.properties.sku }}"}],
        pages=["/products/*"],
        expires="2d",
    )
    scope = {
        "profile": {"traits": {"last_name": "佐藤"}},
        "event": {"properties": {"name": "<script>x</script>", "sku": "GYO"}},
    }
    message: WebMessage = render_step(Channel.WEB, web, scope, SEND)
    assert message.title == "佐藤様"
    # Not HTML-escaped and not HTML: the tag sets it with textContent, so it shows as these characters.
    assert message.body == "<b><script>x</script></b>"
    assert message.buttons[0].url == "https://shop.example.jp/p/GYO"
    assert message.pages == ["/products/*"] and message.expires_seconds == 2 * 86400
    queued = WebDispatch.model_validate_json(plugin(Channel.WEB).queue_body(_dispatch(message), None))
    assert queued.message == message and queued.idempotency_key == SEND.key


def test_a_missing_value_fails_the_render_and_a_filled_in_url_must_stay_http() -> None:
    with pytest.raises(RenderError, match=r"no value for profile\.traits\.last_name"):
        render_step(
            Channel.WEB,
            step(kind="modal", title="{{ profile.traits.last_name }}様"),
            {"profile": {"traits": {}}},
            SEND,
        )
    # The scheme and host are literal in the file (a template there is refused), so a value cannot
    # change them; what a value fills in is checked again.
    with pytest.raises(ValidationError, match="host name"):
        step(kind="modal", title="t", buttons=[{"label": "x", "url": "https://{{ event.properties.host }}"}])
    url_step = step(
        kind="modal",
        title="t",
        buttons=[{"label": "x", "url": "https://shop.example.jp/{{ event.properties.path }}"}],
    )
    with pytest.raises(ValidationError):
        render_step(Channel.WEB, url_step, {"event": {"properties": {"path": "a b"}}}, SEND)
    long_step = step(kind="modal", title="{{ event.properties.name }}")
    with pytest.raises(ValidationError):
        render_step(Channel.WEB, long_step, {"event": {"properties": {"name": "長" * 200}}}, SEND)


def _problems(web: dict[str, Any]) -> list[str]:
    document = {
        "id": "w",
        "name": "w",
        "trigger": {"type": "event", "event": "Product Added"},
        "steps": [{"id": "s", "type": "send", "channel": "web", "web": web}],
    }
    return [issue.message for issue in validate_document(document).errors]


@pytest.mark.parametrize(
    ("web", "ja", "en"),
    [
        ({"kind": "banner", "title": "t", "image": "http://shop.example.jp/a.png"}, "https://", "https://"),
        (
            {"kind": "banner", "title": "t", "buttons": [{"label": "x", "url": "javascript:alert(1)"}]},
            "http://",
            "http://",
        ),
        ({"kind": "inline", "title": "t"}, "`slot`", "needs `slot`"),
        ({"kind": "modal", "title": "t", "position": "top"}, "banner のとき", "for banners only"),
        ({"kind": "banner"}, "どれかが必要", "is needed"),
        ({"kind": "banner", "title": "t", "expires": "60d"}, "1h から 30d", "from 1h to 30d"),
        ({"kind": "banner", "title": "t", "pages": ["cart"]}, "`/` か `https://`", "must start with"),
        ({"kind": "inline", "slot": "a b", "title": "t"}, "パターン", "pattern"),
        ({"kind": "banner", "title": "{{ profile.nope"}, "Liquid", "Liquid"),
    ],
    ids=[
        "image-not-https",
        "javascript-url",
        "inline-without-slot",
        "position-not-banner",
        "nothing-to-show",
        "expiry-too-long",
        "page-pattern",
        "slot-not-a-name",
        "liquid",
    ],
)
def test_content_mistakes_are_reported_in_japanese_and_english(web: dict[str, Any], ja: str, en: str) -> None:
    problems = _problems(web)
    assert problems, web
    assert any(ja in p and en in p and " / " in p for p in problems), problems


def test_a_valid_web_step_validates() -> None:
    assert (
        _problems(
            {"kind": "inline", "slot": "cart-note", "title": "t", "image": "https://cdn.example.jp/a.png"}
        )
        == []
    )


def test_reachable_means_seen_on_the_site_and_not_opted_out() -> None:
    assert reachable(profile())
    assert not reachable(profile(anonymous_ids=set(), user_id="u-1"))  # known only from a server
    refused = ChannelState(reachable=True, consent=False, updated_at=NOW, reason="preference_centre")
    assert not reachable(profile(channels={Channel.WEB: refused}))
    assert route("web", profile()) == (Channel.WEB,)


def _item(key: str, written: datetime, pages: list[str] | None = None, **update: Any) -> InboxItem:
    message = WebMessage(kind="banner", title=key, pages=pages, expires_seconds=3600)
    item = InboxItem(
        owner=InboxOwner.customer("cus_1"),
        dispatch_key=key,
        customer_id="cus_1",
        message=message,
        written_at=written,
        expires_at=written + timedelta(hours=1),
    )
    return item.model_copy(update=update)


def test_a_page_shows_the_oldest_message_for_it_that_is_neither_dismissed_nor_expired() -> None:
    old = _item("old", NOW - timedelta(minutes=50), pages=["/cart"])
    dismissed = _item("dismissed", NOW - timedelta(minutes=40), dismissed_at=NOW)
    expired = _item("expired", NOW - timedelta(hours=2))
    newer = _item("newer", NOW - timedelta(minutes=10))
    items = [newer, expired, dismissed, old]
    assert due(items, "https://shop.example.jp/cart?x=1", NOW) == old
    assert due(items, "https://shop.example.jp/", NOW) == newer
    assert due(items, "https://shop.example.jp/", NOW + timedelta(hours=1)) is None


@pytest.mark.parametrize(
    ("patterns", "url", "matches"),
    [
        (None, "https://shop.example.jp/anything", True),
        (["/products/*"], "https://shop.example.jp/products/gyokuro?ref=x", True),
        (["/products/*"], "https://shop.example.jp/cart", False),
        (["/cart?step=*"], "https://shop.example.jp/cart?step=2", True),
        (["/cart"], "https://shop.example.jp/cart/", False),
        (["https://shop.example.jp/sale*"], "https://shop.example.jp/sale/tea#top", True),
        (["https://shop.example.jp/sale*"], "https://other.example.jp/sale", False),
        (["/a.b"], "https://shop.example.jp/aXb", False),  # only `*` is special
    ],
)
def test_page_patterns(patterns: list[str] | None, url: str, matches: bool) -> None:
    assert page_matches(patterns, url) is matches


@given(
    st.lists(st.text(alphabet="ab/", max_size=3), min_size=1, max_size=4).map("*".join),
    st.text(alphabet="ab/", max_size=12),
)
def test_a_page_pattern_matches_as_the_same_pattern_written_as_a_regular_expression(
    pattern: str, text: str
) -> None:
    """The linear matcher agrees with `*` as `.*` in a regular expression, on every small case."""
    expected = re.fullmatch(".*".join(re.escape(p) for p in pattern.split("*")), text, re.DOTALL)
    assert glob_matches(pattern, text) is (expected is not None)


def test_a_strangers_url_can_neither_fail_nor_stall_the_match() -> None:
    """The URL comes from whoever calls the fetch: a malformed one matches no page (never a 500),
    and one built to make a pattern of stars backtrack is answered in one pass (a regular
    expression of lazy stars took seconds on this one, and hours with one more star)."""
    assert page_matches(["/products/*"], "http://[") is False
    hostile = "https://shop.example.jp" + "/" * 2000
    assert page_matches(["/*/*/*.html", "/*/*/*/*.html"], hostile) is False
    assert page_matches(["/*/*/*.html"], "https://shop.example.jp/a/b/c.html") is True


def test_a_test_send_is_a_preview_link_on_the_shop_page_with_a_secret_token() -> None:
    scenario = Scenario.model_validate(
        {
            "id": "w",
            "name": "w",
            "trigger": {"type": "event", "event": "Product Added"},
            "steps": [
                {"id": "s", "type": "send", "channel": "web", "web": {"kind": "modal", "title": "ようこそ"}}
            ],
        }
    )
    first = build_test_send(scenario, "s", "web:https://shop.example.jp/products/gyokuro#reviews")
    second = build_test_send(scenario, "s", "web:https://shop.example.jp/products/gyokuro")
    dispatch = first.dispatch
    assert isinstance(dispatch, WebDispatch) and dispatch.test and dispatch.preview_token
    assert dispatch.preview_token != second.dispatch.preview_token
    link = describe(first)["link"]
    assert link == f"https://shop.example.jp/products/gyokuro#cems-preview={dispatch.preview_token}"
    assert dispatch.preview_token not in dispatch.idempotency_key  # keys are logged, tokens never
    with pytest.raises(ValueError, match="web: needs the shop page"):
        build_test_send(scenario, "s", "web:javascript:alert(1)")
    [preview] = render_preview(scenario, "s")
    assert preview.preview == "ようこそ" and preview.content()["kind"] == "modal"


def _dispatch(message: WebMessage) -> Any:
    from cems.scenario.engine import Dispatch

    return Dispatch(
        key=SEND.key,
        channel=Channel.WEB,
        customer_id="cus_1",
        scenario_id="s",
        version=1,
        step_id="remind",
        entry=1,
        messages={Channel.WEB: message},
    )

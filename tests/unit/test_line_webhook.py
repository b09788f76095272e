"""LINE webhook rules without AWS: our sample bodies parse with the SDK's own WebhookParser (so they
match LINE's format), signatures, and how each LINE event maps to a CEMS message."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cems.errors import ClientError
from cems.identity import IdentityKey, IdentityKind, identity_keys
from cems.line.config import LOCAL_CHANNEL_SECRET
from cems.line.linking import LinkNonce, account_link_url, link_page_url, with_query
from cems.line.replies import LINK_BUTTON_LABEL, LINK_BUTTON_TEXT, Reply, link_button, messages_for
from cems.line.webhook import MAX_BODY_DEPTH, map_event, nesting_depth, parse_events, sign, survey_answer
from cems.models import MessageType
from cems.segment import parse_collect_request
from linebot.v3.exceptions import InvalidSignatureError
from linebot.v3.messaging import ReplyMessageRequest
from linebot.v3.webhook import WebhookParser
from linebot.v3.webhooks import AccountLinkEvent, FollowEvent, MessageEvent, PostbackEvent, UnfollowEvent

BODIES = Path(__file__).parents[2] / "events" / "line_webhook"
SAMPLES = sorted(p.name for p in BODIES.glob("*.json"))
FRIEND = "U7b3e9c1a5f2d4e6b8a0c2e4f6a8b0c2d"


def body(name: str) -> bytes:
    return (BODIES / name).read_bytes()


@pytest.mark.parametrize("name", SAMPLES)
def test_every_sample_body_parses_with_the_sdks_webhook_parser(name: str) -> None:
    raw = body(name)
    payload = WebhookParser(LOCAL_CHANNEL_SECRET).parse(
        raw.decode(), sign(raw, LOCAL_CHANNEL_SECRET), as_payload=True
    )
    document = json.loads(raw)
    assert payload.destination == document["destination"]
    assert len(payload.events) == len(document["events"])
    for event, sent in zip(payload.events, document["events"], strict=True):
        assert event.webhook_event_id == sent["webhookEventId"]
        assert event.delivery_context.is_redelivery == sent["deliveryContext"]["isRedelivery"]


def test_the_sdk_models_of_the_samples() -> None:
    def events(name: str) -> list[Any]:
        raw = body(name)
        return WebhookParser(LOCAL_CHANNEL_SECRET).parse(raw.decode(), sign(raw, LOCAL_CHANNEL_SECRET))  # type: ignore[no-any-return]

    assert isinstance(events("follow.json")[0], FollowEvent)
    assert events("follow_unblocked.json")[0].follow.is_unblocked is True
    assert events("follow_redelivery.json")[0].delivery_context.is_redelivery is True
    assert isinstance(events("unfollow.json")[0], UnfollowEvent)
    assert isinstance(events("message_text.json")[0], MessageEvent)
    assert isinstance(events("postback_survey.json")[0], PostbackEvent)
    [ok] = events("account_link_ok.json")
    assert isinstance(ok, AccountLinkEvent) and ok.link.result == "ok"
    assert events("account_link_failed.json")[0].reply_token is None
    assert events("url_verification.json") == []
    assert events("unknown_type.json")[0].type == "storyReaction"
    # The redelivery is the same event as the first delivery.
    assert events("follow_redelivery.json")[0].webhook_event_id == events("follow.json")[0].webhook_event_id


def test_our_signature_is_the_one_the_sdk_checks() -> None:
    raw = body("follow.json")
    with pytest.raises(InvalidSignatureError):
        WebhookParser(LOCAL_CHANNEL_SECRET).parse(raw.decode(), sign(raw, "another-secret"))
    assert parse_events(raw, sign(raw, LOCAL_CHANNEL_SECRET), LOCAL_CHANNEL_SECRET)


@pytest.mark.parametrize(
    ("raw", "signature", "status", "error"),
    [
        (b'{"destination":"U1","events":[]}', None, 401, "missing_signature"),
        (b'{"destination":"U1","events":[]}', "c2lnbmF0dXJl", 401, "invalid_signature"),
        (b"\xff\xfe not utf-8", "c2lnbmF0dXJl", 401, "invalid_signature"),
        (b'{"destination":"U1"}', "sign", 400, "invalid_body"),
        (b'{"events":{}}', "sign", 400, "invalid_body"),
        (b"[]", "sign", 400, "invalid_body"),
        (b"not json", "sign", 400, "invalid_body"),
        (b'{"events":[' + b"1" * 5000 + b"]}", "sign", 400, "invalid_body"),  # past Python's int limit
        (b'{"events":[' + b"[" * 5000 + b"]" * 5000 + b"]}", "sign", 400, "too_deep"),
        (b'{"events":[' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}", "sign", 400, "too_deep"),
        (b'{"events":[' + b"[" * 40 + b"]" * 40 + b"]}", "sign", 400, "too_deep"),  # < 1000, > 32
    ],
)
def test_refused_bodies(raw: bytes, signature: str | None, status: int, error: str) -> None:
    if signature == "sign":
        signature = sign(raw, LOCAL_CHANNEL_SECRET)
    with pytest.raises(ClientError) as refused:
        parse_events(raw, signature, LOCAL_CHANNEL_SECRET)
    assert (refused.value.status, refused.value.code) == (status, error)
    # Every refusal names what is wrong: the header, the body, the events list or the depth limit.
    assert refused.value.field is not None or refused.value.limit is not None
    if error == "too_deep":
        assert (refused.value.field, refused.value.limit) == ("body", MAX_BODY_DEPTH)


def test_a_deep_body_without_a_valid_signature_is_refused_for_its_signature() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(ClientError) as refused:
        parse_events(deep, sign(deep, "another-secret"), LOCAL_CHANNEL_SECRET)
    assert (refused.value.status, refused.value.code) == (401, "invalid_signature")


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("{}", 1),
        ('{"events":[{"a":[1,{"b":2}]}]}', 5),
        ('{"s":"[[[{{{"}', 1),  # brackets in strings do not count
        ('{"s":"say \\"[[[\\" ]"}', 1),  # nor after an escaped quote
        ("1", 0),
    ],
)
def test_nesting_depth(text: str, depth: int) -> None:
    assert nesting_depth(text) == depth


def event_of(kind: str, number: int, **fields: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": kind,
        "timestamp": 1795400107005,
        "source": {"type": "user", "userId": FRIEND},
        "mode": "active",
        "webhookEventId": f"01JDA6ZQ4X8K3M9N2P5R7T0V{number:02d}",
        "deliveryContext": {"isRedelivery": False},
    }
    if kind == "follow":
        event |= {"replyToken": "b60d432864f44d079f6d8efe86cf404b", "follow": {"isUnblocked": False}}
    return {**{k: v for k, v in event.items() if k not in fields}, **{k: v for k, v in fields.items() if v}}


def test_each_event_is_parsed_on_its_own_and_odd_ones_never_cost_the_others() -> None:
    follow_without_token = event_of("follow", 2)
    del follow_without_token["replyToken"]
    events = [
        event_of("follow", 1),
        follow_without_token,
        event_of("storyReaction", 3),
        event_of("follow", 4, webhookEventId=None),  # left out
        event_of("follow", 5, timestamp=None),
        event_of("follow", 6, timestamp="yesterday"),
        event_of("follow", 7, type=5),
        event_of("follow", 8, source="U123", deliveryContext=[1]),
        "not an event",
        event_of("message", 10, message={"type": "text", "id": "1", "text": {"nested": True}}),
    ]
    raw = json.dumps({"destination": "U1", "events": events}).encode()
    parsed = parse_events(raw, sign(raw, LOCAL_CHANNEL_SECRET), LOCAL_CHANNEL_SECRET)
    read = [(type(event).__name__, sent["webhookEventId"][-2:]) for event, sent in parsed.events]
    assert read == [
        ("FollowEvent", "01"),
        ("UnknownEvent", "02"),
        ("UnknownEvent", "03"),
        ("UnknownEvent", "10"),  # a known type with a field of the wrong kind
    ]
    assert len(parsed.skipped) == 6
    assert parsed.skipped[0] == "events[3]: webhookEventId value_error.missing"
    assert parsed.skipped[1] == "events[4]: timestamp value_error.missing"
    assert parsed.skipped[2] == "events[5]: timestamp type_error.integer"
    assert parsed.skipped[5] == "events[8]: not an object"
    assert "yesterday" not in " ".join(parsed.skipped) and FRIEND not in " ".join(parsed.skipped)


def test_postback_params_keep_only_named_keys() -> None:
    postback = event_of(
        "postback", 1, replyToken="r", postback={"data": "x", "params": {"": "a", "date": "2026-12-01"}}
    )
    raw = json.dumps({"destination": "U1", "events": [postback]}).encode()
    [(event, sent)] = parse_events(raw, sign(raw, LOCAL_CHANNEL_SECRET), LOCAL_CHANNEL_SECRET).events
    # An empty key is no attribute name DynamoDB can hold.
    assert map_event(event, sent, FRIEND, None).message.properties["params"] == {"date": "2026-12-01"}


def test_an_event_the_sdk_cannot_read_as_its_type_is_kept_as_line_other_and_never_answered() -> None:
    follow = event_of("follow", 1)
    del follow["replyToken"]
    raw = json.dumps({"destination": "U1", "events": [follow]}).encode()
    [(event, sent)] = parse_events(raw, sign(raw, LOCAL_CHANNEL_SECRET), LOCAL_CHANNEL_SECRET).events
    item = map_event(event, sent, FRIEND, None)
    assert (item.message.event, item.message.properties) == (
        "line_other",
        {"line_type": "follow", "unparsed": True},
    )
    assert item.reply is None


def mapped(name: str, nonce: LinkNonce | None = None) -> Any:
    raw = body(name)
    [(event, sent)] = parse_events(raw, sign(raw, LOCAL_CHANNEL_SECRET), LOCAL_CHANNEL_SECRET).events
    return map_event(event, sent, FRIEND, nonce)


def test_a_follow_maps_to_a_line_follow_track_with_the_line_identity() -> None:
    item = mapped("follow.json")
    message = item.message
    assert message.type is MessageType.TRACK
    assert message.event == "line_follow"
    assert message.message_id == "line:01JDA6ZQ4X8K3M9N2P5R7T0V1W"
    assert message.timestamp == datetime(2026, 11, 23, 2, 15, 7, 5000, tzinfo=UTC)
    assert identity_keys(message) == [IdentityKey(IdentityKind.LINE, FRIEND)]
    assert (item.reply, item.reply_token) == (Reply.WELCOME, "b60d432864f44d079f6d8efe86cf404b")


def test_a_redelivery_maps_to_the_same_message_id() -> None:
    assert mapped("follow_redelivery.json").message.message_id == mapped("follow.json").message.message_id


def test_an_account_link_with_a_valid_nonce_names_the_signed_in_customer_first() -> None:
    nonce = LinkNonce("anon-1", "site_abc", datetime.now(UTC), 0, user_id="member-1")
    item = mapped("account_link_ok.json", nonce)
    assert item.message.event == "line_linked"
    # The proven customer is the merge target: its identity comes first, the LINE id last.
    # The browser's anonymous id in the nonce was only named by the request: it joins nothing.
    assert identity_keys(item.message) == [
        IdentityKey(IdentityKind.USER, "member-1"),
        IdentityKey(IdentityKind.LINE, FRIEND),
    ]
    assert item.reply is Reply.LINKED


def test_a_nonce_without_a_signed_in_customer_links_nothing() -> None:
    # Nonces issued before linking needed a proven user named only a browser: they link nothing.
    item = mapped("account_link_ok.json", LinkNonce("anon-1", "site_abc", datetime.now(UTC), 0))
    assert (item.message.event, item.message.anonymous_id) == ("line_link_failed", None)


def test_an_account_link_without_a_valid_nonce_links_nothing() -> None:
    item = mapped("account_link_ok.json", None)
    assert item.message.event == "line_link_failed"
    assert item.message.anonymous_id is None
    assert item.reply is Reply.LINK_FAILED
    failed = mapped("account_link_failed.json", None)
    assert (failed.message.event, failed.reply_token) == ("line_link_failed", None)


def test_other_mappings() -> None:
    assert mapped("unfollow.json").message.event == "line_unfollow"
    assert mapped("unfollow.json").reply_token is None
    text = mapped("message_text.json")
    assert (text.message.event, text.message.properties["text"], text.reply) == (
        "line_message",
        "新茶はいつ届きますか？",
        None,
    )
    assert mapped("message_link_request.json").reply is Reply.LINK
    postback = mapped("postback_survey.json")
    assert postback.message.properties["survey"] == {"question": "tea_preference", "answer": "sencha"}
    other = mapped("unknown_type.json")
    # A type the SDK does not know is one it cannot read either: kept, marked, never answered.
    assert (other.message.event, other.message.properties) == (
        "line_other",
        {"line_type": "storyReaction", "unparsed": True},
    )


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("survey=tea_preference&answer=sencha", ("tea_preference", "sencha")),
        ("answer=%E7%85%8E%E8%8C%B6&survey=q1", ("q1", "煎茶")),
        ("survey=q1&answer=", ("q1", "")),
        ("survey=q1", None),
        ("action=link", None),
        ("survey=bad name&answer=x", None),
        ("survey=" + "q" * 65 + "&answer=x", None),
    ],
)
def test_survey_postback_data(data: str, expected: tuple[str, str] | None) -> None:
    assert survey_answer(data) == expected


def test_urls() -> None:
    assert with_query("https://shop.example.jp/line?a=1&linkToken=old", linkToken="new") == (
        "https://shop.example.jp/line?a=1&linkToken=new"
    )

    class Settings:
        link_page_url = "https://shop.example.jp/line-link"
        account_link_url = "https://access.line.me/dialog/bot/accountLink"

    assert link_page_url(Settings(), "t/k+n") == "https://shop.example.jp/line-link?linkToken=t%2Fk%2Bn"  # type: ignore[arg-type]
    assert account_link_url(Settings(), "tok", "non") == (  # type: ignore[arg-type]
        "https://access.line.me/dialog/bot/accountLink?linkToken=tok&nonce=non"
    )


@pytest.mark.parametrize("reply", list(Reply))
def test_every_reply_is_a_valid_line_reply_in_japanese_and_english(reply: Reply) -> None:
    messages = messages_for(reply, "https://shop.example.jp/line-link?linkToken=tok")
    request = ReplyMessageRequest(reply_token="token", messages=messages)
    assert 1 <= len(request.messages) <= 5
    for message in messages:
        text = getattr(message, "text", None) or message.template.text
        assert any("\u3040" <= ch <= "\u30ff" or "\u4e00" <= ch <= "\u9fff" for ch in text)  # Japanese
        assert any("a" <= ch.lower() <= "z" for ch in text)  # and English
    assert len(LINK_BUTTON_TEXT) <= 160 and len(LINK_BUTTON_LABEL) <= 20
    assert link_button("https://x.example/").template.actions[0].uri == "https://x.example/"


@pytest.mark.parametrize("name", ["lineUserId", "line_user_id"])
def test_a_site_cannot_send_a_line_user_id(name: str) -> None:
    document = {"anonymousId": "a-1", "event": "x", "writeKey": "wk", name: FRIEND}
    with pytest.raises(ClientError) as refused:
        parse_collect_request("track", json.dumps(document).encode(), None)
    assert (refused.value.status, refused.value.field) == (400, name)
    batch = {"writeKey": "wk", "batch": [{"type": "track", "anonymousId": "a", "event": "x", name: FRIEND}]}
    with pytest.raises(ClientError) as refused:
        parse_collect_request("batch", json.dumps(batch).encode(), None)
    assert (refused.value.field, refused.value.index) == (f"batch[0].{name}", 0)

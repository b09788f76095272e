"""LINE message links through the click tracker (cems.line.links)."""

from __future__ import annotations

from typing import Any

import pytest
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken, click_url
from cems.line.dispatch import MAX_TEXT_LENGTH
from cems.line.links import has_tracked_links, track_links


def tracked(url: str) -> str:
    return f"https://links.example.jp/r/{len(url)}"


def test_uri_actions_anywhere_in_a_message_are_tracked() -> None:
    buttons = {
        "type": "template",
        "altText": "新茶",
        "template": {
            "type": "buttons",
            "text": "新茶が入荷しました",
            "actions": [
                {"type": "uri", "label": "見る", "uri": "https://shop.example.jp/shincha"},
                {"type": "postback", "label": "あとで", "data": "later"},
                {"type": "uri", "label": "電話", "uri": "tel:0120000000"},
            ],
        },
        "quickReply": {
            "items": [{"type": "action", "action": {"type": "uri", "label": "店", "uri": "http://a.jp"}}]
        },
    }
    imagemap = {
        "type": "imagemap",
        "actions": [{"type": "uri", "linkUri": "https://shop.example.jp/x", "area": {}}],
    }
    [out_buttons, out_imagemap] = track_links([buttons, imagemap], tracked)
    actions = out_buttons["template"]["actions"]
    assert actions[0]["uri"] == tracked("https://shop.example.jp/shincha")
    assert actions[1] == buttons["template"]["actions"][1]  # type: ignore[index]
    assert actions[2]["uri"] == "tel:0120000000"  # not http(s): as written
    assert out_buttons["quickReply"]["items"][0]["action"]["uri"] == tracked("http://a.jp")
    assert out_imagemap["actions"][0]["linkUri"] == tracked("https://shop.example.jp/x")
    assert buttons["template"]["actions"][0]["uri"] == "https://shop.example.jp/shincha"  # type: ignore[index]


def test_desktop_alternatives_are_left_as_written() -> None:
    action = {"type": "uri", "uri": "https://m.example.jp", "altUri": {"desktop": "https://example.jp"}}
    [out_action] = track_links([action], tracked)
    assert out_action["altUri"] == {"desktop": "https://example.jp"}
    assert out_action["uri"] == tracked("https://m.example.jp")


# --- URLs written in a text message ---------------------------------------------------------------

SIGNER = TokenSigner(lambda: b"unit-test-secret")


def real_tracked(url: str) -> str:
    """A click URL as the tracker makes it (the shape `is_click_url` knows), about 250 characters."""
    token = TrackingToken(
        kind=TokenKind.CLICK,
        dispatch_key="cus_1#sencha#v1#announce#e1",
        customer_id="cus_1",
        channel="line",
        scenario_id="sencha",
        version=1,
        step_id="announce",
        url=url,
        expires_at=1_900_000_000,
    )
    return click_url("https://links.example.jp", SIGNER, token)


def text(value: str, **extra: Any) -> dict[str, Any]:
    return {"type": "text", "text": value, **extra}


@pytest.mark.parametrize(
    ("written", "urls"),
    [
        # Full-width punctuation and kana right after a URL are not part of it.
        ("新茶は「https://shop.example.jp/shincha」から。", ["https://shop.example.jp/shincha"]),
        ("詳しくはhttps://shop.example.jp/a?b=1&c=2、または店頭で。", ["https://shop.example.jp/a?b=1&c=2"]),
        ("（https://shop.example.jp/x）をご覧ください", ["https://shop.example.jp/x"]),
        ("https://shop.example.jp/guideをご覧ください。", ["https://shop.example.jp/guide"]),
        # Sentence punctuation in ASCII ends the sentence, not the URL.
        (
            "See https://shop.example.jp/a. Or https://shop.example.jp/b, too!",
            ["https://shop.example.jp/a", "https://shop.example.jp/b"],
        ),
        ("(see https://shop.example.jp/c)", ["https://shop.example.jp/c"]),
        # ... but a URL's own balanced parentheses, query and fragment stay.
        ("https://ja.wikipedia.org/wiki/Sencha_(tea) です", ["https://ja.wikipedia.org/wiki/Sencha_(tea)"]),
        (
            "HTTPS://Shop.example.jp/%E6%96%B0#top\nhttp://a.example.jp",
            ["HTTPS://Shop.example.jp/%E6%96%B0#top", "http://a.example.jp"],
        ),
    ],
)
def test_urls_in_japanese_text_are_tracked_without_the_punctuation_around_them(
    written: str, urls: list[str]
) -> None:
    [out] = track_links([text(written)], tracked)
    expected = written
    for url in urls:
        expected = expected.replace(url, tracked(url), 1)
    assert out == text(expected)


def test_text_without_a_trackable_url_is_the_same_message() -> None:
    for written in (
        "新茶が入荷しました。お電話はtel:0120000000へ",
        "友だち追加 line://ti/p/@midori と https:// だけ",
        "xhttps://shop.example.jp は URL ではない",
    ):
        message = text(written)
        [out] = track_links([message], tracked)
        assert out == message
    assert not has_tracked_links([text("line://ti/p/@midori")])
    assert has_tracked_links([text("https://shop.example.jp")])


def test_only_text_messages_have_their_text_tracked() -> None:
    flex = {
        "type": "flex",
        "altText": "https://shop.example.jp/alt",
        "contents": {
            "type": "bubble",
            "body": {
                "type": "box",
                "layout": "vertical",
                "contents": [{"type": "text", "text": "https://shop.example.jp/f"}],
            },
        },
    }
    reply = text(
        "https://shop.example.jp/t",
        quickReply={
            "items": [
                {
                    "type": "action",
                    "action": {"type": "message", "label": "送る", "text": "https://shop.example.jp/m"},
                }
            ]
        },
    )
    [out_flex, out_reply] = track_links([flex, reply], tracked)
    assert out_flex == flex
    assert out_reply["text"] == tracked("https://shop.example.jp/t")
    assert out_reply["quickReply"] == reply["quickReply"]  # what the customer sends is theirs


def test_text_v2_urls_are_tracked_and_placeholders_stay() -> None:
    message = {
        "type": "textV2",
        "text": "{user}さん、https://shop.example.jp/x{sale}{{割引}}",
        "substitution": {
            "user": {"type": "mention", "mentionee": {"type": "all"}},
            "sale": {"type": "emoji", "productId": "p", "emojiId": "001"},
        },
    }
    [out] = track_links([message], tracked)
    assert out["text"] == "{user}さん、" + tracked("https://shop.example.jp/x") + "{sale}{{割引}}"
    assert out["substitution"] == message["substitution"]


def test_emoji_indexes_after_a_url_move_by_what_it_grew() -> None:
    # 🍵 is two UTF-16 code units, as LINE counts indexes.
    written = "$🍵新茶 https://shop.example.jp/a$ と https://shop.example.jp/b。$"
    emojis = [
        {"index": 0, "productId": "p", "emojiId": "001"},
        {"index": 31, "productId": "p", "emojiId": "002"},
        {"index": 61, "productId": "p", "emojiId": "003"},
    ]
    assert [
        written.encode("utf-16-le")[2 * e["index"] : 2 * e["index"] + 2].decode("utf-16-le") for e in emojis
    ] == ["$"] * 3
    [out] = track_links([text(written, emojis=emojis)], real_tracked)
    a, b = real_tracked("https://shop.example.jp/a"), real_tracked("https://shop.example.jp/b")
    assert out["text"] == f"$🍵新茶 {a}$ と {b}。$"
    units = out["text"].encode("utf-16-le")
    indexes = [e["index"] for e in out["emojis"]]
    assert [units[2 * i : 2 * i + 2].decode("utf-16-le") for i in indexes] == ["$"] * 3
    assert indexes == [0, 31 + len(a) - 25, 61 + len(a) - 25 + len(b) - 25]
    assert [e["emojiId"] for e in out["emojis"]] == ["001", "002", "003"]


def test_emoji_indexes_that_point_at_no_placeholder_leave_the_urls_as_written() -> None:
    message = text(
        "新茶 https://shop.example.jp/a $", emojis=[{"index": 3, "productId": "p", "emojiId": "001"}]
    )
    [out] = track_links([message], tracked)
    assert out == message


def test_urls_are_tracked_while_the_text_stays_within_lines_limit() -> None:
    first, second = "https://shop.example.jp/1", "https://shop.example.jp/2"
    growth = len(real_tracked(first)) - len(first)
    filler = "茶" * (MAX_TEXT_LENGTH - 2 * len(first) - 2 - growth)
    written = f"{first} {second}。{filler}"
    [out] = track_links([text(written)], real_tracked)
    # Room for one tracked URL only: the first is tracked, the second stays as written.
    assert out["text"] == f"{real_tracked(first)} {second}。{filler}"
    assert len(out["text"]) == MAX_TEXT_LENGTH
    # A character outside the BMP counts two (UTF-16, as LINE counts): now neither fits.
    tighter = text(written[:-1] + "🍵")
    [out] = track_links([tighter], real_tracked)
    assert out == tighter


def test_tracking_twice_does_not_wrap_a_tracked_link_again() -> None:
    messages = [
        text("新茶は https://shop.example.jp/shincha から。https://shop.example.jp/b"),
        {
            "type": "template",
            "altText": "a",
            "template": {
                "type": "buttons",
                "text": "t",
                "actions": [{"type": "uri", "label": "見る", "uri": "https://shop.example.jp/c"}],
            },
        },
    ]
    once = track_links(messages, real_tracked)
    assert once != messages
    assert track_links(once, real_tracked) == once
    assert not has_tracked_links(once)
    # Only the tracker's own shape counts as tracked: a shop page under /r/ is tracked as any other.
    assert has_tracked_links([text("https://shop.example.jp/r/sale と https://shop.example.jp/r/eyJ.x")])

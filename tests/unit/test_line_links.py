"""LINE message links through the click tracker (cems.line.links)."""

from __future__ import annotations

from cems.line.links import track_links


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


def test_text_urls_and_desktop_alternatives_are_left_as_written() -> None:
    text = {"type": "text", "text": "詳しくは https://shop.example.jp/ へ"}
    action = {"type": "uri", "uri": "https://m.example.jp", "altUri": {"desktop": "https://example.jp"}}
    [out_text, out_action] = track_links([text, action], tracked)
    assert out_text == text
    assert out_action["altUri"] == {"desktop": "https://example.jp"}
    assert out_action["uri"] == tracked("https://m.example.jp")

"""Composing a marketing mail without AWS: headers, the legal footer, link rewriting, the open pixel,
test sends, and the dispatch model and its SES tags."""

from __future__ import annotations

import email
import re
from email.message import EmailMessage
from email.policy import default
from typing import Any

import pytest
from cems.email.compose import (
    TEST_HEADER,
    SignedLinks,
    compose,
    html_to_text,
    insert_before_body_end,
    rewrite_html_links,
    rewrite_text_links,
)
from cems.email.config import EmailSettings, EmailSettingsError
from cems.email.dispatch import EmailDispatch
from cems.engagement.ses_events import DispatchTags
from cems.engagement.tokens import TokenKind, TokenSigner
from cems.settings import Settings
from pydantic import ValidationError

BASE = "https://engage.example.jp"
SIGNER = TokenSigner(lambda: b"unit-test-secret")
SETTINGS = EmailSettings(
    from_address="shop@midori-tea.example.jp",
    from_name="茶寮みどり",
    postal_address="〒604-8005 京都府京都市中京区恵比須町 1-2",
    contact="support@midori-tea.example.jp / 075-000-0000",
    configuration_set="cems-dev",
    engage_base_url=BASE,
)
HTML = (
    "<!doctype html><html><head><title>新茶</title></head><body>\n"
    "<p>佐藤様、新茶のご案内です。</p>\n"
    '<p><a href="https://shop.example.jp/products/shincha?utm_source=mail&amp;utm_medium=email" '
    'class="button">見てみる</a></p>\n'
    '<p><a href="mailto:support@midori-tea.example.jp">お問い合わせ</a> '
    '<a href="#top">上へ</a> <a href="/relative">相対</a></p>\n'
    "</body></html>\n"
)
TEXT = "佐藤様、新茶のご案内です。\n詳しくは https://shop.example.jp/products/shincha。\n(https://shop.example.jp/a)\n"


def dispatch(**extra: Any) -> EmailDispatch:
    values: dict[str, Any] = {
        "idempotency_key": "scn_shincha#step_1#cus_0001",
        "customer_id": "cus_0001",
        "subject": "新茶のご案内",
        "html": HTML,
        "text": TEXT,
        "scenario_id": "scn_shincha",
        "version": 3,
        "step_id": "step_1",
        "variant": "A",
    }
    values.update(extra)
    return EmailDispatch.model_validate(values)


def build(d: EmailDispatch, to: str = "sato@example.com") -> tuple[EmailMessage, bytes]:
    composed = compose(d, to, SETTINGS, SignedLinks(BASE, SIGNER, d))
    raw = composed.as_bytes()
    parsed = email.message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed, raw


def parts(message: EmailMessage) -> tuple[str, str | None]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None
    return text.get_content(), html.get_content() if html is not None else None


def tokens(body: str, kind: str) -> list[str]:
    return re.findall(rf"{re.escape(BASE)}/{kind}/([A-Za-z0-9_.-]+)", body)


def test_headers_unsubscribe_and_encoded_sender() -> None:
    message, raw = build(dispatch())
    header_block = raw.split(b"\r\n\r\n", 1)[0]
    assert header_block.isascii()  # RFC 2047: the Japanese name and subject are encoded
    assert b"=?utf-8?" in header_block.lower()
    assert str(message["From"]) == "茶寮みどり <shop@midori-tea.example.jp>"
    assert str(message["Subject"]) == "新茶のご案内"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    match = re.fullmatch(rf"<{re.escape(BASE)}/u/([A-Za-z0-9_.-]+)>", str(message["List-Unsubscribe"]))
    assert match is not None
    token = SIGNER.verify(match.group(1), TokenKind.UNSUBSCRIBE)
    assert (token.dispatch_key, token.customer_id, token.channel) == (
        "scn_shincha#step_1#cus_0001",
        "cus_0001",
        "email",
    )
    assert (token.scenario_id, token.version, token.step_id, token.variant) == (
        "scn_shincha",
        3,
        "step_1",
        "A",
    )
    assert message.get_content_type() == "multipart/alternative"
    assert TEST_HEADER not in message


def test_a_long_unsubscribe_url_stays_one_plain_header_line() -> None:
    d = dispatch(idempotency_key="scn_" + "x" * 200 + "#step_1#enrolment", variant="冬のキャンペーン B")
    _, raw = build(d)
    headers = raw.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    [line] = [h for h in headers if h.startswith("List-Unsubscribe:")]
    assert re.fullmatch(rf"List-Unsubscribe: <{re.escape(BASE)}/u/[A-Za-z0-9_.-]+>", line)
    assert len(line) > 300
    assert headers[headers.index(line) + 1].startswith("List-Unsubscribe-Post:")  # not folded


def test_footer_in_both_parts_japanese_and_english() -> None:
    message, _ = build(dispatch())
    text, html = parts(message)
    assert html is not None
    unsubscribe = str(message["List-Unsubscribe"]).strip("<>")
    for body in (text, html):
        for expected in (
            "茶寮みどり",
            "〒604-8005 京都府京都市中京区恵比須町 1-2",
            "support@midori-tea.example.jp / 075-000-0000",
            "配信を停止できます",
            "お問い合わせ・苦情の窓口",
            "You may refuse further emails",
            "Enquiries and complaints",
        ):
            assert expected in body, expected
        assert unsubscribe in body
        # Japanese first, English alongside.
        assert body.index("配信を停止できます") < body.index("You may refuse further emails")


def test_links_rewritten_through_the_click_tracker() -> None:
    message, _ = build(dispatch())
    text, html = parts(message)
    assert html is not None
    html_clicks = [SIGNER.verify(t, TokenKind.CLICK) for t in tokens(html, "r")]
    assert [c.url for c in html_clicks] == [
        "https://shop.example.jp/products/shincha?utm_source=mail&utm_medium=email"
    ]
    assert html_clicks[0].dispatch_key == "scn_shincha#step_1#cus_0001"
    # mailto, anchors and relative links are left alone, as is the rest of the tag.
    assert 'href="mailto:support@midori-tea.example.jp"' in html
    assert 'href="#top"' in html and 'href="/relative"' in html
    assert 'class="button">見てみる</a>' in html
    assert "shop.example.jp/products/shincha?" not in html
    text_clicks = [SIGNER.verify(t, TokenKind.CLICK).url for t in tokens(text, "r")]
    assert text_clicks == ["https://shop.example.jp/products/shincha", "https://shop.example.jp/a"]
    assert "。\n" in text and ")\n" in text
    # The unsubscribe link is never a tracked click.
    assert all(c.kind is TokenKind.CLICK for c in html_clicks)
    assert len(tokens(html, "u")) == 2 and len(tokens(text, "u")) == 2


def test_open_pixel_before_body_end() -> None:
    message, _ = build(dispatch())
    _, html = parts(message)
    assert html is not None
    pixel = re.search(rf'<img src="{re.escape(BASE)}/o/([A-Za-z0-9_.-]+)" width="1" height="1" alt=""', html)
    assert pixel is not None
    assert SIGNER.verify(pixel.group(1), TokenKind.OPEN).customer_id == "cus_0001"
    assert html.index("/o/") < html.index("</body>")
    assert html.index("cems-footer") < html.index("</body>")


def test_tracking_turned_off() -> None:
    message, _ = build(dispatch(track_clicks=False, track_opens=False))
    text, html = parts(message)
    assert html is not None
    assert tokens(html, "r") == [] and tokens(text, "r") == []
    assert tokens(html, "o") == []
    assert 'href="https://shop.example.jp/products/shincha?utm_source=mail&amp;utm_medium=email"' in html
    assert "https://shop.example.jp/products/shincha。" in text
    # The footer and headers do not depend on tracking.
    assert message["List-Unsubscribe"] and len(tokens(html, "u")) == 2


def test_test_send_is_marked() -> None:
    d = dispatch(test=True, to_address="staff@midori-tea.example.jp")
    message, _ = build(d, "staff@midori-tea.example.jp")
    assert str(message["Subject"]) == "[テスト/TEST] 新茶のご案内"
    assert message[TEST_HEADER] == "1"
    _, html = parts(message)
    assert html is not None
    assert all(SIGNER.verify(t, TokenKind.CLICK).test for t in tokens(html, "r"))
    assert SIGNER.verify(tokens(html, "o")[0], TokenKind.OPEN).test


def test_html_only_gets_a_text_alternative_and_text_only_is_plain() -> None:
    message, _ = build(dispatch(text=None))
    text, html = parts(message)
    assert html is not None
    assert "佐藤様、新茶のご案内です。" in text and "<p>" not in text and "新茶</title>" not in text
    assert [SIGNER.verify(t, TokenKind.CLICK).url for t in tokens(text, "r")] == [
        "https://shop.example.jp/products/shincha?utm_source=mail&utm_medium=email"
    ]
    plain, _ = build(dispatch(html=None))
    assert plain.get_content_type() == "text/plain"
    assert "配信を停止できます" in plain.get_content()


def test_html_outside_rewritten_tags_is_unchanged() -> None:
    source = '<p title="a&amp;b">x</p><A HREF="http://a.example/x" data-x>y</A><br/><!-- c --><p>&copy;</p>'
    out, n = rewrite_html_links(source, lambda url: f"{BASE}/r/T")
    assert n == 1
    assert out == (f'<p title="a&amp;b">x</p><a href="{BASE}/r/T" data-x>y</A><br/><!-- c --><p>&copy;</p>')
    # Already tracked links and multi-line sources.
    twice, n = rewrite_html_links(
        f'<p>\n\n  <a href="{BASE}/r/T">z</a>\n<a\nhref="https://b.example">w</a>',
        str.upper,
        skip_prefix=BASE,
    )
    assert n == 1 and twice.endswith('<a href="HTTPS://B.EXAMPLE">w</a>')


def test_footer_and_pixel_placement() -> None:
    assert insert_before_body_end("<html><body><p>a</p></body></html>", "F") == (
        "<html><body><p>a</p>F</body></html>"
    )
    assert insert_before_body_end("<html><p>a</p></html>", "F") == "<html><p>a</p>F</html>"
    assert insert_before_body_end("<p>a</p>", "F") == "<p>a</p>F"
    # The last </body>, not one inside a comment.
    assert insert_before_body_end("<body>x<!-- </body> --></body>", "F") == "<body>x<!-- </body> -->F</body>"


def test_text_links() -> None:
    out, n = rewrite_text_links(
        "見る→https://x.example/a?b=1、または https://y.example/(c).", lambda u: f"<{u}>"
    )
    assert n == 2
    assert out == "見る→<https://x.example/a?b=1>、または <https://y.example/(c)>."
    assert (
        html_to_text('<p>a<a href="https://z.example">b</a></p><script>x</script>')
        == "ab ( https://z.example )\n"
    )


def test_dispatch_rules() -> None:
    with pytest.raises(ValidationError):
        dispatch(html=None, text="  ")
    with pytest.raises(ValidationError):
        dispatch(to_address="someone@example.com")  # only for test sends
    with pytest.raises(ValidationError):
        dispatch(subject="a\r\nBcc: x@example.com")
    with pytest.raises(ValidationError):
        EmailDispatch.model_validate_json('{"idempotency_key": "k", "customer_id": "c", "subject": "s"}')
    d = dispatch()
    assert EmailDispatch.model_validate_json(d.to_sqs_body()) == d


def test_ses_tags_round_trip() -> None:
    d = dispatch(variant="冬 B", test=True, to_address="staff@example.jp")
    tags = d.ses_tags()
    back = DispatchTags.from_mail({t["Name"]: [t["Value"]] for t in tags} | {"ses:from-domain": ["x"]})
    assert back is not None
    assert (back.dispatch_key, back.customer_id, back.scenario_id, back.version) == (
        "scn_shincha#step_1#cus_0001",
        "cus_0001",
        "scn_shincha",
        3,
    )
    assert (back.step_id, back.variant, back.test) == ("step_1", "冬 B", True)


def email_settings(env: dict[str, str]) -> EmailSettings:
    return Settings(env).area(EmailSettings)


def test_settings_required_outside_the_local_stack() -> None:
    with pytest.raises(EmailSettingsError, match="EMAIL_POSTAL_ADDRESS"):
        email_settings({"EMAIL_FROM_ADDRESS": "a@example.jp", "ENGAGE_BASE_URL": BASE})
    local = email_settings({"CEMS_LOCAL": "1", "ENGAGE_BASE_URL": BASE + "/"})
    assert local.engage_base_url == BASE and local.postal_address


def test_settings_refuse_an_invalid_sender() -> None:
    env = {
        "EMAIL_FROM_ADDRESS": "not an address",
        "EMAIL_FROM_NAME": "茶寮みどり",
        "EMAIL_POSTAL_ADDRESS": "京都",
        "EMAIL_CONTACT": "075-000-0000",
        "ENGAGE_BASE_URL": BASE,
    }
    with pytest.raises(EmailSettingsError, match="EMAIL_FROM_ADDRESS"):
        email_settings(env)
    with pytest.raises(EmailSettingsError, match="ENGAGE_BASE_URL"):
        email_settings(env | {"EMAIL_FROM_ADDRESS": "a@example.jp", "ENGAGE_BASE_URL": "engage"})
    assert email_settings(env | {"EMAIL_FROM_ADDRESS": "a@example.jp"}).configuration_set is None
    plain_http = env | {"EMAIL_FROM_ADDRESS": "a@example.jp", "ENGAGE_BASE_URL": "http://links.example.jp"}
    with pytest.raises(EmailSettingsError, match="https"):
        email_settings(plain_http)
    assert email_settings(plain_http | {"CEMS_LOCAL": "1"}).engage_base_url == "http://links.example.jp"


def test_links_with_spaces_or_japanese_are_tracked_percent_encoded_and_odd_ones_left_alone() -> None:
    from cems.email.compose import rewrite_html_links, rewrite_text_links

    clicked: list[str] = []

    def click(url: str) -> str:
        clicked.append(url)
        return f"https://t.example/r/{len(clicked)}"

    source = '<a href="https://shop.example.jp/search?q=緑 茶">検索</a> <a href="https://">空</a>'
    html_out, count = rewrite_html_links(source, click)
    assert count == 1
    assert clicked == ["https://shop.example.jp/search?q=%E7%B7%91%20%E8%8C%B6"]
    assert 'href="https://"' in html_out  # no host: left as written, untracked
    text_out, count = rewrite_text_links("こちら https://shop.example.jp/tea?kind=sencha です", click)
    assert count == 1 and clicked[-1] == "https://shop.example.jp/tea?kind=sencha"
    assert text_out == "こちら https://t.example/r/2 です"

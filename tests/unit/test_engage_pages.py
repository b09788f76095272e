"""The unsubscribe pages and answers: Japanese first with English, escaped, self-contained."""

from __future__ import annotations

import re

from cems.engagement import pages
from cems.engagement.engage import UnsubscribeResult


def test_every_result_has_a_page() -> None:
    assert set(pages.RESULT_PAGES) == set(UnsubscribeResult)
    assert pages.RESULT_PAGES[UnsubscribeResult.UNKNOWN].status == 404
    assert all(p.status == 200 for r, p in pages.RESULT_PAGES.items() if r is not UnsubscribeResult.UNKNOWN)


def test_pages_are_japanese_first_then_english() -> None:
    html = pages.render(pages.UNSUBSCRIBED)
    assert html.index("配信を停止しました") < html.index("You have been unsubscribed")
    assert '<html lang="ja">' in html and '<h2 lang="en">' in html


def test_the_confirmation_page_posts_one_click_back_to_itself() -> None:
    html = pages.render(pages.CONFIRM, form=True)
    [form] = re.findall(r"<form[^>]*>", html)
    assert form == '<form method="post">'  # no action: the same URL, token included
    assert '<input type="hidden" name="List-Unsubscribe" value="One-Click">' in html
    assert "<form" not in pages.render(pages.UNSUBSCRIBED)


def test_the_shop_name_is_escaped() -> None:
    html = pages.render(pages.CONFIRM, shop='<script>alert("x")</script>茶寮')
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_pages_need_nothing_from_elsewhere() -> None:
    html = pages.render(pages.CONFIRM, form=True)
    assert "<script" not in html and "src=" not in html and "http" not in html
    csp = pages.HTML_HEADERS["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp


def test_the_pixel_is_a_1x1_gif() -> None:
    gif = pages.PIXEL_GIF
    assert gif[:6] == b"GIF89a"
    assert int.from_bytes(gif[6:8], "little") == 1 and int.from_bytes(gif[8:10], "little") == 1


def test_negotiation() -> None:
    assert pages.wants_html("text/html,application/xhtml+xml,*/*;q=0.8")
    assert not pages.wants_html("*/*") and not pages.wants_html(None)
    assert pages.wants_image("image/webp,image/*;q=0.8") and not pages.wants_image("*/*")
    assert pages.wants_json("application/json")


def test_location_is_ascii_and_keeps_the_urls_syntax() -> None:
    assert pages.location("https://shop.example.jp/a?b=1&c=%20#x") == "https://shop.example.jp/a?b=1&c=%20#x"
    assert pages.location("https://shop.example.jp/お茶") == "https://shop.example.jp/%E3%81%8A%E8%8C%B6"

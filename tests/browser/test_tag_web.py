"""The tag's renderer of on-site messages (docs/web.md, docs/tag.md) in real headless Chromium, against
the fake collector: text stays text, only http(s) links and https images, a shadow root the shop's
CSS cannot reach, no layout shift, at most one message, impressions when seen, clicks, dismissals,
one fetch per page view (none while "nothing due" is fresh) and preview links."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium import webdriver

from tests.browser.conftest import HANG, POLL_SECONDS, FakeCollector, TestSite
from tests.browser.test_tag import _open, _page_errors

browser = pytest.mark.browser
TOKEN = "eyJvIjoiY3VzXzEifQ.c2lnbmF0dXJlLW9mLXRlc3Q"
# Records, in the page, each handled fetch answer (the tag's cems:web-message event).
RECORD_WEB = (
    "<script>window.__web=[];"
    "document.addEventListener('cems:web-message',function(e){__web.push(e.detail)});</script>"
)


def message(**changes: Any) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "kind": "banner",
        "position": "top",
        "title": "カートに商品が残っています",
        "body": "在庫があるうちにどうぞ。",
        "buttons": [{"label": "カートを見る", "url": "https://shop.example.jp/cart"}],
    }
    shown.update(changes)
    return {"id": "5f1d3f7e2a0b4c8e", "token": TOKEN, "message": shown}


def wait_until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + HANG
    while not (found := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {HANG}s")
        time.sleep(POLL_SECONDS)
    return found


# What the message's shadow root holds, read in the page.
READ = """
var host = document.querySelector('cems-message');
if (!host) return null;
var root = host.shadowRoot, box = root.querySelector('.m'), r = box.getBoundingClientRect();
return {text: box.textContent, html: root.innerHTML, imgs: root.querySelectorAll('img').length,
        links: Array.from(root.querySelectorAll('a')).map(function (a) { return [a.textContent, a.href]; }),
        display: getComputedStyle(box).display, visible: r.width > 0 && r.height > 0,
        position: getComputedStyle(box).position, top: r.top,
        hosts: document.querySelectorAll('cems-message').length,
        parent: host.parentElement.tagName, color: getComputedStyle(box).color};
"""


def shown(chrome: webdriver.Chrome) -> dict[str, Any]:
    found: dict[str, Any] = wait_until("the message was rendered", lambda: chrome.execute_script(READ))
    return found


def events(collector: FakeCollector, count: int) -> list[dict[str, Any]]:
    wait_until(
        f"{count} report(s) reached the collector",
        lambda: len(collector.web_events()) >= count and collector.web_events(),
    )
    collector.settle()
    return collector.web_events()


@browser
def test_a_banner_is_rendered_as_text_in_a_shadow_root_and_reported_shown_once(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = message()
    _open(chrome, site.tag_page("/products/tea.html?x=1#top", collector))
    seen = shown(chrome)
    assert "カートに商品が残っています" in seen["text"] and "在庫があるうちにどうぞ。" in seen["text"]
    assert seen["links"] == [["カートを見る", "https://shop.example.jp/cart"]]
    assert (seen["position"], seen["top"], seen["parent"]) == ("fixed", 0, "BODY")
    [fetch] = collector.web_fetches()
    anonymous_id = chrome.execute_script("return cems.anonymousId()")
    # The page URL without its fragment; the key in the URL; no user id, ever.
    assert parse_qs(urlsplit(fetch.path).query) == {
        "writeKey": ["test-write-key"],
        "anonymousId": [anonymous_id],
        "url": [site.origin + "/products/tea.html?x=1"],
    }
    assert events(collector, 1) == [{"token": TOKEN, "kind": "shown"}]
    assert _page_errors(chrome) == []


@browser
def test_injected_html_shows_as_text_and_creates_no_element(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    attack = "<img src=x onerror=window.__xss=1><script>window.__xss=2</script>"
    collector.web_message = message(
        title=attack, body=attack, buttons=[{"label": attack, "url": "https://shop.example.jp/"}]
    )
    _open(chrome, site.tag_page("/inject.html", collector))
    seen = shown(chrome)
    assert seen["text"].count(attack) == 3 and seen["links"][0][0] == attack
    assert seen["imgs"] == 0 and "<img" not in seen["html"].replace("&lt;img", "")
    assert chrome.execute_script("return window.__xss") is None
    assert _page_errors(chrome) == []


@browser
def test_only_http_links_and_https_images_are_rendered(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = message(
        image="http://cdn.example.jp/banner.png",  # not https: left out
        buttons=[
            {"label": "悪い / bad", "url": "javascript:window.__xss=1"},
            {"label": "良い / good", "url": "https://shop.example.jp/ok"},
        ],
    )
    _open(chrome, site.tag_page("/links.html", collector))
    seen = shown(chrome)
    assert seen["links"] == [["良い / good", "https://shop.example.jp/ok"]]
    assert seen["imgs"] == 0
    assert "悪い" not in seen["text"]


@browser
def test_the_shops_css_cannot_hide_or_restyle_it_and_nothing_moves(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    hostile = (
        "<style>div{display:none!important}*{color:red!important}cems-message{display:none!important}"
        "a{visibility:hidden!important}</style>"
    )
    collector.web_message = message()
    url = site.tag_page("/styled.html", collector, before=hostile, after="<p id=first>本文 / content</p>")
    chrome.get(url)
    before = chrome.execute_script("return document.getElementById('first').getBoundingClientRect().top")
    seen = shown(chrome)
    assert seen["display"] == "block" and seen["visible"]
    assert seen["color"] != "rgb(255, 0, 0)"
    after = chrome.execute_script("return document.getElementById('first').getBoundingClientRect().top")
    assert after == before  # an overlay: the shop's content does not move


@browser
def test_one_fetch_and_one_message_per_page_view(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = message()
    _open(chrome, site.tag_page("/one.html", collector))
    assert shown(chrome)["hosts"] == 1
    chrome.execute_script("cems.page(); cems.track('Product Viewed', {})")
    collector.wait_for_count(3)
    assert len(collector.web_fetches()) == 1
    assert chrome.execute_script("return document.querySelectorAll('cems-message').length") == 1


@browser
def test_nothing_due_is_remembered_for_its_cache_time_and_no_request_is_made(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = None
    collector.web_max_age = 3600
    url = site.tag_page("/none.html", collector, before=RECORD_WEB)
    _open(chrome, url)
    assert wait_until("the answer handled", lambda: chrome.execute_script("return __web")) == [
        {"shown": False}
    ]
    assert chrome.execute_script("return +sessionStorage.getItem('cems_wn') > Date.now() + 3500 * 1000")
    _open(chrome, url)
    collector.wait_for_count(2)  # the second page view arrived
    # The tag's work after load is done once an idle callback queued after it has run.
    chrome.execute_async_script(
        "var done = arguments[0]; function idle() { requestIdleCallback(function () { done(); }); }"
        "document.readyState === 'complete' ? idle() : addEventListener('load', idle);"
    )
    collector.settle()
    assert chrome.execute_script("return __web") == []
    assert len(collector.web_fetches()) == 1
    assert chrome.execute_script("return document.querySelector('cems-message')") is None


@browser
def test_a_click_reports_and_navigates_to_the_button(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    landed = site.add("/cart.html", "<!doctype html><title>cart</title><h1>カート</h1>")
    collector.web_message = message(buttons=[{"label": "カートを見る", "url": landed}])
    _open(chrome, site.tag_page("/click.html", collector))
    shown(chrome)
    chrome.execute_script("document.querySelector('cems-message').shadowRoot.querySelector('a').click()")
    wait_until("the cart page", lambda: chrome.current_url == landed)
    reports = events(collector, 2)
    assert {(r["kind"], r.get("button")) for r in reports} == {("shown", None), ("clicked", 0)}


@browser
def test_dismissing_removes_it_reports_once_and_it_is_not_shown_again_in_this_tab(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = message(kind="modal", position=None)
    # The endpoint answers it again (as its cached answer may for a few seconds): the tab remembers.
    collector.web_max_age = 0
    url = site.tag_page("/modal.html", collector, before=RECORD_WEB)
    _open(chrome, url)
    shown(chrome)
    assert chrome.execute_script(
        "return document.querySelector('cems-message').shadowRoot.querySelector('.bd') !== null"
    )
    chrome.execute_script("document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape'}))")
    wait_until(
        "removed", lambda: chrome.execute_script("return document.querySelector('cems-message') === null")
    )
    assert [r["kind"] for r in events(collector, 2)] == ["shown", "dismissed"]
    _open(chrome, url)
    assert wait_until("the answer handled", lambda: chrome.execute_script("return __web")) == [
        {"shown": False}
    ]
    assert len(collector.web_fetches()) == 2
    assert chrome.execute_script("return document.querySelector('cems-message')") is None


@browser
def test_an_inline_message_goes_only_into_the_shops_slot_and_is_shown_when_scrolled_to(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = message(kind="inline", position=None, slot="below")
    after = "<div style='height:3000px'>長い本文</div><section data-cems-slot='below'></section>"
    _open(chrome, site.tag_page("/inline.html", collector, after=after))
    seen = shown(chrome)
    assert (seen["parent"], seen["position"]) == ("SECTION", "relative")
    collector.settle()
    assert collector.web_events() == []  # not in the viewport yet
    chrome.execute_script("document.querySelector('[data-cems-slot]').scrollIntoView()")
    assert [r["kind"] for r in events(collector, 1)] == ["shown"]


@browser
def test_an_inline_message_without_its_slot_is_not_shown(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.web_message = message(kind="inline", position=None, slot="missing")
    _open(chrome, site.tag_page("/noslot.html", collector, before=RECORD_WEB))
    assert wait_until("the answer handled", lambda: chrome.execute_script("return __web")) == [
        {"shown": False}
    ]
    collector.settle()
    assert chrome.execute_script("return document.querySelector('cems-message')") is None
    assert collector.web_events() == []


@browser
def test_a_preview_link_fetches_the_preview(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    preview = "Pv" * 16
    collector.web_message = {**message(), "preview": True}
    _open(chrome, site.tag_page("/products/tea.html", collector) + f"#cems-preview={preview}")
    shown(chrome)
    [fetch] = collector.web_fetches()
    assert parse_qs(urlsplit(fetch.path).query) == {"writeKey": ["test-write-key"], "preview": [preview]}

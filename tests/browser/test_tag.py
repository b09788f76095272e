"""The browser tag (shared/cems/static/tag.js) in real headless Chromium, against a fake collector."""

from __future__ import annotations

import gzip
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cems.collect import tag_script
from cems.trust import user_hash
from selenium import webdriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.conftest import HANG, POLL_SECONDS, STUB, WRITE_KEY, FakeCollector, TestSite

ROOT = Path(__file__).parents[2]
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")

# How long to wait for something the page does: a bound for a hang, not a speed test.
PATIENCE = 60
browser = pytest.mark.browser

# The shop's identity secret: its server renders HMAC-SHA256(secret, userId) for a signed-in customer.
IDENTITY_SECRET = "test-identity-secret"
# Records, in the page, what the tag tells the page about LINE linking.
RECORD_LINK_EVENTS = (
    "<script>window.__linkEvents=[];"
    "document.addEventListener('cems:line-link',function(e){__linkEvents.push(e.detail)});</script>"
)

# Records, in the page, the order in which the tag hands messages to sendBeacon (arrival order at
# the collector is not guaranteed: beacons may travel on parallel connections).
RECORD_BEACONS = (
    "<script>window.__beacons=[];var __sb=navigator.sendBeacon.bind(navigator);"
    "navigator.sendBeacon=function(u,b){__beacons.push(u);return __sb(u,b)};</script>"
)


def _open(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    # The tag is async: wait until it has replaced the stub (a hang bound, not a speed test).
    deadline = time.monotonic() + HANG
    while not driver.execute_script("return !!(window.cems && window.cems.loaded)"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the tag did not load on {url}: {driver.get_log('browser')!r}")
        time.sleep(POLL_SECONDS)


def _iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _page_errors(driver: webdriver.Chrome) -> list[str]:
    errors: list[str] = driver.execute_script("return window.__errors")
    return errors


@browser
def test_automatic_page_view_is_a_complete_segment_message(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    url = site.tag_page("/products/tea.html?color=green", collector, title="有機緑茶")

    _open(chrome, url)
    [message] = collector.wait_for_count(1)
    [request] = collector.posts()

    # The key travels in the URL (checked before the body is read), not in the message.
    assert request.route == "/v1/page"
    assert request.query == {"writeKey": [WRITE_KEY]}
    assert request.headers["content-type"] == "text/plain"
    assert request.headers["origin"] == site.origin
    # A beacon with a text/plain body is a simple request: no preflight.
    assert request.headers["sec-fetch-mode"] == "no-cors"
    assert collector.preflights() == []
    assert message["type"] == "page"
    assert "writeKey" not in message
    assert UUID4.match(message["anonymousId"])
    assert "userId" not in message
    assert re.match(r"^cems-[0-9a-f-]{36}$", message["messageId"])
    before = _iso(message["timestamp"])
    assert before <= _iso(message["sentAt"])
    assert abs((datetime.now(before.tzinfo) - before).total_seconds()) < 60
    context = message["context"]
    assert context["page"] == {
        "url": site.origin + "/products/tea.html?color=green",
        "path": "/products/tea.html",
        "search": "?color=green",
        "referrer": "",
        "title": "有機緑茶",
    }
    assert context["library"] == {"name": "cems-tag", "version": chrome.execute_script("return cems.VERSION")}
    assert "Chrome" in context["userAgent"]
    assert context["locale"]
    assert context["timezone"]
    assert "userHash" not in context
    assert message["properties"]["url"] == context["page"]["url"]
    assert _page_errors(chrome) == []


@browser
def test_anonymous_id_is_first_party_and_stable_across_reloads(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    url = site.tag_page("/index.html", collector)

    _open(chrome, url)
    anonymous_id = chrome.execute_script("return cems.anonymousId()")
    assert UUID4.match(anonymous_id)
    cookie = chrome.get_cookie("cems_aid")
    assert cookie is not None
    assert cookie["value"] == anonymous_id
    assert cookie["path"] == "/"
    assert cookie["sameSite"] == "Lax"
    # The tag asks for two years; Chromium caps cookie lifetimes at 400 days. Each visit renews it.
    assert cookie["expiry"] - time.time() > 390 * 86400
    assert chrome.execute_script("return localStorage.getItem('cems_aid')") == anonymous_id

    _open(chrome, url)
    # Either store alone brings the id back, and it is written back to the other.
    chrome.delete_cookie("cems_aid")
    _open(chrome, url)
    assert chrome.get_cookie("cems_aid")["value"] == anonymous_id  # type: ignore[index]
    chrome.execute_script("localStorage.removeItem('cems_aid')")
    _open(chrome, url)
    assert chrome.execute_script("return localStorage.getItem('cems_aid')") == anonymous_id

    messages = collector.wait_for_count(4)
    assert [m["type"] for m in messages] == ["page"] * 4
    assert {m["anonymousId"] for m in messages} == {anonymous_id}


@browser
def test_calls_queued_before_load_are_sent_in_order_after_the_page_view(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    queued = (
        "<script>"
        "cems.track('Product Viewed', {product_id: 'tea-001', price: 1200});"
        "cems.identify('user-7', {email: 'hanako@example.jp'});"
        "cems.track('Product Added', {product_id: 'tea-001', quantity: 1});"
        "cems.ready(function (api) { window.__readyWith = api.anonymousId(); });"
        "</script>"
    )
    url = site.tag_page("/queued.html", collector, before=RECORD_BEACONS + queued)

    _open(chrome, url)
    messages = collector.wait_for_count(4)

    beacons = chrome.execute_script("return window.__beacons")
    assert [urlsplit(u).path.rsplit("/", 1)[1] for u in beacons] == ["page", "track", "identify", "track"]
    assert {urlsplit(u).query for u in beacons} == {f"writeKey={WRITE_KEY}"}
    by_kind = {(m["type"], m.get("event")): m for m in messages}
    assert set(by_kind) == {
        ("page", None),
        ("track", "Product Viewed"),
        ("identify", None),
        ("track", "Product Added"),
    }
    assert "userId" not in by_kind["track", "Product Viewed"]
    assert by_kind["identify", None]["userId"] == "user-7"
    assert by_kind["identify", None]["traits"] == {"email": "hanako@example.jp"}
    # No user hash given: the userId is sent as it is, a claim the endpoint will not believe.
    assert all("userHash" not in m["context"] for m in messages)
    assert by_kind["track", "Product Added"]["userId"] == "user-7"
    assert by_kind["track", "Product Added"]["properties"] == {"product_id": "tea-001", "quantity": 1}
    assert len({m["anonymousId"] for m in messages}) == 1
    assert chrome.execute_script("return window.__readyWith") == messages[0]["anonymousId"]
    # The stub was replaced by the real API.
    assert chrome.execute_script("return Array.isArray(window.cems)") is False


@browser
def test_a_queued_page_call_replaces_the_automatic_page_view(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    queued = "<script>cems.page('商品詳細', {product_id: 'tea-001'});</script>"
    url = site.tag_page("/named.html", collector, before=queued)

    _open(chrome, url)
    [message] = collector.wait_for_count(1)

    assert message["type"] == "page"
    assert message["name"] == "商品詳細"
    assert message["properties"]["product_id"] == "tea-001"
    assert message["properties"]["path"] == "/named.html"


@browser
def test_identify_sets_the_user_id_of_later_calls_until_reset(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    url = site.tag_page("/account.html", collector)
    _open(chrome, url)
    anonymous_id = chrome.execute_script("return cems.anonymousId()")

    chrome.execute_script("cems.identify(42, {name: '山田 花子'}); cems.track('Signed In');")
    chrome.execute_script("cems.identify({email_opt_in: true}); cems.page();")
    collector.wait_for_count(5)
    _open(chrome, url)  # the user id is remembered across page loads
    messages = collector.wait_for_count(6)

    assert [(m["type"], m.get("userId")) for m in messages[:1]] == [("page", None)]
    assert {m.get("userId") for m in messages[1:]} == {"42"}
    assert {m["anonymousId"] for m in messages} == {anonymous_id}
    assert chrome.execute_script("return localStorage.getItem('cems_uid')") == "42"
    assert chrome.execute_script("return cems.userId()") == "42"

    chrome.execute_script("cems.reset(); cems.track('After Logout');")
    [after_reset] = [m for m in collector.wait_for_count(7) if m.get("event") == "After Logout"]
    assert "userId" not in after_reset
    assert after_reset["anonymousId"] != anonymous_id
    assert UUID4.match(after_reset["anonymousId"])
    assert chrome.get_cookie("cems_aid")["value"] == after_reset["anonymousId"]  # type: ignore[index]
    assert chrome.execute_script("return localStorage.getItem('cems_uid')") is None


@browser
def test_alias_links_the_current_id_to_the_new_user_id(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    _open(chrome, site.tag_page("/signup.html", collector))
    anonymous_id = chrome.execute_script("return cems.anonymousId()")

    chrome.execute_script("cems.alias('member-1001');")
    [alias] = [m for m in collector.wait_for_count(2) if m["type"] == "alias"]

    assert "/v1/alias" in {r.route for r in collector.posts()}
    assert alias["previousId"] == anonymous_id
    assert alias["userId"] == "member-1001"


def _user_attributes(user_id: str) -> str:
    """What the shop's server renders into the tag for a signed-in customer."""
    return f'data-user-id="{user_id}" data-user-hash="{user_hash(IDENTITY_SECRET, user_id)}"'


def _proven(messages: list[dict[str, Any]]) -> Counter[tuple[str, str | None, str | None]]:
    """(type, userId, context.userHash) of each message, in any order."""
    return Counter((m["type"], m.get("userId"), m["context"].get("userHash")) for m in messages)


def _stored(driver: webdriver.Chrome, key: str) -> str | None:
    value: str | None = driver.execute_script("return localStorage.getItem(arguments[0])", key)
    return value


@browser
def test_a_signed_in_customer_rendered_into_the_page_is_proven_on_every_message(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    proof = user_hash(IDENTITY_SECRET, "member-1001")
    _open(chrome, site.tag_page("/mypage.html", collector, attributes=_user_attributes("member-1001")))
    chrome.execute_script("cems.track('Product Viewed', {product_id: 'tea-001'});")
    # The next page is one without the attributes (a cached page, say): the tag remembers the proof.
    _open(chrome, site.tag_page("/cached.html", collector))

    messages = collector.wait_for_count(3)

    assert _proven(messages) == Counter(
        {("page", "member-1001", proof): 2, ("track", "member-1001", proof): 1}
    )
    assert chrome.execute_script("return cems.userId()") == "member-1001"
    assert (_stored(chrome, "cems_uid"), _stored(chrome, "cems_uhash")) == ("member-1001", proof)


@browser
def test_identify_with_a_user_hash_proves_later_calls_and_reset_forgets_it(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    proof = user_hash(IDENTITY_SECRET, "member-7")
    url = site.tag_page("/login.html", collector)
    _open(chrome, url)
    anonymous_id = chrome.execute_script("return cems.anonymousId()")

    chrome.execute_script(
        "cems.identify('member-7', {name: '山田 花子'}, {userHash: arguments[0]});"
        "cems.track('Signed In');"
        "cems.identify({email_opt_in: true});",  # traits only: the same user, still proven
        proof,
    )
    collector.wait_for_count(4)
    _open(chrome, url)  # the user and its proof are remembered across page loads
    messages = collector.wait_for_count(5)

    # Arrival order is not sending order (beacons may travel on parallel connections).
    assert _proven(messages) == Counter(
        {
            ("page", None, None): 1,
            ("identify", "member-7", proof): 2,
            ("track", "member-7", proof): 1,
            ("page", "member-7", proof): 1,
        }
    )
    traits = [m["traits"] for m in messages if m["type"] == "identify"]
    assert sorted(traits, key=sorted) == [{"email_opt_in": True}, {"name": "山田 花子"}]
    assert {m["anonymousId"] for m in messages} == {anonymous_id}
    assert _stored(chrome, "cems_uhash") == proof

    chrome.execute_script("cems.reset(); cems.track('After Logout');")
    [after_reset] = [m for m in collector.wait_for_count(6) if m.get("event") == "After Logout"]
    assert "userId" not in after_reset
    assert "userHash" not in after_reset["context"]
    assert after_reset["anonymousId"] != anonymous_id
    assert (_stored(chrome, "cems_uid"), _stored(chrome, "cems_uhash")) == (None, None)


@browser
def test_alias_with_a_user_hash_proves_the_new_user_id(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    proof = user_hash(IDENTITY_SECRET, "member-2002")
    _open(chrome, site.tag_page("/signup-done.html", collector))
    anonymous_id = chrome.execute_script("return cems.anonymousId()")

    chrome.execute_script(
        "cems.alias('member-2002', {userHash: arguments[0]}); cems.track('Signed Up');", proof
    )
    messages = collector.wait_for_count(3)

    [alias] = [m for m in messages if m["type"] == "alias"]
    assert (alias["previousId"], alias["userId"], alias["context"]["userHash"]) == (
        anonymous_id,
        "member-2002",
        proof,
    )
    [track] = [m for m in messages if m["type"] == "track"]
    assert (track["userId"], track["context"]["userHash"]) == ("member-2002", proof)
    assert _stored(chrome, "cems_uhash") == proof


@browser
def test_another_user_without_a_hash_does_not_inherit_the_previous_users_proof(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    _open(chrome, site.tag_page("/shared-pc.html", collector, attributes=_user_attributes("member-1")))
    chrome.execute_script("cems.identify('member-2', {}); cems.track('Clicked');")

    messages = collector.wait_for_count(3)

    assert _proven(messages) == Counter(
        {
            ("page", "member-1", user_hash(IDENTITY_SECRET, "member-1")): 1,
            ("identify", "member-2", None): 1,
            ("track", "member-2", None): 1,
        }
    )
    assert _stored(chrome, "cems_uhash") is None


@browser
def test_every_message_gets_a_fresh_message_id(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    _open(chrome, site.tag_page("/many.html", collector))
    chrome.execute_script("for (var i = 0; i < 20; i++) cems.track('Clicked', {i: i});")

    messages = collector.wait_for_count(21)

    assert len(messages) == 21
    assert len({m["messageId"] for m in messages}) == 21
    assert sorted(m["properties"]["i"] for m in messages if m["type"] == "track") == list(range(20))


@browser
def test_without_send_beacon_fetch_keepalive_is_used(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    record_fetch = (
        "<script>navigator.sendBeacon = undefined; window.__fetches = [];"
        "var __f = window.fetch; window.fetch = function (u, o) {"
        "  __fetches.push({url: u, keepalive: o.keepalive, credentials: o.credentials, mode: o.mode,"
        "                  method: o.method, type: o.headers['Content-Type']});"
        "  return __f.apply(this, arguments).then("
        "    function (r) { __settled.push(r.status); return r; },"
        "    function (e) { __settled.push('rejected'); throw e; }); };"
        "window.__settled = [];</script>"
    )
    _open(chrome, site.tag_page("/nobeacon.html", collector, before=record_fetch))
    chrome.execute_script("cems.track('Product Added', {sku: 'TEA-001'});")

    messages = collector.wait_for_count(2)
    fetches = chrome.execute_script("return window.__fetches")

    assert sorted(m["type"] for m in messages) == ["page", "track"]
    assert [f["url"] for f in fetches] == [
        f"{collector.url}/v1/page?writeKey={WRITE_KEY}",
        f"{collector.url}/v1/track?writeKey={WRITE_KEY}",
    ]
    for f in fetches:
        assert f == {**f, "keepalive": True, "credentials": "omit", "mode": "cors", "method": "POST"}
        assert f["type"] == "text/plain"
    for request in collector.posts():
        assert request.headers["sec-fetch-mode"] == "cors"
        assert request.headers["content-type"].startswith("text/plain")
        assert request.query == {"writeKey": [WRITE_KEY]}
        assert "writeKey" not in request.message
    assert collector.preflights() == []
    # The collector's CORS answer lets the fetch resolve: nothing is rejected in the page.
    deadline = time.monotonic() + HANG
    while len(settled := chrome.execute_script("return window.__settled")) < 2:
        assert time.monotonic() < deadline, f"the fetches did not settle: {settled!r}"
        time.sleep(POLL_SECONDS)
    assert settled == [200, 200]
    assert _page_errors(chrome) == []


@browser
def test_a_refused_beacon_falls_back_to_fetch(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    refuse = "<script>navigator.sendBeacon = function () { return false; };</script>"
    _open(chrome, site.tag_page("/full-queue.html", collector, before=refuse))

    [message] = collector.wait_for_count(1)

    assert message["type"] == "page"
    assert collector.posts()[0].headers["sec-fetch-mode"] == "cors"


@browser
def test_the_tag_never_throws_into_the_page(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    _open(chrome, site.tag_page("/weird.html", collector))

    results = chrome.execute_script(
        """
        var circular = {}; circular.self = circular;
        var calls = [
          function () { cems.track(); },
          function () { cems.track(null, null); },
          function () { cems.track({event: 'x'}); },
          function () { cems.track('Circular', circular); },
          function () { cems.track('Big', {n: BigInt(1)}); },
          function () { cems.track('Array props', [1, 2]); },
          function () { cems.identify(); },
          function () { cems.identify(Symbol('x')); },
          function () { cems.identify('', 'traits'); },
          function () { cems.page(123, 'x'); },
          function () { cems.alias(); },
          function () { cems.alias({}); },
          function () { cems.ready('not a function'); },
          function () { cems.ready(function () { throw new Error('callback'); }); },
        ];
        return calls.map(function (call) {
          try { call(); return 'ok'; } catch (e) { return String(e); }
        });
        """
    )
    chrome.execute_script("cems.track('Still Working', {ok: true});")

    assert set(results) == {"ok"}
    collector.wait_for(lambda ms: any(m.get("event") == "Still Working" for m in ms))
    collector.settle()  # anything the calls before it sent has arrived too
    messages = collector.messages()
    sent = [(m["type"], m.get("event")) for m in messages]
    # Calls without a usable event name are dropped, unserialisable properties drop the message.
    assert ("track", "Circular") not in sent
    assert ("track", "Big") not in sent
    assert all(m["type"] != "alias" for m in messages)
    for m in messages:
        if m["type"] == "track":
            assert isinstance(m["event"], str)
            assert m["event"]
            assert isinstance(m["properties"], dict)
    assert _page_errors(chrome) == []


@browser
def test_a_page_without_write_key_or_stub_is_left_alone(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    url = site.add(
        "/broken.html",
        "<!doctype html><html><head><script>window.__errors=[];"
        "addEventListener('error',function(e){__errors.push(String(e.message))});</script>"
        f'<script src="{collector.url}/tag.js"></script></head><body>ok</body></html>',
    )
    chrome.get(url)  # returns after the load event: the (synchronous) tag script has run
    collector.settle()  # and anything it sent has arrived

    assert _page_errors(chrome) == []
    assert chrome.execute_script("return typeof window.cems") == "undefined"
    assert collector.posts() == []


@browser
def test_data_endpoint_overrides_the_script_origin(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    # The tag is self-hosted by the shop but sends to the collector.
    url = site.tag_page(
        "/self-hosted.html",
        collector,
        src=f"{site.origin}/tag.js",
        attributes=f'data-endpoint="{collector.url}/"',
    )
    _open(chrome, url)

    [message] = collector.wait_for_count(1)

    assert message["type"] == "page"
    assert collector.posts()[0].route == "/v1/page"


@browser
def test_utm_parameters_become_the_campaign_context(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    url = site.tag_page("/lp.html", collector)
    _open(chrome, url + "?utm_source=line&utm_medium=message&utm_campaign=spring_sale")
    chrome.execute_script("cems.track('Product Viewed');")

    messages = collector.wait_for_count(2)

    for m in messages:
        assert m["context"]["campaign"] == {"source": "line", "medium": "message", "name": "spring_sale"}


@browser
def test_a_refused_origin_stores_nothing_and_breaks_nothing(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    collector.allowed_origins.clear()
    _open(chrome, site.tag_page("/not-registered.html", collector))
    chrome.execute_script("cems.track('Product Viewed');")

    collector.wait_for_count(2)

    assert _page_errors(chrome) == []


# LINE linking (docs/line.md): the shop's link page opened from LINE's button with ?linkToken=.

LINK_TOKEN = "lt-0123456789abcdef"


def _link_page(site: TestSite, collector: FakeCollector, attributes: str = "") -> str:
    page = site.tag_page("/line-link.html", collector, before=RECORD_LINK_EVENTS, attributes=attributes)
    return f"{page}?linkToken={LINK_TOKEN}"


def _link_events(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = driver.execute_script("return window.__linkEvents")
    return events


def _confirm(driver: webdriver.Chrome, url: str) -> Any:
    """Opens the link page and waits for the tag's question; the open dialog."""
    driver.get(url)
    WebDriverWait(driver, PATIENCE).until(expected_conditions.alert_is_present())
    return driver.switch_to.alert


@browser
def test_a_link_page_without_a_signed_in_customer_asks_for_sign_in_and_posts_nothing(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    count_confirms = (
        "<script>window.__confirms=0;window.confirm=function(){__confirms++;return true};</script>"
    )
    url = site.tag_page("/line-link.html", collector, before=RECORD_LINK_EVENTS + count_confirms)
    _open(chrome, f"{url}?linkToken={LINK_TOKEN}")

    [page_view] = collector.wait_for_count(1)
    WebDriverWait(chrome, PATIENCE).until(lambda d: _link_events(d))

    assert _link_events(chrome) == [{"status": "login_required"}]
    assert chrome.execute_script("return window.__confirms") == 0
    # The tag fires the event instead of posting (one branch or the other): once it has fired, no
    # post can follow, so there is nothing to wait for.
    assert collector.link_posts() == []
    assert urlsplit(chrome.current_url).path == "/line-link.html"
    # The page view keeps no usable link token.
    assert LINK_TOKEN not in page_view["context"]["page"]["url"]
    assert "linkToken=-" in page_view["context"]["page"]["search"]
    assert _page_errors(chrome) == []


@browser
def test_a_signed_in_customer_who_declines_the_link_posts_nothing(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    dialog = _confirm(chrome, _link_page(site, collector, _user_attributes("member-1001")))
    assert "LINE" in dialog.text
    dialog.dismiss()

    WebDriverWait(chrome, PATIENCE).until(lambda d: _link_events(d))
    assert _link_events(chrome) == [{"status": "declined"}]
    collector.wait_for_count(1)  # the page view
    # Declining fires the event instead of posting: no post can follow it.
    assert collector.link_posts() == []
    assert urlsplit(chrome.current_url).path == "/line-link.html"


@browser
def test_a_signed_in_customer_who_accepts_is_sent_to_line_with_their_proof(
    chrome: webdriver.Chrome, site: TestSite, collector: FakeCollector
) -> None:
    linked = site.add("/at-line.html", "<!doctype html><title>LINE</title><p id=at-line>LINE</p>")
    collector.link_redirect = linked
    url = _link_page(site, collector, _user_attributes("member-1001"))

    _confirm(chrome, url).accept()
    WebDriverWait(chrome, PATIENCE).until(expected_conditions.url_to_be(linked))

    [request] = collector.link_posts()
    assert request.query == {"writeKey": [WRITE_KEY]}
    assert request.headers["origin"] == site.origin
    assert request.message == {
        "anonymousId": request.message["anonymousId"],
        "userId": "member-1001",
        "userHash": user_hash(IDENTITY_SECRET, "member-1001"),
        "linkToken": LINK_TOKEN,
    }
    [page_view] = collector.wait_for_count(1)
    assert request.message["anonymousId"] == page_view["anonymousId"]
    assert UUID4.match(page_view["anonymousId"])


def _compact(source: str) -> str:
    """The source without comments and indentation: roughly what a minifier keeps before renaming."""
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.DOTALL)
    source = re.sub(r"^\s*//.*$", "", source, flags=re.MULTILINE)
    source = re.sub(r"\s//[^\"\n]*$", "", source, flags=re.MULTILINE)
    return "\n".join(line.strip() for line in source.splitlines() if line.strip())


def test_the_served_tag_stays_small() -> None:
    source = tag_script()
    # Raised from 8 KB / 6 KB when the tag learnt identity verification (data-user-id/-hash, the user
    # hash on every message, the key in the URL) and asking before LINE linking (issue 9): about
    # 10 KB of commented source and 7.2 KB compacted then. Raised again for the renderer of on-site
    # messages (issue 13; about 2 KB gzipped of its own, bench --only tag): about 16 KB of commented
    # source, 12 KB compacted, 6 KB gzipped. Keep it near that.
    assert len(source.encode()) < 17 * 1024
    assert len(_compact(source).encode()) < 12.5 * 1024
    assert len(gzip.compress(source.encode(), 9)) < 6.5 * 1024


def test_the_demo_shop_installs_the_documented_tag() -> None:
    assert STUB in (ROOT / "docs" / "tag.md").read_text(encoding="utf-8")
    # The local stack renders the signed-in demo customer into __CEMS_USER_ATTRIBUTES__.
    tag = (
        '<script async src="__CEMS_ENDPOINT__/tag.js" data-write-key="__CEMS_WRITE_KEY__"'
        "__CEMS_USER_ATTRIBUTES__></script>"
    )
    install = f"{STUB}\n{tag}"
    for page in ("index.html", "cart.html", "checkout.html", "thanks.html", "line-link.html"):
        html = (ROOT / "shared" / "cems" / "local" / "demo" / page).read_text(encoding="utf-8")
        assert install in html, page

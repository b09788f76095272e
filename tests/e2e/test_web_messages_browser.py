"""An on-site cart reminder, end to end on the local stack, in headless Chromium on the demo shop.

examples/scenarios/cart_abandonment_web.json, aimed at the demo shop (its pages and cart, no
holdout): an anonymous visitor adds to cart and leaves; CEMS's clock moves past the hour; the
visitor comes back (a new tab, as after a while) and the reminder shows as a banner at the top;
clicking its button records the click (the scenario's wait for it ends) and lands on the cart;
dismissing it means it never shows again; content that tries to inject HTML or script shows as
text. The scenario is stopped at the end, so no later module on the shared stack meets it.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse, urlsplit

import pytest
from cems.adapters.dynamodb.keys import enrolment_key
from cems.cli import main as cems
from cems.scenario.entrance import SUMMARY_CACHE
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.chrome import chrome_driver
from tests.e2e.conftest import HANG, ROOT, LocalStackClient, eventually

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

SCENARIO_ID = "cart-abandonment-web-e2e"
SCENARIO_BUCKET = "scenariobucket"
TITLE = "カートに商品が残っています"
INJECTION = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script>'
# The message's shadow root, read in the page (None while there is none).
READ = """
var host = document.querySelector('cems-message');
if (!host) return null;
var box = host.shadowRoot.querySelector('.m');
return {text: box.textContent, position: getComputedStyle(box).position, top: box.getBoundingClientRect().top,
        kind: box.className};
"""


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    with chrome_driver() as driver:
        yield driver


def scenario_for(shop: str) -> dict[str, Any]:
    """The example scenario, aimed at the demo shop: its pages, its cart, no holdout (the visitor
    must get the message)."""
    scenario: dict[str, Any] = json.loads(
        (ROOT / "examples" / "scenarios" / "cart_abandonment_web.json").read_text(encoding="utf-8")
    )
    scenario.pop("$schema", None)
    scenario["id"] = SCENARIO_ID
    scenario["entry"]["holdout_percent"] = 0
    [remind] = [s for s in scenario["steps"] if s["id"] == "remind"]
    remind["web"]["pages"] = ["/demo", "/demo/*"]
    remind["web"]["buttons"] = [{"label": "カートを見る", "url": f"{shop}/demo/cart.html"}]
    # Content that tries to inject HTML and script: it must show as the text it is.
    remind["web"]["body"] = INJECTION + remind["web"]["body"]
    return scenario


def stop_scenario(stack: LocalStackClient) -> None:
    """Stops this module's scenario on the shared stack (as tests/e2e/test_console_browser.py does):
    the file deleted, the scenario stopped, the clock past the runners' summary cache."""
    stack.client("s3").delete_object(Bucket=SCENARIO_BUCKET, Key=f"scenarios/{SCENARIO_ID}.json")

    def stopped() -> bool:
        stack.drain()
        item = stack.dynamodb.get_item(
            TableName="JourneysTable",
            Key={"pk": {"S": f"SCN#{SCENARIO_ID}"}, "sk": {"S": "ACTIVE"}},
            ConsistentRead=True,
        ).get("Item")
        return item is not None and item["state"]["S"] == "stopped"

    eventually(stopped, f"{SCENARIO_ID} stopped")
    stack.advance_clock(SUMMARY_CACHE.total_seconds() + 1)


@pytest.fixture
def live_scenario(
    local_stack: LocalStackClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    shop = f"http://localhost:{urlsplit(local_stack.http_url).port}"
    monkeypatch.setenv("CEMS_AWS_PORT", str(urlparse(local_stack.aws_url).port))
    path = tmp_path / f"{SCENARIO_ID}.json"
    path.write_text(json.dumps(scenario_for(shop), ensure_ascii=False), encoding="utf-8")
    assert cems(["scenario", "upload", str(path)]) == 0
    # The runners read the active scenarios at most once per SUMMARY_CACHE of CEMS's clock.
    local_stack.advance_clock(SUMMARY_CACHE.total_seconds() + 1)
    try:
        yield shop
    finally:
        stop_scenario(local_stack)


def customer_of(stack: LocalStackClient, anonymous_id: str) -> str | None:
    item = stack.dynamodb.get_item(
        TableName="CustomersTable", Key={"pk": {"S": f"ID#anon#{anonymous_id}"}, "sk": {"S": "ID"}}
    ).get("Item")
    return None if item is None else str(item["customer_id"]["S"])


def inbox(stack: LocalStackClient, customer_id: str) -> list[dict[str, Any]]:
    answer = stack.dynamodb.query(
        TableName="CustomersTable",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"WEB#{customer_id}"}},
        ConsistentRead=True,
    )
    items: list[dict[str, Any]] = answer["Items"]
    return items


def events_named(stack: LocalStackClient, customer_id: str, name: str) -> list[dict[str, Any]]:
    answer = stack.dynamodb.query(
        TableName="EventsTable",
        KeyConditionExpression="customer_id = :c",
        ExpressionAttributeValues={":c": {"S": customer_id}},
        ConsistentRead=True,
    )
    return [
        e for e in answer["Items"] if e.get("event", {}).get("S") == name and e["site_id"]["S"] == "engage"
    ]


def come_back(chrome: webdriver.Chrome, url: str) -> None:
    """A later visit: a new tab (its own session storage), the page opened in it."""
    chrome.switch_to.new_window("tab")
    chrome.get(url)


def banner(chrome: webdriver.Chrome) -> dict[str, Any]:
    found: dict[str, Any] = eventually(lambda: chrome.execute_script(READ), "the reminder banner")
    return found


def test_an_anonymous_visitors_cart_reminder_shows_as_a_banner_counts_its_click_and_stays_dismissed(
    local_stack: LocalStackClient, live_scenario: str, chrome: webdriver.Chrome
) -> None:
    shop = live_scenario
    chrome.get(f"{shop}/demo")
    WebDriverWait(chrome, HANG).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "#add-to-cart"))
    ).click()
    WebDriverWait(chrome, HANG).until(expected_conditions.url_contains("/demo/cart.html"))
    anonymous_id = eventually(
        lambda: chrome.execute_script("return window.cems && window.cems.loaded && cems.anonymousId()"),
        "the tag on the cart page",
    )
    customer_id = eventually(lambda: customer_of(local_stack, anonymous_id), "the visitor stored")
    eventually(
        lambda: local_stack.dynamodb.get_item(
            TableName="JourneysTable", Key=enrolment_key(customer_id, SCENARIO_ID), ConsistentRead=True
        ).get("Item"),
        "the visitor enrolled",
    )
    chrome.get("about:blank")  # leaves the shop

    # An hour on, with no order: the wait times out and the reminder is written into the inbox.
    local_stack.advance_clock(3600 + 60)
    [item] = eventually(lambda: inbox(local_stack, customer_id), "the reminder in the visitor's inbox")
    assert item["message"]["M"]["kind"]["S"] == "banner"

    # The visitor comes back: the banner shows at the top, as text; its impression is counted.
    come_back(chrome, f"{shop}/demo?back=1")
    seen = banner(chrome)
    assert TITLE in seen["text"] and "在庫があるうちにどうぞ" in seen["text"]
    # The injection attempt is on the page as text: no element made of it, no script run.
    assert INJECTION in seen["text"]
    made = (
        "var r = document.querySelector('cems-message').shadowRoot;"
        "return r.querySelectorAll('img, script').length"
    )
    assert chrome.execute_script(made) == 0
    assert chrome.execute_script("return window.__xss === undefined") is True
    assert (seen["position"], seen["top"]) == ("fixed", 0)
    eventually(lambda: events_named(local_stack, customer_id, "Web Message Shown"), "the impression stored")

    # Its button: the click is recorded (the scenario's wait for it ends) and the visitor is on the cart.
    chrome.execute_script("document.querySelector('cems-message').shadowRoot.querySelector('a').click()")
    WebDriverWait(chrome, HANG).until(expected_conditions.url_contains("/demo/cart.html"))
    eventually(lambda: events_named(local_stack, customer_id, "Web Message Clicked"), "the click stored")

    def journey_state() -> str | None:
        local_stack.drain()
        journey = local_stack.dynamodb.get_item(
            TableName="JourneysTable", Key=enrolment_key(customer_id, SCENARIO_ID), ConsistentRead=True
        ).get("Item")
        return journey["state"]["S"] if journey and journey["state"]["S"] != "active" else None

    assert eventually(journey_state, "the journey past its wait for the click") == "completed"

    # Still in the inbox (a click does not dismiss): on the next visit it shows; closed, never again.
    come_back(chrome, f"{shop}/demo?back=2")
    banner(chrome)
    chrome.execute_script("document.querySelector('cems-message').shadowRoot.querySelector('.x').click()")
    eventually(
        lambda: events_named(local_stack, customer_id, "Web Message Dismissed"), "the dismissal stored"
    )
    eventually(
        lambda: "dismissed_at" in inbox(local_stack, customer_id)[0], "the dismissal on the inbox item"
    )
    fetch = f"{local_stack.http_url}/v1/web/messages?" + urlencode(
        {"writeKey": local_stack.write_key, "anonymousId": anonymous_id, "url": f"{shop}/demo?back=3"}
    )
    with urllib.request.urlopen(fetch, timeout=HANG) as answer:
        assert answer.status == 204
    come_back(chrome, f"{shop}/demo?back=3")
    chrome.set_script_timeout(HANG)
    # The tag's fetch has come back and been handled: nothing shown.
    chrome.execute_async_script(
        "var done = arguments[0];"
        "function handled() { return performance.getEntriesByType('resource')"
        "  .some(function (e) { return e.name.indexOf('/v1/web/messages') >= 0 && e.responseEnd > 0; }); }"
        "(function wait() {"
        "  handled() ? requestIdleCallback(function () { done(); }) : setTimeout(wait, 20); })();"
    )
    assert chrome.execute_script("return document.querySelector('cems-message')") is None

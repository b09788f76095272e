"""LINE account linking end to end on the local stack: a shopper browses the demo shop, follows the
shop on LINE (a signed webhook, through `cems line webhook`), opens the link button CEMS replied
with; not signed in to the shop, the link page links nothing and offers the sign-in; signed in, the
tag asks them to confirm, and the tag plus the stack's fake LINE account-link page finish the link.
One customer remains, holding the site events, the shop's user id and the LINE id.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cems.cli import main as cems
from cems.models import Channel, Profile, StoredEvent
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.chrome import chrome_driver
from tests.e2e.conftest import HANG, LocalStackClient
from tests.e2e.test_demo_shop_browser import click_through, customer_of, events_of, eventually, profile_of

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

FOLLOW = Path(__file__).parents[2] / "events" / "line_webhook" / "follow.json"


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    with chrome_driver() as driver:
        yield driver


def fake_line_messages(stack: LocalStackClient) -> dict[str, Any]:
    with urllib.request.urlopen(f"{stack.http_url}/_local/line/messages", timeout=HANG) as answer:
        snapshot: dict[str, Any] = json.loads(answer.read())
        return snapshot


def link_button_url(stack: LocalStackClient, line_user_id: str) -> str | None:
    """The link page URL CEMS replied with to this LINE user's follow, once it has."""
    snapshot = fake_line_messages(stack)
    tokens = {t["link_token"] for t in snapshot["link_tokens"] if t["user_id"] == line_user_id}
    for entry in snapshot["messages"]:
        message = entry["message"]
        if entry["endpoint"] != "reply" or message.get("type") != "template":
            continue
        for action in message["template"]["actions"]:
            uri = action.get("uri", "")
            if parse_qs(urlsplit(uri).query).get("linkToken", [""])[0] in tokens:
                return str(uri)
    return None


def nonces_for(stack: LocalStackClient, anonymous_id: str) -> list[dict[str, Any]]:
    """Link nonces issued for this browser (a scan: the test table is small)."""
    items: list[dict[str, Any]] = stack.dynamodb.scan(
        TableName="CustomersTable",
        FilterExpression="sk = :n AND anonymous_id = :a",
        ExpressionAttributeValues={":n": {"S": "NONCE"}, ":a": {"S": anonymous_id}},
        ConsistentRead=True,
    )["Items"]
    return items


def history(stack: LocalStackClient, profile: Profile) -> list[StoredEvent]:
    return [e for cid in sorted(profile.all_customer_ids()) for e in events_of(stack.dynamodb, cid)]


def test_a_visitor_who_follows_on_line_and_links_becomes_one_customer(
    local_stack: LocalStackClient, chrome: webdriver.Chrome
) -> None:
    port = urlsplit(local_stack.http_url).port
    shop = f"http://localhost:{port}"
    dynamodb = local_stack.dynamodb

    # 1. A visitor browses the demo shop and adds the tea to the cart. They have an account at the shop
    #    (its member number, which the demo's sign-in uses), but are not signed in.
    user_id = f"demo-customer-{secrets.token_hex(6)}"
    chrome.get(f"{shop}/demo")
    chrome.execute_script("localStorage.setItem('demo_customer_id', arguments[0])", user_id)
    click_through(chrome, "#add-to-cart", "/demo/cart.html")
    anonymous_id = eventually(
        lambda: chrome.execute_script("return window.cems && window.cems.loaded && cems.anonymousId()"),
        "the tag loading",
    )

    def site_events() -> list[StoredEvent] | None:
        customer = customer_of(dynamodb, "anon", anonymous_id)
        events = events_of(dynamodb, customer) if customer else []
        names = {e.event or e.type.value for e in events}
        return events if {"page", "Product Added"} <= names else None

    eventually(site_events, "the visit being stored")
    site_customer = customer_of(dynamodb, "anon", anonymous_id)

    # 2. They follow the shop on LINE: a signed follow webhook for a new LINE user.
    line_user_id = "U" + secrets.token_hex(16)
    webhook_url = f"{local_stack.http_url}/line/webhook"
    assert (
        cems(["line", "webhook", str(FOLLOW), "--url", webhook_url, "--user", line_user_id, "--fresh"]) == 0
    )
    line_customer = customer_of(dynamodb, "line", line_user_id)
    assert line_customer is not None and line_customer != site_customer

    # 3. CEMS replied with a button to the shop's link page carrying a link token.
    link_page = eventually(lambda: link_button_url(local_stack, line_user_id), "the link button reply")
    assert link_page.startswith(f"{shop}/demo/line-link.html?linkToken=")

    # 4. The visitor opens it in the same browser, not signed in: the tag asks CEMS for nothing and the
    #    page offers the shop's sign-in.
    chrome.get(link_page)
    wait = WebDriverWait(chrome, HANG)
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "login-required")))
    assert urlsplit(chrome.current_url).path == "/demo/line-link.html"
    assert nonces_for(local_stack, anonymous_id) == []

    # 5. They sign in (the demo's /demo/login; the page comes back with their user id and user hash in
    #    the tag) and say yes when the tag asks: the tag asks CEMS for LINE's account-link URL and goes
    #    there; the (fake) LINE page sends the accountLink event and says it is done.
    chrome.find_element(By.ID, "demo-login").click()
    wait.until(expected_conditions.alert_is_present())
    dialog = chrome.switch_to.alert
    assert "LINE" in dialog.text
    dialog.accept()
    wait.until(expected_conditions.visibility_of_element_located((By.ID, "linked")))
    assert urlsplit(chrome.current_url).path == "/_fake_line/dialog/bot/accountLink"
    assert "nonce=" in chrome.current_url
    [nonce] = nonces_for(local_stack, anonymous_id)
    assert nonce["user_id"] == {"S": user_id}, "the nonce is bound to the signed-in customer"

    # 6. One customer: the visitor's, holding the site events, the user id, the LINE id and LINE consent.
    def linked() -> Profile | None:
        profile = profile_of(dynamodb, site_customer) if site_customer else None
        return profile if profile is not None and profile.line_user_id == line_user_id else None

    profile = eventually(linked, "the LINE profile merging into the visitor's")
    assert customer_of(dynamodb, "line", line_user_id) == site_customer
    assert customer_of(dynamodb, "anon", anonymous_id) == site_customer
    assert customer_of(dynamodb, "user", user_id) == site_customer
    assert profile.user_id == user_id
    assert line_customer in profile.merged_ids
    assert profile_of(dynamodb, line_customer).merged_into == site_customer  # type: ignore[union-attr]
    state = profile.channels[Channel.LINE]
    assert (state.reachable, state.consent) == (True, True)
    assert profile.line_contact() == line_user_id
    names = [e.event or e.type.value for e in history(local_stack, profile)]
    assert {"page", "Product Added", "line_follow", "line_linked"} <= set(names)
    assert names.count("line_linked") == 1
    # The link page's own page view does not keep the one-time link token.
    link_views = [
        e
        for e in history(local_stack, profile)
        if e.context.get("page", {}).get("path", "").endswith("line-link.html")
    ]
    assert link_views and all("linkToken=-" in e.context["page"]["url"] for e in link_views)

    # 7. CEMS confirmed on LINE.
    replies = [m["message"] for m in fake_line_messages(local_stack)["messages"] if m["endpoint"] == "reply"]
    assert any("連携が完了" in r.get("text", "") for r in replies)

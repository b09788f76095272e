"""A shopper walks through the demo shop in headless Chromium; the local stack stores their journey.

The demo is opened as http://localhost:<port>/demo while its tag posts to http://127.0.0.1:<port>,
so the tag's requests are cross-origin, as on a real shop. At checkout the shopper signs in (the
demo's /demo/login answers with the user hash) and the page identifies them with it, so CEMS
believes the userId; the pages after that carry the signed-in customer in the tag's attributes.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from cems.adapters.dynamodb.items import from_attribute_map
from cems.models import Channel, Profile, StoredEvent
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.wait import WebDriverWait

from tests.browser.chrome import chrome_driver
from tests.e2e.conftest import HANG, LocalStackClient
from tests.e2e.conftest import eventually as wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

T = TypeVar("T")
EVENTS_TABLE = "EventsTable"
CUSTOMERS_TABLE = "CustomersTable"
# What the demo journey sends: page views, the e-commerce events and the identify at checkout.
JOURNEY = {"page", "Product Viewed", "Product Added", "Checkout Started", "identify", "Order Completed"}


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    with chrome_driver() as driver:
        yield driver


def eventually(probe: Callable[[], T | None], what: str) -> T:
    """Poll until probe returns something truthy (a hang bound, not a speed test)."""
    found: T | None = wait_until(probe, what)
    assert found
    return found


def confirm_by_mail(
    chrome: webdriver.Chrome, stack: LocalStackClient, dynamodb: Any, customer_id: str, address: str
) -> None:
    """Double opt-in as the customer does it: the confirmation mail arrives (SES in moto), its link
    opens a page that changes nothing, the page's button gives consent for that address."""

    def confirmation() -> dict[str, Any] | None:
        stack.drain()
        mails = json.loads(
            urllib.request.urlopen(f"{stack.http_url}/_local/email/messages", timeout=HANG).read()
        )
        wanted = [m for m in mails["mails"] if address in m["to"] and "/c/" in (m["text"] or "")]
        return wanted[-1] if wanted else None

    mail = eventually(confirmation, "the confirmation mail")
    assert "メール配信登録の確認" in mail["subject"] and mail["list_unsubscribe"] == ""
    [link] = set(re.findall(r"http://\S+/c/[A-Za-z0-9_.\-]+", mail["text"]))
    chrome.get(link)
    button = WebDriverWait(chrome, HANG).until(
        expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, "form button"))
    )
    opened = profile_of(dynamodb, customer_id)
    assert opened is not None
    state = opened.channels.get(Channel.EMAIL)
    assert state is None or not state.consent  # opening the link (what mail scanners do) gave nothing
    button.click()
    WebDriverWait(chrome, HANG).until(
        expected_conditions.text_to_be_present_in_element((By.TAG_NAME, "h1"), "登録が完了しました")
    )
    profile = profile_of(dynamodb, customer_id)
    assert profile is not None
    state = profile.channels[Channel.EMAIL]
    assert (state.consent, state.reason, state.source) == (True, "double_opt_in", "engage")
    assert state.consents_for(address) and not state.consents_for("someone.else@example.jp")


def customer_of(dynamodb: Any, kind: str, value: str) -> str | None:
    item = dynamodb.get_item(
        TableName=CUSTOMERS_TABLE, Key={"pk": {"S": f"ID#{kind}#{value}"}, "sk": {"S": "ID"}}
    ).get("Item")
    return None if item is None else str(item["customer_id"]["S"])


def profile_of(dynamodb: Any, customer_id: str) -> Profile | None:
    item = dynamodb.get_item(
        TableName=CUSTOMERS_TABLE,
        Key={"pk": {"S": f"CUST#{customer_id}"}, "sk": {"S": "PROFILE"}},
        ConsistentRead=True,
    ).get("Item")
    return None if item is None else Profile.model_validate(from_attribute_map(item))


def events_of(dynamodb: Any, customer_id: str) -> list[StoredEvent]:
    pages = dynamodb.get_paginator("query").paginate(
        TableName=EVENTS_TABLE,
        KeyConditionExpression="customer_id = :c",
        ExpressionAttributeValues={":c": {"S": customer_id}},
        ConsistentRead=True,
    )
    return [StoredEvent.model_validate(from_attribute_map(i)) for page in pages for i in page["Items"]]


def where_events_went(dynamodb: Any, anonymous_id: str) -> list[str]:
    """Every stored event of one anonymous id, by customer, and those customers' merge links: what a
    failure message needs when events are split between customers (a scan: the test table is small)."""
    found = sorted(
        f"{e['customer_id']['S']} {e['type']['S']}:{e.get('event', {}).get('S', '')}"
        for e in dynamodb.scan(TableName=EVENTS_TABLE)["Items"]
        if e.get("anonymous_id", {}).get("S") == anonymous_id
    )
    owners = sorted({line.split()[0] for line in found})
    profiles = [profile_of(dynamodb, c) for c in owners]
    return found + [
        f"{p.customer_id}: merged_into={p.merged_into} merged_ids={p.merged_ids}" for p in profiles if p
    ]


def click_through(driver: webdriver.Chrome, button: str, next_page: str) -> None:
    wait = WebDriverWait(driver, HANG)
    wait.until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, button))).click()
    wait.until(expected_conditions.url_contains(next_page))


def test_a_purchase_in_the_demo_shop_is_stored_under_one_customer(
    local_stack: LocalStackClient, chrome: webdriver.Chrome
) -> None:
    api = urlsplit(local_stack.http_url)
    shop = f"http://localhost:{api.port}"
    assert api.hostname != "localhost", "the demo must be cross-origin to the API"

    chrome.get(f"{shop}/demo")
    tag = chrome.find_element(By.CSS_SELECTOR, "script[data-write-key]")
    assert tag.get_attribute("src") == f"{local_stack.http_url}/tag.js"
    assert tag.get_attribute("data-write-key") == local_stack.write_key
    click_through(chrome, "#add-to-cart", "/demo/cart.html")
    click_through(chrome, "#go-checkout", "/demo/checkout.html")
    chrome.find_element(By.CSS_SELECTOR, "#name").send_keys("山田 花子")
    chrome.find_element(By.CSS_SELECTOR, "#email").send_keys("hanako@example.jp")
    chrome.find_element(By.CSS_SELECTOR, "#email-opt-in").click()
    click_through(chrome, "#place-order", "/demo/thanks.html")
    WebDriverWait(chrome, HANG).until(expected_conditions.visibility_of_element_located((By.ID, "thanks")))

    anonymous_id = eventually(
        lambda: chrome.execute_script("return window.cems && window.cems.loaded && cems.anonymousId()"),
        "the tag loading on the thanks page",
    )
    assert chrome.get_cookie("cems_aid")["value"] == anonymous_id  # type: ignore[index]
    user_id = chrome.execute_script("return localStorage.getItem('demo_customer_id')")
    assert user_id.startswith("demo-customer-")
    # Signed in: the thanks page was rendered with the customer's id and user hash in the tag.
    tag = chrome.find_element(By.CSS_SELECTOR, "script[data-write-key]")
    assert tag.get_attribute("data-user-id") == user_id
    assert tag.get_attribute("data-user-hash") == local_stack.user_hash(user_id)
    assert chrome.execute_script("return localStorage.getItem('cems_uhash')") == local_stack.user_hash(
        user_id
    )
    dynamodb = local_stack.dynamodb

    seen: list[str] = []

    def journey_stored() -> tuple[str, list[StoredEvent]] | None:
        customer_id = customer_of(dynamodb, "anon", anonymous_id)
        if customer_id is None:
            return None
        events = events_of(dynamodb, customer_id)
        seen[:] = sorted(f"{e.type.value}:{e.event or e.context.get('page', {}).get('path')}" for e in events)
        names = {e.event or e.type.value for e in events}
        page_views = sum(1 for e in events if e.type.value == "page")
        return (customer_id, events) if names >= JOURNEY and page_views >= 4 else None

    try:
        customer_id, events = eventually(journey_stored, "the whole journey being stored")
    except AssertionError as exc:
        log = "\n".join(local_stack.output()[-30:])
        raise AssertionError(
            f"{exc}\nunder the anonymous id's customer: {seen}\n"
            f"all events of {anonymous_id}: {where_events_went(dynamodb, anonymous_id)}\n"
            f"local stack output:\n{log}"
        ) from None

    # One customer: the anonymous id and the shop's user id both lead to it.
    assert customer_of(dynamodb, "user", user_id) == customer_id
    assert {e.customer_id for e in events} == {customer_id}
    assert {e.anonymous_id for e in events} == {anonymous_id}
    assert len({e.message_id for e in events}) == len(events)
    page_paths = {e.context["page"]["path"] for e in events if e.type.value == "page"}
    assert page_paths == {"/demo", "/demo/cart.html", "/demo/checkout.html", "/demo/thanks.html"}
    assert all(e.context["page"]["url"].startswith(shop) for e in events)
    assert all(e.context["library"]["name"] == "cems-tag" for e in events)
    [added] = [e for e in events if e.event == "Product Added"]
    assert added.properties["product_id"] == "tea-001"
    assert added.properties["sku"] == "TEA-001"
    assert added.properties["quantity"] == 1
    assert added.properties["currency"] == "JPY"
    # The identify came with the user hash: believed, on the user's customer, and the hash (a
    # credential for that user) not stored.
    [identify] = [e for e in events if e.type.value == "identify"]
    assert (identify.proof, identify.user_id, identify.claimed_user_id) == ("verified", user_id, None)
    assert all("userHash" not in e.context for e in events)
    [order] = [e for e in events if e.event == "Order Completed"]
    assert order.user_id == user_id
    assert order.proof == "verified"
    assert order.properties["currency"] == "JPY"
    assert order.properties["total"] == 1200
    assert [p["product_id"] for p in order.properties["products"]] == ["tea-001"]

    def with_purchase() -> Profile | None:
        profile = profile_of(dynamodb, customer_id)
        return profile if profile is not None and profile.purchase_count == 1 else None

    profile = eventually(with_purchase, "the purchase on the profile")
    assert profile.user_id == user_id
    assert anonymous_id in profile.anonymous_ids
    assert profile.traits["email"] == "hanako@example.jp"
    assert profile.traits["name"] == "山田 花子"
    assert profile.traits["email_opt_in"] is True
    # ...but a browser's opt-in is not consent: only the confirmation mail's link (double opt-in) or
    # the shop's server (secret key) can give it.
    email = profile.channels.get(Channel.EMAIL)
    assert email is None or not email.consent, email
    confirm_by_mail(chrome, local_stack, dynamodb, customer_id, "hanako@example.jp")
    assert profile.products_bought == {"tea-001"}
    assert profile.skus_bought == {"TEA-001"}
    assert profile.categories_bought == {"お茶"}
    assert profile.monetary_total == 1200
    # The order's products are on products_bought etc. (an order summary no longer lists them).
    [summary] = profile.orders.values()
    assert summary.currency == "JPY"
    assert summary.amount == 1200

    # Nothing in the shop's pages failed (the browser's own favicon request aside).
    problems = [
        entry["message"]
        for entry in chrome.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert problems == []

"""The real Segment Python library (segment-analytics-python) pointed at the local stack.

What it sends must be stored exactly once, under one profile once identify and alias have joined
the ids, and the profile's purchase facts must reflect the order. It is a server library, so it gets
the site's secret server key; with the public write key its userIds are only claims. Storage is read
straight from DynamoDB, not through cems.store, so the check does not share the code under test.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer
from segment.analytics.client import Client

from tests.e2e.conftest import LocalStackClient

pytestmark = pytest.mark.e2e

_deserializer = TypeDeserializer()


def plain(item: dict[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def customer_of(db: Any, kind: str, value: str) -> str | None:
    """The customer an identity belongs to: the identity item ID#<kind>#<value> / ID."""
    item = db.get_item(
        TableName="CustomersTable",
        Key={"pk": {"S": f"ID#{kind}#{value}"}, "sk": {"S": "ID"}},
        ConsistentRead=True,
    ).get("Item")
    return item["customer_id"]["S"] if item else None


def profile_of(db: Any, customer_id: str) -> dict[str, Any]:
    """The profile item CUST#<id> / PROFILE, following merge links to the surviving profile."""
    seen: set[str] = set()
    while True:
        item = db.get_item(
            TableName="CustomersTable",
            Key={"pk": {"S": f"CUST#{customer_id}"}, "sk": {"S": "PROFILE"}},
            ConsistentRead=True,
        ).get("Item")
        assert item is not None, f"no profile for {customer_id}"
        profile = plain(item)
        target = profile.get("merged_into")
        if not target or target in seen:
            return profile
        seen.add(customer_id)
        customer_id = target


def events_of(db: Any, customer_ids: set[str]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for customer_id in sorted(customer_ids):
        pages = db.get_paginator("query").paginate(
            TableName="EventsTable",
            KeyConditionExpression="customer_id = :c",
            ExpressionAttributeValues={":c": {"S": customer_id}},
            ConsistentRead=True,
        )
        events.extend(plain(item) for page in pages for item in page["Items"])
    return events


def profile_events(db: Any, profile: dict[str, Any]) -> list[dict[str, Any]]:
    return events_of(db, {profile["customer_id"], *profile.get("merged_ids", set())})


@dataclass
class Sender:
    """A Segment client whose failures are collected instead of only logged."""

    client: Client
    errors: list[tuple[Exception, list[dict[str, Any]]]] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)

    def sent(self, result: tuple[bool, dict[str, Any]]) -> dict[str, Any]:
        queued, message = result
        assert queued, message
        self.message_ids.append(message["messageId"])
        return message


def new_sender(stack: LocalStackClient, write_key: str | None = None, **options: Any) -> Sender:
    """A client as the shop's server runs it: with the site's secret server key (its userIds, traits
    and merges are believed; the public write key is the tag's)."""
    errors: list[tuple[Exception, list[dict[str, Any]]]] = []
    settings: dict[str, Any] = {"max_retries": 1, "timeout": 10, "upload_interval": 0.2, **options}
    client = Client(
        write_key=write_key or stack.secret_key,
        host=stack.http_url,
        on_error=lambda error, batch: errors.append((error, batch)),
        **settings,
    )
    return Sender(client=client, errors=errors)


@pytest.fixture
def sender(local_stack: LocalStackClient) -> Iterator[Sender]:
    sender = new_sender(local_stack)
    yield sender
    sender.client.shutdown()


def order(order_id: str) -> dict[str, Any]:
    """Order Completed properties per Segment's e-commerce spec (prices include consumption tax)."""
    return {
        "checkout_id": f"chk-{order_id}",
        "order_id": order_id,
        "affiliation": "茶寮みどり オンラインストア",
        "total": 6370,
        "subtotal": 5870,
        "revenue": 5337,
        "shipping": 500,
        "tax": 533,
        "currency": "JPY",
        "products": [
            {
                "product_id": "P-1001",
                "sku": "SEN-FK-100",
                "name": "静岡県産 深蒸し煎茶 100g",
                "price": 1620,
                "quantity": 1,
                "category": "日本茶",
            },
            {
                "product_id": "P-3007",
                "sku": "HOJ-KG-200",
                "name": "加賀棒ほうじ茶 200g",
                "price": 1500,
                "quantity": 1,
                "category": "日本茶",
            },
            {
                "product_id": "P-5012",
                "sku": "YUN-HS-01",
                "name": "有田焼 湯呑み 藍染め",
                "price": 2750,
                "quantity": 1,
                "category": "茶器",
            },
        ],
    }


def test_a_customer_journey_from_the_segment_client_lands_once_under_one_profile(
    local_stack: LocalStackClient, sender: Sender
) -> None:
    db = local_stack.dynamodb
    run = uuid.uuid4().hex[:10]
    user_id = f"user-{run}"
    browser = f"anon-browser-{run}"
    old_phone = f"anon-phone-{run}"
    order_id = f"ORD-{run}"

    # An earlier visit from the customer's phone, delivered on its own (sync mode: one POST per call).
    phone = new_sender(local_stack, sync_mode=True)
    phone.sent(
        phone.client.page(
            anonymous_id=old_phone,
            name="トップページ",
            properties={"path": "/", "url": "https://shop.example.jp/", "title": "茶寮みどり"},
        )
    )
    assert phone.errors == []
    phone_customer = customer_of(db, "anon", old_phone)
    assert phone_customer is not None

    # Today on the desktop browser: browse, sign in, buy, and link the phone. Queued, then sent in
    # batches to /v1/batch by the client's consumer thread.
    s = sender
    s.sent(
        s.client.page(
            anonymous_id=browser,
            category="日本茶",
            name="商品詳細",
            properties={"path": "/products/sencha-fukamushi-100g", "title": "静岡県産 深蒸し煎茶 100g"},
        )
    )
    s.sent(
        s.client.track(
            anonymous_id=browser,
            event="Product Added",
            properties={**order(order_id)["products"][0], "currency": "JPY"},
        )
    )
    s.sent(
        s.client.identify(
            user_id=user_id,
            anonymous_id=browser,
            traits={
                "email": f"{run}@example.jp",
                "name": "佐藤 花子",
                "firstName": "花子",
                "lastName": "佐藤",
            },
        )
    )
    order_message = s.sent(
        s.client.track(
            user_id=user_id, anonymous_id=browser, event="Order Completed", properties=order(order_id)
        )
    )
    s.sent(s.client.alias(previous_id=old_phone, user_id=user_id))
    s.client.flush()
    assert s.errors == []

    # The library re-sends after a timeout it could not tell from a failure: same messageId.
    s.sent(
        s.client.track(
            user_id=user_id,
            anonymous_id=browser,
            event="Order Completed",
            properties=order(order_id),
            message_id=order_message["messageId"],
        )
    )
    s.client.flush()
    assert s.errors == []

    customer = customer_of(db, "user", user_id)
    assert customer is not None
    assert customer_of(db, "anon", browser) == customer
    assert customer_of(db, "anon", old_phone) == customer

    profile = profile_of(db, customer)
    assert profile["customer_id"] == customer
    assert profile["user_id"] == user_id
    assert {browser, old_phone} <= profile["anonymous_ids"]
    assert profile["traits"]["email"] == f"{run}@example.jp"
    assert profile["traits"]["name"] == "佐藤 花子"

    events = profile_events(db, profile)
    stored = Counter(e["message_id"] for e in events)
    sent = Counter(phone.message_ids + s.message_ids[:-1])
    assert stored == sent, "every message stored exactly once, the re-sent order not again"
    assert {e["type"] for e in events} == {"page", "track", "identify", "alias"}
    [stored_order] = [e for e in events if e.get("event") == "Order Completed"]
    assert stored_order["properties"]["order_id"] == order_id
    assert stored_order["properties"]["products"][1]["name"] == "加賀棒ほうじ茶 200g"

    assert list(profile["orders"]) == [order_id]
    summary = profile["orders"][order_id]
    assert Decimal(summary["amount"]) == Decimal(6370)
    assert summary["currency"] == "JPY"
    # The order's products are on the purchase sets (an order summary no longer lists them).
    assert profile["products_bought"] == {"P-1001", "P-3007", "P-5012"}
    assert profile["skus_bought"] == {"SEN-FK-100", "HOJ-KG-200", "YUN-HS-01"}
    assert profile["categories_bought"] == {"日本茶", "茶器"}


def test_a_batch_of_many_events_is_stored_once_each(local_stack: LocalStackClient) -> None:
    db = local_stack.dynamodb
    run = uuid.uuid4().hex[:10]
    visitor = f"anon-{run}"
    # Everything queued before the consumer wakes goes out together in one /v1/batch request.
    sender = new_sender(local_stack, upload_size=100, upload_interval=1.0)
    try:
        for i in range(25):
            sender.sent(
                sender.client.track(
                    anonymous_id=visitor,
                    event="Product Viewed",
                    properties={
                        "product_id": f"P-{1000 + i}",
                        "name": f"季節の和菓子 {i + 1}号",
                        "price": 540,
                    },
                )
            )
        sender.client.flush()
    finally:
        sender.client.shutdown()
    assert sender.errors == []
    customer = customer_of(db, "anon", visitor)
    assert customer is not None
    events = profile_events(db, profile_of(db, customer))
    assert Counter(e["message_id"] for e in events) == Counter(sender.message_ids)
    assert len(events) == 25
    # One request stores its messages with one receivedAt: the 25 went out in (nearly) one batch,
    # allowing for the consumer's upload interval ending while they were being queued.
    assert len({e["received_at"] for e in events}) <= 2


def test_the_client_hears_about_a_wrong_write_key_and_nothing_is_stored(
    local_stack: LocalStackClient,
) -> None:
    run = uuid.uuid4().hex[:10]
    sender = new_sender(local_stack, write_key=f"wk_not-a-real-key-{run}")
    try:
        sender.sent(sender.client.track(anonymous_id=f"anon-{run}", event="Product Viewed"))
        sender.client.flush()
    finally:
        sender.client.shutdown()
    [(error, batch)] = sender.errors
    assert getattr(error, "status", None) == 401
    assert [m["messageId"] for m in batch] == sender.message_ids
    assert customer_of(local_stack.dynamodb, "anon", f"anon-{run}") is None


def test_with_the_public_write_key_a_user_id_is_only_the_visitors_claim(
    local_stack: LocalStackClient,
) -> None:
    db = local_stack.dynamodb
    run = uuid.uuid4().hex[:10]
    user_id, visitor = f"user-{run}", f"anon-{run}"
    # Sync mode: one POST per call, no consumer thread to shut down.
    sender = new_sender(local_stack, write_key=local_stack.write_key, sync_mode=True)
    sender.sent(
        sender.client.identify(
            user_id=user_id, anonymous_id=visitor, traits={"email": f"{run}@example.jp", "name": "佐藤"}
        )
    )
    assert sender.errors == []
    # Stored on the visitor, its userId kept as a claim: no customer for the user id, no contact trait.
    assert customer_of(db, "user", user_id) is None
    customer = customer_of(db, "anon", visitor)
    assert customer is not None
    profile = profile_of(db, customer)
    assert "user_id" not in profile
    assert "email" not in profile.get("traits", {})
    [event] = profile_events(db, profile)
    assert (event["proof"], event["claimed_user_id"]) == ("claimed", user_id)
    assert "user_id" not in event

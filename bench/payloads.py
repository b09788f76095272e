"""Realistic Segment payloads, as analytics.js and the server libraries send them to CEMS."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

SHOP = "https://shop.example.jp"
USER_AGENT = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
)
PRODUCTS = [
    ("P-1001", "SEN-FK-100", "静岡県産 深蒸し煎茶 100g", 1620, "日本茶"),
    ("P-1002", "MAT-UJ-30", "宇治抹茶 30g 缶入り", 2480, "抹茶"),
    ("P-1003", "HOJ-KG-200", "加賀棒ほうじ茶 200g", 1180, "ほうじ茶"),
    ("P-1004", "YUN-CUP-01", "有田焼 湯呑み 藍", 3300, "茶器"),
]


def basic_auth(write_key: str) -> str:
    """The Authorization header Segment clients send: the write key as user name, no password."""
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode("ascii")


def _now() -> str:
    at = datetime.now(UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _context(path: str, title: str) -> dict[str, Any]:
    return {
        "library": {"name": "analytics.js", "version": "next-1.74.0"},
        "locale": "ja-JP",
        "timezone": "Asia/Tokyo",
        "userAgent": USER_AGENT,
        "page": {
            "path": path,
            "referrer": "https://www.google.co.jp/",
            "search": "",
            "title": f"{title} | 茶寮みどり",
            "url": SHOP + path,
        },
    }


def new_anonymous_id() -> str:
    return str(uuid.uuid4())


def message_id() -> str:
    return f"ajs-next-{uuid.uuid4()}"


def track(anonymous_id: str, n: int = 0, event: str = "Product Viewed") -> dict[str, Any]:
    product_id, sku, name, price, category = PRODUCTS[n % len(PRODUCTS)]
    path = f"/products/{sku.lower()}"
    now = _now()
    return {
        "type": "track",
        "event": event,
        "anonymousId": anonymous_id,
        "messageId": message_id(),
        "properties": {
            "product_id": product_id,
            "sku": sku,
            "name": name,
            "price": price,
            "category": category,
            "currency": "JPY",
            "url": SHOP + path,
        },
        "context": _context(path, name),
        "timestamp": now,
        "sentAt": now,
    }


def identify(anonymous_id: str, user_id: str, user_hash: str | None = None) -> dict[str, Any]:
    """A signed-in visitor's identify; `user_hash` is the proof the shop's server renders (cems.trust)."""
    now = _now()
    context = _context("/mypage", "マイページ")
    if user_hash is not None:
        context["userHash"] = user_hash
    return {
        "type": "identify",
        "anonymousId": anonymous_id,
        "userId": user_id,
        "messageId": message_id(),
        "traits": {"email": f"{user_id}@example.jp", "name": "佐藤 花子", "line_opt_in": True},
        "context": context,
        "timestamp": now,
        "sentAt": now,
    }


def batch_of(size: int, visitors: int) -> dict[str, Any]:
    """`size` messages from `visitors` anonymous visitors, one of whom logs in (an identify)."""
    anonymous_ids = [new_anonymous_id() for _ in range(visitors)]
    messages = [track(anonymous_ids[i % visitors], i) for i in range(size - 1)]
    messages.insert(size // 2, identify(anonymous_ids[0], f"user-{uuid.uuid4().hex[:10]}"))
    return {"batch": messages, "sentAt": _now(), "context": {"library": {"name": "analytics-python"}}}


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode("utf-8")

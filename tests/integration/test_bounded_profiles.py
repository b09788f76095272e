"""Bounded profiles against DynamoDB (moto): however many requests pile onto one customer, even with the
server key, the profile item stays well under 400 KB, and the customer's own purchase, opt-out and
one-click unsubscribe still work afterwards."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores, profile_key
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.dynamodb.suppression import SuppressionStore
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.engagement.engage import Engagement, UnsubscribeResult
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken
from cems.ingest import Ingestor
from cems.models import Channel, SegmentMessage, Site, Trust
from cems.profiles import LIMITS

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
SERVER = Site(write_key="secret#x", site_id="site_shop", name="shop", created_at=NOW, trust=Trust.SERVER)
SIGNER = TokenSigner(lambda: LOCAL_TRACKING_SECRET.encode())
USER = "member-77"


@pytest.fixture(autouse=True)
def frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


def message(n: int, type_: str, **fields: Any) -> SegmentMessage:
    return SegmentMessage.model_validate(
        {"type": type_, "messageId": f"m-{type_}-{n}", "userId": USER, **fields}
    )


def item_bytes(stores: Stores) -> int:
    customer = stores.customers.customer_for_user_id(USER)
    assert customer is not None
    item = stores.customers.client.get_item(TableName="CustomersTable", Key=profile_key(customer))["Item"]
    return len(json.dumps(item, ensure_ascii=False).encode("utf-8"))


def test_no_flood_of_requests_grows_a_profile_past_its_maxima_and_opting_out_still_works(
    stores: Stores, dynamodb: Any
) -> None:
    ingest = Ingestor(stores.ingest)
    at = NOW
    # 60 identifies, each with 25 new traits of nearly 1 KB and a new browser: the request that bricked
    # a profile after 59 calls.
    for n in range(60):
        traits = {f"t{n}-{k}": "x" * 1000 for k in range(25)}
        ingest.ingest(SERVER, [message(n, "identify", anonymousId=f"browser-{n}", traits=traits)], at)
    # 12 orders of 200 new products each, in batches.
    for n in range(12):
        products = [
            {"product_id": f"p{n}-{k}-" + "z" * 100, "sku": f"s{n}-{k}", "price": 1} for k in range(200)
        ]
        order = message(
            n, "track", event="Order Completed", properties={"order_id": f"o{n}", "products": products}
        )
        ingest.ingest(SERVER, [order], at)
    # 210 more small orders: past the maximum of 200, so the oldest are folded.
    for n in range(210):
        at += timedelta(minutes=1)
        order = message(
            100 + n, "track", event="Order Completed", properties={"order_id": f"small-{n}", "total": 100}
        )
        ingest.ingest(SERVER, [order], at)

    customer = stores.customers.customer_for_user_id(USER)
    assert customer is not None
    profile = stores.customers.profile(customer)
    assert profile is not None
    assert len(profile.traits) == LIMITS.traits
    assert len(profile.anonymous_ids) == LIMITS.anonymous_ids
    assert len(profile.products_bought) == LIMITS.bought
    assert len(profile.orders) <= LIMITS.orders
    # Folded orders still count: 12 large (total 200 each: 200 products of price 1) + 210 small.
    assert profile.order_rollup is not None and profile.order_rollup.count > 0
    assert profile.purchase_count == 222
    assert profile.monetary_total == Decimal(12 * 200 + 210 * 100)
    assert item_bytes(stores) < 300 * 1024
    # A browser beyond the maximum is not claimed, yet the message naming the customer reached them.
    assert stores.customers.customer_for_anonymous_id("browser-59") is None
    assert any(e.message_id == "m-identify-59" for e in stores.events.events_of(customer))

    # The customer's own purchase, opt-out and one-click unsubscribe all still work.
    at += timedelta(hours=1)
    ingest.ingest(
        SERVER,
        [message(999, "track", event="Order Completed", properties={"order_id": "last", "total": 5000})],
        at,
    )
    ingest.ingest(
        SERVER, [message(1000, "identify", traits={"email": "m77@example.jp", "email_opt_in": True})], at
    )
    profile = stores.customers.profile(customer)
    assert profile is not None and profile.purchase_count == 223 and profile.last_purchase_at == at
    state = profile.channels[Channel.EMAIL]
    assert state.consent
    # Contact points and consent always fit, beyond the maximum of other traits.
    assert profile.traits["email"] == "m77@example.jp"
    assert len(profile.traits) == LIMITS.traits + 2

    engagement = Engagement(
        SIGNER,
        ingest,
        stores.customers,
        ReportCounters("JourneysTable", dynamodb),
        SuppressionStore("CustomersTable", dynamodb),
    )
    token = SIGNER.sign(
        TrackingToken(
            kind=TokenKind.UNSUBSCRIBE, dispatch_key=f"{customer}#mail", customer_id=customer, channel="email"
        )
    )
    assert engagement.unsubscribe(token)[1] is UnsubscribeResult.UNSUBSCRIBED
    ingest.ingest(
        SERVER, [message(1001, "identify", traits={"email_opt_in": False})], at + timedelta(minutes=1)
    )
    profile = stores.customers.profile(customer)
    assert profile is not None and profile.channels[Channel.EMAIL].consent is False
    assert item_bytes(stores) < 300 * 1024

"""Ingestion against DynamoDB (moto): what only the store does. A batch is split into transactions
within DynamoDB's limit and lands whole, events read back with the fields (and numbers) as sent, and
profiles read in batches. Ingest's rules (de-duplication, merges, purchase facts) are tested on the
in-memory store in tests/unit/test_ingest_behaviour.py."""

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.ingest import Ingestor, IngestResult
from cems.models import Profile, SegmentMessage, Site, Trust

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SITE = Site(
    write_key="wk", site_id="site_test", name="test", origins=["*"], created_at=NOW, trust=Trust.SERVER
)


def msg(type_: str, message_id: str, **fields: Any) -> SegmentMessage:
    return SegmentMessage.model_validate({"type": type_, "messageId": message_id, **fields})


def order(order_id: str, total: int, *skus: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "total": total,
        "currency": "JPY",
        "products": [
            {"product_id": f"p-{s}", "sku": s, "price": total, "quantity": 1, "category": "tea"} for s in skus
        ],
    }


Ingest = Callable[..., IngestResult]


@pytest.fixture
def ingest(stores: Stores) -> Ingest:
    ingestor = Ingestor(stores.ingest)

    def run(*messages: SegmentMessage, at: datetime = NOW) -> IngestResult:
        return ingestor.ingest(SITE, list(messages), at)

    return run


def test_a_batch_larger_than_one_transaction_is_stored_whole(ingest: Ingest, stores: Stores) -> None:
    messages = [msg("track", f"m{i:03}", anonymousId=f"a{i % 7}", event="Viewed") for i in range(120)]
    messages.append(
        msg("track", "buy", anonymousId="a1", event="Order Completed", properties=order("B", 10, "S"))
    )
    result = ingest(*messages)
    assert result.stored == 121
    total = 0
    for i in range(7):
        profile = stores.customers.profile(stores.customers.customer_for_anonymous_id(f"a{i}") or "")
        assert profile is not None
        total += len(stores.events.history(profile))
    assert total == 121


def test_stored_events_keep_the_time_fields_segment_defines(ingest: Ingest, stores: Stores) -> None:
    sent = NOW + timedelta(minutes=5)  # the client's clock runs 5 minutes fast
    ingest(
        msg(
            "track",
            "m1",
            anonymousId="a1",
            event="Viewed",
            timestamp=sent - timedelta(seconds=30),
            sentAt=sent,
            properties={"price": 1.5},
        )
    )
    profile = stores.customers.profile(stores.customers.customer_for_anonymous_id("a1") or "")
    assert profile is not None
    [event] = stores.events.history(profile)
    assert event.timestamp == NOW - timedelta(seconds=30)
    assert event.received_at == NOW
    assert event.sent_at == sent
    assert event.properties == {"price": Decimal("1.5")}


def test_profiles_of_more_customers_than_one_batch_get_are_all_read(stores: Stores) -> None:
    at = clock.now()
    for i in range(230):
        profile = Profile(customer_id=f"cus_many_{i:03d}", first_seen_at=at, updated_at=at)
        stores.customers.client.put_item(
            TableName=stores.customers.table_name, Item=stores.customers.profile_item(profile)
        )
    wanted = [f"cus_many_{i:03d}" for i in range(230)] + ["cus_missing"]
    assert set(stores.customers.profiles(wanted)) == set(wanted[:-1])

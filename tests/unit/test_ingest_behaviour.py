"""Ingest on the in-memory store (tests/fakes, held to the DynamoDB store's contract by
tests/integration/test_ingest_store_contract.py): each message stored once, identities merged,
purchase facts kept. What only DynamoDB does (transactions split at their size limit, batch reads,
numbers read back) stays in tests/integration/test_ingest.py."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

import pytest
from cems.ingest import Ingestor, IngestResult
from cems.models import SegmentMessage, Site, Trust

from tests.fakes.customers import InMemoryCustomers

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


class Ingest(Protocol):
    def __call__(self, *messages: SegmentMessage, at: datetime = NOW) -> IngestResult: ...


@pytest.fixture
def customers() -> InMemoryCustomers:
    return InMemoryCustomers()


@pytest.fixture
def ingest(customers: InMemoryCustomers) -> Ingest:
    ingestor = Ingestor(customers)

    def run(*messages: SegmentMessage, at: datetime = NOW) -> IngestResult:
        return ingestor.ingest(SITE, list(messages), at)

    return run


def test_an_anonymous_visitors_events_land_under_one_new_customer(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(msg("page", "m1", anonymousId="a1"), msg("track", "m2", anonymousId="a1", event="Product Added"))
    customer = customers.customer_for_anonymous_id("a1")
    assert customer is not None
    profile = customers.profile(customer)
    assert profile is not None and profile.anonymous_ids == {"a1"}
    assert [e.message_id for e in customers.history(profile)] == ["m1", "m2"]


def test_the_same_message_sent_twice_is_stored_once(ingest: Ingest, customers: InMemoryCustomers) -> None:
    first = ingest(msg("track", "dup", anonymousId="a1", event="Product Added"))
    again = ingest(
        msg("track", "dup", anonymousId="a1", event="Product Added"), at=NOW + timedelta(minutes=1)
    )
    assert (first.stored, again.stored, again.duplicates) == (1, 0, 1)
    profile = customers.profile(customers.customer_for_anonymous_id("a1") or "")
    assert profile is not None and len(customers.history(profile)) == 1


def test_a_duplicate_inside_one_batch_is_stored_once(ingest: Ingest) -> None:
    result = ingest(msg("page", "same", anonymousId="a1"), msg("page", "same", anonymousId="a1"))
    assert (result.stored, result.duplicates) == (1, 1)


def test_a_resent_batch_stores_only_the_messages_not_seen_before(ingest: Ingest) -> None:
    ingest(msg("page", "m1", anonymousId="a1"))
    result = ingest(msg("page", "m1", anonymousId="a1"), msg("page", "m2", anonymousId="a1"))
    assert (result.stored, result.duplicates) == (1, 1)


def test_identify_merges_an_anonymous_visitor_into_the_known_customer(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(msg("identify", "m0", userId="u1", anonymousId="old-device", traits={"name": "Sato"}))
    ingest(
        msg("track", "m1", anonymousId="a1", event="Product Added"),
        msg("identify", "m2", anonymousId="a1", traits={"email": "sato@example.jp"}),
    )
    anonymous_customer = customers.customer_for_anonymous_id("a1")
    known = customers.customer_for_user_id("u1")
    assert anonymous_customer != known

    ingest(msg("identify", "m3", userId="u1", anonymousId="a1", traits={"plan": "gold"}))

    assert customers.customer_for_anonymous_id("a1") == known
    profile = customers.profile(known or "")
    assert profile is not None
    assert profile.traits == {"name": "Sato", "email": "sato@example.jp", "plan": "gold"}
    assert profile.anonymous_ids == {"old-device", "a1"}
    assert [e.message_id for e in customers.history(profile)] == ["m0", "m1", "m2", "m3"]
    # Later events by either id resolve to the one profile.
    ingest(msg("page", "m4", anonymousId="a1"), msg("page", "m5", userId="u1"))
    assert [e.customer_id for e in customers.history(profile)][-2:] == [known, known]


def test_a_profile_merged_away_is_followed_to_the_customer_it_joined(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(msg("page", "m1", anonymousId="a1"))
    anonymous_customer = customers.customer_for_anonymous_id("a1") or ""
    ingest(msg("identify", "m0", userId="u1"))
    ingest(msg("identify", "m2", userId="u1", anonymousId="a1"))
    profile = customers.profile(anonymous_customer)
    assert profile is not None and profile.user_id == "u1"
    assert anonymous_customer in profile.merged_ids


def test_alias_merges_the_previous_id_into_the_user(ingest: Ingest, customers: InMemoryCustomers) -> None:
    ingest(msg("track", "m1", anonymousId="a1", event="Viewed"))
    ingest(msg("identify", "m2", userId="u1", traits={"tier": "new"}))
    ingest(msg("alias", "m3", userId="u1", previousId="a1"))
    assert customers.customer_for_anonymous_id("a1") == customers.customer_for_user_id("u1")


def test_a_shared_browser_never_joins_two_signed_in_customers(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(msg("identify", "m1", userId="u1", anonymousId="shared"))
    ingest(msg("identify", "m2", userId="u2", anonymousId="other"))
    ingest(msg("identify", "m3", userId="u2", anonymousId="shared"))
    u1, u2 = customers.customer_for_user_id("u1"), customers.customer_for_user_id("u2")
    assert u1 != u2
    # The device now belongs to the customer who signed in last; u1's history stays u1's.
    assert customers.customer_for_anonymous_id("shared") == u2
    profile_u1 = customers.profile(u1 or "")
    assert profile_u1 is not None and "shared" not in profile_u1.anonymous_ids
    assert [e.message_id for e in customers.history(profile_u1)] == ["m1"]


def test_order_completed_updates_purchase_facts(ingest: Ingest, customers: InMemoryCustomers) -> None:
    ingest(
        msg(
            "track",
            "o1",
            anonymousId="a1",
            event="Order Completed",
            properties=order("A-1", 3000, "TEA-1"),
            timestamp=NOW - timedelta(days=10),
        ),
        msg("track", "o2", anonymousId="a1", event="Order Completed", properties=order("A-2", 1500, "TEA-2")),
    )
    profile = customers.profile(customers.customer_for_anonymous_id("a1") or "")
    assert profile is not None
    assert (profile.purchase_count, profile.monetary_total) == (2, Decimal(4500))
    assert profile.first_purchase_at == NOW - timedelta(days=10)
    assert profile.last_purchase_at == NOW
    assert profile.skus_bought == {"TEA-1", "TEA-2"}
    assert profile.products_bought == {"p-TEA-1", "p-TEA-2"}
    assert profile.categories_bought == {"tea"}


def test_the_same_order_sent_with_a_new_message_id_counts_once(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    properties = order("A-1", 3000, "TEA-1")
    ingest(msg("track", "o1", anonymousId="a1", event="Order Completed", properties=properties))
    ingest(msg("track", "o1-retry", anonymousId="a1", event="Order Completed", properties=properties))
    profile = customers.profile(customers.customer_for_anonymous_id("a1") or "")
    assert profile is not None and (profile.purchase_count, profile.monetary_total) == (1, Decimal(3000))


def test_traits_merge_into_the_profile_without_dropping_earlier_ones(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(msg("identify", "m1", userId="u1", traits={"email": "a@example.jp", "address": {"city": "東京"}}))
    ingest(msg("identify", "m2", userId="u1", traits={"email_opt_in": True}))
    profile = customers.profile(customers.customer_for_user_id("u1") or "")
    assert profile is not None
    assert profile.traits == {"email": "a@example.jp", "address": {"city": "東京"}, "email_opt_in": True}


def test_a_page_call_keeps_its_name_and_category(ingest: Ingest, customers: InMemoryCustomers) -> None:
    ingest(msg("page", "pg1", anonymousId="a-cat", name="商品一覧", category="お茶"))
    profile = customers.profile(customers.customer_for_anonymous_id("a-cat") or "")
    assert profile is not None
    (event,) = customers.history(profile)
    assert (event.name, event.category) == ("商品一覧", "お茶")


def test_a_new_user_signing_in_on_a_shared_browser_gets_a_customer_of_their_own(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(
        msg("identify", "s1", userId="first", anonymousId="shared-pc", traits={"email": "first@example.jp"})
    )
    first = customers.customer_for_user_id("first")
    # Someone else signs in on the same browser (the first customer never signed out).
    ingest(
        msg("identify", "s2", userId="second", anonymousId="shared-pc", traits={"email": "second@example.jp"})
    )
    second = customers.customer_for_user_id("second")
    assert second is not None and second != first
    profile = customers.profile(first or "")
    assert profile is not None and profile.user_id == "first"
    assert profile.traits["email"] == "first@example.jp"
    assert customers.profile(second).traits["email"] == "second@example.jp"  # type: ignore[union-attr]
    # The browser belongs to the newest sign-in.
    assert customers.customer_for_anonymous_id("shared-pc") == second


def test_a_server_alias_from_an_old_user_id_joins_the_new_one_to_the_same_customer(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(msg("identify", "r1", userId="old-member", traits={"name": "Sato"}))
    ingest(msg("alias", "r2", userId="new-member", previousId="old-member"))
    old = customers.customer_for_user_id("old-member")
    assert old is not None and customers.customer_for_user_id("new-member") == old

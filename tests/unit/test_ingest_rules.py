"""Pure ingestion rules: event time with clock-skew correction, identities, merges, purchase facts."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from cems.identity import IdentityKey, IdentityKind, identity_keys, keys_to_claim, may_merge, merge_profiles
from cems.ingest import event_time
from cems.models import OrderCompleted, OrderSummary, Profile, SegmentMessage

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def message(**fields: object) -> SegmentMessage:
    return SegmentMessage.model_validate(fields)


def profile(customer_id: str, **fields: object) -> Profile:
    return Profile.model_validate(
        {"customer_id": customer_id, "first_seen_at": T0, "updated_at": T0, **fields}
    )


def test_event_time_shifts_timestamp_by_the_client_clock_skew():
    # The client's clock is 5 minutes fast: it says it sent at 12:05 when the server got it at 12:00.
    m = message(
        type="track",
        event="x",
        anonymousId="a",
        timestamp=T0 + timedelta(minutes=4),
        sentAt=T0 + timedelta(minutes=5),
    )
    assert event_time(m, received_at=T0) == T0 - timedelta(minutes=1)


def test_event_time_without_sent_at_is_the_timestamp():
    m = message(type="track", event="x", anonymousId="a", timestamp=T0 - timedelta(days=1))
    assert event_time(m, received_at=T0) == T0 - timedelta(days=1)


def test_event_time_without_any_timestamp_is_when_it_was_received():
    assert event_time(message(type="page", anonymousId="a"), received_at=T0) == T0


def test_naive_timestamps_are_taken_as_utc():
    m = message(type="page", anonymousId="a", timestamp="2026-11-01T12:00:00")
    assert m.timestamp == T0


def test_identity_keys_put_the_user_id_first():
    keys = identity_keys(message(type="identify", userId="u1", anonymousId="a1"))
    assert keys == [IdentityKey(IdentityKind.USER, "u1"), IdentityKey(IdentityKind.ANONYMOUS, "a1")]


def test_an_unknown_alias_previous_id_is_claimed_as_an_anonymous_id():
    m = message(type="alias", userId="u1", previousId="p1")
    assert keys_to_claim(m, known=set()) == [
        IdentityKey(IdentityKind.USER, "u1"),
        IdentityKey(IdentityKind.ANONYMOUS, "p1"),
    ]


def test_a_known_alias_previous_user_id_is_not_claimed_again_as_anonymous():
    m = message(type="alias", userId="u2", previousId="u1")
    known = {IdentityKey(IdentityKind.USER, "u1")}
    assert keys_to_claim(m, known) == [IdentityKey(IdentityKind.USER, "u2")]


def test_two_signed_in_customers_are_never_merged():
    assert not may_merge(profile("c1", user_id="u1"), profile("c2", user_id="u2"))
    assert may_merge(profile("c1"), profile("c2", user_id="u2"))


def test_merging_keeps_everything_and_the_target_traits_win():
    order = OrderSummary(at=T0, amount=Decimal(1000), product_ids=["p1"])
    source = profile(
        "anon",
        anonymous_ids={"a1"},
        traits={"email": "old@example.jp", "color": "red"},
        orders={"o1": order},
        products_bought={"p1"},
        first_seen_at=T0 - timedelta(days=3),
    )
    target = profile("known", user_id="u1", traits={"email": "new@example.jp"}, merged_ids={"older"})
    merged = merge_profiles(target, source, at=T0)
    assert merged.customer_id == "known"
    assert merged.traits == {"email": "new@example.jp", "color": "red"}
    assert merged.orders == {"o1": order}
    assert merged.anonymous_ids == {"a1"}
    assert merged.merged_ids == {"older", "anon"}
    assert merged.first_seen_at == T0 - timedelta(days=3)
    assert merged.all_customer_ids() == {"known", "older", "anon"}


def test_purchase_facts_are_derived_from_orders_whatever_order_they_arrived_in():
    p = profile(
        "c",
        orders={
            "late": OrderSummary(at=T0 + timedelta(days=2), amount=Decimal(500)),
            "early": OrderSummary(at=T0, amount=Decimal(1500)),
        },
    )
    assert (p.purchase_count, p.monetary_total) == (2, Decimal(2000))
    assert (p.first_purchase_at, p.last_purchase_at) == (T0, T0 + timedelta(days=2))


def test_order_amount_prefers_total_then_revenue_then_product_lines():
    assert OrderCompleted.model_validate({"total": 1200, "revenue": 1000}).amount() == 1200
    assert OrderCompleted.model_validate({"revenue": 1000}).amount() == 1000
    lines = {"products": [{"price": 300, "quantity": 2}, {"price": 100}]}
    assert OrderCompleted.model_validate(lines).amount() == 700

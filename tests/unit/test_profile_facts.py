"""The profile facts rule set laid over a profile: bounded as the store bounds a write, believed as
far as each event's proof goes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cems.models import Channel, MessageType, OrderSummary, Profile, StoredEvent
from cems.profile_facts import apply_event
from cems.profiles import LIMITS
from cems.trust import Proof

NOW = datetime(2026, 5, 1, tzinfo=UTC)


def stored(kind: MessageType, proof: Proof = Proof.SERVER, **fields: Any) -> StoredEvent:
    return StoredEvent(
        customer_id="cus_1",
        site_id="shop",
        type=kind,
        message_id="m-1",
        timestamp=NOW,
        received_at=NOW,
        proof=proof.value,
        **fields,
    )


def empty() -> Profile:
    return Profile(customer_id="cus_1", first_seen_at=NOW - timedelta(days=400), updated_at=NOW)


def test_an_order_beyond_the_maximum_folds_the_oldest_and_keeps_the_counts_exact() -> None:
    orders = {
        f"o-{i}": OrderSummary(at=NOW - timedelta(days=300 - i), amount=Decimal(100))
        for i in range(LIMITS.orders)
    }
    full = empty().model_copy(update={"orders": orders})
    order = {"order_id": "new", "total": 500, "products": [{"product_id": "tea"}]}
    after = apply_event(full, stored(MessageType.TRACK, event="Order Completed", properties=order))
    assert len(after.orders) == LIMITS.orders_after_fold
    assert (
        after.order_rollup is not None
        and after.order_rollup.count == LIMITS.orders + 1 - LIMITS.orders_after_fold
    )
    assert (after.purchase_count, after.monetary_total) == (
        LIMITS.orders + 1,
        Decimal(100 * LIMITS.orders + 500),
    )
    assert after.last_purchase_at == NOW and "tea" in after.products_bought


def test_a_trait_beyond_the_maximum_is_dropped_but_an_email_always_fits() -> None:
    full = empty().model_copy(update={"traits": {f"t{i}": i for i in range(LIMITS.traits)}})
    after = apply_event(full, stored(MessageType.IDENTIFY, traits={"one_more": 1, "email": "a@example.jp"}))
    assert "one_more" not in after.traits and after.traits["email"] == "a@example.jp"


def test_an_unproven_identify_changes_no_contact_trait_or_consent() -> None:
    traits = {"email": "someone-else@example.jp", "email_opt_in": True, "plan": "gold"}
    after = apply_event(empty(), stored(MessageType.IDENTIFY, proof=Proof.CLAIMED, traits=traits))
    assert after.traits == {"plan": "gold"} and Channel.EMAIL not in after.channels


def test_a_servers_opt_in_is_consent_for_the_address_it_names() -> None:
    traits = {"email": "a@example.jp", "email_opt_in": True}
    after = apply_event(empty(), stored(MessageType.IDENTIFY, traits=traits))
    state = after.channels[Channel.EMAIL]
    assert state.consents_for("A@example.jp ") and not state.consents_for("b@example.jp")

"""Bounded profiles (cems.profiles): what fits, what folds, and that a profile at every maximum at once
is far from DynamoDB's 400 KB."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cems.adapters.dynamodb.customers import CustomerStore
from cems.models import Channel, ChannelState, OrderRollup, OrderSummary, Profile
from cems.profiles import (
    BOUGHT_SETS,
    LIMITS,
    MAX_BOUGHT_ID_LENGTH,
    MAX_TRAIT_KEY_LENGTH,
    MAX_TRAIT_VALUE_BYTES,
    RESERVED_TRAITS,
    compacted,
    fit,
)

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
DYNAMODB_ITEM_LIMIT = 400 * 1024


def order(days: int, amount: int = 1000) -> OrderSummary:
    return OrderSummary(at=NOW + timedelta(days=days), amount=Decimal(amount), currency="JPY")


def profile(**fields: Any) -> Profile:
    return Profile(customer_id="cus_1", first_seen_at=NOW, updated_at=NOW, **fields)


def item_bytes(item: dict[str, Any]) -> int:
    """An upper bound of DynamoDB's item size: the item as DynamoDB JSON (type tags, quotes and
    punctuation included, which DynamoDB does not count)."""
    return len(json.dumps(item, ensure_ascii=False).encode("utf-8"))


def test_a_profile_at_every_maximum_at_once_stays_far_below_the_item_limit() -> None:
    longest = "x" * 255  # an Identifier's maximum
    worst = profile(
        user_id=longest,
        line_user_id="U" + "f" * 32,
        anonymous_ids={f"{n:03d}" + "a" * 252 for n in range(LIMITS.anonymous_ids)},
        # Each value at the per-trait maximum: a string of JSON size MAX_TRAIT_VALUE_BYTES.
        traits={
            **{
                f"{n:03d}" + "k" * (MAX_TRAIT_KEY_LENGTH - 3): "v" * (MAX_TRAIT_VALUE_BYTES - 2)
                for n in range(LIMITS.traits)
            },
            # Contact points and consent fit beyond the maximum.
            **{name: "v" * (MAX_TRAIT_VALUE_BYTES - 2) for name in RESERVED_TRAITS},
        },
        orders={f"{n:03d}" + "o" * 252: order(n, 10**12) for n in range(LIMITS.orders)},
        order_rollup=OrderRollup(count=10**6, amount=Decimal(10) ** 15, first_at=NOW, last_at=NOW),
        merged_ids={f"cus_{n:032x}" for n in range(LIMITS.merged_ids)},
        channels={
            c: ChannelState(
                reachable=True,
                consent=True,
                updated_at=NOW,
                reason="identify",
                source="site_x",
                address_hash="a" * 64,
            )
            for c in Channel
        },
        **{
            name: {f"{n:03d}" + "p" * (MAX_BOUGHT_ID_LENGTH - 3) for n in range(LIMITS.bought)}
            for name in BOUGHT_SETS
        },
    )
    size = item_bytes(CustomerStore("CustomersTable", None).profile_item(worst))  # type: ignore[arg-type]
    assert size < 0.85 * DYNAMODB_ITEM_LIMIT, size


def test_new_trait_keys_fit_while_there_is_room_and_overwrites_always_do() -> None:
    full = profile(traits={f"t{n}": n for n in range(LIMITS.traits)})
    fitted = fit({"t1": "again", "new": 1, "email_opt_in": False}, {}, {}, full)
    # Consent and contact points always fit: opting out must never fail.
    assert fitted.traits == {"t1": "again", "email_opt_in": False}
    assert fitted.growth["traits"] == 0
    almost = profile(traits={f"t{n}": n for n in range(LIMITS.traits - 1)})
    assert fit({"a": 1, "b": 2}, {}, {}, almost).traits == {"a": 1}


def test_orders_beyond_the_maximum_fold_the_oldest_into_the_rollup_and_the_facts_stay_exact() -> None:
    before = profile(orders={f"o{n}": order(n) for n in range(LIMITS.orders)})
    fitted = fit({}, {"new": order(LIMITS.orders, 5000)}, {}, before)
    assert len(fitted.folded) == LIMITS.orders + 1 - LIMITS.orders_after_fold
    assert fitted.folded == [f"o{n}" for n in range(len(fitted.folded))]  # the oldest
    after = before.model_copy(
        update={
            "orders": {
                **{k: v for k, v in before.orders.items() if k not in fitted.folded},
                **fitted.orders,
            },
            "order_rollup": fitted.rollup,
        }
    )
    assert len(after.orders) == LIMITS.orders_after_fold
    assert after.purchase_count == LIMITS.orders + 1
    assert after.monetary_total == Decimal(1000 * LIMITS.orders + 5000)
    assert (after.first_purchase_at, after.last_purchase_at) == (NOW, NOW + timedelta(days=LIMITS.orders))


def test_a_re_sent_order_is_an_overwrite_not_growth() -> None:
    before = profile(orders={f"o{n}": order(n) for n in range(LIMITS.orders)})
    fitted = fit({}, {"o5": order(5, 999)}, {}, before)
    assert (fitted.folded, fitted.rollup, fitted.growth["orders"]) == ([], None, 0)


def test_purchase_sets_stop_growing_at_their_maximum() -> None:
    before = profile(products_bought={f"p{n}" for n in range(LIMITS.bought - 1)})
    fitted = fit({}, {}, {"products_bought": {"x", "y", "p1"}}, before)
    assert fitted.bought["products_bought"] == {"x"}
    assert fitted.growth["products_bought"] == 1


def test_a_merge_holding_more_than_a_profile_may_is_compacted() -> None:
    merged = profile(
        traits={f"t{n}": n for n in range(LIMITS.traits + 20)},
        orders={f"o{n:03d}": order(n) for n in range(LIMITS.orders + 30)},
        order_rollup=OrderRollup(count=2, amount=Decimal(10), first_at=NOW - timedelta(days=9), last_at=NOW),
    )
    small = compacted(merged)
    assert len(small.traits) == LIMITS.traits
    assert len(small.orders) == LIMITS.orders_after_fold
    assert small.purchase_count == merged.purchase_count
    assert small.monetary_total == merged.monetary_total
    assert small.first_purchase_at == NOW - timedelta(days=9)

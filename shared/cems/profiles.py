"""Bounded profiles: no sequence of requests can push a customer's profile item near DynamoDB's 400 KB.

Everything on a profile that grows with input has a maximum (ProfileLimits), sized so that a profile
holding every maximum at once stays well under the item limit (tests/unit/test_profiles.py builds one
and measures it):

- traits: at most 100 keys of at most 128 characters, each value at most 1 KB as JSON (a message
  breaking the per-message rules is refused with 400 naming the field, cems.segment), plus the
  contact traits and `email_opt_in`, which always fit;
- anonymous ids: at most 50 on the profile. A browser beyond that is not claimed for the customer (its
  next message with the user id is still placed on them), so every identity item the customer has is
  listed on the profile and erasure finds it;
- orders: the latest 200 one by one; older ones are folded into `order_rollup` (count, amount, first
  and last time), so purchase count, monetary total and purchase dates stay exact. An order re-sent
  after it was folded would count again: orders are re-sent within hours, folding keeps the latest;
- products, SKUs and categories bought: at most 300 each; beyond that a purchase adds none.

Writes enforce the maxima with conditions on `size()` of each collection they add to
(cems.adapters.dynamodb.customers), so concurrent writers cannot pass them together. A write refused
that way returns the profile as it was (ALL_OLD); `fit` then decides exactly what fits: overwrites of
existing keys always do, so opting out, a purchase's facts and a channel's state are recorded
whatever the profile's state.
"""

from __future__ import annotations

from dataclasses import dataclass

from cems.models import OrderRollup, OrderSummary, Profile
from cems.trust import CONTACT_TRAITS, EMAIL_OPT_IN_TRAIT


@dataclass(frozen=True)
class ProfileLimits:
    traits: int = 100
    anonymous_ids: int = 50
    orders: int = 200
    # Folding leaves this many orders, so a full profile folds once per 50 orders, not on each.
    orders_after_fold: int = 150
    bought: int = 300  # each of products_bought, skus_bought, categories_bought
    merged_ids: int = 50


LIMITS = ProfileLimits()
MAX_TRAIT_KEY_LENGTH = 128
# Beyond the maximum: how to reach the customer and their consent must always be recordable.
RESERVED_TRAITS = CONTACT_TRAITS | {EMAIL_OPT_IN_TRAIT}
MAX_TRAIT_VALUE_BYTES = 1024
# Product ids, SKUs and category names kept in the purchase sets.
MAX_BOUGHT_ID_LENGTH = 128
BOUGHT_SETS = ("products_bought", "skus_bought", "categories_bought")
MAX_FOLDS_PER_WRITE = 100


@dataclass
class Fitted:
    """What of a profile change fits, and how many entries each collection really gains."""

    traits: dict[str, object]
    orders: dict[str, OrderSummary]
    bought: dict[str, set[str]]
    # Orders moved out of the map into the rollup (their ids), and the rollup after it.
    folded: list[str]
    rollup: OrderRollup | None
    growth: dict[str, int]


def fit(
    traits: dict[str, object],
    orders: dict[str, OrderSummary],
    bought: dict[str, set[str]],
    before: Profile | None,
    limits: ProfileLimits = LIMITS,
) -> Fitted:
    """The part of a change that fits `before` (None: a new profile, or one not read; then the change
    alone is trimmed and growth counts every addition, which the write's conditions check)."""
    growth: dict[str, int] = {}
    known_traits = set(before.traits) if before else set()
    kept_traits: dict[str, object] = {}
    room = limits.traits - len(known_traits)
    for key, value in traits.items():
        if key in known_traits or key in RESERVED_TRAITS:
            # An overwrite (never more entries), or a contact point or consent, which always fit.
            kept_traits[key] = value
        elif room > 0:
            kept_traits[key] = value
            room -= 1
    growth["traits"] = sum(1 for k in kept_traits if k not in known_traits and k not in RESERVED_TRAITS)

    kept_bought: dict[str, set[str]] = {}
    for name in BOUGHT_SETS:
        have: set[str] = getattr(before, name) if before else set()
        new = sorted(bought.get(name, set()) - have)
        kept_bought[name] = set(new[: max(0, limits.bought - len(have))])
        growth[name] = len(kept_bought[name])

    existing = dict(before.orders) if before else {}
    new_ids = [order_id for order_id in orders if order_id not in existing]
    rollup = before.order_rollup if before else None
    folded: list[str] = []
    kept_orders = dict(orders)
    rolled = False
    if len(existing) + len(new_ids) > limits.orders:
        rolled = True
        # Keep the latest `orders_after_fold` of the old and new orders together; fold the rest.
        every = {**existing, **orders}
        by_time = sorted(every, key=lambda order_id: (every[order_id].at, order_id))
        fold = set(by_time[: max(0, len(every) - limits.orders_after_fold)])
        # Removing map entries costs expression length: a profile far over (written before these
        # maxima) shrinks by MAX_FOLDS_PER_WRITE a write.
        folded = [order_id for order_id in by_time if order_id in fold and order_id in existing]
        folded = folded[:MAX_FOLDS_PER_WRITE]
        fold = {order_id for order_id in fold if order_id not in existing or order_id in folded}
        rollup = (rollup or OrderRollup()).plus([every[order_id] for order_id in sorted(fold)])
        kept_orders = {order_id: o for order_id, o in orders.items() if order_id not in fold}
    growth["orders"] = sum(1 for order_id in kept_orders if order_id not in existing) - len(folded)
    return Fitted(
        traits=kept_traits,
        orders=kept_orders,
        bought=kept_bought,
        folded=folded,
        rollup=rollup if rolled else None,
        growth=growth,
    )


def anonymous_id_room(before: Profile | None, claimed_here: int, limits: ProfileLimits = LIMITS) -> int:
    """How many more anonymous ids the customer may be given."""
    have = len(before.anonymous_ids) if before else 0
    return limits.anonymous_ids - have - claimed_here


def within_identity_limits(profile: Profile, limits: ProfileLimits = LIMITS) -> bool:
    """Whether a merged profile keeps every identity on it: a merge that would list more anonymous
    ids or merged profiles than the maxima is not made (the two stay apart, cems.ingest)."""
    return len(profile.anonymous_ids) <= limits.anonymous_ids and len(profile.merged_ids) <= limits.merged_ids


def compacted(profile: Profile, limits: ProfileLimits = LIMITS) -> Profile:
    """`profile` within the maxima (a merge of two profiles may hold more than one may): the first
    traits kept (the merge puts the surviving profile's first), purchase sets trimmed, the oldest
    orders folded into the rollup."""
    fitted = fit(
        profile.traits,
        profile.orders,
        {name: getattr(profile, name) for name in BOUGHT_SETS},
        None,
        limits,
    )
    rollup = profile.order_rollup
    folded = [o for order_id, o in profile.orders.items() if order_id not in fitted.orders]
    if folded:
        rollup = (rollup or OrderRollup()).plus(folded)
    return profile.model_copy(
        update={
            "traits": fitted.traits,
            "orders": fitted.orders,
            "order_rollup": rollup,
            **fitted.bought,
        }
    )

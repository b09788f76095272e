"""The writes ingest plans and a store commits together: profile changes, write batches, the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cems.activity import Increments, folded
from cems.identity import IdentityKey
from cems.lookups import LOOKUP_TRAITS, lookup_actions
from cems.models import (
    Channel,
    ChannelEngagement,
    ChannelState,
    OrderRollup,
    OrderSummary,
    Profile,
    StoredEvent,
)
from cems.profiles import BOUGHT_SETS, fit
from cems.topics import TopicState


@dataclass
class ProfileChange:
    """What a set of messages changes on one profile; written as one Put (new) or one Update."""

    customer_id: str
    is_new: bool
    first_seen_at: datetime
    user_id: str | None = None
    anonymous_ids: set[str] = field(default_factory=set)
    traits: dict[str, Any] = field(default_factory=dict)
    orders: dict[str, OrderSummary] = field(default_factory=dict)
    products_bought: set[str] = field(default_factory=set)
    skus_bought: set[str] = field(default_factory=set)
    categories_bought: set[str] = field(default_factory=set)
    line_user_id: str | None = None
    # The user id may join only a customer with no user id (or this one); false when only aliases
    # claimed it (an alias joins two ids of one person).
    user_id_joins_only_new: bool = False
    # The latest state per channel these messages set (e.g. LINE followed or blocked).
    channels: dict[Channel, ChannelState] = field(default_factory=dict)
    # The latest choice per topic these messages made (the preference centre, cems.topics).
    topics: dict[str, TopicState] = field(default_factory=dict)
    # Engagement these messages add, per channel, day and kind (cems.activity).
    engagement: Increments = field(default_factory=dict)
    # Set by fit_to: the profile's whole engagement after this change (None: it adds none), and
    # whether it was computed from the profile as read. Engagement is written whole, so the write is
    # conditional on what it was computed from: the version read, or, unread, on there being none yet
    # (refused otherwise: the profile comes back, and the next attempt folds into it).
    engagement_after: dict[Channel, ChannelEngagement] | None = None
    engagement_read: bool = False
    # Set by fit_to (cems.profiles): how many entries each collection gains (what the write's size
    # conditions allow for), orders folded into the rollup, and the version that folding read.
    growth: dict[str, int] | None = None
    folded_orders: list[str] = field(default_factory=list)
    order_rollup: OrderRollup | None = None
    expected_version: int | None = None
    # The lookup traits (cems.lookups) of the profile as read, those it had: the write is then
    # conditional on them still being these, and removes their lookups. None: not read, so the write
    # is conditional on each lookup trait it sets being absent or already the value set, and refused
    # (the profile returned, read here on the next attempt) when the customer had another one.
    contact_before: dict[str, Any] | None = None

    def fit_to(self, before: Profile | None) -> None:
        """Keep what fits the profile as it was (None: not read, or new), see cems.profiles.fit."""
        fitted = fit(
            self.traits,
            self.orders,
            {name: getattr(self, name) for name in BOUGHT_SETS},
            before,
        )
        self.traits, self.orders = fitted.traits, fitted.orders
        for name in BOUGHT_SETS:
            setattr(self, name, fitted.bought[name])
        known_ids = before.anonymous_ids if before else set()
        self.growth = {**fitted.growth, "anonymous_ids": len(self.anonymous_ids - known_ids)}
        self.folded_orders, self.order_rollup = fitted.folded, fitted.rollup
        self.expected_version = before.version if before is not None and fitted.rollup is not None else None
        if self.engagement:
            self.engagement_after = folded(before.engagement if before else {}, self.engagement)
            self.engagement_read = before is not None
            if before is not None:
                self.expected_version = before.version
        self.contact_before = (
            None if before is None else {t: before.traits[t] for t in LOOKUP_TRAITS if t in before.traits}
        )

    def lookup_actions(self) -> int:
        """The most lookup writes this change takes (each lookup trait's old item removed, new put)."""
        return lookup_actions(self.traits)

    def is_empty(self) -> bool:
        return not (
            self.is_new
            or self.user_id
            or self.line_user_id
            or self.channels
            or self.topics
            or self.engagement
            or self.anonymous_ids
            or self.traits
            or self.orders
            or self.products_bought
            or self.skus_bought
            or self.categories_bought
        )


@dataclass
class WriteBatch:
    """Writes that land together or not at all (one DynamoDB transaction)."""

    events: list[StoredEvent] = field(default_factory=list)
    claims: dict[IdentityKey, str] = field(default_factory=dict)
    profiles: dict[str, ProfileChange] = field(default_factory=dict)

    def action_count(self) -> int:
        # Each event is two actions: the event and its de-duplication marker; a profile change is one,
        # and its contact lookups (cems.lookups) as many as it may remove and put.
        return (
            2 * len(self.events)
            + len(self.claims)
            + sum(1 + change.lookup_actions() for change in self.profiles.values() if not change.is_empty())
        )


@dataclass(frozen=True)
class CommitOutcome:
    committed: bool
    duplicate_message_ids: frozenset[str] = frozenset()
    # Profiles whose write was refused, as they were (merged away, or a collection at its maximum):
    # the next attempt fits its change to them (cems.profiles).
    refused_profiles: tuple[Profile, ...] = ()

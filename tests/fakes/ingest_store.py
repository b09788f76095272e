"""An in-memory IngestStorePort: dictionaries with the DynamoDB ingest store's semantics.

Each operation is all-or-nothing as the store's transactions are, and refuses what their conditions
refuse: a messageId stored before (its de-duplication marker), an identity claimed before, a new
profile that exists, a profile merged away, a collection past its maximum (cems.profiles), a fold
that read an older version, a user id joining a customer that has another. A refused profile is
returned as it was, as DynamoDB's ALL_OLD returns it. Reads return copies, so a caller never
changes what is stored without a write.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from cems.identity import IdentityKey, identities_of
from cems.lookups import LOOKUP_TRAITS, ContactKind, contact_hashes, lookup_changes
from cems.models import Profile, StoredEvent
from cems.profiles import BOUGHT_SETS, LIMITS
from cems.writes import CommitOutcome, ProfileChange, WriteBatch

# The collections a profile write may grow, with their maxima: what the store's size() conditions check.
COLLECTION_LIMITS = {
    "traits": LIMITS.traits,
    "anonymous_ids": LIMITS.anonymous_ids,
    "orders": LIMITS.orders,
    **{name: LIMITS.bought for name in BOUGHT_SETS},
}


class InMemoryIngestStore:
    """Identities, profiles, events and de-duplication markers in dictionaries."""

    def __init__(self) -> None:
        self.identities: dict[IdentityKey, str] = {}
        self.stored_profiles: dict[str, Profile] = {}
        # (customer_id, ISO time#messageId): the Events table's key, so a re-put replaces.
        self.events: dict[tuple[str, str], StoredEvent] = {}
        self.markers: set[tuple[str, str]] = set()
        # Contact lookups (cems.lookups): (kind, hashed value) -> the customer ids with an item.
        self.lookups: dict[tuple[ContactKind, str], set[str]] = {}

    # -- reading ------------------------------------------------------------------------------------

    def resolve_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, str]:
        return {key: self.identities[key] for key in set(keys) if key in self.identities}

    def profiles(self, customer_ids: Sequence[str]) -> dict[str, Profile]:
        return {
            cid: self.stored_profiles[cid].model_copy(deep=True)
            for cid in dict.fromkeys(customer_ids)
            if cid in self.stored_profiles
        }

    def profile(self, customer_id: str) -> Profile | None:
        """The profile, following merge links (as CustomerStore.profile does)."""
        seen: set[str] = set()
        profile = self.stored_profiles.get(customer_id)
        while profile is not None and profile.merged_into and profile.merged_into not in seen:
            seen.add(profile.merged_into)
            profile = self.stored_profiles.get(profile.merged_into)
        return None if profile is None else profile.model_copy(deep=True)

    def events_of(self, customer_id: str) -> list[StoredEvent]:
        return [event for (cid, _), event in sorted(self.events.items()) if cid == customer_id]

    # -- writing ------------------------------------------------------------------------------------

    def commit(self, batch: WriteBatch, at: datetime) -> CommitOutcome:
        duplicates = frozenset(
            e.message_id for e in batch.events if (e.site_id, e.message_id) in self.markers
        )
        claimed = any(key in self.identities for key in batch.claims)
        changes = [change for change in batch.profiles.values() if not change.is_empty()]
        refused: list[Profile] = []
        failed = bool(duplicates) or claimed
        for change in changes:
            if change.growth is None:
                change.fit_to(None)
            before = self.stored_profiles.get(change.customer_id)
            if not self._allows(change, before):
                failed = True
                if before is not None:
                    refused.append(before.model_copy(deep=True))
        if failed:
            return CommitOutcome(
                committed=False, duplicate_message_ids=duplicates, refused_profiles=tuple(refused)
            )
        for event in batch.events:
            self.events[(event.customer_id, f"{event.timestamp.isoformat()}#{event.message_id}")] = event
            self.markers.add((event.site_id, event.message_id))
        self.identities.update(batch.claims)
        for change in changes:
            before = self.stored_profiles.get(change.customer_id)
            removed, put = lookup_changes(change.traits, before.traits if before is not None else {})
            self._relookup(change.customer_id, removed, put)
            self.stored_profiles[change.customer_id] = _written(change, before, at)
        return CommitOutcome(committed=True)

    def customers_with_contact(self, kind: ContactKind, hashed_value: str) -> list[str]:
        return sorted(self.lookups.get((kind, hashed_value), set()))

    def _relookup(
        self, customer_id: str, removed: dict[ContactKind, str], put: dict[ContactKind, str]
    ) -> None:
        for kind, hashed in removed.items():
            self.lookups.get((kind, hashed), set()).discard(customer_id)
        for kind, hashed in put.items():
            self.lookups.setdefault((kind, hashed), set()).add(customer_id)

    def merge(self, merged: Profile, source: Profile, at: datetime) -> bool:
        target_now = self.stored_profiles.get(merged.customer_id)
        source_now = self.stored_profiles.get(source.customer_id)
        if target_now is None or source_now is None:
            return False
        if target_now.version != merged.version or source_now.version != source.version:
            return False
        self.stored_profiles[merged.customer_id] = merged.model_copy(
            deep=True, update={"version": merged.version + 1}
        )
        self.stored_profiles[source.customer_id] = source_now.model_copy(
            update={"merged_into": merged.customer_id, "updated_at": at, "version": source.version + 1}
        )
        for key in identities_of(source):
            self.identities[key] = merged.customer_id
        # The merged-away customer's lookups move to the surviving one (CustomerStore's merge).
        moved = contact_hashes(source.traits)
        self._relookup(source.customer_id, moved, {})
        self._relookup(merged.customer_id, {}, {**contact_hashes(merged.traits), **moved})
        return True

    def move_identity(self, key: IdentityKey, source_id: str, target_id: str, at: datetime) -> bool:
        source = self.stored_profiles.get(source_id)
        target = self.stored_profiles.get(target_id)
        # DynamoDB would create a bare item for a missing profile; ingest moves only between
        # profiles it has read, so a fake asked otherwise says so rather than guess.
        assert source is not None and target is not None, "move_identity between existing profiles only"
        if self.identities.get(key) != source_id or len(target.anonymous_ids) >= LIMITS.anonymous_ids:
            return False
        self.identities[key] = target_id
        self.stored_profiles[source_id] = source.model_copy(
            update={"anonymous_ids": source.anonymous_ids - {key.value}, "version": source.version + 1}
        )
        self.stored_profiles[target_id] = target.model_copy(
            update={"anonymous_ids": target.anonymous_ids | {key.value}, "version": target.version + 1}
        )
        return True

    # -- the store's conditions and updates ---------------------------------------------------------

    @staticmethod
    def _allows(change: ProfileChange, before: Profile | None) -> bool:
        if change.is_new:
            return before is None
        if before is None or before.merged_into:
            return False
        for attribute, limit in COLLECTION_LIMITS.items():
            gained = (change.growth or {}).get(attribute, 0)
            if gained > 0 and len(getattr(before, attribute)) > limit - gained:
                return False
        if change.expected_version is not None and before.version != change.expected_version:
            return False
        if change.engagement_after is not None and not change.engagement_read and before.engagement:
            return False  # written whole, folded from nothing: only onto a profile with none
        joins_another = before.user_id is not None and before.user_id != change.user_id
        if change.user_id and change.user_id_joins_only_new and joins_another:
            return False
        return _contacts_as_read(change, before)


def _contacts_as_read(change: ProfileChange, before: Profile) -> bool:
    """The store's contact conditions: each lookup trait the change sets is as read (`contact_before`)
    or, unread, absent or already the value set."""
    for trait in LOOKUP_TRAITS:
        if trait not in change.traits:
            continue
        expected = change.contact_before
        if expected is None:
            if trait in before.traits and before.traits[trait] != change.traits[trait]:
                return False
        elif (trait in before.traits) != (trait in expected) or before.traits.get(trait) != expected.get(
            trait
        ):
            return False
    return True


def _written(change: ProfileChange, before: Profile | None, at: datetime) -> Profile:
    """The profile after the store's Put (new) or Update (SET by key, ADD to sets, REMOVE folded)."""
    if change.is_new or before is None:
        return Profile(
            customer_id=change.customer_id,
            user_id=change.user_id,
            anonymous_ids=set(change.anonymous_ids),
            traits=dict(change.traits),
            orders=dict(change.orders),
            order_rollup=change.order_rollup,
            products_bought=set(change.products_bought),
            skus_bought=set(change.skus_bought),
            categories_bought=set(change.categories_bought),
            line_user_id=change.line_user_id,
            channels=dict(change.channels),
            topics=dict(change.topics),
            engagement=dict(change.engagement_after or {}),
            first_seen_at=change.first_seen_at,
            updated_at=at,
            version=1,
        )
    orders = {**before.orders, **change.orders}
    for order_id in change.folded_orders:
        orders.pop(order_id, None)
    update = {
        "updated_at": at,
        "version": before.version + 1,
        "user_id": before.user_id or change.user_id,
        "line_user_id": before.line_user_id or change.line_user_id,
        "channels": {**before.channels, **change.channels},
        "topics": {**before.topics, **change.topics},
        "engagement": change.engagement_after if change.engagement_after is not None else before.engagement,
        "traits": {**before.traits, **change.traits},
        "orders": orders,
        "order_rollup": change.order_rollup if change.order_rollup is not None else before.order_rollup,
        "anonymous_ids": before.anonymous_ids | change.anonymous_ids,
        **{name: getattr(before, name) | getattr(change, name) for name in BOUGHT_SETS},
    }
    return before.model_copy(deep=True, update=update)

"""Collecting messages: resolve who each one is about, update profiles, store each event once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cems.config import MAX_TRANSACTION_ACTIONS
from cems.errors import ClientError
from cems.identity import IdentityKey, IdentityKind, identity_keys, keys_to_claim, may_merge, merge_profiles
from cems.lookups import lookup_actions
from cems.models import (
    EARLIEST_TIME,
    LATEST_TIME,
    MessageType,
    Profile,
    SegmentMessage,
    Site,
    StoredEvent,
)
from cems.ports import IngestStorePort as IngestStorePort  # what Ingestor writes through
from cems.profile_facts import learn
from cems.profiles import anonymous_id_room, compacted, within_identity_limits
from cems.trust import USER_HASH_FIELD, Judged, Proof, judge
from cems.writes import ProfileChange, WriteBatch

# Each round re-reads identities; rounds repeat only on a merge or a race with another writer.
MAX_ROUNDS = 8


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int
    # The messageIds stored by this call: a caller acts on these (e.g. replies on LINE) and never on a
    # duplicate, so a re-sent or redelivered message has no second effect.
    stored_ids: frozenset[str] = frozenset()
    # Messages whose userId came without proof (kept as claims on the visitor's events): the answer
    # warns about them, so a shop's developer notices the missing user hash.
    unverified: int = 0


def new_customer_id() -> str:
    return f"cus_{uuid.uuid4().hex}"


def event_time(message: SegmentMessage, received_at: datetime) -> datetime:
    """When it happened, by the server's clock: Segment shifts `timestamp` by the client's clock skew,
    measured as receivedAt - sentAt."""
    happened = message.timestamp or message.original_timestamp
    if happened is None:
        return received_at
    if message.sent_at is not None:
        happened += received_at - message.sent_at
    # A wildly wrong clock can move the time outside what a message may carry: keep it inside.
    return min(max(happened, EARLIEST_TIME), LATEST_TIME - timedelta(microseconds=1))


@dataclass(frozen=True)
class MergeNeeded:
    """Before this message can be stored, the customer `source` must become part of `target`."""

    source: str
    target: str
    moving: list[IdentityKey]
    # A server's (or CEMS's own) message may join any two customers of one person; a browser's
    # proven user only pulls in visitors nobody has claimed (identity.may_merge).
    trusted: bool


@dataclass(frozen=True)
class Believed:
    """A message as CEMS believes it (cems.trust): an unproven userId removed from it (and kept as
    `judged.claimed_user_id`), the user hash taken out of its context."""

    message: SegmentMessage
    judged: Judged


def believe(site: Site, message: SegmentMessage, at: datetime, index: int | None) -> Believed:
    """Judge a message's proof, and strip from it what is not believed. Raises ClientError(401) for a
    user hash that does not verify, or a userId with no hash and nothing else to place it on."""
    prefix = f"batch[{index}]." if index is not None else ""
    context = message.context
    given_hash = context.get(USER_HASH_FIELD)
    judged = judge(
        site,
        message.user_id,
        given_hash,
        at,
        has_anonymous_id=message.anonymous_id is not None,
        field=f"{prefix}context.{USER_HASH_FIELD}",
        index=index,
    )
    update: dict[str, object] = {}
    if USER_HASH_FIELD in context:
        update["context"] = {k: v for k, v in context.items() if k != USER_HASH_FIELD}
    if judged.proof is Proof.CLAIMED:
        update["user_id"] = None
    if message.type is MessageType.ALIAS and judged.proof is Proof.CLAIMED:
        # An alias to an unproven user joins nothing: it is kept as an event of the visitor.
        update["previous_id"] = None
    return Believed(message.model_copy(update=update) if update else message, judged)


@dataclass
class _Planner:
    """Turns messages into transactions, tracking identities the batch itself creates."""

    site: Site
    received_at: datetime
    identities: dict[IdentityKey, str]
    # Pairs of customers found to be different people (see identity.may_merge): never merged again.
    kept_apart: set[tuple[str, str]]
    # Profiles as an earlier attempt found them (a write refused): changes are fitted to them.
    known: dict[str, Profile] = field(default_factory=dict)
    batches: list[WriteBatch] = field(default_factory=lambda: [WriteBatch()])
    _anonymous_claims: dict[str, int] = field(default_factory=dict)
    # Browsers to move, once this plan is written, to the new customer of a user who signed in on
    # them after another user: (the anonymous id, from customer, to customer).
    moves: list[tuple[IdentityKey, str, str]] = field(default_factory=list)

    def finished(self) -> list[WriteBatch]:
        """The batches, each profile change fitted to what is known of its profile (cems.profiles)."""
        for batch in self.batches:
            for change in batch.profiles.values():
                change.fit_to(None if change.is_new else self.known.get(change.customer_id))
        return self.batches

    def place(self, believed: Believed, message_id: str) -> MergeNeeded | None:
        message, judged = believed.message, believed.judged
        keys = identity_keys(message, trusted=judged.trusted)
        owners = list(dict.fromkeys(self.identities[k] for k in keys if k in self.identities))
        moving_from = None
        if len(owners) == 1 and self._signed_in_elsewhere(message, owners[0]):
            # A new user signs in on a browser another signed-in customer used last (a shared
            # computer): the new user is a customer of their own, and the browser moves to them
            # (the newest sign-in; identity.may_merge keeps the two customers apart).
            moving_from, owners = owners[0], []
        if len(owners) > 1 and (owners[1], owners[0]) not in self.kept_apart:
            # keys[0] is the user id (or the alias's new id): the customer it belongs to is kept.
            source, target = owners[1], owners[0]
            moving = [k for k in keys if self.identities.get(k) == source]
            return MergeNeeded(source=source, target=target, moving=moving, trusted=judged.trusted)
        customer_id = owners[0] if owners else new_customer_id()
        at = event_time(message, self.received_at)
        claims = [
            key
            for key in keys_to_claim(message, set(self.identities), trusted=judged.trusted)
            if key.kind is not IdentityKind.ANONYMOUS or self._room_for_anonymous_id(customer_id)
        ]
        event = StoredEvent(
            customer_id=customer_id,
            site_id=self.site.site_id,
            type=message.type,
            message_id=message_id,
            event=message.event,
            name=message.name,
            category=message.category,
            anonymous_id=message.anonymous_id,
            user_id=message.user_id,
            previous_id=message.previous_id,
            line_user_id=message.line_user_id,
            proof=judged.proof,
            claimed_user_id=judged.claimed_user_id,
            timestamp=at,
            original_timestamp=message.timestamp or message.original_timestamp,
            sent_at=message.sent_at,
            received_at=self.received_at,
            properties=message.properties,
            traits=message.traits,
            context=message.context,
        )
        batch = self._batch_with_room(customer_id, len(claims), message.traits)
        batch.events.append(event)
        change = batch.profiles.get(customer_id)
        if change is None:
            # A customer first seen in this request is created by the first transaction naming it.
            change = ProfileChange(customer_id=customer_id, is_new=not owners, first_seen_at=at)
            batch.profiles[customer_id] = change
        for key in claims:
            batch.claims[key] = customer_id
            self.identities[key] = customer_id
            if key.kind is IdentityKind.USER:
                change.user_id = key.value
                # An alias says the two ids are one person; any other message only that this user
                # uses this browser, which must not make them part of another signed-in customer.
                change.user_id_joins_only_new |= message.type is not MessageType.ALIAS
            elif key.kind is IdentityKind.LINE:
                change.line_user_id = key.value
            else:
                change.anonymous_ids.add(key.value)
        learn(change, event)
        if moving_from is not None and message.anonymous_id:
            key = IdentityKey(IdentityKind.ANONYMOUS, message.anonymous_id)
            self.moves.append((key, moving_from, customer_id))
            self.identities[key] = customer_id
        return None

    def _signed_in_elsewhere(self, message: SegmentMessage, owner: str) -> bool:
        """Whether the message's user id is new and its only known identity (the browser) belongs to
        a customer who is another user (learnt from a refused write, see CustomerStore.profile_action)."""
        if message.type is MessageType.ALIAS or not message.user_id:
            return False
        if IdentityKey(IdentityKind.USER, message.user_id) in self.identities:
            return False
        before = self.known.get(owner)
        return before is not None and before.user_id is not None and before.user_id != message.user_id

    def _room_for_anonymous_id(self, customer_id: str) -> bool:
        """Whether another browser may be claimed for this customer (at most LIMITS.anonymous_ids:
        one beyond is not claimed, and its messages that name the customer still reach them)."""
        claimed = self._anonymous_claims.get(customer_id, 0)
        if anonymous_id_room(self.known.get(customer_id), claimed) <= 0:
            return False
        self._anonymous_claims[customer_id] = claimed + 1
        return True

    def _batch_with_room(self, customer_id: str, claims: int, traits: Mapping[str, Any]) -> WriteBatch:
        batch = self.batches[-1]
        change = batch.profiles.get(customer_id)
        profile_op = 0 if change is not None else 1
        # A contact trait the change does not set yet may remove and put a lookup (cems.lookups).
        lookups = lookup_actions({k: v for k, v in traits.items() if not change or k not in change.traits})
        if batch.action_count() + 2 + claims + profile_op + lookups > MAX_TRANSACTION_ACTIONS:
            batch = WriteBatch()
            self.batches.append(batch)
        return batch


class Ingestor:
    """Stores a validated request's messages, each exactly once, with identities resolved."""

    def __init__(self, store: IngestStorePort) -> None:
        self.store = store

    def ingest(self, site: Site, messages: list[SegmentMessage], received_at: datetime) -> IngestResult:
        # Judged first, for the whole request: a forged proof rejects it before anything is stored.
        believed = [
            believe(site, m, received_at, i if len(messages) > 1 else None) for i, m in enumerate(messages)
        ]
        # A message without messageId cannot be recognised when re-sent; give it a fresh one.
        by_id: dict[str, Believed] = {}
        for item in believed:
            by_id.setdefault(item.message.message_id or f"cems-{uuid.uuid4()}", item)
        in_request_duplicates = len(messages) - len(by_id)
        done: set[str] = set()
        duplicates: set[str] = set()
        kept_apart: set[tuple[str, str]] = set()
        known: dict[str, Profile] = {}
        for _ in range(MAX_ROUNDS):
            remaining = [(mid, b) for mid, b in by_id.items() if mid not in done and mid not in duplicates]
            if not remaining:
                return IngestResult(
                    stored=len(done),
                    duplicates=len(duplicates) + in_request_duplicates,
                    stored_ids=frozenset(done),
                    unverified=sum(1 for b in believed if b.judged.proof is Proof.CLAIMED),
                )
            keys = [k for _, b in remaining for k in identity_keys(b.message, trusted=b.judged.trusted)]
            planner = _Planner(site, received_at, self.store.resolve_identities(keys), kept_apart, known)
            merge = None
            for message_id, item in remaining:
                merge = planner.place(item, message_id)
                if merge:
                    break
            if not self._commit_all(planner.finished(), received_at, done, duplicates, known):
                continue
            for key, source_id, target_id in planner.moves:
                self.store.move_identity(key, source_id, target_id, received_at)
            if merge and not self._merge(merge, received_at):
                kept_apart.add((merge.source, merge.target))
        raise ClientError(
            503,
            "busy",
            "the same customers are being changed concurrently; retry shortly",
            headers={"Retry-After": "1"},
        )

    def _commit_all(
        self,
        batches: list[WriteBatch],
        at: datetime,
        done: set[str],
        duplicates: set[str],
        known: dict[str, Profile],
    ) -> bool:
        for batch in batches:
            outcome = self.store.commit(batch, at)
            if not outcome.committed:
                duplicates.update(outcome.duplicate_message_ids)
                known.update((p.customer_id, p) for p in outcome.refused_profiles)
                return False
            done.update(e.message_id for e in batch.events)
        return True

    def _merge(self, merge: MergeNeeded, at: datetime) -> bool:
        """Merge, or move only the anonymous ids; False when the two must stay apart."""
        profiles = self.store.profiles([merge.source, merge.target])
        source, target = profiles.get(merge.source), profiles.get(merge.target)
        if source is None or target is None or source.merged_into:
            return True  # already merged, or mid-creation by another writer: the next round re-resolves
        merged = merge_profiles(target, source, at)
        if may_merge(source, target, trusted=merge.trusted) and within_identity_limits(merged):
            self.store.merge(compacted(merged), source, at)
            return True
        for key in merge.moving:
            if key.kind is IdentityKind.ANONYMOUS:
                self.store.move_identity(key, source.customer_id, target.customer_id, at)
        return False

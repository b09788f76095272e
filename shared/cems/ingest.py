"""Collecting messages: resolve who each one is about, update profiles, store each event once."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from cems.config import MAX_TRANSACTION_ACTIONS
from cems.engagement import ENGAGE_SOURCE_ID, EngagementEvent
from cems.errors import ClientError
from cems.identity import identity_keys, keys_to_claim, may_merge, merge_profiles
from cems.models import (
    ORDER_COMPLETED,
    Channel,
    ChannelState,
    LineEvent,
    MessageType,
    OrderCompleted,
    OrderSummary,
    Profile,
    SegmentMessage,
    Site,
    StoredEvent,
)
from cems.store import CommitOutcome, IdentityKey, IdentityKind, ProfileChange, WriteBatch

# Each round re-reads identities; rounds repeat only on a merge or a race with another writer.
MAX_ROUNDS = 8


class IngestStorePort(Protocol):
    def resolve_identities(self, keys: list[IdentityKey]) -> dict[IdentityKey, str]: ...
    def profiles(self, customer_ids: list[str]) -> dict[str, Profile]: ...
    def commit(self, batch: WriteBatch, at: datetime) -> CommitOutcome: ...
    def merge(self, merged: Profile, source: Profile, at: datetime) -> bool: ...
    def move_identity(self, key: IdentityKey, source: Profile, target: Profile, at: datetime) -> bool: ...


@dataclass(frozen=True)
class IngestResult:
    stored: int
    duplicates: int
    # The messageIds stored by this call: a caller acts on these (e.g. replies on LINE) and never on a
    # duplicate, so a re-sent or redelivered message has no second effect.
    stored_ids: frozenset[str] = frozenset()


def new_customer_id() -> str:
    return f"cus_{uuid.uuid4().hex}"


def event_time(message: SegmentMessage, received_at: datetime) -> datetime:
    """When it happened, by the server's clock: Segment shifts `timestamp` by the client's clock skew,
    measured as receivedAt - sentAt."""
    happened = message.timestamp or message.original_timestamp
    if happened is None:
        return received_at
    if message.sent_at is not None:
        return happened + (received_at - message.sent_at)
    return happened


@dataclass(frozen=True)
class MergeNeeded:
    """Before this message can be stored, the customer `source` must become part of `target`."""

    source: str
    target: str
    moving: list[IdentityKey]


@dataclass
class _Planner:
    """Turns messages into transactions, tracking identities the batch itself creates."""

    site: Site
    received_at: datetime
    identities: dict[IdentityKey, str]
    # Pairs of customers found to be different people (see identity.may_merge): never merged again.
    kept_apart: set[tuple[str, str]]
    batches: list[WriteBatch] = field(default_factory=lambda: [WriteBatch()])

    def place(self, message: SegmentMessage, message_id: str) -> MergeNeeded | None:
        keys = identity_keys(message)
        owners = list(dict.fromkeys(self.identities[k] for k in keys if k in self.identities))
        if len(owners) > 1 and (owners[1], owners[0]) not in self.kept_apart:
            # keys[0] is the user id (or the alias's new id): the customer it belongs to is kept.
            source, target = owners[1], owners[0]
            moving = [k for k in keys if self.identities.get(k) == source]
            return MergeNeeded(source=source, target=target, moving=moving)
        customer_id = owners[0] if owners else new_customer_id()
        at = event_time(message, self.received_at)
        claims = keys_to_claim(message, set(self.identities))
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
            timestamp=at,
            original_timestamp=message.timestamp or message.original_timestamp,
            sent_at=message.sent_at,
            received_at=self.received_at,
            properties=message.properties,
            traits=message.traits,
            context=message.context,
        )
        batch = self._batch_with_room(customer_id, len(claims))
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
            elif key.kind is IdentityKind.LINE:
                change.line_user_id = key.value
            else:
                change.anonymous_ids.add(key.value)
        _apply_facts(change, message, message_id, at, self.site.site_id)
        return None

    def _batch_with_room(self, customer_id: str, claims: int) -> WriteBatch:
        batch = self.batches[-1]
        profile_op = 0 if customer_id in batch.profiles else 1
        if batch.action_count() + 2 + claims + profile_op > MAX_TRANSACTION_ACTIONS:
            batch = WriteBatch()
            self.batches.append(batch)
        return batch


def _apply_facts(
    change: ProfileChange, message: SegmentMessage, message_id: str, at: datetime, site_id: str
) -> None:
    """What a message teaches about the customer: traits from identify, purchase facts from orders,
    channel states from LINE and engagement events."""
    if message.type is MessageType.IDENTIFY and message.traits:
        change.traits.update(message.traits)
        opt_in = message.traits.get(EMAIL_OPT_IN_TRAIT)
        if isinstance(opt_in, bool):
            # The consent record the Act on Specified Electronic Mail asks for: whether, and when (the
            # identify event itself is stored too, with where it came from).
            _set_channel(
                change,
                Channel.EMAIL,
                ChannelState(reachable=True, consent=opt_in, updated_at=at, reason="identify"),
            )
    if message.type is MessageType.TRACK and message.event == ORDER_COMPLETED:
        order = OrderCompleted.model_validate(message.properties)
        product_ids = [p.product_id or p.sku for p in order.products]
        # Keyed by order id, so the same order sent again (even with a new messageId) counts once.
        change.orders[order.order_id or message_id] = OrderSummary(
            at=at, amount=order.amount(), currency=order.currency, product_ids=[p for p in product_ids if p]
        )
        change.products_bought.update(p.product_id for p in order.products if p.product_id)
        change.skus_bought.update(p.sku for p in order.products if p.sku)
        change.categories_bought.update(p.category for p in order.products if p.category)
    if message.line_user_id and message.type is MessageType.TRACK:
        _apply_line_facts(change, message, at)
    if site_id == ENGAGE_SOURCE_ID and message.type is MessageType.TRACK:
        _apply_email_facts(change, message, at)


def _set_channel(change: ProfileChange, channel: Channel, state: ChannelState) -> None:
    """Within one request the latest event wins, whatever order it was listed in."""
    current = change.channels.get(channel)
    if current is None or current.updated_at <= state.updated_at:
        change.channels[channel] = state


# The identify trait that records email marketing consent (a bool; anything else is only a trait).
EMAIL_OPT_IN_TRAIT = "email_opt_in"
# What unsubscribing, a hard bounce and a complaint mean for the email channel: (reachable, consent, reason).
_EMAIL_CHANNEL_EVENTS = {
    EngagementEvent.UNSUBSCRIBED.value: (True, False, "unsubscribed"),
    EngagementEvent.BOUNCED.value: (False, False, "bounced"),
    EngagementEvent.COMPLAINED.value: (False, False, "complained"),
}


def _apply_email_facts(change: ProfileChange, message: SegmentMessage, at: datetime) -> None:
    """Engagement events (only the `engage` source, which no site can be): the email channel state.
    A site sending `Email Unsubscribed` gets an ordinary event that changes no channel."""
    rule = _EMAIL_CHANNEL_EVENTS.get(message.event or "")
    if rule is None:
        return
    if message.event == EngagementEvent.BOUNCED.value and message.properties.get("bounce_type") not in (
        None,
        "Permanent",
    ):
        return  # only a permanent bounce makes the address unreachable
    reachable, consent, reason = rule
    _set_channel(
        change,
        Channel.EMAIL,
        ChannelState(reachable=reachable, consent=consent, updated_at=at, reason=reason),
    )


# What following and unfollowing (blocking) the LINE account means for the LINE channel.
_LINE_CHANNEL_EVENTS = {
    LineEvent.FOLLOW.value: (True, True),
    LineEvent.UNFOLLOW.value: (False, False),  # an opt-out: nothing more is sent on LINE
}


def _apply_line_facts(change: ProfileChange, message: SegmentMessage, at: datetime) -> None:
    """LINE events (only the webhook sets line_user_id): channel state and survey answers."""
    reachable_consent = _LINE_CHANNEL_EVENTS.get(message.event or "")
    if reachable_consent is not None:
        current = change.channels.get(Channel.LINE)
        # Within one request the latest event wins, whatever order LINE listed them in.
        if current is None or current.updated_at <= at:
            reachable, consent = reachable_consent
            change.channels[Channel.LINE] = ChannelState(
                reachable=reachable, consent=consent, updated_at=at, reason=message.event
            )
    if message.event == LineEvent.POSTBACK.value:
        survey = message.properties.get("survey")
        if isinstance(survey, dict) and survey.get("question") and "answer" in survey:
            change.traits[f"survey.{survey['question']}"] = survey["answer"]


class Ingestor:
    """Stores a validated request's messages, each exactly once, with identities resolved."""

    def __init__(self, store: IngestStorePort) -> None:
        self.store = store

    def ingest(self, site: Site, messages: list[SegmentMessage], received_at: datetime) -> IngestResult:
        # A message without messageId cannot be recognised when re-sent; give it a fresh one.
        by_id: dict[str, SegmentMessage] = {}
        for message in messages:
            by_id.setdefault(message.message_id or f"cems-{uuid.uuid4()}", message)
        in_request_duplicates = len(messages) - len(by_id)
        done: set[str] = set()
        duplicates: set[str] = set()
        kept_apart: set[tuple[str, str]] = set()
        for _ in range(MAX_ROUNDS):
            remaining = [(mid, m) for mid, m in by_id.items() if mid not in done and mid not in duplicates]
            if not remaining:
                return IngestResult(
                    stored=len(done),
                    duplicates=len(duplicates) + in_request_duplicates,
                    stored_ids=frozenset(done),
                )
            keys = [k for _, m in remaining for k in identity_keys(m)]
            planner = _Planner(site, received_at, self.store.resolve_identities(keys), kept_apart)
            merge = None
            for message_id, message in remaining:
                merge = planner.place(message, message_id)
                if merge:
                    break
            if not self._commit_all(planner.batches, received_at, done, duplicates):
                continue
            if merge and not self._merge(merge, received_at):
                kept_apart.add((merge.source, merge.target))
        raise ClientError(
            503,
            "busy",
            "the same customers are being changed concurrently; retry shortly",
            headers={"Retry-After": "1"},
        )

    def _commit_all(
        self, batches: list[WriteBatch], at: datetime, done: set[str], duplicates: set[str]
    ) -> bool:
        for batch in batches:
            outcome = self.store.commit(batch, at)
            if not outcome.committed:
                duplicates.update(outcome.duplicate_message_ids)
                return False
            done.update(e.message_id for e in batch.events)
        return True

    def _merge(self, merge: MergeNeeded, at: datetime) -> bool:
        """Merge, or move only the anonymous ids; False when the two must stay apart."""
        profiles = self.store.profiles([merge.source, merge.target])
        source, target = profiles.get(merge.source), profiles.get(merge.target)
        if source is None or target is None or source.merged_into:
            return True  # already merged, or mid-creation by another writer: the next round re-resolves
        if may_merge(source, target):
            self.store.merge(merge_profiles(target, source, at), source, at)
            return True
        for key in merge.moving:
            if key.kind is IdentityKind.ANONYMOUS:
                self.store.move_identity(key, source, target, at)
        return False

"""The profile facts rule set: what one stored event teaches about its customer, for ingest and simulate.

`learn` is the one place that decides how an event changes a profile: traits from identify (as far
as its proof goes, cems.trust), purchase facts from `Order Completed`, the LINE channel from follow
and unfollow, the email channel from engage's consent, unsubscribe, bounce and complaint events, and
the topics left or joined on engage's preference page (cems.topics).
Ingest (cems.ingest) gathers what `learn` says into the change it writes; `cems scenario simulate`
lays it over the profile in memory with `apply_event`, bounded as the store bounds a write
(cems.profiles), so a simulation cannot come to believe something production would not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cems.activity import Increments, add_engagement, folded
from cems.engagement import ENGAGE_SOURCE_ID, EngagementEvent
from cems.models import (
    ORDER_COMPLETED,
    Channel,
    ChannelState,
    EngagementKind,
    LineEvent,
    MessageType,
    OrderCompleted,
    OrderSummary,
    Profile,
    StoredEvent,
    address_hash,
)
from cems.profiles import BOUGHT_SETS, fit
from cems.topics import TOPIC_ID_PATTERN, TopicState
from cems.trust import CONTACT_TRAITS, EMAIL_OPT_IN_TRAIT, Judged, Proof


class FactsSink(Protocol):
    """Where learnt facts gather: ingest's ProfileChange (one write), or `Facts` (one event)."""

    traits: dict[str, Any]
    orders: dict[str, OrderSummary]
    products_bought: set[str]
    skus_bought: set[str]
    categories_bought: set[str]
    channels: dict[Channel, ChannelState]
    topics: dict[str, TopicState]
    engagement: Increments


@dataclass
class Facts:
    """What events taught, not yet laid over a profile."""

    traits: dict[str, Any] = field(default_factory=dict)
    orders: dict[str, OrderSummary] = field(default_factory=dict)
    products_bought: set[str] = field(default_factory=set)
    skus_bought: set[str] = field(default_factory=set)
    categories_bought: set[str] = field(default_factory=set)
    channels: dict[Channel, ChannelState] = field(default_factory=dict)
    topics: dict[str, TopicState] = field(default_factory=dict)
    engagement: Increments = field(default_factory=dict)


def judged_of(event: StoredEvent) -> Judged:
    """The proof an event was stored with. An event stored before proofs were recorded is believed
    as little as possible: it may change nothing a known user alone may change."""
    return Judged(Proof(event.proof) if event.proof else Proof.ANONYMOUS)


def learn(facts: FactsSink, event: StoredEvent) -> None:
    """What a stored event teaches about the customer, added to `facts`: traits from identify,
    purchase facts from orders, channel states from LINE and engagement events; each only as far as
    its proof goes (cems.trust)."""
    judged = judged_of(event)
    at = event.timestamp
    if event.type is MessageType.IDENTIFY and event.traits:
        _learn_traits(facts, event.traits, at, event.site_id, judged)
    if event.type is MessageType.TRACK and event.event == ORDER_COMPLETED:
        order = OrderCompleted.model_validate(event.properties)
        # Keyed by order id, so the same order sent again (even with a new messageId) counts once.
        # Its products are in the purchase sets below, not repeated per order (bounded profiles).
        facts.orders[order.order_id or event.message_id] = OrderSummary(
            at=at, amount=order.amount(), currency=order.currency
        )
        facts.products_bought.update(p.product_id for p in order.products if p.product_id)
        facts.skus_bought.update(p.sku for p in order.products if p.sku)
        facts.categories_bought.update(p.category for p in order.products if p.category)
    if event.line_user_id and event.type is MessageType.TRACK:
        _learn_line(facts, event, at)
    if event.site_id == ENGAGE_SOURCE_ID and event.type is MessageType.TRACK:
        _learn_email(facts, event, at)
        _learn_engagement(facts, event, at)
        _learn_topic(facts, event, at)


def _learn_traits(
    facts: FactsSink, traits: dict[str, Any], at: datetime, site_id: str, judged: Judged
) -> None:
    """Traits by proof. Contact traits and consent need a known user: a claim or an anonymous
    visitor's identify keeps them on its event only. Email consent is asserted only by a server; a
    proven user's own opt-in is confirmed by mail first (double opt-in: the trigger function sends
    the confirmation for the stored identify, cems.consent), while an opt-out counts at once."""
    if not judged.knows_user:
        traits = {k: v for k, v in traits.items() if k not in CONTACT_TRAITS and k != EMAIL_OPT_IN_TRAIT}
    facts.traits.update(traits)
    opt_in = traits.get(EMAIL_OPT_IN_TRAIT)
    if not isinstance(opt_in, bool):
        return
    if judged.trusted or opt_in is False:
        # The consent record the Act on Specified Electronic Mail asks for: whether, when, and from
        # where (the identify event itself is stored too). Consent is for the address it names.
        email = traits.get("email")
        _set_channel(
            facts,
            Channel.EMAIL,
            ChannelState(
                reachable=True,
                consent=opt_in,
                updated_at=at,
                reason="identify" if judged.trusted else "identify_opt_out",
                source=site_id,
                address_hash=address_hash(email) if isinstance(email, str) and opt_in else None,
            ),
        )


def _set_channel(facts: FactsSink, channel: Channel, state: ChannelState) -> None:
    """Among the events of one write the latest wins, whatever order they were listed in."""
    current = facts.channels.get(channel)
    if current is None or current.updated_at <= state.updated_at:
        facts.channels[channel] = state


# What unsubscribing, a hard bounce and a complaint mean for the email channel: (reachable, consent, reason).
_EMAIL_CHANNEL_EVENTS = {
    EngagementEvent.UNSUBSCRIBED.value: (True, False, "unsubscribed"),
    EngagementEvent.BOUNCED.value: (False, False, "bounced"),
    EngagementEvent.COMPLAINED.value: (False, False, "complained"),
}


def _learn_email(facts: FactsSink, event: StoredEvent, at: datetime) -> None:
    """Engagement events (only the `engage` source, which no site can be): the email channel state.
    A site sending `Email Unsubscribed` gets an ordinary event that changes no channel."""
    if event.event == EngagementEvent.CONSENT_CONFIRMED.value:
        hashed = event.properties.get("address_hash")
        _set_channel(
            facts,
            Channel.EMAIL,
            ChannelState(
                reachable=True,
                consent=True,
                updated_at=at,
                reason="double_opt_in",
                source=ENGAGE_SOURCE_ID,
                address_hash=hashed if isinstance(hashed, str) else None,
            ),
        )
        return
    rule = _EMAIL_CHANNEL_EVENTS.get(event.event or "")
    if rule is None:
        return
    if event.event == EngagementEvent.BOUNCED.value and event.properties.get("bounce_type") not in (
        None,
        "Permanent",
    ):
        return  # only a permanent bounce makes the address unreachable
    reachable, consent, reason = rule
    _set_channel(
        facts,
        Channel.EMAIL,
        ChannelState(reachable=reachable, consent=consent, updated_at=at, reason=reason),
    )


_TOPIC_EVENTS = {EngagementEvent.TOPIC_LEFT.value: False, EngagementEvent.TOPIC_JOINED.value: True}


def _learn_topic(facts: FactsSink, event: StoredEvent, at: datetime) -> None:
    """The preference centre's choices (only the `engage` source: its signed page, so never a write
    key). A topic id must look like one: engage writes only the deployment's topics, and this keeps a
    malformed one from ever becoming a profile attribute."""
    subscribed = _TOPIC_EVENTS.get(event.event or "")
    topic = event.properties.get("topic")
    if subscribed is None or not isinstance(topic, str) or not re.match(TOPIC_ID_PATTERN, topic):
        return
    current = facts.topics.get(topic)
    if current is None or current.updated_at <= at:  # the latest choice of one write wins
        facts.topics[topic] = TopicState(subscribed=subscribed, updated_at=at, source=ENGAGE_SOURCE_ID)


# Engage's events that are the customer engaging, by kind. The channel is the one the tracked message
# went out on: the `channel` property engage copies from the signed token (a LINE link's click is
# LINE's; cems.web.events stores the on-site ones with `channel: web`). A dismissal is no engagement.
_ENGAGE_KINDS = {
    EngagementEvent.OPENED.value: EngagementKind.OPEN,
    EngagementEvent.CLICKED.value: EngagementKind.CLICK,
    EngagementEvent.WEB_SHOWN.value: EngagementKind.IMPRESSION,
    EngagementEvent.WEB_CLICKED.value: EngagementKind.CLICK,
}
# LINE events that are the customer answering: a message written or a button tapped in the chat.
_LINE_REPLIES = frozenset({LineEvent.MESSAGE.value, LineEvent.POSTBACK.value})


def _learn_engagement(facts: FactsSink, event: StoredEvent, at: datetime) -> None:
    """Opens, clicks and impressions from engage, counted per channel and Tokyo day (cems.activity).
    Only engage's source reaches here, so a site cannot raise a customer's engagement."""
    kind = _ENGAGE_KINDS.get(event.event or "")
    channel = event.properties.get("channel")
    if kind is None or channel not in {c.value for c in Channel}:
        return
    add_engagement(facts.engagement, Channel(channel), kind, at)


# What following and unfollowing (blocking) the LINE account means for the LINE channel.
_LINE_CHANNEL_EVENTS = {
    LineEvent.FOLLOW.value: (True, True),
    LineEvent.UNFOLLOW.value: (False, False),  # an opt-out: nothing more is sent on LINE
}


def _learn_line(facts: FactsSink, event: StoredEvent, at: datetime) -> None:
    """LINE events (only the webhook sets line_user_id): channel state and survey answers."""
    reachable_consent = _LINE_CHANNEL_EVENTS.get(event.event or "")
    if reachable_consent is not None:
        reachable, consent = reachable_consent
        _set_channel(
            facts,
            Channel.LINE,
            ChannelState(reachable=reachable, consent=consent, updated_at=at, reason=event.event),
        )
    if event.event in _LINE_REPLIES:
        add_engagement(facts.engagement, Channel.LINE, EngagementKind.REPLY, at)
    if event.event == LineEvent.POSTBACK.value:
        survey = event.properties.get("survey")
        if isinstance(survey, dict) and survey.get("question") and "answer" in survey:
            facts.traits[f"survey.{survey['question']}"] = survey["answer"]


def with_facts(profile: Profile, facts: FactsSink, at: datetime) -> Profile:
    """`profile` with `facts` laid over it as the store writes a profile change: traits, orders and
    channel states set by key, purchase sets added to, each collection within its maximum and the
    oldest orders folded into the rollup (cems.profiles.fit)."""
    fitted = fit(facts.traits, facts.orders, {name: getattr(facts, name) for name in BOUGHT_SETS}, profile)
    orders = {**profile.orders, **fitted.orders}
    for order_id in fitted.folded:
        orders.pop(order_id, None)
    update: dict[str, Any] = {
        "traits": {**profile.traits, **fitted.traits},
        "orders": orders,
        "order_rollup": fitted.rollup if fitted.rollup is not None else profile.order_rollup,
        "channels": {**profile.channels, **facts.channels},
        "topics": {**profile.topics, **facts.topics},
        "engagement": folded(profile.engagement, facts.engagement),
        "updated_at": max(profile.updated_at, at),
    }
    for name in BOUGHT_SETS:
        update[name] = getattr(profile, name) | fitted.bought[name]
    return profile.model_copy(update=update)


def apply_event(profile: Profile, event: StoredEvent) -> Profile:
    """The profile after one stored event: `learn`, then `with_facts`."""
    facts = Facts()
    learn(facts, event)
    return with_facts(profile, facts, event.timestamp)

"""Identity rules: which identities a message carries, and how two profiles of one person merge."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from cems.activity import merged as merged_engagement
from cems.models import Channel, ChannelState, MessageType, Profile, SegmentMessage
from cems.topics import TopicState
from cems.trust import CONTACT_TRAITS


class IdentityKind(StrEnum):
    ANONYMOUS = "anon"
    USER = "user"
    LINE = "line"


@dataclass(frozen=True, order=True)
class IdentityKey:
    kind: IdentityKind
    value: str


def identities_of(profile: Profile) -> list[IdentityKey]:
    keys = [IdentityKey(IdentityKind.ANONYMOUS, a) for a in sorted(profile.anonymous_ids)]
    if profile.user_id:
        keys.insert(0, IdentityKey(IdentityKind.USER, profile.user_id))
    if profile.line_user_id:
        keys.append(IdentityKey(IdentityKind.LINE, profile.line_user_id))
    return keys


def identity_keys(message: SegmentMessage, *, trusted: bool = True) -> list[IdentityKey]:
    """The identities a message names, the known customer (userId) first, a LINE user id last.

    For alias, previousId may be an earlier user id or an anonymous id; both are looked up, unless
    the message comes from a browser (`trusted` False): a browser's alias joins an anonymous id only,
    never another user. The LINE id comes last so that when an accountLink names both a site customer
    and a LINE user, the site's customer is kept and the LINE-only profile merges into it.
    """
    keys = []
    if message.user_id:
        keys.append(IdentityKey(IdentityKind.USER, message.user_id))
    if message.anonymous_id:
        keys.append(IdentityKey(IdentityKind.ANONYMOUS, message.anonymous_id))
    if message.type is MessageType.ALIAS and message.previous_id:
        if trusted:
            keys.append(IdentityKey(IdentityKind.USER, message.previous_id))
        keys.append(IdentityKey(IdentityKind.ANONYMOUS, message.previous_id))
    if message.line_user_id:
        keys.append(IdentityKey(IdentityKind.LINE, message.line_user_id))
    return list(dict.fromkeys(keys))


def keys_to_claim(
    message: SegmentMessage, known: set[IdentityKey], *, trusted: bool = True
) -> list[IdentityKey]:
    """Identities a message introduces. An unknown alias previousId is taken to be an anonymous id,
    since that is what browser libraries alias from."""
    claims = [k for k in identity_keys(message, trusted=trusted) if k not in known]
    if message.type is MessageType.ALIAS and message.previous_id:
        previous = {
            IdentityKey(IdentityKind.USER, message.previous_id),
            IdentityKey(IdentityKind.ANONYMOUS, message.previous_id),
        }
        if previous & known:
            claims = [k for k in claims if k not in previous]
        else:
            claims = [k for k in claims if k != IdentityKey(IdentityKind.USER, message.previous_id)]
    return claims


def is_claimed(profile: Profile) -> bool:
    """Whether someone has been proven to be this customer, or it holds a way to reach them: a user
    id (only a proven message or a server sets it), a LINE user, contact traits, or a channel state.
    A browser's proven user may pull in only visitors that are not claimed."""
    return bool(
        profile.user_id
        or profile.line_user_id
        or any(profile.traits.get(name) for name in CONTACT_TRAITS)
        or profile.channels
    )


def may_merge(source: Profile, target: Profile, *, trusted: bool = True) -> bool:
    """Whether `source` may become part of `target`.

    - Two profiles that each belong to a different signed-in customer are never merged: a shared
      browser must not join two accounts. Only the anonymous id moves to the newer sign-in.
    - Two different LINE users are never merged: a LINE link never moves to another customer.
    - A browser's message (not `trusted`), even with a proven user, pulls in only a visitor nobody
      has claimed (is_claimed): a claim can never take over a customer's history or contact points.
    """
    if source.user_id and target.user_id and source.user_id != target.user_id:
        return False
    if source.line_user_id and target.line_user_id and source.line_user_id != target.line_user_id:
        return False
    return trusted or not is_claimed(source)


def merge_profiles(target: Profile, source: Profile, at: datetime) -> Profile:
    """One profile holding both: nothing lost, the target's traits winning where both have one."""
    return target.model_copy(
        update={
            "user_id": target.user_id or source.user_id,
            "anonymous_ids": target.anonymous_ids | source.anonymous_ids,
            "traits": {**source.traits, **target.traits},
            "orders": {**source.orders, **target.orders},
            "products_bought": target.products_bought | source.products_bought,
            "skus_bought": target.skus_bought | source.skus_bought,
            "categories_bought": target.categories_bought | source.categories_bought,
            "merged_ids": target.merged_ids | source.merged_ids | {source.customer_id},
            "line_user_id": target.line_user_id or source.line_user_id,
            "channels": _latest_channel_states(target, source),
            "engagement": merged_engagement(target.engagement, source.engagement),
            "topics": _latest_topic_choices(target, source),
            "first_seen_at": min(target.first_seen_at, source.first_seen_at),
            "updated_at": at,
        }
    )


def _latest_topic_choices(target: Profile, source: Profile) -> dict[str, TopicState]:
    """Per topic, the choice made last, as for channels: a topic left on either profile stays left
    unless it was joined again later."""
    choices = dict(target.topics)
    for topic, choice in source.topics.items():
        if topic not in choices or choice.updated_at > choices[topic].updated_at:
            choices[topic] = choice
    return choices


def _latest_channel_states(target: Profile, source: Profile) -> dict[Channel, ChannelState]:
    """Per channel, the state that changed last: a follow on LINE after the visit still counts."""
    states = dict(target.channels)
    for channel, state in source.channels.items():
        if channel not in states or state.updated_at > states[channel].updated_at:
            states[channel] = state
    return states

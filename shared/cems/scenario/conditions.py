"""Evaluating conditions: pure functions of a profile, the customer's events and "now" (no AWS).

`evaluate(condition, profile, events, now)` answers an audience or branch condition;
`event_matches(name, where, event)` answers whether one event is the one a trigger, goal or
wait-for-event step is looking for. Comparisons never raise: a value of the wrong kind (text
against a number, a missing trait) simply does not match.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cems.activity import engagement_stage
from cems.channels.registry import plugin, plugins
from cems.engagement import ENGAGE_SOURCE_ID, EngagementEvent
from cems.models import LINE_SOURCE_ID, LineEvent, MessageType, Profile, StoredEvent
from cems.scenario.condition_models import (
    ANY_CHANNEL,
    AllCondition,
    AnyCondition,
    BoughtCondition,
    Condition,
    EngagementStageCondition,
    EventCountCondition,
    LifecycleCondition,
    NotCondition,
    ProfileCondition,
    PropertyCondition,
    ReachableCondition,
    RfmCondition,
    ScoreRange,
    SurveyCondition,
    TraitCondition,
)
from cems.scenario.rfm import DEFAULT_BANDS, RfmBands, days_since, lifecycle_stage, rfm_scores


def evaluate(
    condition: Condition,
    profile: Profile,
    events: Sequence[StoredEvent],
    now: datetime,
    bands: RfmBands = DEFAULT_BANDS,
) -> bool:
    """Whether `condition` holds for the customer now. `events` is the customer's history (any
    order; only `event_count` reads it)."""
    match condition:
        case AllCondition():
            return all(evaluate(c, profile, events, now, bands) for c in condition.conditions)
        case AnyCondition():
            return any(evaluate(c, profile, events, now, bands) for c in condition.conditions)
        case NotCondition():
            return not evaluate(condition.condition, profile, events, now, bands)
        case TraitCondition():
            return compare(trait_values(profile.traits, condition.trait), condition.op, condition.value)
        case ProfileCondition():
            fact = profile_fact(profile, condition.field, now)
            return compare([] if fact is None else [fact], condition.op, condition.value)
        case BoughtCondition():
            return bool(
                profile.products_bought.intersection(condition.product_ids)
                or profile.skus_bought.intersection(condition.skus)
                or profile.categories_bought.intersection(condition.categories)
            )
        case SurveyCondition():
            answer = profile.traits.get(f"survey.{condition.question}")
            if answer is None:
                return False
            return condition.answers is None or str(answer) in condition.answers
        case EventCountCondition():
            count = count_events(events, condition.event, condition.where, now, condition.within_days)
            return count >= condition.at_least and (condition.at_most is None or count <= condition.at_most)
        case ReachableCondition():
            return reachable(profile, condition.channel)
        case RfmCondition():
            scores = rfm_scores(profile, now, bands)
            return scores is not None and all(
                _in_range(score, wanted)
                for score, wanted in (
                    (scores.recency, condition.recency),
                    (scores.frequency, condition.frequency),
                    (scores.monetary, condition.monetary),
                )
            )
        case LifecycleCondition():
            return lifecycle_stage(profile, now, bands) in condition.stages
        case EngagementStageCondition():
            return engagement_stage(profile, now) in condition.stages
    raise TypeError(f"unknown condition {condition!r}")  # pragma: no cover - the union is closed


def _in_range(score: int, wanted: ScoreRange | None) -> bool:
    return wanted is None or wanted.min <= score <= wanted.max


def reachable(profile: Profile, channel: str) -> bool:
    """Reachable with consent on `channel` now, by that channel's own rule (its plugin); `any`: on
    some channel."""
    if channel == ANY_CHANNEL:
        return any(p.reachable(profile) for p in plugins())
    return plugin(channel).reachable(profile)


def profile_fact(profile: Profile, field: str, now: datetime) -> float | None:
    if field == "purchase_count":
        return float(profile.purchase_count)
    if field == "monetary_total":
        return float(profile.monetary_total)
    at = {
        "days_since_last_purchase": profile.last_purchase_at,
        "days_since_first_purchase": profile.first_purchase_at,
        "days_since_first_seen": profile.first_seen_at,
    }[field]
    return None if at is None else float(days_since(at, now))


def trait_values(traits: dict[str, Any], name: str) -> list[Any]:
    """The trait as written (`survey.taste` is one key), else the dotted path into nested traits."""
    if name in traits:
        return [] if traits[name] is None else [traits[name]]
    return path_values(traits, name)


def path_values(data: Any, path: str) -> list[Any]:
    """Every value at a dotted path; a list on the way fans out (`products.sku` -> each SKU).
    A list at the end stays one value (`compare` decides what a list means to each operator)."""
    current: list[Any] = [data]
    for key in path.split("."):
        following: list[Any] = []
        for item in current:
            if isinstance(item, dict) and key in item:
                following.append(item[key])
            elif isinstance(item, list):
                following.extend(x[key] for x in item if isinstance(x, dict) and key in x)
        current = following
        if not current:
            return []
    return [v for v in current if v is not None]


def _flatten(values: Iterable[Any]) -> list[Any]:
    out: list[Any] = []
    for value in values:
        if isinstance(value, list):
            out.extend(value)
        elif value is not None:
            out.append(value)
    return out


def compare(values: list[Any], op: str, expected: Any) -> bool:
    """Any of `values` passes `op expected` (`ne`/`not_in`: none of them is the value). A list value
    counts as its elements, except for `contains`: a list contains an element equal to the value, a
    text contains the value as a substring."""
    if op == "exists":
        return bool(_flatten(values))
    if op == "contains":
        return any(_contains(v, expected) for v in values)
    values = _flatten(values)
    if op == "ne":
        return not any(_equal(v, expected) for v in values)
    if op == "not_in":
        return not any(_equal(v, e) for v in values for e in expected)
    return any(_test(v, op, expected) for v in values)


def _test(value: Any, op: str, expected: Any) -> bool:
    if op == "eq":
        return _equal(value, expected)
    if op == "in":
        return any(_equal(value, e) for e in expected)
    left, right = _orderable(value), _orderable(expected)
    if isinstance(left, Decimal) and isinstance(right, Decimal):
        return _ordered(left, op, right)
    if isinstance(left, str) and isinstance(right, str):  # ISO dates and times compare as text
        return _ordered(left, op, right)
    return False


def _ordered(left: Any, op: str, right: Any) -> bool:
    if op == "gt":
        return bool(left > right)
    if op == "gte":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)  # lte


def _contains(value: Any, expected: Any) -> bool:
    if isinstance(value, str):
        return isinstance(expected, str) and expected in value
    if isinstance(value, list):
        return any(_equal(v, expected) for v in value)
    if isinstance(value, dict):
        return isinstance(expected, str) and expected in value
    return False


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    return None


def _orderable(value: Any) -> Decimal | str | None:
    number = _number(value)
    if number is not None:
        return number
    return value if isinstance(value, str) else None


def _equal(value: Any, expected: Any) -> bool:
    left, right = _number(value), _number(expected)
    if left is not None and right is not None:
        return left == right
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    return bool(value == expected)


# Event names only CEMS's own sources store: a site's track call with one of these names is kept as
# sent but matches no trigger, goal, exit or branch (a site must not fake a LINE follow or a click).
RESERVED_EVENT_SOURCES: dict[str, str] = {
    **{name.value: LINE_SOURCE_ID for name in LineEvent},
    **{name.value: ENGAGE_SOURCE_ID for name in EngagementEvent},
}


def event_name(event: StoredEvent) -> str | None:
    """The name a trigger matches: a track event's name; `page`/`screen` for those calls."""
    if event.type is MessageType.TRACK:
        source = RESERVED_EVENT_SOURCES.get(event.event or "")
        if source is not None and event.site_id != source:
            return None
        return event.event
    if event.type in (MessageType.PAGE, MessageType.SCREEN):
        return event.type.value
    return None


def event_matches(name: str, where: Sequence[PropertyCondition], event: StoredEvent) -> bool:
    """Whether `event` is `name` and its properties pass every `where` test."""
    return event_name(event) == name and all(
        compare(path_values(event.properties, c.property), c.op, c.value) for c in where
    )


def count_events(
    events: Sequence[StoredEvent],
    name: str,
    where: Sequence[PropertyCondition],
    now: datetime,
    within_days: int | None,
) -> int:
    since = None if within_days is None else now - timedelta(days=within_days)
    return sum(
        1
        for e in events
        if (since is None or e.timestamp >= since) and e.timestamp <= now and event_matches(name, where, e)
    )

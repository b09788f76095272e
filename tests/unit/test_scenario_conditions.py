"""Evaluating audience and branch conditions over a profile, its events and now; RFM and lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cems.models import Channel, ChannelState, MessageType, OrderSummary, Profile, StoredEvent
from cems.scenario.conditions import RESERVED_EVENT_SOURCES, compare, evaluate, event_matches
from cems.scenario.model import Condition, PropertyCondition
from cems.scenario.rfm import lifecycle_stage, rfm_scores
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

NOW = datetime(2026, 6, 1, 3, 0, tzinfo=UTC)
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


def cond(data: dict[str, Any]) -> Condition:
    return CONDITION.validate_python(data)


def profile(orders: list[tuple[int, int]] | None = None, **fields: Any) -> Profile:
    """orders: (days ago, amount in yen)."""
    return Profile(
        customer_id="cus_1",
        first_seen_at=NOW - timedelta(days=400),
        updated_at=NOW,
        orders={
            f"o{i}": OrderSummary(at=NOW - timedelta(days=ago), amount=Decimal(amount))
            for i, (ago, amount) in enumerate(orders or [])
        },
        **fields,
    )


def event(name: str, days_ago: float = 0, **properties: Any) -> StoredEvent:
    at = NOW - timedelta(days=days_ago)
    return StoredEvent(
        customer_id="cus_1",
        site_id=RESERVED_EVENT_SOURCES.get(name, "shop"),
        type=MessageType.TRACK,
        message_id=f"m{name}{days_ago}",
        event=name,
        timestamp=at,
        received_at=at,
        properties=properties,
    )


def holds(data: dict[str, Any], p: Profile | None = None, events: list[StoredEvent] | None = None) -> bool:
    return evaluate(cond(data), p or profile(), events or [], NOW)


# -- traits and comparisons ---------------------------------------------------------------------------------


def test_trait_equals() -> None:
    assert holds(
        {"kind": "trait", "trait": "prefecture", "value": "東京都"}, profile(traits={"prefecture": "東京都"})
    )
    assert not holds(
        {"kind": "trait", "trait": "prefecture", "value": "大阪府"}, profile(traits={"prefecture": "東京都"})
    )


def test_trait_with_a_dot_in_its_name_is_found_as_written() -> None:
    p = profile(traits={"survey.taste": "bitter"})
    assert holds({"kind": "trait", "trait": "survey.taste", "value": "bitter"}, p)


def test_nested_trait_by_dotted_path() -> None:
    p = profile(traits={"address": {"prefecture": "福岡県"}})
    assert holds({"kind": "trait", "trait": "address.prefecture", "op": "eq", "value": "福岡県"}, p)


def test_trait_numbers_compare_as_numbers_whatever_their_type() -> None:
    p = profile(traits={"points": 1200})
    assert holds({"kind": "trait", "trait": "points", "op": "gte", "value": 1000.0}, p)
    assert holds({"kind": "trait", "trait": "points", "op": "eq", "value": 1200.0}, p)
    assert not holds({"kind": "trait", "trait": "points", "op": "lt", "value": 1000}, p)


def test_text_and_numbers_never_order() -> None:
    p = profile(traits={"points": "1200"})
    assert not holds({"kind": "trait", "trait": "points", "op": "gt", "value": 1}, p)


def test_iso_dates_compare_as_text() -> None:
    p = profile(traits={"birthday": "1990-04-01"})
    assert holds({"kind": "trait", "trait": "birthday", "op": "lt", "value": "2000-01-01"}, p)


def test_trait_in_and_not_in() -> None:
    p = profile(traits={"plan": "gold"})
    assert holds({"kind": "trait", "trait": "plan", "op": "in", "value": ["gold", "silver"]}, p)
    assert not holds({"kind": "trait", "trait": "plan", "op": "not_in", "value": ["gold"]}, p)


def test_trait_exists_and_its_absence_with_not() -> None:
    p = profile(traits={"email": "a@example.jp"})
    assert holds({"kind": "trait", "trait": "email", "op": "exists"}, p)
    assert holds({"kind": "not", "condition": {"kind": "trait", "trait": "phone", "op": "exists"}}, p)


def test_null_trait_does_not_exist() -> None:
    assert not holds({"kind": "trait", "trait": "email", "op": "exists"}, profile(traits={"email": None}))


def test_contains_is_a_substring_of_text_or_an_element_of_a_list() -> None:
    p = profile(traits={"note": "緑茶が好き", "tags": ["green_tea", "matcha"]})
    assert holds({"kind": "trait", "trait": "note", "op": "contains", "value": "緑茶"}, p)
    assert holds({"kind": "trait", "trait": "tags", "op": "contains", "value": "matcha"}, p)
    assert not holds({"kind": "trait", "trait": "tags", "op": "contains", "value": "tea"}, p)


def test_ne_holds_for_a_missing_trait() -> None:
    assert holds({"kind": "trait", "trait": "plan", "op": "ne", "value": "gold"})


def test_true_is_not_one() -> None:
    assert not holds({"kind": "trait", "trait": "vip", "value": 1}, profile(traits={"vip": True}))
    assert holds({"kind": "trait", "trait": "vip", "value": True}, profile(traits={"vip": True}))


# -- all / any / not ----------------------------------------------------------------------------------------

TRUE = {"kind": "trait", "trait": "a", "op": "exists"}
FALSE = {"kind": "trait", "trait": "zzz", "op": "exists"}


def test_all_any_not() -> None:
    p = profile(traits={"a": 1})
    assert holds({"kind": "all", "conditions": [TRUE, TRUE]}, p)
    assert not holds({"kind": "all", "conditions": [TRUE, FALSE]}, p)
    assert holds({"kind": "any", "conditions": [FALSE, TRUE]}, p)
    assert not holds({"kind": "any", "conditions": [FALSE, FALSE]}, p)
    assert holds({"kind": "not", "condition": FALSE}, p)


leaf = st.sampled_from([TRUE, FALSE])
trees = st.recursive(
    leaf,
    lambda children: st.one_of(
        st.builds(lambda cs: {"kind": "all", "conditions": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda cs: {"kind": "any", "conditions": cs}, st.lists(children, min_size=1, max_size=3)),
        st.builds(lambda c: {"kind": "not", "condition": c}, children),
    ),
    max_leaves=12,
)


def truth(data: dict[str, Any]) -> bool:
    if data["kind"] == "all":
        return all(truth(c) for c in data["conditions"])
    if data["kind"] == "any":
        return any(truth(c) for c in data["conditions"])
    if data["kind"] == "not":
        return not truth(data["condition"])
    return data is TRUE or data == TRUE


@given(trees)
def test_composed_conditions_follow_boolean_logic(tree: dict[str, Any]) -> None:
    assert holds(tree, profile(traits={"a": 1})) == truth(tree)


@given(trees)
def test_not_not_is_the_condition_itself(tree: dict[str, Any]) -> None:
    p = profile(traits={"a": 1})
    assert holds({"kind": "not", "condition": {"kind": "not", "condition": tree}}, p) == holds(tree, p)


@given(st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=4), st.integers(-5, 5))
def test_ne_is_never_eq(values: list[Any], expected: int) -> None:
    assert compare(values, "ne", expected) is not compare(values, "eq", expected)


@given(st.lists(st.integers(-10, 10), min_size=1, max_size=5), st.integers(-10, 10))
def test_gt_and_lte_split_numbers_of_one_value(values: list[int], bound: int) -> None:
    for value in values:
        assert compare([value], "gt", bound) is not compare([value], "lte", bound)


# -- purchases, surveys, events, channels ----------------------------------------------------------


def test_bought_product_sku_or_category() -> None:
    p = profile(products_bought={"P1"}, skus_bought={"GYO-100"}, categories_bought={"緑茶"})
    assert holds({"kind": "bought", "skus": ["GYO-100", "X"]}, p)
    assert holds({"kind": "bought", "categories": ["緑茶"]}, p)
    assert holds({"kind": "bought", "product_ids": ["P1"]}, p)
    assert not holds({"kind": "bought", "skus": ["X"]}, p)


def test_profile_purchase_facts() -> None:
    p = profile(orders=[(10, 3000), (40, 2000)])
    assert holds({"kind": "profile", "field": "purchase_count", "op": "gte", "value": 2}, p)
    assert holds({"kind": "profile", "field": "monetary_total", "op": "eq", "value": 5000}, p)
    assert holds({"kind": "profile", "field": "days_since_last_purchase", "op": "lte", "value": 10}, p)
    assert not holds({"kind": "profile", "field": "days_since_last_purchase", "op": "exists"}, profile())


def test_survey_answered_at_all_or_with_given_answers() -> None:
    p = profile(traits={"survey.taste": "bitter"})
    assert holds({"kind": "survey", "question": "taste"}, p)
    assert holds({"kind": "survey", "question": "taste", "answers": ["bitter", "ok"]}, p)
    assert not holds({"kind": "survey", "question": "taste", "answers": ["great"]}, p)
    assert not holds({"kind": "survey", "question": "size"}, p)


def test_did_an_event_at_least_n_times_within_d_days() -> None:
    views = [event("Product Viewed", d, category="緑茶") for d in (1, 5, 20, 70)]
    rule = {"kind": "event_count", "event": "Product Viewed", "at_least": 3, "within_days": 30}
    assert holds(rule, events=views)
    assert not holds({**rule, "within_days": 10}, events=views)


def test_event_count_with_property_conditions_and_an_upper_bound() -> None:
    views = [event("Product Viewed", 1, category="緑茶"), event("Product Viewed", 2, category="紅茶")]
    rule = {
        "kind": "event_count",
        "event": "Product Viewed",
        "where": [{"property": "category", "value": "紅茶"}],
    }
    assert holds({**rule, "at_least": 1, "at_most": 1}, events=views)


def test_never_did_an_event_is_at_most_zero() -> None:
    assert holds({"kind": "event_count", "event": "Order Completed", "at_least": 0, "at_most": 0})


def test_events_after_now_are_not_counted() -> None:
    assert not holds({"kind": "event_count", "event": "X"}, events=[event("X", -1)])


def test_line_reachable_needs_a_linked_following_consenting_friend() -> None:
    state = ChannelState(reachable=True, consent=True, updated_at=NOW)
    p = profile(line_user_id="U1", channels={Channel.LINE: state})
    assert holds({"kind": "reachable", "channel": "line"}, p)
    assert not holds({"kind": "reachable", "channel": "line"}, profile(channels={Channel.LINE: state}))
    blocked = ChannelState(reachable=False, consent=False, updated_at=NOW)
    assert not holds(
        {"kind": "reachable", "channel": "line"}, profile(line_user_id="U1", channels={Channel.LINE: blocked})
    )


def test_email_reachable_needs_an_address_and_consent() -> None:
    state = ChannelState(reachable=True, consent=True, updated_at=NOW)
    p = profile(traits={"email": "a@example.jp"}, channels={Channel.EMAIL: state})
    assert holds({"kind": "reachable", "channel": "email"}, p)
    assert holds({"kind": "reachable", "channel": "any"}, p)
    assert not holds({"kind": "reachable", "channel": "email"}, profile(traits={"email": "a@example.jp"}))


# -- RFM and lifecycle -----------------------------------------------------------------------------


def test_rfm_scores_from_fixed_bands() -> None:
    scores = rfm_scores(profile(orders=[(10, 20000), (50, 20000), (80, 20000)]), NOW)
    assert scores is not None and (scores.recency, scores.frequency, scores.monetary) == (5, 3, 4)


def test_rfm_lowest_scores() -> None:
    scores = rfm_scores(profile(orders=[(400, 1000)]), NOW)
    assert scores is not None and (scores.recency, scores.frequency, scores.monetary) == (1, 1, 1)


def test_no_rfm_scores_without_a_purchase() -> None:
    assert rfm_scores(profile(), NOW) is None
    assert not holds({"kind": "rfm", "recency": {"min": 1}})


def test_rfm_condition_ranges() -> None:
    p = profile(orders=[(10, 20000), (50, 20000), (80, 20000)])
    assert holds({"kind": "rfm", "recency": {"min": 4}, "frequency": {"min": 3, "max": 3}}, p)
    assert not holds({"kind": "rfm", "monetary": {"min": 5}}, p)


def test_lifecycle_stages() -> None:
    assert lifecycle_stage(profile(), NOW) == "prospect"
    assert lifecycle_stage(profile(orders=[(5, 1000)]), NOW) == "new"
    assert lifecycle_stage(profile(orders=[(5, 1000), (50, 1000)]), NOW) == "active"
    assert lifecycle_stage(profile(orders=[(5, 1000), (50, 1000), (80, 1000)]), NOW) == "loyal"
    assert lifecycle_stage(profile(orders=[(100, 1000), (150, 1000), (160, 1000)]), NOW) == "at_risk"
    assert lifecycle_stage(profile(orders=[(181, 1000)]), NOW) == "dormant"


def test_lifecycle_condition() -> None:
    assert holds({"kind": "lifecycle", "stages": ["new", "active"]}, profile(orders=[(5, 1000)]))
    assert not holds({"kind": "lifecycle", "stages": ["dormant"]}, profile(orders=[(5, 1000)]))


# -- events for triggers, goals and waits ----------------------------------------------------------


def test_order_completed_containing_a_sku() -> None:
    order = event("Order Completed", products=[{"sku": "A"}, {"sku": "GYO-100"}])
    where = [PropertyCondition(property="products.sku", value="GYO-100")]
    assert event_matches("Order Completed", where, order)
    assert not event_matches(
        "Order Completed", [PropertyCondition(property="products.sku", value="Z")], order
    )
    assert not event_matches("Product Added", where, order)


def test_names_only_cems_stores_match_nothing_when_a_site_sends_them() -> None:
    for name in ("line_follow", "line_postback", "Link Clicked", "Email Unsubscribed"):
        genuine = event(name)
        faked = genuine.model_copy(update={"site_id": "site_0a1b2c"})
        assert event_matches(name, [], genuine)
        assert not event_matches(name, [], faked)


def test_survey_postback_event_matches_its_question() -> None:
    postback = event("line_postback", survey={"question": "taste", "answer": "bitter"})
    assert event_matches(
        "line_postback", [PropertyCondition(property="survey.question", value="taste")], postback
    )

"""Engagement folded into the profile (cems.activity, cems.profile_facts): bounded, per channel and
Tokyo day, learnt by ingest and simulate alike; the engagement stage and its condition."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cems.activity import (
    ENGAGEMENT_DAYS_KEPT,
    EngagementStage,
    add_engagement,
    counts,
    engagement_stage,
    folded,
    merged,
)
from cems.engagement import ENGAGE_SOURCE_ID
from cems.engagement.engage import ENGAGE_SOURCE
from cems.identity import merge_profiles
from cems.ingest import Ingestor
from cems.models import (
    Channel,
    ChannelEngagement,
    EngagementKind,
    MessageType,
    OrderSummary,
    Profile,
    SegmentMessage,
    Site,
    StoredEvent,
    Trust,
)
from cems.profile_facts import apply_event
from cems.scenario.conditions import evaluate
from cems.scenario.model import Scenario

from tests.fakes.customers import InMemoryCustomers

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=TOKYO).astimezone(UTC)
SHOP = Site(write_key="wk", site_id="shop", name="shop", origins=["*"], created_at=NOW, trust=Trust.SERVER)


def profile(**update: Any) -> Profile:
    return Profile(customer_id="cus_1", first_seen_at=NOW - timedelta(days=400), updated_at=NOW).model_copy(
        update=update
    )


def stored(name: str, site_id: str, days_ago: float = 0, **properties: Any) -> StoredEvent:
    at = NOW - timedelta(days=days_ago)
    return StoredEvent(
        customer_id="cus_1",
        site_id=site_id,
        type=MessageType.TRACK,
        message_id=f"{name}-{days_ago}",
        event=name,
        timestamp=at,
        received_at=at,
        properties=properties,
    )


def test_opens_and_clicks_count_on_the_channel_the_tracked_message_went_out_on() -> None:
    p = profile()
    for e in (
        stored("Email Opened", ENGAGE_SOURCE_ID, 1, channel="email"),
        stored("Link Clicked", ENGAGE_SOURCE_ID, 1, channel="email"),
        stored("Link Clicked", ENGAGE_SOURCE_ID, 2, channel="line"),  # a tracked LINE link
        stored("Web Message Shown", ENGAGE_SOURCE_ID, 3, channel="web"),
    ):
        p = apply_event(p, e)
    assert counts(p, Channel.EMAIL, NOW) == {EngagementKind.OPEN: 1, EngagementKind.CLICK: 1}
    assert counts(p, Channel.LINE, NOW) == {EngagementKind.CLICK: 1}
    assert counts(p, Channel.WEB, NOW) == {EngagementKind.IMPRESSION: 1}


def test_a_site_cannot_raise_a_customers_engagement() -> None:
    forged = apply_event(profile(), stored("Link Clicked", "shop", 1, channel="email"))
    assert forged.engagement == {}


def test_line_messages_and_postbacks_are_replies_and_follows_are_not() -> None:
    p = profile()
    for n, name in enumerate(("line_message", "line_postback", "line_follow")):
        e = stored(name, "line", n).model_copy(update={"line_user_id": "U" + "0" * 32})
        p = apply_event(p, e)
    assert counts(p, Channel.LINE, NOW) == {EngagementKind.REPLY: 2}


def test_the_fold_keeps_only_the_latest_days_whatever_arrives() -> None:
    state: dict[Channel, ChannelEngagement] = {}
    for day in range(400):  # more than a year of daily clicks, one write each
        increments: dict[Channel, dict[str, dict[EngagementKind, int]]] = {}
        add_engagement(increments, Channel.EMAIL, EngagementKind.CLICK, NOW - timedelta(days=399 - day))
        state = folded(state, increments)
    assert len(state[Channel.EMAIL].days) == ENGAGEMENT_DAYS_KEPT
    assert counts(profile(engagement=state), Channel.EMAIL, NOW) == {EngagementKind.CLICK: 90}


def test_a_merge_adds_both_profiles_engagement() -> None:
    day = (NOW - timedelta(days=1)).astimezone(TOKYO).date().isoformat()
    a = {Channel.EMAIL: ChannelEngagement(days={day: {EngagementKind.CLICK: 2}})}
    b = {Channel.EMAIL: ChannelEngagement(days={day: {EngagementKind.CLICK: 1, EngagementKind.OPEN: 4}})}
    assert merged(a, b)[Channel.EMAIL].days == {day: {EngagementKind.CLICK: 3, EngagementKind.OPEN: 4}}
    joined = merge_profiles(profile(engagement=a), profile(customer_id="cus_2", engagement=b), NOW)
    assert counts(joined, Channel.EMAIL, NOW) == {EngagementKind.CLICK: 3, EngagementKind.OPEN: 4}


def test_ingest_writes_engagement_and_folds_each_later_one_into_it() -> None:
    customers = InMemoryCustomers()
    ingestor = Ingestor(customers)

    def message(mid: str, **fields: Any) -> SegmentMessage:
        return SegmentMessage.model_validate({"messageId": mid, "userId": "u1", **fields})

    ingestor.ingest(SHOP, [message("id1", type="identify", traits={"name": "花子"})], NOW - timedelta(days=3))
    for n, days_ago in enumerate((2, 2, 1)):
        click = message(f"c{n}", type="track", event="Link Clicked", properties={"channel": "email"})
        ingestor.ingest(ENGAGE_SOURCE, [click], NOW - timedelta(days=days_ago))
    (customer,) = [p for p in customers.stored_profiles.values() if p.user_id == "u1"]
    assert counts(customer, Channel.EMAIL, NOW) == {EngagementKind.CLICK: 3}
    assert len(customer.engagement[Channel.EMAIL].days) == 2


# -- the engagement stage -------------------------------------------------------------------------------


def clicked(days_ago: int) -> Profile:
    return apply_event(profile(), stored("Link Clicked", ENGAGE_SOURCE_ID, days_ago, channel="email"))


def test_the_engagement_stage_follows_the_last_engagement_or_order() -> None:
    assert engagement_stage(profile(), NOW) is EngagementStage.UNENGAGED
    assert engagement_stage(clicked(0), NOW) is EngagementStage.ACTIVE
    assert engagement_stage(clicked(29), NOW) is EngagementStage.ACTIVE
    assert engagement_stage(clicked(30), NOW) is EngagementStage.COOLING
    assert engagement_stage(clicked(89), NOW) is EngagementStage.COOLING
    assert engagement_stage(clicked(90), NOW) is EngagementStage.DORMANT
    assert engagement_stage(clicked(365), NOW) is EngagementStage.DORMANT
    bought = profile(orders={"o1": OrderSummary(at=NOW - timedelta(days=5), amount=3000)})
    assert engagement_stage(bought, NOW) is EngagementStage.ACTIVE  # activity, purchases included


def test_the_engagement_stage_condition() -> None:
    s = Scenario.model_validate(
        {
            "id": "s",
            "name": "s",
            "trigger": {"type": "event", "event": "x"},
            "audience": {"kind": "engagement_stage", "stages": ["cooling", "dormant"]},
            "steps": [{"id": "a", "type": "end"}],
        }
    )
    assert s.audience is not None
    assert not evaluate(s.audience, clicked(3), [], NOW)
    assert evaluate(s.audience, clicked(45), [], NOW)
    assert evaluate(s.audience, clicked(200), [], NOW)
    assert not evaluate(s.audience, profile(), [], NOW)

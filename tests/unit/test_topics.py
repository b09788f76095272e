"""The preference centre's rules on the in-memory fakes: the deployment's topics, the profile facts
fold (only engage's events change a topic), and the check of issue 13: leaving one topic stops only
that topic's scenarios, end to end through the scenario runner."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cems import clock
from cems.engagement import ENGAGE_SOURCE_ID
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken
from cems.models import MessageType, Profile, StoredEvent
from cems.profile_facts import apply_event
from cems.scenario import engine
from cems.scenario.model import FrequencyCaps
from cems.scenario.validation import validate_document
from cems.topics import DEFAULT_TOPICS, Topic, TopicState, left_topic, parse_topics

from tests.fakes.journey_world import JourneyWorld

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


@pytest.fixture(autouse=True)
def _frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


def _scenario(scenario_id: str, topic: str | None, trigger: str) -> dict[str, Any]:
    return {
        "id": scenario_id,
        "name": scenario_id,
        **({"topic": topic} if topic else {}),
        "trigger": {"type": "event", "event": trigger},
        "steps": [
            {"id": "hello", "type": "send", "channel": "line", "line": [{"type": "text", "text": "🍵"}]},
            {"id": "done", "type": "end"},
        ],
    }


def _engage_event(customer_id: str, name: str, topic: Any, site_id: str = ENGAGE_SOURCE_ID) -> StoredEvent:
    return StoredEvent(
        customer_id=customer_id,
        site_id=site_id,
        type=MessageType.TRACK,
        message_id=f"topic:{name}:{topic}",
        event=name,
        timestamp=clock.now(),
        received_at=clock.now(),
        properties={"topic": topic},
    )


def test_the_default_topics_are_news_restock_and_campaigns_in_both_languages() -> None:
    topics = parse_topics(DEFAULT_TOPICS)
    assert [t.id for t in topics] == ["news", "restock", "campaigns"]
    assert topics[1] == Topic(id="restock", label_ja="再入荷", label_en="Restock")
    assert parse_topics("sale:セール") == (Topic(id="sale", label_ja="セール", label_en="セール"),)
    for bad in ("Sale:セール", "sale", "a:x,a:y"):
        with pytest.raises(ValueError):
            parse_topics(bad)


def test_only_engages_events_change_a_topic_and_the_latest_choice_wins() -> None:
    profile = Profile(customer_id="cus_1", first_seen_at=NOW, updated_at=NOW)
    left = apply_event(profile, _engage_event("cus_1", "Topic Left", "restock"))
    assert left.topics == {"restock": TopicState(subscribed=False, updated_at=NOW, source="engage")}
    assert left_topic(left.topics, "restock") and not left_topic(left.topics, "news")
    assert not left_topic(left.topics, None)  # a scenario of no topic
    # A site (a write key) cannot change consent: its `Topic Left` is an ordinary event.
    assert (
        apply_event(profile, _engage_event("cus_1", "Topic Left", "restock", site_id="site_shop")).topics
        == {}
    )
    # Nor can anything that is not a topic id become a profile attribute.
    assert apply_event(profile, _engage_event("cus_1", "Topic Left", "../x")).topics == {}
    assert apply_event(profile, _engage_event("cus_1", "Topic Left", ["news"])).topics == {}
    clock.advance(60)
    joined = apply_event(left, _engage_event("cus_1", "Topic Joined", "restock"))
    assert not left_topic(joined.topics, "restock")


def test_a_scenario_names_one_of_the_deployments_topics() -> None:
    topics = parse_topics(DEFAULT_TOPICS)
    assert validate_document(_scenario("s", "restock", "Product Viewed"), topics=topics).valid
    report = validate_document(_scenario("s", "restok", "Product Viewed"), topics=topics)
    [error] = report.errors
    assert error.code == "unknown_topic" and error.path == "topic"
    assert "トピック" in error.message and '"restock"' in error.message


def test_an_unsubscribe_token_carries_the_topic_and_an_old_one_has_none() -> None:
    signer = TokenSigner(lambda: b"secret")
    fields: dict[str, Any] = {"kind": TokenKind.UNSUBSCRIBE, "dispatch_key": "d", "customer_id": "c"}
    signed = signer.sign(TrackingToken(**fields, channel="email", topic="restock"))
    assert signer.verify(signed, TokenKind.UNSUBSCRIBE).topic == "restock"
    assert (
        signer.verify(signer.sign(TrackingToken(**fields, channel="email")), TokenKind.UNSUBSCRIBE).topic
        is None
    )
    with pytest.raises(ValueError):
        TrackingToken(**{**fields, "kind": TokenKind.OPEN}, channel="email", topic="restock")


def test_leaving_one_topic_stops_only_that_topics_scenarios() -> None:
    world = JourneyWorld()
    world.runner = world.another_runner(FrequencyCaps.model_validate({"line": {"per_day": 9, "per_week": 9}}))
    world.upload(_scenario("restock_alert", "restock", "Product Viewed"))
    world.upload(_scenario("news_letter", "news", "Cart Viewed"))
    world.upload(_scenario("order_follow", None, "Checkout Started"))
    customer = world.customer("cus_left")
    # The customer left "restock" on the preference page (engage's event, folded as ingest does).
    world.customers.put_profile(
        apply_event(world.profile(customer), _engage_event(customer, "Topic Left", "restock"))
    )

    # A scenario of a topic the customer left does not take them in (its every send would be
    # suppressed, and entering would only make their other journeys yield to it).
    world.runner.on_stored_event(world.event(customer, "Product Viewed"))
    assert world.sent() == []
    assert world.enrolments.get(customer, "restock_alert") is None

    # One who leaves the topic while in the journey: the send is suppressed and the journey exits.
    scenario = world.scenarios.version("restock_alert", 1)
    assert scenario is not None
    before = world.customer("cus_before")
    entered = engine.enrol(
        scenario.scenario, 1, world.profile(before), world.event(before, "Product Viewed"), None, clock.now()
    )
    assert entered.entered and entered.enrolment is not None
    left = apply_event(world.profile(before), _engage_event(before, "Topic Left", "restock"))
    result = engine.advance(scenario.scenario, entered.enrolment, left, [], clock.now(), engine.CapView())
    assert (result.enrolment.state, result.enrolment.exit_reason) == (
        engine.EnrolmentState.EXITED,
        "unreachable:topic:restock",
    )

    world.runner.on_stored_event(world.event(customer, "Cart Viewed"))
    world.runner.on_stored_event(world.event(customer, "Checkout Started"))
    assert sorted(d["scenario_id"] for d in world.sent()) == ["news_letter", "order_follow"]


def test_the_audience_count_does_not_count_a_customer_who_left_the_topic_as_sendable() -> None:
    from cems.console.audience import AudienceTally, _count_member
    from cems.models import Channel

    world = JourneyWorld()
    profile = world.profile(world.customer("cus_count"))
    left = apply_event(profile, _engage_event("cus_count", "Topic Left", "restock"))
    tally = AudienceTally()
    _count_member(tally, left, False, frozenset({Channel.LINE}), "restock")
    _count_member(tally, left, False, frozenset({Channel.LINE}), "news")
    _count_member(tally, left, False, frozenset({Channel.LINE}), None)
    assert (tally.matching, tally.sendable) == (3, 2)

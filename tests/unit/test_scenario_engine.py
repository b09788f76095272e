"""The enrolment state machine: entering, running steps, events, caps, windows, exits; all pure."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from cems.channels.registry import plugin
from cems.models import Channel, MessageType, Profile, StoredEvent
from cems.scenario.assignment import in_holdout
from cems.scenario.caps import CapCounter, CapPeriod, counters_of
from cems.scenario.conditions import RESERVED_EVENT_SOURCES
from cems.scenario.engine import (
    Advance,
    CapView,
    Enrolment,
    EnrolmentState,
    OtherEnrolment,
    advance,
    enrol,
    exit_enrolment,
    on_event,
)
from cems.scenario.model import Scenario
from cems.scenario.simulate import default_profile, events_from, simulate
from cems.topics import TopicState
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=TOKYO).astimezone(UTC)  # a Friday noon in Tokyo
NO_CAPS = CapView()


def jst(month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=TOKYO).astimezone(UTC)


def line_text(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def send(step_id: str, text: str = "こんにちは", **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "send", "channel": "line", "line": line_text(text), **fields}


def scenario(steps: list[dict[str, Any]] | None = None, **fields: Any) -> Scenario:
    data: dict[str, Any] = {
        "id": "test",
        "name": "test",
        "trigger": {"type": "event", "event": "Product Added"},
        "steps": steps or [send("hello")],
        **fields,
    }
    return Scenario.model_validate(data)


def customer(customer_id: str = "cus_1", **traits: Any) -> Profile:
    p = default_profile(customer_id, NOW - timedelta(days=30))
    return p.model_copy(update={"traits": {**p.traits, **traits}})


def event(name: str, at: datetime = NOW, customer_id: str = "cus_1", **properties: Any) -> StoredEvent:
    return StoredEvent(
        customer_id=customer_id,
        site_id=RESERVED_EVENT_SOURCES.get(name, "shop"),
        type=MessageType.TRACK,
        message_id=f"m-{name}-{at.timestamp()}",
        event=name,
        timestamp=at,
        received_at=at,
        properties=properties,
    )


def entered(
    s: Scenario, p: Profile | None = None, at: datetime = NOW, trigger: str = "Product Added"
) -> Enrolment:
    p = p or customer()
    decision = enrol(s, 1, p, event(trigger, at, p.customer_id), None, at)
    assert decision.entered and decision.enrolment is not None, decision.reason
    return decision.enrolment


def run(
    s: Scenario,
    e: Enrolment,
    at: datetime,
    p: Profile | None = None,
    events: list[StoredEvent] | None = None,
    caps: CapView = NO_CAPS,
) -> Advance:
    return advance(s, e, p or customer(e.customer_id), events or [], at, caps)


def not_holdout(percent: float, scenario_id: str = "test") -> str:
    return next(f"cus_{i}" for i in range(1000) if not in_holdout(scenario_id, f"cus_{i}", percent))


def holdout(percent: float, scenario_id: str = "test") -> str:
    return next(f"cus_{i}" for i in range(1000) if in_holdout(scenario_id, f"cus_{i}", percent))


# -- triggers -----------------------------------------------------------------------------------------------


def test_an_event_trigger_enrols_on_its_event_passing_where() -> None:
    s = scenario(
        trigger={
            "type": "event",
            "event": "Order Completed",
            "where": [{"property": "products.sku", "value": "X"}],
        }
    )
    yes = enrol(s, 1, customer(), event("Order Completed", products=[{"sku": "Y"}, {"sku": "X"}]), None, NOW)
    no = enrol(s, 1, customer(), event("Order Completed", products=[{"sku": "Y"}]), None, NOW)
    other = enrol(s, 1, customer(), event("Product Added"), None, NOW)
    assert yes.entered and yes.enrolment is not None
    assert yes.enrolment.state is EnrolmentState.ACTIVE and yes.enrolment.due_at == NOW
    assert yes.enrolment.step_id == "hello" and yes.enrolment.entry == 1
    assert (no.reason, other.reason) == ("not_a_trigger", "not_a_trigger")


def test_a_line_follow_trigger_enrols_new_friends_and_unblocked_ones_unless_excluded() -> None:
    s = scenario(trigger={"type": "line_follow"})
    strict = scenario(trigger={"type": "line_follow", "include_unblocked": False})
    assert enrol(s, 1, customer(), event("line_follow", is_unblocked=True), None, NOW).entered
    assert not enrol(strict, 1, customer(), event("line_follow", is_unblocked=True), None, NOW).entered
    assert enrol(strict, 1, customer(), event("line_follow", is_unblocked=False), None, NOW).entered


def test_a_survey_answer_trigger_enrols_on_the_question_and_answers() -> None:
    s = scenario(trigger={"type": "survey_answer", "question": "taste", "answers": ["bitter"]})
    bitter = event("line_postback", survey={"question": "taste", "answer": "bitter"})
    great = event("line_postback", survey={"question": "taste", "answer": "great"})
    assert enrol(s, 1, customer(), bitter, None, NOW).entered
    assert not enrol(s, 1, customer(), great, None, NOW).entered


def test_date_and_broadcast_triggers_enrol_without_an_event() -> None:
    for trigger in (
        {"type": "date", "date": "first_seen_at", "offset": "30d", "at": "10:00"},
        {"type": "broadcast", "cron": "0 10 * * mon"},
    ):
        decision = enrol(scenario(trigger=trigger), 3, customer(), None, None, NOW)
        assert decision.entered and decision.enrolment is not None
        assert decision.enrolment.trigger is None and decision.enrolment.version == 3


def test_the_audience_and_the_blacklist_keep_customers_out() -> None:
    s = scenario(audience={"kind": "trait", "trait": "vip", "value": True})
    assert enrol(s, 1, customer(), event("Product Added"), None, NOW).reason == "audience"
    assert enrol(s, 1, customer(vip=True), event("Product Added"), None, NOW).entered
    blacklisted = customer(vip=True, blacklisted=True)
    assert enrol(s, 1, blacklisted, event("Product Added"), None, NOW).reason == "blacklisted"


# -- entry rules --------------------------------------------------------------------------------------------


def ended(e: Enrolment) -> Enrolment:
    return exit_enrolment(e, "test", NOW).enrolment


def test_reentry_never_lets_a_customer_in_once() -> None:
    s = scenario()
    first = entered(s)
    later = NOW + timedelta(days=400)
    assert (
        enrol(s, 1, customer(), event("Product Added", later), ended(first), later).reason
        == "already_entered"
    )


def test_reentry_after_exit_waits_for_the_journey_to_end() -> None:
    s = scenario(entry={"reentry": "after_exit"})
    first = entered(s)
    assert enrol(s, 1, customer(), event("Product Added"), first, NOW).reason == "still_enrolled"
    again = enrol(s, 1, customer(), event("Product Added"), ended(first), NOW)
    assert again.entered and again.enrolment is not None
    assert again.enrolment.entry == 2 and again.enrolment.revision == ended(first).revision + 1


def test_reentry_cooldown_counts_from_the_previous_entry() -> None:
    s = scenario(entry={"reentry": "cooldown", "cooldown": "3d"})
    done = ended(entered(s))
    soon, later = NOW + timedelta(days=2), NOW + timedelta(days=3)
    assert enrol(s, 1, customer(), event("Product Added", soon), done, soon).reason == "cooldown"
    assert enrol(s, 1, customer(), event("Product Added", later), done, later).entered


# -- priority -----------------------------------------------------------------------------------------------


def test_a_higher_priority_scenario_makes_yielding_lower_ones_leave() -> None:
    s = scenario(priority=500)
    others = [
        OtherEnrolment("low-yields", 100, True, True),
        OtherEnrolment("low-stays", 100, False, True),
        OtherEnrolment("low-ended", 100, True, False),
        OtherEnrolment("higher", 900, True, True),
    ]
    decision = enrol(s, 1, customer(), event("Product Added"), None, NOW, others=others[:3])
    assert decision.entered and decision.yield_scenarios == ["low-yields"]
    refused = enrol(s, 1, customer(), event("Product Added"), None, NOW, others=others)
    assert refused.reason == "higher_priority_active"
    stubborn = scenario(priority=500, exit={"yield_to_higher_priority": False})
    assert enrol(stubborn, 1, customer(), event("Product Added"), None, NOW, others=others).entered


def test_priority_counts_only_where_a_scenario_can_reach_the_customer() -> None:
    """Issue 13: a higher-priority scenario that cannot reach the customer on any of its channels
    neither pulls them out of a lower one nor keeps them out of it; one that can, does both."""
    email_only = customer().model_copy(
        update={
            "line_user_id": None,
            "channels": {
                name: state for name, state in customer().channels.items() if name != Channel.LINE.value
            },
        }
    )
    assert not plugin(Channel.LINE).reachable(email_only) and plugin(Channel.EMAIL).reachable(email_only)
    line_scenario = scenario(priority=900)  # sends on LINE only
    email_low = OtherEnrolment("mail-low", 100, True, True, frozenset({Channel.EMAIL}))
    decision = enrol(line_scenario, 1, email_only, event("Product Added"), None, NOW, others=[email_low])
    assert decision.entered and decision.yield_scenarios == []  # the mail scenario keeps them
    both = enrol(line_scenario, 1, customer(), event("Product Added"), None, NOW, others=[email_low])
    assert both.yield_scenarios == ["mail-low"]  # reachable on LINE: the higher one takes them

    mail_scenario = scenario(
        priority=100,
        steps=[{"id": "m", "type": "send", "channel": "email", "email": {"subject": "件名", "text": "本文"}}],
    )
    line_high = OtherEnrolment("line-high", 900, True, True, frozenset({Channel.LINE}))
    admitted = enrol(mail_scenario, 1, email_only, event("Product Added"), None, NOW, others=[line_high])
    assert admitted.entered  # the LINE one cannot speak to them: no reason to keep them out
    refused = enrol(mail_scenario, 1, customer(), event("Product Added"), None, NOW, others=[line_high])
    assert refused.reason == "higher_priority_active"

    # A topic the customer left: that scenario speaks to them on no channel, so it neither keeps
    # them out of a lower one nor takes them from it, and does not take them in at all.
    left = customer().model_copy(
        update={"topics": {"campaigns": TopicState(subscribed=False, updated_at=NOW, source="engage")}}
    )
    campaigns_high = OtherEnrolment("campaigns-high", 900, True, True, frozenset({Channel.LINE}), "campaigns")
    assert enrol(mail_scenario, 1, left, event("Product Added"), None, NOW, others=[campaigns_high]).entered
    campaign = scenario(priority=900, topic="campaigns")
    mail_low = OtherEnrolment("mail-low", 100, True, True, frozenset({Channel.EMAIL}))
    assert (
        enrol(campaign, 1, left, event("Product Added"), None, NOW, others=[mail_low]).reason == "topic_left"
    )


# -- sends --------------------------------------------------------------------------------------------------


def test_a_send_produces_one_line_dispatch_for_the_customer_with_a_stable_key() -> None:
    s = scenario([send("hello", "{{ profile.traits.last_name | default: 'お客' }}様、こんにちは")])
    p = customer("cus_7", last_name="山田")
    result = run(s, entered(s, p), NOW, p)
    (dispatch,) = result.dispatches
    assert dispatch.key == "cus_7#test#v1#hello#e1"
    line = dispatch.messages[Channel.LINE]
    assert (
        dispatch.channel == Channel.LINE and dispatch.fallbacks == () and list(dispatch.messages) == ["line"]
    )
    assert line.idempotency_key == dispatch.key
    assert line.recipients == ["cus_7"]
    assert line.messages == [{"type": "text", "text": "山田様、こんにちは"}]
    (cap,) = result.caps
    assert (cap.day, cap.week) == (
        CapCounter(Channel.LINE, CapPeriod.DAY, "2026-05-01"),
        CapCounter(Channel.LINE, CapPeriod.WEEK, "2026-W18"),
    )
    final = result.enrolment
    assert final.state is EnrolmentState.COMPLETED and final.sends == 1 and final.last_send_at == NOW
    assert final.revision == 1


def test_line_or_email_falls_back_to_email_when_line_is_unreachable() -> None:
    step = {
        "id": "hi",
        "type": "send",
        "channel": "line_or_email",
        "line": line_text("LINE"),
        "email": {"subject": "件名 {{ profile.traits.email }}", "text": "本文"},
    }
    s = scenario([step])
    both = run(s, entered(s), NOW).dispatches[0]
    assert (both.channel, both.fallbacks, both.route) == ("line", ("email",), "line_then_email")
    assert set(both.messages) == {Channel.LINE, Channel.EMAIL}
    no_line = customer().model_copy(update={"line_user_id": None})
    only_email = run(s, entered(s, no_line), NOW, no_line).dispatches[0]
    assert (only_email.channel, only_email.fallbacks) == ("email", ())
    assert list(only_email.messages) == [Channel.EMAIL]
    assert only_email.messages[Channel.EMAIL].subject == "件名 cus_1@example.jp"


def test_a_line_send_to_a_customer_without_line_exits_the_journey() -> None:
    s = scenario()
    no_line = customer().model_copy(update={"line_user_id": None})
    result = run(s, entered(s, no_line), NOW, no_line)
    assert result.dispatches == []
    assert (
        result.enrolment.state is EnrolmentState.EXITED and result.enrolment.exit_reason == "unreachable:line"
    )


def test_a_render_failure_fails_the_step_cleanly_and_sends_nothing_half_written() -> None:
    s = scenario([send("first", "ok"), send("broken", "{{ profile.traits.last_name }}様"), send("after")])
    result = run(s, entered(s), NOW, caps=CapView(counts={}))
    assert [d.step_id for d in result.dispatches] == ["first"]
    final = result.enrolment
    assert final.state is EnrolmentState.EXITED and final.step_id == "broken"
    assert final.exit_reason is not None and "no value for profile.traits.last_name" in final.exit_reason


def test_set_trait_and_rich_menu_are_requested_and_seen_by_later_steps() -> None:
    s = scenario(
        [
            {"id": "mark", "type": "set_trait", "trait": "welcomed", "value": "{{ scenario.id }}"},
            {"id": "menu", "type": "rich_menu", "rich_menu_id": "richmenu-abc123"},
            {
                "id": "check",
                "type": "branch",
                "branches": [
                    {"when": {"kind": "trait", "trait": "welcomed", "value": "test"}, "next": "yes"}
                ],
            },
            {"id": "no", "type": "end"},
            send("yes"),
        ]
    )
    result = run(s, entered(s), NOW)
    assert [(t.trait, t.value) for t in result.traits] == [("welcomed", "test")]
    assert [m.rich_menu_id for m in result.rich_menus] == ["richmenu-abc123"]
    assert [d.step_id for d in result.dispatches] == ["yes"]


# -- holdout and A/B ----------------------------------------------------------------------------------------


def test_a_holdout_enrolment_is_recorded_runs_the_steps_and_sends_nothing() -> None:
    s = scenario(
        [
            send("hello"),
            {"id": "mark", "type": "set_trait", "trait": "x", "value": 1},
            {"id": "wait", "type": "wait", "duration": "1d"},
            send("again"),
        ],
        entry={"holdout_percent": 50},
        goal={"event": "Order Completed", "within": "7d"},
    )
    control = customer(holdout(50))
    e = entered(s, control)
    assert e.holdout
    first = run(s, e, NOW, control)
    assert first.dispatches == [] and first.caps == [] and first.traits == []
    assert [r.what for r in first.log][:1] == ["held_out"]
    assert first.enrolment.state is EnrolmentState.WAITING
    second = run(s, first.enrolment, NOW + timedelta(days=1), control)
    assert second.dispatches == [] and second.enrolment.state is EnrolmentState.COMPLETED
    # still measured against the goal, after its journey ended
    order = event("Order Completed", NOW + timedelta(days=2), control.customer_id)
    converted = on_event(s, second.enrolment, order, control, order.timestamp)
    assert converted is not None and converted.enrolment.state is EnrolmentState.CONVERTED
    treated = customer(not_holdout(50))
    assert not entered(s, treated).holdout


def split_scenario(weights: tuple[float, float]) -> Scenario:
    return scenario(
        [
            {
                "id": "ab",
                "type": "split",
                "variants": [
                    {"name": "A", "weight": weights[0], "next": "a"},
                    {"name": "B", "weight": weights[1], "next": "b"},
                ],
            },
            send("a", "A", next="done"),
            send("b", "B"),
            {"id": "done", "type": "end"},
        ]
    )


def test_ab_variants_are_deterministic_and_follow_the_weights() -> None:
    s = split_scenario((80, 20))
    chosen = []
    for i in range(1000):
        p = customer(f"cus_{i}")
        result = run(s, entered(s, p), NOW, p)
        assert (
            run(s, entered(s, p), NOW + timedelta(hours=3), p).enrolment.variant == result.enrolment.variant
        )
        assert result.dispatches[0].variant == result.enrolment.variant
        assert result.dispatches[0].step_id == result.enrolment.variant.lower()  # type: ignore[union-attr]
        chosen.append(result.enrolment.variant)
    assert 740 <= chosen.count("A") <= 860
    only_b = split_scenario((0, 1))
    assert {run(only_b, entered(only_b, customer(f"c{i}")), NOW).enrolment.variant for i in range(50)} == {
        "B"
    }


# -- branches and waits -------------------------------------------------------------------------------------


def test_a_branch_on_the_survey_answer() -> None:
    s = scenario(
        [
            {
                "id": "by-answer",
                "type": "branch",
                "branches": [
                    {"when": {"kind": "survey", "question": "taste", "answers": ["bitter"]}, "next": "tips"}
                ],
                "otherwise": "thanks",
            },
            send("tips", "淹れ方のコツ", next="done"),
            send("thanks", "ありがとう"),
            {"id": "done", "type": "end"},
        ]
    )
    bitter = customer(**{"survey.taste": "bitter"})
    great = customer(**{"survey.taste": "great"})
    assert [d.step_id for d in run(s, entered(s, bitter), NOW, bitter).dispatches] == ["tips"]
    assert [d.step_id for d in run(s, entered(s, great), NOW, great).dispatches] == ["thanks"]


def cart() -> Scenario:
    return Scenario.model_validate_json(
        (ROOT / "examples/scenarios/cart_abandonment.json").read_text("utf-8")
    )


def test_wait_for_event_the_cart_bought_sends_nothing() -> None:
    s = cart()
    p = customer(not_holdout(5, s.id))
    waiting = run(s, entered(s, p), NOW, p).enrolment
    assert waiting.state is EnrolmentState.WAITING_EVENT
    assert waiting.awaiting is not None and waiting.awaiting.timeout_at == NOW + timedelta(hours=1)
    order = event("Order Completed", NOW + timedelta(minutes=20), p.customer_id)
    result = on_event(s, waiting, order, p, order.timestamp)
    # the goal (an order within 2 days) converts before the wait's own path is needed
    assert result is not None and result.enrolment.state is EnrolmentState.CONVERTED
    assert result.dispatches == []


def test_wait_for_event_arriving_takes_the_on_event_path() -> None:
    s = scenario(
        [
            {
                "id": "w",
                "type": "wait_for_event",
                "event": "Order Completed",
                "timeout": "1h",
                "on_event": "thanks",
            },
            send("remind", "まだカートに", next="done"),
            send("thanks", "ありがとう"),
            {"id": "done", "type": "end"},
        ]
    )
    waiting = run(s, entered(s), NOW).enrolment
    order = event("Order Completed", NOW + timedelta(minutes=5))
    moved = on_event(s, waiting, order, customer(), order.timestamp)
    assert moved is not None and moved.dispatches == []
    assert moved.enrolment.state is EnrolmentState.ACTIVE and moved.enrolment.step_id == "thanks"
    assert moved.enrolment.revision == waiting.revision + 1
    sent = run(s, moved.enrolment, order.timestamp, events=[order])
    assert [d.step_id for d in sent.dispatches] == ["thanks"]
    # the same, when the event is only seen in the history at the time-out
    late = run(s, waiting, NOW + timedelta(hours=1), events=[order])
    assert [d.step_id for d in late.dispatches] == ["thanks"]


def test_wait_for_event_timing_out_sends_the_reminder() -> None:
    s = cart()
    p = customer(not_holdout(5, s.id))
    added = event("Product Added", NOW, p.customer_id).model_copy(update={"properties": {"name": "八女玉露"}})
    e = enrol(s, 1, p, added, None, NOW).enrolment
    assert e is not None
    waiting = run(s, e, NOW, p).enrolment
    assert run(s, waiting, NOW + timedelta(minutes=59), p).changed is False
    result = run(s, waiting, NOW + timedelta(hours=1), p)
    (dispatch,) = result.dispatches
    line = dispatch.messages[Channel.LINE]
    assert dispatch.step_id == "remind"
    assert "「八女玉露」がカートに残っています" in line.messages[0]["template"]["text"]
    assert result.enrolment.state is EnrolmentState.COMPLETED and result.enrolment.step_id == "done"


def test_a_wait_until_a_missing_date_exits() -> None:
    s = scenario([{"id": "w", "type": "wait", "until": {"date": "traits.birthday"}}, send("hi")])
    result = run(s, entered(s), NOW)
    assert result.enrolment.state is EnrolmentState.EXITED and result.enrolment.exit_reason == "no_date"


# -- goal and exits -----------------------------------------------------------------------------------------


def test_the_goal_converts_but_not_the_trigger_event_itself_nor_after_within() -> None:
    s = scenario(
        [{"id": "w", "type": "wait", "duration": "5d"}, send("hi")],
        trigger={"type": "event", "event": "Order Completed"},
        goal={"event": "Order Completed", "within": "3d"},
    )
    trigger = event("Order Completed")
    e = enrol(s, 1, customer(), trigger, None, NOW).enrolment
    assert e is not None
    waiting = run(s, e, NOW, events=[trigger]).enrolment
    assert waiting.state is EnrolmentState.WAITING
    assert on_event(s, waiting, trigger, customer(), NOW) is None
    late = event("Order Completed", NOW + timedelta(days=4))
    assert on_event(s, waiting, late, customer(), late.timestamp) is None
    soon = event("Order Completed", NOW + timedelta(days=2))
    result = on_event(s, waiting, soon, customer(), soon.timestamp)
    assert result is not None and result.enrolment.state is EnrolmentState.CONVERTED
    assert result.enrolment.due_at is None and result.enrolment.ended_at == soon.timestamp
    # advance finds a goal in the history too
    assert run(s, waiting, soon.timestamp, events=[trigger, soon]).enrolment.state is EnrolmentState.CONVERTED


def test_unfollowing_line_exits_when_the_next_sends_are_line_only() -> None:
    line_only = scenario([{"id": "w", "type": "wait", "duration": "1d"}, send("hi")])
    waiting = run(line_only, entered(line_only), NOW).enrolment
    unfollow = event("line_unfollow", NOW + timedelta(hours=1))
    result = on_event(line_only, waiting, unfollow, customer(), unfollow.timestamp)
    assert result is not None
    assert (
        result.enrolment.state is EnrolmentState.EXITED and result.enrolment.exit_reason == "opted_out:line"
    )
    with_email = scenario(
        [
            {"id": "w", "type": "wait", "duration": "1d"},
            {
                "id": "hi",
                "type": "send",
                "channel": "line_or_email",
                "line": line_text("x"),
                "email": {"subject": "s", "text": "t"},
            },
        ]
    )
    waiting = run(with_email, entered(with_email), NOW).enrolment
    kept = on_event(with_email, waiting, unfollow, customer(), unfollow.timestamp)
    assert kept is None or not kept.enrolment.ended


def test_a_blacklisted_customer_leaves_at_the_next_step() -> None:
    s = scenario()
    result = run(s, entered(s), NOW, customer(blacklisted=True))
    assert result.dispatches == [] and result.enrolment.exit_reason == "blacklisted"


def weekly_reminder(limit: int) -> Scenario:
    return scenario(
        [
            send("remind", "いかがですか", next="wait"),
            {"id": "wait", "type": "wait", "duration": "1w", "next": "remind"},
        ],
        exit={"no_response_after_sends": limit},
    )


def test_no_response_after_sends_exits_after_that_many_unanswered_sends() -> None:
    s = weekly_reminder(3)
    e = entered(s)
    keys = []
    at = NOW
    for _ in range(5):
        result = run(s, e, at)
        keys += [d.key for d in result.dispatches]
        e = result.enrolment
        if e.ended:
            break
        at = e.due_at or at
    assert keys == ["cus_1#test#v1#remind#e1", "cus_1#test#v1#remind#e1#2", "cus_1#test#v1#remind#e1#3"]
    assert e.state is EnrolmentState.EXITED and e.exit_reason == "no_response"


def test_any_event_after_a_send_is_a_response_and_the_loop_goes_on() -> None:
    s = weekly_reminder(2)
    e = run(s, entered(s), NOW).enrolment
    viewed = event("Product Viewed", NOW + timedelta(days=1))
    assert e.unanswered_sends == 1
    answered = on_event(s, e, viewed, customer(), viewed.timestamp)
    assert answered is not None and answered.enrolment.unanswered_sends == 0 and answered.dispatches == []
    before_the_send = event("Product Viewed", NOW - timedelta(minutes=1))
    assert on_event(s, e, before_the_send, customer(), viewed.timestamp) is None
    e = e.model_copy(update={"unanswered_sends": 2})
    # advance counts responses it finds in the history too
    third = run(s, e, NOW + timedelta(weeks=1), events=[viewed])
    assert len(third.dispatches) == 1 and not third.enrolment.ended


def test_a_bounce_or_complaint_after_a_send_is_not_a_response() -> None:
    s = weekly_reminder(2)
    e = run(s, entered(s), NOW).enrolment
    later = NOW + timedelta(hours=1)
    for name in ("Email Bounced", "Email Complained"):
        assert on_event(s, e, event(name, later), customer(), later) is None
    # The same names sent by a site are the site's own events: a response like any other.
    faked = event("Email Bounced", later).model_copy(update={"site_id": "shop"})
    answered = on_event(s, e, faked, customer(), later)
    assert answered is not None and answered.enrolment.unanswered_sends == 0


# -- caps and windows ---------------------------------------------------------------------------------------


def capped_line(at: datetime) -> CapView:
    day, _ = counters_of(Channel.LINE, at)
    return CapView(counts={day: 1})


def test_a_capped_send_is_skipped_when_the_scenario_says_skip() -> None:
    s = scenario([send("one"), send("two")], frequency_cap={"when_capped": "skip"})
    result = run(s, entered(s), NOW, caps=capped_line(NOW))
    assert result.dispatches == [] and [r.what for r in result.log][:2] == ["capped_skip", "capped_skip"]
    assert result.enrolment.state is EnrolmentState.COMPLETED


def test_the_second_send_of_one_activation_counts_the_first_against_the_cap() -> None:
    s = scenario([send("one"), send("two")], frequency_cap={"when_capped": "skip"})
    result = run(s, entered(s), NOW)
    assert [d.step_id for d in result.dispatches] == ["one"]
    assert [r.what for r in result.log][:2] == ["sent", "capped_skip"]


def test_a_capped_send_is_deferred_to_the_next_day_in_the_window_then_sent() -> None:
    s = scenario([send("one")], frequency_cap={"when_capped": "defer", "give_up_after": "3d"})
    result = run(s, entered(s), NOW, caps=capped_line(NOW))
    deferred = result.enrolment
    assert result.dispatches == [] and deferred.state is EnrolmentState.WAITING
    assert deferred.due_at == jst(5, 2, 9, 0) and deferred.deferred_since == NOW
    sent = run(s, deferred, jst(5, 2, 9, 0))
    assert [d.step_id for d in sent.dispatches] == ["one"] and sent.enrolment.deferred_since is None


def test_a_deferred_send_is_given_up_after_give_up_after() -> None:
    s = scenario(
        [send("one"), send("two", "next")], frequency_cap={"when_capped": "defer", "give_up_after": "1d"}
    )
    deferred = run(s, entered(s), NOW, caps=capped_line(NOW)).enrolment
    still_capped = capped_line(jst(5, 2, 12, 0))
    later = run(s, deferred, jst(5, 2, 12, 0), caps=still_capped)
    assert later.dispatches == []
    assert later.log[0].what == "capped_gave_up"
    # "two" meets the same cap and is deferred in its turn
    assert later.enrolment.step_id == "two" and later.enrolment.deferred_since == jst(5, 2, 12, 0)


def test_the_weekly_cap_defers_to_monday() -> None:
    s = scenario([send("one")])
    _, week = counters_of(Channel.LINE, NOW)
    result = run(s, entered(s), NOW, caps=CapView(counts={week: 3}))
    # Friday 1 May: the cap opens Monday 4 May at 00:00, the window at 09:00; give_up_after 3d allows it
    assert result.enrolment.due_at == jst(5, 4, 9, 0)


def test_a_send_due_in_quiet_hours_waits_for_the_window() -> None:
    s = scenario(
        [{"id": "w", "type": "wait", "duration": "10h"}, send("late")],
        send_window={"start": "09:00", "end": "21:00"},
    )
    waiting = run(s, entered(s), NOW).enrolment
    assert waiting.due_at == jst(5, 1, 22, 0)
    night = run(s, waiting, jst(5, 1, 22, 0))
    assert night.dispatches == [] and night.enrolment.state is EnrolmentState.WAITING
    assert night.enrolment.step_id == "late" and night.enrolment.due_at == jst(5, 2, 9, 0)
    morning = run(s, night.enrolment, jst(5, 2, 9, 0))
    assert [d.step_id for d in morning.dispatches] == ["late"]


def test_nothing_happens_before_the_due_time() -> None:
    s = scenario([{"id": "w", "type": "wait", "duration": "1d"}, send("hi")])
    waiting = run(s, entered(s), NOW).enrolment
    early = run(s, waiting, NOW + timedelta(hours=23))
    assert early.changed is False and early.enrolment == waiting


# -- the post-purchase example ------------------------------------------------------------------------------


def post_purchase() -> Scenario:
    return Scenario.model_validate_json(
        (ROOT / "examples/scenarios/post_purchase_tea.json").read_text("utf-8")
    )


def test_the_post_purchase_tea_example_plays_to_its_day_30_message() -> None:
    s = post_purchase()
    p = default_profile(not_holdout(10, s.id), NOW - timedelta(days=100))
    bought = jst(5, 1, 14, 0)
    raw = [
        {
            "event": "Order Completed",
            "timestamp": bought.isoformat(),
            "properties": {
                "order_id": "o1",
                "products": [{"sku": "GYO-YAME-100", "category": "玉露", "price": 3240}],
            },
        },
        {
            "event": "line_postback",
            "timestamp": jst(5, 4, 11, 0).isoformat(),
            "properties": {"survey": {"question": "gyokuro_taste", "answer": "great"}},
        },
    ]
    sim = simulate(s, events_from(raw, p.customer_id), p)
    sends = sim.sends
    assert sends[0].step_id == "ask-taste" and sends[0].at == jst(5, 4, 10, 0)
    assert sends[1].step_id == "thanks-review"
    assert sends[-1].step_id == "refill-reminder" and sends[-1].at == jst(5, 31, 10, 0)
    assert sim.enrolment is not None and sim.enrolment.state is EnrolmentState.COMPLETED
    assert sim.enrolment.variant in ("A-coupon", "B-pairing")


# -- racing evaluators --------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=3 * 24 * 60), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=4), min_size=2, max_size=12),
)
def test_evaluators_of_one_revision_decide_the_same_sends_and_only_one_commits(
    minutes: list[int], order: list[int]
) -> None:
    """Decisions are pure functions of (enrolment revision, now): evaluators that read the same revision
    at the same time produce identical dispatch keys; a conditional write lets one of them commit."""
    s = weekly_reminder(5)
    store: dict[str, Enrolment] = {"e": entered(s)}
    enqueued: set[str] = set()
    committed: list[list[str]] = []
    for step in minutes:
        read = store["e"]
        at = (read.due_at or NOW) + timedelta(minutes=step)
        evaluations = [run(s, read, at) for _ in range(1 + max(order) % 3)]
        keys = {tuple(d.key for d in r.dispatches) for r in evaluations}
        assert len(keys) == 1
        assert (
            len({json.dumps(r.enrolment.model_dump(mode="json"), sort_keys=True) for r in evaluations}) == 1
        )
        for index in order:
            result = evaluations[index % len(evaluations)]
            enqueued.update(d.key for d in result.dispatches)  # enqueued before the write
            if result.changed and store["e"].revision == read.revision:  # the conditional write
                store["e"] = result.enrolment
                committed.append([d.key for d in result.dispatches])
    all_committed = [k for keys in committed for k in keys]
    assert len(all_committed) == len(set(all_committed))  # each send committed once
    assert enqueued == set(all_committed)  # losers enqueued nothing the winner did not

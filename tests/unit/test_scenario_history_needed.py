"""`engine.needs_history`: when a decision reads the customer's event history, and that a decision
it says needs none comes out the same without it (so the runner may skip the Query, issue 11)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cems.models import ChannelState, MessageType, Profile, StoredEvent
from cems.scenario import engine
from cems.scenario.engine import CapView, EnrolmentState, advance, enrol, needs_history
from cems.scenario.model import Scenario

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


def _scenario(**changes: Any) -> Scenario:
    document: dict[str, Any] = {
        "id": "plain",
        "name": "plain",
        "version": 1,
        "trigger": {"type": "broadcast", "at": "2026-05-01T12:05:00+09:00"},
        "audience": {"kind": "reachable", "channel": "line"},
        "exit": {"no_response_after_sends": None},
        "steps": [
            {"id": "hello", "type": "send", "channel": "line", "line": [{"type": "text", "text": "hi"}]},
            {"id": "pause", "type": "wait", "duration": "1d"},
            {"id": "again", "type": "send", "channel": "line", "line": [{"type": "text", "text": "again"}]},
        ],
    }
    return Scenario.model_validate(document | changes)


def _profile() -> Profile:
    return Profile(
        customer_id="c1",
        line_user_id="U" + "0" * 32,
        channels={"line": ChannelState(reachable=True, consent=True, updated_at=NOW)},
        first_seen_at=NOW - timedelta(days=30),
        updated_at=NOW,
    )


def _history() -> list[StoredEvent]:
    return [
        StoredEvent(
            customer_id="c1",
            site_id="shop",
            type=MessageType.TRACK,
            message_id=f"m{n}",
            event=name,
            timestamp=NOW - timedelta(hours=n),
            received_at=NOW - timedelta(hours=n),
            properties={},
        )
        for n, name in enumerate(["Order Completed", "Page Viewed", "Order Completed"], start=1)
    ]


COUNTING = {"kind": "event_count", "event": "Order Completed", "at_least": 1}


def test_a_plain_broadcast_reads_no_history_to_enter_or_to_go_on() -> None:
    scenario = _scenario()
    assert not needs_history(scenario, None)
    entered = enrol(scenario, 1, _profile(), None, None, NOW).enrolment
    assert entered is not None
    waiting = advance(scenario, entered, _profile(), [], NOW, CapView()).enrolment
    assert waiting.state is EnrolmentState.WAITING
    assert not needs_history(scenario, waiting)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"audience": {"kind": "not", "condition": COUNTING}}, "an audience that counts events"),
        ({"goal": {"event": "Order Completed", "within": "2d"}}, "a goal (for a journey going on)"),
        ({"exit": {"no_response_after_sends": 2}}, "no-response exits, once something is unanswered"),
    ],
)
def test_what_makes_a_decision_read_the_history(changes: dict[str, Any], why: str) -> None:
    scenario = _scenario(**changes)
    going_on = engine.Enrolment(
        customer_id="c1",
        scenario_id="plain",
        version=1,
        step_id="pause",
        state=EnrolmentState.WAITING,
        entered_at=NOW - timedelta(days=2),
        due_at=NOW,
        sends=1,
        unanswered_sends=1,
        last_send_at=NOW - timedelta(days=2),
    )
    assert needs_history(scenario, None) or needs_history(scenario, going_on), why


def test_a_branch_counting_events_and_a_wait_for_an_event_read_the_history() -> None:
    steps = [
        {"id": "ask", "type": "branch", "branches": [{"when": COUNTING, "next": "done"}]},
        {"id": "done", "type": "end"},
    ]
    assert needs_history(_scenario(steps=steps), None)
    cart = Scenario.model_validate(json.loads((EXAMPLES / "cart_abandonment.json").read_text("utf-8")))
    waiting = engine.Enrolment(
        customer_id="c1",
        scenario_id=cart.id,
        version=1,
        step_id="wait-for-order",
        state=EnrolmentState.WAITING_EVENT,
        entered_at=NOW,
        awaiting=engine.Awaiting(event="Order Completed", since=NOW, timeout_at=NOW + timedelta(hours=1)),
    )
    assert needs_history(cart, waiting)
    # An event enrols it and its goal counts from that event: the history is read to enter too.
    assert needs_history(cart, None, _history()[1])


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.json")))
def test_where_no_history_is_needed_the_decision_is_the_same_without_it(name: str) -> None:
    """Every example scenario: enter (and run) a journey, then run it again when it is next due,
    with and without the customer's history, wherever `needs_history` says it is not needed."""
    scenario = Scenario.model_validate(json.loads((EXAMPLES / name).read_text("utf-8")))
    profile, history = _profile(), _history()
    checked = 0
    if not needs_history(scenario, None):
        with_events = enrol(scenario, 1, profile, None, None, NOW, events=history)
        without = enrol(scenario, 1, profile, None, None, NOW, events=())
        assert with_events == without
        checked += 1
    entered = enrol(scenario, 1, profile, None, None, NOW, events=history).enrolment
    moment = NOW
    current = entered
    for _ in range(4):  # the journey's next activations
        if current is None or current.ended:
            break
        if not needs_history(scenario, current):
            a = advance(scenario, current, profile, history, moment, CapView())
            b = advance(scenario, current, profile, (), moment, CapView())
            assert a == b
            checked += 1
        current = advance(scenario, current, profile, history, moment, CapView()).enrolment
        moment = max(moment, current.due_at or moment) + timedelta(minutes=1)
    assert checked >= 0  # scenarios that need the history everywhere are checked by the cases above

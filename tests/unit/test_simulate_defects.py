"""`cems scenario simulate` believes what production believes: consent withdrawn by an identify or
by unsubscribing, a date trigger whose date comes from the events, and every step type or a loud no."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest
from cems.reports.report import reported_type
from cems.scenario.model import Scenario
from cems.scenario.simulate import UnknownStep, check_steps, simulate_files

PROFILE = json.dumps({"customer_id": "cus_1", "traits": {"email": "hanako@example.jp"}})


def email_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "id": "mail_after_cart",
            "name": "mail after cart",
            "trigger": {"type": "event", "event": "Product Added"},
            "steps": [
                {
                    "id": "mail",
                    "type": "send",
                    "channel": "email",
                    "email": {"subject": "お忘れではありませんか", "text": "カートに商品があります"},
                }
            ],
        }
    )


def cart_added(at: str) -> dict[str, Any]:
    return {"event": "Product Added", "timestamp": at, "properties": {"name": "八女玉露"}}


def test_a_customer_with_email_consent_is_mailed() -> None:
    events = [cart_added("2026-05-01T12:00:00+09:00")]
    sim = simulate_files(email_scenario(), json.dumps(events), PROFILE)
    assert [entry.channel for entry in sim.sends] == ["email"]


def test_after_an_identify_with_email_opt_in_false_no_mail_is_simulated() -> None:
    events = [
        {"type": "identify", "timestamp": "2026-05-01T11:00:00+09:00", "traits": {"email_opt_in": False}},
        cart_added("2026-05-01T12:00:00+09:00"),
    ]
    sim = simulate_files(email_scenario(), json.dumps(events), PROFILE)
    assert sim.sends == []
    assert sim.enrolment is not None and sim.enrolment.exit_reason == "unreachable:email"


def test_after_email_unsubscribed_no_mail_is_simulated() -> None:
    events = [
        {"event": "Email Unsubscribed", "timestamp": "2026-05-01T11:00:00+09:00"},
        cart_added("2026-05-01T12:00:00+09:00"),
    ]
    sim = simulate_files(email_scenario(), json.dumps(events), PROFILE)
    assert sim.sends == []
    assert sim.enrolment is not None and sim.enrolment.exit_reason == "unreachable:email"


def test_email_unsubscribed_sent_by_a_shop_changes_no_consent() -> None:
    # Production changes the email channel only for engage's own event (cems.profile_facts).
    events = [
        {"event": "Email Unsubscribed", "site_id": "shop", "timestamp": "2026-05-01T11:00:00+09:00"},
        cart_added("2026-05-01T12:00:00+09:00"),
    ]
    sim = simulate_files(email_scenario(), json.dumps(events), PROFILE)
    assert [entry.channel for entry in sim.sends] == ["email"]


def test_a_browsers_opt_in_waits_for_the_confirmation_click_as_in_production() -> None:
    profile = json.dumps({"customer_id": "cus_1", "channels": {}, "traits": {"email": "hanako@example.jp"}})
    opt_in = {"type": "identify", "timestamp": "2026-05-01T10:00:00+09:00", "traits": {"email_opt_in": True}}
    later = cart_added("2026-05-01T12:00:00+09:00")
    from_browser = simulate_files(
        email_scenario(), json.dumps([{**opt_in, "proof": "verified"}, later]), profile
    )
    from_server = simulate_files(email_scenario(), json.dumps([opt_in, later]), profile)
    assert from_browser.sends == []
    assert [entry.channel for entry in from_server.sends] == ["email"]


def repurchase_reminder() -> Scenario:
    return Scenario.model_validate(
        {
            "id": "reminder",
            "name": "30 days after the last purchase",
            "time_zone": "Asia/Tokyo",
            "trigger": {"type": "date", "date": "last_purchase_at", "offset": "30d", "at": "10:00"},
            "steps": [
                {
                    "id": "remind",
                    "type": "send",
                    "channel": "line",
                    "line": [{"type": "text", "text": "そろそろ"}],
                }
            ],
        }
    )


def test_a_date_trigger_enrols_on_a_purchase_given_in_the_events() -> None:
    order = {
        "event": "Order Completed",
        "timestamp": "2026-05-01T12:00:00+09:00",
        "properties": {"order_id": "o1", "revenue": 3000, "currency": "JPY"},
    }
    sim = simulate_files(repurchase_reminder(), json.dumps([order]), PROFILE)
    assert sim.lines()[-1] != "not enrolled"
    sends = sim.sends
    assert len(sends) == 1
    assert sends[0].at.isoformat() == "2026-05-31T01:00:00+00:00"  # 10:00 in Tokyo


def test_a_later_purchase_moves_the_date_triggers_entry() -> None:
    orders = [
        {"event": "Order Completed", "timestamp": at, "properties": {"order_id": oid, "revenue": 1000}}
        for oid, at in (("o1", "2026-05-01T12:00:00+09:00"), ("o2", "2026-05-20T12:00:00+09:00"))
    ]
    sim = simulate_files(repurchase_reminder(), json.dumps(orders), PROFILE)
    assert [entry.at.isoformat() for entry in sim.sends] == ["2026-06-19T01:00:00+00:00"]


def test_simulate_refuses_a_step_type_it_does_not_know_by_name() -> None:
    scenario = email_scenario()
    odd = scenario.model_copy(update={"steps": [*scenario.steps, cast(Any, _StrangeStep())]})
    with pytest.raises(UnknownStep, match="'teleport'"):
        check_steps(odd)


def test_the_report_refuses_a_step_type_it_does_not_know_by_name() -> None:
    with pytest.raises(ValueError, match="'teleport'"):
        reported_type(cast(Any, _StrangeStep()))


class _StrangeStep:
    """A step of a type no module knows (as a new type would be before it is taught)."""

    id = "beam"
    type = "teleport"


def line_scenario() -> Scenario:
    return Scenario.model_validate(
        {
            "id": "line_after_cart",
            "name": "LINE after cart",
            "trigger": {"type": "event", "event": "Product Added"},
            "steps": [
                {
                    "id": "nudge",
                    "type": "send",
                    "channel": "line",
                    "line": [{"type": "text", "text": "カート"}],
                }
            ],
        }
    )


def test_after_blocking_the_line_account_no_line_message_is_simulated() -> None:
    profile = json.dumps({"customer_id": "cus_1", "line_user_id": "Uabc"})
    events = [
        {"event": "line_unfollow", "timestamp": "2026-05-01T11:00:00+09:00"},
        cart_added("2026-05-01T12:00:00+09:00"),
    ]
    sim = simulate_files(line_scenario(), json.dumps(events), profile)
    assert sim.sends == []
    assert sim.enrolment is not None and sim.enrolment.exit_reason == "unreachable:line"

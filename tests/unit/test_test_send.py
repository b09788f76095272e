"""Test sends without AWS: the recipient spec, the step, rendering as the engine does, the dispatch
that comes out (test flag, fresh keys, the staff recipient only) and every refusal."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cems.channels.plugin import SendContext
from cems.email.dispatch import EmailDispatch
from cems.line.dispatch import LineDispatch
from cems.models import Channel, ChannelState, Profile
from cems.scenario.engine import render_step, step_scope
from cems.scenario.model import Scenario, SendStep
from cems.scenario.test_send import (
    TEST_CUSTOMER,
    Recipient,
    build_test_send,
    describe,
    event_from_json,
    parse_recipient,
    profile_from_json,
    render_preview,
    sample_profile,
)
from pydantic import ValidationError

ROOT = Path(__file__).parents[2]
EXAMPLES = ROOT / "examples" / "scenarios"
LINE_ID = "U" + "0123456789abcdef" * 2
STAFF = "staff@midori-tea.example.jp"
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
KEY = re.compile(r"^test#(?P<scenario>[^#]+)#(?P<step>[^#]+)#(?P<uuid>[0-9a-f]{32})$")
ORDER_ID = "{{ event.properties.order_id }}"
NAME = "{{ profile.traits.last_name | default: 'お客' }}"


def example(name: str) -> Scenario:
    return Scenario.model_validate(json.loads((EXAMPLES / f"{name}.json").read_text(encoding="utf-8")))


def scenario(**overrides: Any) -> Scenario:
    """A small scenario with a LINE step, an email step, a step on either, and steps that send nothing."""
    data: dict[str, Any] = {
        "id": "scn-test-send",
        "name": "テスト送信の確認",
        "version": 3,
        "trigger": {"type": "event", "event": "Order Completed"},
        "tracking": {"clicks": True, "opens": False},
        "steps": [
            {
                "id": "hello-line",
                "type": "send",
                "channel": "line",
                "notification_disabled": True,
                "line": [
                    {
                        "type": "text",
                        "text": NAME + "様、{{ scenario.name }} です",
                    }
                ],
            },
            {"id": "wait-1", "type": "wait", "duration": "1d"},
            {
                "id": "hello-mail",
                "type": "send",
                "channel": "email",
                "email": {
                    "subject": '{{ profile.traits.last_name | default: "お客" }}様へ新茶のご案内',
                    "html": "<p>{{ profile.traits.last_name | default: 'お客' }}様</p>"
                    '<p><a href="https://shop.example.jp/shincha">見る</a></p>',
                    "text": "新茶のご案内 https://shop.example.jp/shincha",
                },
            },
            {
                "id": "either",
                "type": "send",
                "channel": "line_or_email",
                "line": [{"type": "text", "text": f"ご注文 {ORDER_ID} ありがとうございます"}],
                "email": {
                    "subject": f"ご注文 {ORDER_ID}",
                    "text": "ありがとうございます",
                },
            },
            {
                "id": "needs-name",
                "type": "send",
                "channel": "line",
                "line": [{"type": "text", "text": "{{ profile.traits.last_name }}様"}],
            },
            {"id": "done", "type": "end"},
        ],
        **overrides,
    }
    return Scenario.model_validate(data)


def customer(**traits: Any) -> Profile:
    state = ChannelState(reachable=False, consent=False, updated_at=NOW, reason="unfollow")
    return Profile(
        customer_id="cus_real_0001",
        traits=traits,
        line_user_id="U" + "f" * 32,
        channels={Channel.LINE: state, Channel.EMAIL: state},
        first_seen_at=NOW,
        updated_at=NOW,
    )


ORDER = {
    "event": "Order Completed",
    "timestamp": "2026-11-01T10:00:00+09:00",
    "properties": {"order_id": "A-1001"},
}


# --- the recipient ------------------------------------------------------------------------------------


def test_recipients_parse_and_keep_their_value_out_of_repr() -> None:
    line = parse_recipient(f"line:{LINE_ID}")
    assert (line.channel, line.address) == ("line", LINE_ID)
    mail = parse_recipient(f" email:{STAFF} ")
    assert (mail.channel, mail.address) == ("email", STAFF)
    assert LINE_ID not in repr(line) and STAFF not in repr(mail)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (LINE_ID, "line:<LINE user id>"),
        ("sms:09012345678", "line:<LINE user id>"),
        ("line:", "line:<LINE user id>"),
        ("line:U123", "U and 32 hex digits"),
        ("line:" + LINE_ID.upper(), "U and 32 hex digits"),
        ("line:" + LINE_ID + "0", "U and 32 hex digits"),
        ("email:not-an-address", "email: needs an address"),
        ("email:スタッフ@example.jp", "email: needs an address"),
        ("email:staff@localhost", "email: needs an address"),
    ],
)
def test_malformed_recipients_are_refused_without_echoing_them(spec: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=re.escape(fragment)) as caught:
        parse_recipient(spec)
    value = spec.partition(":")[2]
    if len(value) > 8:
        assert value not in str(caught.value)
    with pytest.raises(ValueError, match=re.escape(fragment)):
        build_test_send(scenario(), "hello-line", spec)


# --- which step ---------------------------------------------------------------------------------------


def test_an_unknown_step_is_named_with_the_send_steps_there_are() -> None:
    with pytest.raises(ValueError, match="no step 'nope'") as caught:
        build_test_send(scenario(), "nope", f"line:{LINE_ID}")
    assert "hello-line, hello-mail, either, needs-name" in str(caught.value)


@pytest.mark.parametrize(("step_id", "kind"), [("wait-1", "wait"), ("done", "end")])
def test_a_step_that_sends_nothing_is_refused(step_id: str, kind: str) -> None:
    with pytest.raises(ValueError, match=f"step {step_id} is a {kind} step, not a send step"):
        build_test_send(scenario(), step_id, f"line:{LINE_ID}")


def test_line_to_an_email_only_step_and_email_to_a_line_only_step_are_refused() -> None:
    with pytest.raises(ValueError, match="hello-mail sends on email only; give --to email:"):
        build_test_send(scenario(), "hello-mail", f"line:{LINE_ID}")
    with pytest.raises(ValueError, match="hello-line sends on LINE only; give --to line:"):
        build_test_send(scenario(), "hello-line", f"email:{STAFF}")


# --- LINE ---------------------------------------------------------------------------------------------


def test_a_line_step_becomes_a_test_dispatch_for_the_staff_account_only() -> None:
    sent = build_test_send(scenario(), "hello-line", f"line:{LINE_ID}")
    assert sent.channel == "line" and sent.step_id == "hello-line"
    d = sent.dispatch
    assert isinstance(d, LineDispatch)
    assert d.test is True
    assert d.test_line_user_id == LINE_ID
    assert d.recipients == [TEST_CUSTOMER]
    assert (d.scenario_id, d.version, d.step_id, d.variant) == ("scn-test-send", 3, "hello-line", None)
    assert d.notification_disabled is True
    assert d.messages == [{"type": "text", "text": "お客様、テスト送信の確認 です"}]
    assert d.idempotency_key == sent.key
    match = KEY.match(sent.key)
    assert match is not None and (match["scenario"], match["step"]) == ("scn-test-send", "hello-line")
    assert sent.preview == "お客様、テスト送信の確認 です"
    # What goes on the queue reads back as the same dispatch.
    assert LineDispatch.model_validate_json(sent.body()) == d


def test_the_content_is_what_the_engine_renders_for_that_profile() -> None:
    s = scenario()
    who = customer(last_name="佐藤")
    step = s.step("hello-line")
    assert isinstance(step, SendStep)
    send = SendContext(
        key="k", customer_id=who.customer_id, scenario_id=s.id, version=s.version, step_id=step.id
    )
    expected = render_step(Channel.LINE, step, step_scope(s, s.version, step, who, None), send).messages
    sent = build_test_send(s, "hello-line", f"line:{LINE_ID}", who)
    assert isinstance(sent.dispatch, LineDispatch)
    assert sent.dispatch.messages == expected == [{"type": "text", "text": "佐藤様、テスト送信の確認 です"}]
    # A named customer who cannot be reached on LINE is still only the template's profile: the test
    # goes to the staff account, and the customer's own LINE id is nowhere in the dispatch.
    assert sent.dispatch.recipients == ["cus_real_0001"]
    assert "U" + "f" * 32 not in sent.body()


def test_the_same_step_twice_makes_two_distinct_keys() -> None:
    keys = {build_test_send(scenario(), "hello-line", f"line:{LINE_ID}").key for _ in range(50)}
    assert len(keys) == 50


def test_a_long_scenario_and_step_id_still_make_a_key_within_limits() -> None:
    s = scenario(id="s" * 64)
    sent = build_test_send(s, "hello-line", f"line:{LINE_ID}")
    assert len(sent.key) <= 256 and sent.key.startswith("test#" + "s" * 64 + "#hello-line#")


# --- email --------------------------------------------------------------------------------------------


def test_an_email_step_becomes_a_test_dispatch_to_the_staff_address() -> None:
    s = scenario()
    sent = build_test_send(s, "hello-mail", f"email:{STAFF}", customer(last_name="佐藤"))
    assert sent.channel == "email"
    d = sent.dispatch
    assert isinstance(d, EmailDispatch)
    assert (d.test, d.to_address, d.customer_id) == (True, STAFF, "cus_real_0001")
    assert (d.scenario_id, d.version, d.step_id, d.variant) == ("scn-test-send", 3, "hello-mail", None)
    assert (d.track_clicks, d.track_opens) == (True, False)  # the scenario's tracking
    step = s.step("hello-mail")
    assert isinstance(step, SendStep)
    send = SendContext(key="k", customer_id="cus_real_0001", scenario_id=s.id, version=3, step_id=step.id)
    expected = render_step(
        Channel.EMAIL, step, step_scope(s, 3, step, customer(last_name="佐藤"), None), send
    )
    assert (d.subject, d.html, d.text) == (expected.subject, expected.html, expected.text)
    assert d.subject == "佐藤様へ新茶のご案内"
    assert sent.preview == "佐藤様へ新茶のご案内"
    assert KEY.match(d.idempotency_key)
    assert EmailDispatch.model_validate_json(sent.body()) == d


def test_a_step_on_either_channel_goes_where_the_recipient_is() -> None:
    event = event_from_json(ORDER, TEST_CUSTOMER)
    line = build_test_send(scenario(), "either", Recipient("line", LINE_ID), event=event)
    mail = build_test_send(scenario(), "either", Recipient("email", STAFF), event=event)
    assert isinstance(line.dispatch, LineDispatch) and isinstance(mail.dispatch, EmailDispatch)
    assert line.dispatch.messages[0]["text"] == "ご注文 A-1001 ありがとうございます"
    assert mail.dispatch.subject == "ご注文 A-1001"


def test_the_follow_mail_example_renders_with_the_sample_profile() -> None:
    sent = build_test_send(example("follow_mail"), "brewing-guide", f"email:{STAFF}")
    assert isinstance(sent.dispatch, EmailDispatch)
    assert sent.dispatch.customer_id == TEST_CUSTOMER
    assert sent.dispatch.subject and sent.preview == sent.dispatch.subject[:40]


# --- previews (the console's) -------------------------------------------------------------------------


def test_a_preview_renders_each_channel_of_the_step_as_a_test_send_does() -> None:
    event = event_from_json(ORDER, TEST_CUSTOMER)
    line, mail = render_preview(scenario(), "either", event=event)
    assert (line.channel, mail.channel) == ("line", "email")
    sent = build_test_send(scenario(), "either", Recipient("line", LINE_ID), event=event)
    assert isinstance(sent.dispatch, LineDispatch)
    assert line.content() == {"messages": sent.dispatch.messages, "notification_disabled": False}
    assert mail.content() == {"subject": "ご注文 A-1001", "text": "ありがとうございます", "html": None}
    assert line.preview == sent.preview and mail.preview == "ご注文 A-1001"


def test_a_preview_uses_the_given_profile_and_refuses_as_a_test_send_does() -> None:
    (mail,) = render_preview(scenario(), "hello-mail", customer(last_name="佐藤"))
    assert mail.content()["subject"] == "佐藤様へ新茶のご案内" and "<p>佐藤様</p>" in mail.content()["html"]
    with pytest.raises(ValueError, match="needs-name cannot be rendered"):
        render_preview(scenario(), "needs-name")
    with pytest.raises(ValueError, match="not a send step"):
        render_preview(scenario(), "wait-1")
    with pytest.raises(ValueError, match="no step 'nope'"):
        render_preview(scenario(), "nope")


# --- rendering failures -------------------------------------------------------------------------------


def test_a_missing_value_without_a_default_is_named() -> None:
    with pytest.raises(ValueError, match="needs-name cannot be rendered") as caught:
        build_test_send(scenario(), "needs-name", f"line:{LINE_ID}")
    assert "profile.traits.last_name" in str(caught.value)
    assert "default" in str(caught.value)
    assert build_test_send(scenario(), "needs-name", f"line:{LINE_ID}", customer(last_name="佐藤"))


def test_a_missing_trigger_event_suggests_the_event_file() -> None:
    with pytest.raises(ValueError, match=r"event\.properties") as caught:
        build_test_send(scenario(), "either", f"email:{STAFF}")
    assert "--event-file" in str(caught.value)


def test_content_that_breaks_line_limits_after_rendering_is_refused() -> None:
    s = scenario()
    who = customer(last_name="あ" * 5000)
    with pytest.raises(ValueError, match=r"hello-line cannot be rendered.*at most 5000"):
        build_test_send(s, "hello-line", f"line:{LINE_ID}", who)


def test_a_subject_with_a_line_break_after_rendering_is_refused() -> None:
    with pytest.raises(ValueError, match="subject"):
        build_test_send(scenario(), "hello-mail", f"email:{STAFF}", customer(last_name="佐藤\nBcc: x"))


# --- profile and event files --------------------------------------------------------------------------


def test_a_profile_file_is_laid_over_the_sample() -> None:
    who = profile_from_json({"traits": {"last_name": "鈴木"}})
    assert who.customer_id == TEST_CUSTOMER
    assert who.traits["last_name"] == "鈴木" and who.traits["email"] == sample_profile().traits["email"]
    sent = build_test_send(scenario(), "needs-name", f"line:{LINE_ID}", who)
    assert sent.preview == "鈴木様"


@pytest.mark.parametrize(
    ("data", "fragment"),
    [([], "JSON object"), ({"traits": "no"}, "not a profile"), ({"channels": {"line": 1}}, "not a profile")],
)
def test_a_bad_profile_file_is_a_plain_error(data: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        profile_from_json(data)


def test_an_event_file_holds_one_event() -> None:
    assert event_from_json([ORDER], "cus_1").properties == {"order_id": "A-1001"}
    with pytest.raises(ValueError, match="one event"):
        event_from_json([ORDER, ORDER], "cus_1")
    with pytest.raises(ValueError, match="timestamp"):
        event_from_json({"event": "Order Completed"}, "cus_1")


def test_describe_has_no_recipient() -> None:
    sent = build_test_send(scenario(), "hello-line", f"line:{LINE_ID}")
    shown = describe(sent)
    assert set(shown) == {"step", "channel", "key", "preview"}
    assert LINE_ID not in json.dumps(dict(shown), ensure_ascii=False)


# --- the LINE dispatch's test recipient ---------------------------------------------------------------


def line_dispatch(**extra: Any) -> LineDispatch:
    values = {"idempotency_key": "k", "recipients": ["cus_1"], "messages": [{"type": "text", "text": "x"}]}
    return LineDispatch.model_validate({**values, **extra})


def test_test_line_user_id_needs_a_test_and_one_recipient_and_a_line_user_id() -> None:
    staff = line_dispatch(test=True, test_line_user_id=LINE_ID)
    assert staff.test_line_user_id == LINE_ID and LINE_ID not in repr(staff)
    with pytest.raises(ValidationError, match="test sends"):
        line_dispatch(test_line_user_id=LINE_ID)
    with pytest.raises(ValidationError, match="exactly one recipient"):
        line_dispatch(test=True, test_line_user_id=LINE_ID, recipients=["cus_1", "cus_2"])
    with pytest.raises(ValidationError):
        line_dispatch(test=True, test_line_user_id="U123")
    # Dispatches without it serialise as before (the field is left out), and keep their fingerprint.
    assert "test_line_user_id" not in line_dispatch(test=True).to_sqs_body()
    assert (
        line_dispatch(test=True).fingerprint()
        != line_dispatch(test=True, test_line_user_id=LINE_ID).fingerprint()
    )


def test_the_sender_plans_one_push_for_a_test_recipient_without_profiles() -> None:
    from cems.line.deliveries import UnitKind
    from cems.line.sender import make_plan

    plan = make_plan(line_dispatch(test=True, test_line_user_id=LINE_ID), {})
    [unit] = plan.units
    assert (unit.unit_id, unit.kind, unit.customer_ids) == ("m0000", UnitKind.PUSH, ("cus_1",))
    assert plan.skipped == {} and plan.metadata["test"] is True
    own = {"cus_1": [{"type": "text", "text": "y"}]}
    personal = line_dispatch(test=True, test_line_user_id=LINE_ID, messages=[], personalised=own)
    assert [u.unit_id for u in make_plan(personal, {}).units] == ["p#cus_1"]
    # Without it, a recipient with no profile is skipped as before.
    assert make_plan(line_dispatch(test=True), {}).units == ()

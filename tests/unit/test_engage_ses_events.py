"""SES event parsing and CEMS's mail tags without AWS: the samples parse, tag values stay within
what SES allows and read back exactly, and engage's small rules (message ids, identities)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cems.engagement.engage import identity_of, message_id, report_cell
from cems.engagement.ses_events import (
    TAG_CUSTOMER,
    TAG_DISPATCH,
    TAG_SCENARIO,
    TAG_STEP,
    TAG_TEST,
    TAG_VARIANT,
    TAG_VERSION,
    DispatchTags,
    email_tags,
    from_tag_value,
    parse_ses_event,
    tag_value,
)
from cems.models import Channel, Profile
from cems.reports.counters import ReportCell
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

SAMPLES = Path(__file__).parents[2] / "events" / "engage"
# https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_MessageTag.html
SES_TAG = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
KEY = "cus_0f3a9c2e7b1d4e5f8a6b9c0d1e2f3a4b#welcome_mail#v2#mail_1#e1"


def ses_message(name: str) -> str:
    document = json.loads((SAMPLES / name).read_text(encoding="utf-8"))
    [record] = document["Records"]
    assert record["EventSource"] == "aws:sns"
    message: str = record["Sns"]["Message"]
    return message


@given(st.text(max_size=300))
def test_tag_values_are_what_ses_allows_and_read_back(text: str) -> None:
    value = tag_value(text)
    assert SES_TAG.match(value)
    if not value.startswith("__"):
        assert from_tag_value(value) == text


def test_tag_values_stay_readable() -> None:
    assert tag_value(KEY) == "cus_5F0f3a9c2e7b1d4e5f8a6b9c0d1e2f3a4b_23welcome_5Fmail_23v2_23mail_5F1_23e1"
    assert tag_value("cart-abandonment") == "cart-abandonment"  # kebab-case ids stay as they are
    assert tag_value("春のセール") == "".join(f"_{b:02X}" for b in "春のセール".encode())
    assert tag_value("a.b@c_d") == "a_2Eb_40c_5Fd"


def test_a_value_too_long_is_hashed() -> None:
    value = tag_value("#" * 100)
    assert value.startswith("__") and len(value) == 66
    assert from_tag_value(value) is None
    assert tag_value("#" * 100) == value


def test_email_tags_leave_out_what_a_dispatch_lacks() -> None:
    assert email_tags(dispatch_key="k#1", customer_id="cus_1") == [
        {"Name": TAG_DISPATCH, "Value": "k_231"},
        {"Name": TAG_CUSTOMER, "Value": "cus_5F1"},
    ]
    tags = email_tags(
        dispatch_key=KEY,
        customer_id="cus_1",
        scenario_id="welcome_mail",
        version=2,
        step_id="mail_1",
        variant="B案",
        test=True,
    )
    names = [t["Name"] for t in tags]
    assert names == [TAG_DISPATCH, TAG_CUSTOMER, TAG_SCENARIO, TAG_VERSION, TAG_STEP, TAG_VARIANT, TAG_TEST]
    assert all(SES_TAG.match(t["Name"]) and SES_TAG.match(t["Value"]) for t in tags)


def test_tags_read_back_into_the_dispatch() -> None:
    tags = email_tags(
        dispatch_key=KEY,
        customer_id="cus_1",
        scenario_id="welcome_mail",
        version=2,
        step_id="mail_1",
        variant="B案",
    )
    read = DispatchTags.from_mail({t["Name"]: [t["Value"]] for t in tags} | {"ses:configuration-set": ["x"]})
    assert read == DispatchTags(
        dispatch=tag_value(KEY),
        dispatch_key=KEY,
        customer_id="cus_1",
        scenario_id="welcome_mail",
        version=2,
        step_id="mail_1",
        variant="B案",
        test=False,
    )
    assert DispatchTags.from_mail({"ses:configuration-set": ["x"]}) is None


def test_the_bounce_sample_parses() -> None:
    event = parse_ses_event(ses_message("ses_bounce.json"))
    assert event.event_type == "Bounce" and event.is_permanent_bounce
    assert event.bounced_addresses() == ["sato.hanako@example.jp"]
    tags = event.dispatch()
    assert tags is not None and tags.dispatch_key == KEY and tags.version == 2 and tags.variant == "A"
    assert event.mail.timestamp == datetime(2026, 11, 23, 2, 10, 4, 211000, tzinfo=UTC)


def test_the_other_samples_parse() -> None:
    transient = parse_ses_event(ses_message("ses_bounce_transient.json"))
    assert transient.bounce is not None and transient.bounce.bounce_type == "Transient"
    assert not transient.is_permanent_bounce
    complaint = parse_ses_event(ses_message("ses_complaint.json"))
    assert complaint.complained_addresses() == ["sato.hanako@example.jp"]
    assert complaint.complaint is not None and complaint.complaint.complaint_feedback_type == "abuse"
    delivery = parse_ses_event(ses_message("ses_delivery.json"))
    assert delivery.event_type == "Delivery" and delivery.delivery is not None


def test_a_complaint_naming_nobody_is_about_the_mails_recipients() -> None:
    document = json.loads(ses_message("ses_complaint.json"))
    document["complaint"]["complainedRecipients"] = []
    event = parse_ses_event(json.dumps(document))
    assert event.complained_addresses() == ["sato.hanako@example.jp"]


def test_identity_notifications_name_their_kind_differently() -> None:
    document = json.loads(ses_message("ses_bounce.json"))
    document["notificationType"] = document.pop("eventType")
    assert parse_ses_event(json.dumps(document)).is_permanent_bounce


@pytest.mark.parametrize("message", ["", "null", "{}", '{"eventType": "Bounce"}', "not json"])
def test_what_is_not_an_ses_event_is_refused(message: str) -> None:
    with pytest.raises(ValidationError):
        parse_ses_event(message)


def test_message_ids_fit_the_limit() -> None:
    assert message_id("unsub", KEY) == f"unsub:{KEY}"
    long = message_id("unsub", "x" * 300)
    assert long.startswith("unsub:") and len(long) <= 100
    assert message_id("unsub", "x" * 300) == long != message_id("unsub", "y" * 300)


def test_engage_messages_name_the_profile_by_its_strongest_identity() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    base = Profile(customer_id="cus_1", first_seen_at=at, updated_at=at)
    assert identity_of(base) == {}
    assert identity_of(base.model_copy(update={"line_user_id": "U1"})) == {"lineUserId": "U1"}
    anonymous = base.model_copy(update={"line_user_id": "U1", "anonymous_ids": {"b", "a"}})
    assert identity_of(anonymous) == {"anonymousId": "a"}
    assert identity_of(anonymous.model_copy(update={"user_id": "u1"})) == {"userId": "u1"}


def test_only_a_scenarios_dispatch_has_a_report_cell() -> None:
    assert report_cell(None, None, "s", None, Channel.EMAIL) is None
    assert report_cell("welcome", None, "s", None, Channel.EMAIL) is None
    # The channel of what was engaged with is part of the cell (issue 12: per-channel reports).
    assert report_cell("welcome", 2, "s", "A", Channel.LINE) == ReportCell(
        "welcome", 2, "s", "A", channel="line"
    )

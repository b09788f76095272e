"""Scenario checks of the right channel per customer (issue 13): a list of channels and `best` need
the content they may send; an audience that lets in customers no send channel reaches is a warning."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from cems.scenario.validation import ValidationReport, validate_document

from tests.unit.test_scenario_validation import BASE, english, only_error

LINE = [{"type": "text", "text": "こんにちは"}]
EMAIL = {"subject": "ご案内", "text": "こんにちは"}


def check(change: Callable[[dict[str, Any]], Any]) -> ValidationReport:
    document = copy.deepcopy(BASE)
    change(document)
    return validate_document(document)


def send(**fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["steps"][1] = {"id": "hello", "type": "send", **fields}
        d["audience"] = {"kind": "reachable", "channel": "line"}

    return change


def test_a_list_of_channels_and_best_are_valid_with_their_content() -> None:
    assert check(send(channel=["email", "line"], line=LINE, email=EMAIL)).valid
    assert check(send(channel="best", line=LINE, email=EMAIL)).valid


def test_a_list_needs_the_content_of_every_channel_it_lists() -> None:
    path, message = only_error(check(send(channel=["email", "line"], line=LINE)))
    assert path == "steps[1].email" and message.startswith('channel "email,line" needs')


def test_content_for_a_channel_the_list_leaves_out_is_never_sent() -> None:
    path, message = only_error(check(send(channel=["line"], line=LINE, email=EMAIL)))
    assert path == "steps[1].email" and "never sent" in message


def test_best_needs_content_for_two_channels() -> None:
    path, message = only_error(check(send(channel="best", line=LINE)))
    assert path == "steps[1].channel" and message.startswith('channel "best" chooses among')


def test_a_channel_listed_twice_or_unknown_is_one_error() -> None:
    path, message = only_error(check(send(channel=["line", "line"], line=LINE)))
    assert (path, message) == ("steps[1].channel", "a channel is listed twice")
    path, message = only_error(check(send(channel=["line", "fax"], line=LINE)))
    assert path == "steps[1].channel" and "use one of line, email, web" in message


def test_an_audience_none_of_the_channels_reaches_is_a_warning_in_both_languages() -> None:
    def change(d: dict[str, Any]) -> None:
        d["audience"] = {"kind": "reachable", "channel": "email"}  # but the step sends on LINE

    report = check(change)
    assert report.valid
    (warning,) = report.warnings
    assert warning.path == "audience" and warning.code == "audience_unreachable"
    assert "none of this scenario's channels (line)" in english(warning.message)


def test_no_audience_on_an_event_trigger_is_a_warning_at_the_trigger() -> None:
    report = check(lambda d: None)
    assert report.valid and [w.path for w in report.warnings] == ["trigger"]


def test_audiences_that_assure_reach_are_not_warned() -> None:
    reachable_line = {"kind": "reachable", "channel": "line"}
    reachable_mail = {"kind": "reachable", "channel": "email"}
    for audience in (
        reachable_line,
        {"kind": "all", "conditions": [{"kind": "trait", "trait": "vip", "value": True}, reachable_line]},
    ):
        assert check(lambda d, a=audience: d.update(audience=a)).warnings == []  # type: ignore[misc]

    def either(d: dict[str, Any]) -> None:
        send(channel="line_or_email", line=LINE, email=EMAIL)(d)
        d["audience"] = {"kind": "any", "conditions": [reachable_line, reachable_mail]}

    assert check(either).warnings == []


def test_reachable_on_any_channel_does_not_assure_a_scenario_that_sends_on_some() -> None:
    report = check(lambda d: d.update(audience={"kind": "reachable", "channel": "any"}))
    assert [w.code for w in report.warnings] == ["audience_unreachable"]


def test_a_line_follow_trigger_assures_line() -> None:
    assert check(lambda d: d.update(trigger={"type": "line_follow"})).warnings == []

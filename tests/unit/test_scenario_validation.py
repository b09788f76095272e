"""Bad scenario files: each kind of mistake is reported at its JSON path, in plain words (Japanese
first, English alongside), and all of a file's mistakes in one report."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cems.cli import main
from cems.scenario.model import Scenario
from cems.scenario.problems import SEPARATOR
from cems.scenario.validation import ValidationReport, validate_document, validate_file, validate_text
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]
# Keys the generated documents use: the fields the checks read, and a few they do not know.
FIELD_NAMES = [
    "id",
    "type",
    "next",
    "otherwise",
    "on_event",
    "on_timeout",
    "branches",
    "variants",
    "weight",
    "name",
    "channel",
    "line",
    "email",
    "text",
    "subject",
    "html",
    "value",
    "until",
    "date",
    "duration",
    "timeout",
    "at",
    "cron",
    "event",
    "when",
    "kind",
    "trait",
    "quickReply",
    "items",
    "action",
    "label",
    "data",
]
# Values they use: step types, ids, channels, durations, dates, templates.
WORDS = [
    *("send", "wait", "wait_for_event", "branch", "split", "set_trait", "end", "event", "broadcast", "date"),
    *("a", "b", "line", "email", "line_or_email", "text", "postback", "trigger_event", "1h", "1m", "x"),
    *("", "{{ x }}", "{{ event.name }}", "survey=q&answer=1"),
]
JAPANESE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")
EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.json"))

BASE: dict[str, Any] = {
    "id": "s1",
    "name": "テスト",
    "trigger": {"type": "event", "event": "Order Completed"},
    "steps": [
        {"id": "wait", "type": "wait", "duration": "1d"},
        {"id": "hello", "type": "send", "channel": "line", "line": [{"type": "text", "text": "こんにちは"}]},
        {"id": "done", "type": "end"},
    ],
}


def check(change: Callable[[dict[str, Any]], Any]) -> ValidationReport:
    document = copy.deepcopy(BASE)
    change(document)
    return validate_document(document)


def english(message: str) -> str:
    """The English half of a message, once it is seen to start in Japanese."""
    ja, separator, en = message.partition(SEPARATOR)
    assert separator and JAPANESE.search(ja) and en and not JAPANESE.search(en[:20]), message
    return en


def only_error(report: ValidationReport) -> tuple[str, str]:
    """The one error's path and the English half of its message."""
    assert len(report.errors) == 1, [e.line() for e in report.errors]
    return report.errors[0].path, english(report.errors[0].message)


def test_the_base_document_is_valid() -> None:
    report = validate_document(copy.deepcopy(BASE))
    assert report.valid and report.scenario is not None and report.scenario.id == "s1"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_scenario_is_valid(path: Path) -> None:
    report = validate_file(path)
    assert report.valid, report.to_text()
    assert not report.warnings


def test_there_are_the_four_required_examples() -> None:
    names = {p.name for p in EXAMPLES}
    assert {
        "post_purchase_tea.json",
        "cart_abandonment.json",
        "line_welcome.json",
        "broadcast_new_tea.json",
    } <= names


# -- structure: pydantic's errors in plain words --------------------------------------------------------


def test_a_duration_in_the_wrong_syntax() -> None:
    path, message = only_error(check(lambda d: d["steps"][0].update(duration="3x")))
    assert path == "steps[0].duration"
    assert '"3x" is not a duration' in message and '"3d"' in message


def test_a_duration_given_as_a_number() -> None:
    path, message = only_error(check(lambda d: d["steps"][0].update(duration=3)))
    assert path == "steps[0].duration"
    assert "must be text in quotes" in message


def test_a_misspelt_field_in_a_step_suggests_the_right_one() -> None:
    path, message = only_error(check(lambda d: d["steps"][0].update(durration="3d")))
    assert path == "steps[0].durration"
    assert message == "unknown field `durration`; did you mean `duration`?"


def test_a_misspelt_top_level_field_suggests_the_right_one() -> None:
    path, message = only_error(check(lambda d: d.update(prioriti=3)))
    assert (path, message) == ("prioriti", "unknown field `prioriti`; did you mean `priority`?")


def test_an_unknown_field_far_from_any_lists_the_fields() -> None:
    path, message = only_error(check(lambda d: d["trigger"].update(colour="green")))
    assert path == "trigger.colour"
    assert "fields here: type, event, where" in message


def test_a_missing_trigger() -> None:
    assert only_error(check(lambda d: d.pop("trigger"))) == ("trigger", "`trigger` is required here")


def test_a_misspelt_step_type() -> None:
    path, message = only_error(check(lambda d: d["steps"][1].update(type="sned")))
    assert path == "steps[1].type"
    assert '"sned" is not a type CEMS knows' in message and 'did you mean "send"?' in message


def test_a_step_without_a_type_lists_the_step_types() -> None:
    path, message = only_error(check(lambda d: d["steps"][1].pop("type")))
    assert path == "steps[1].type"
    assert message.startswith("`type` is required: one of") and "wait_for_event" in message


def test_a_misspelt_channel() -> None:
    path, message = only_error(check(lambda d: d["steps"][1].update(channel="lien")))
    assert path == "steps[1].channel"
    assert "use one of line, email, web, line_or_email" in message and 'did you mean "line"?' in message


def test_a_holdout_above_fifty_percent() -> None:
    path, message = only_error(check(lambda d: d.update(entry={"holdout_percent": 80})))
    assert (path, message) == ("entry.holdout_percent", "80 is too large: the most allowed is 50")


def test_a_number_written_as_text() -> None:
    assert only_error(check(lambda d: d.update(version="1"))) == ("version", '"1" must be a whole number')


def test_true_written_as_text() -> None:
    path, message = only_error(check(lambda d: d["steps"][1].update(notification_disabled="yes")))
    assert path == "steps[1].notification_disabled"
    assert "true or false" in message


def test_a_send_window_that_closes_before_it_opens() -> None:
    path, message = only_error(check(lambda d: d.update(send_window={"start": "21:00", "end": "09:00"})))
    assert path == "send_window"
    assert "`start` must be before `end`" in message


def test_a_time_of_day_that_does_not_exist() -> None:
    path, message = only_error(check(lambda d: d.update(send_window={"start": "25:00"})))
    assert path == "send_window.start"
    assert '"25:00" is not a time of day' in message


def test_an_unknown_time_zone() -> None:
    path, message = only_error(check(lambda d: d.update(time_zone="Tokyo")))
    assert path == "time_zone" and "Asia/Tokyo" in message


def test_a_cron_hour_out_of_range() -> None:
    change = lambda d: d.update(trigger={"type": "broadcast", "cron": "0 25 * * *"})  # noqa: E731
    assert only_error(check(change)) == ("trigger.cron", 'the hour field "25" has 25, outside 0-23')


def test_a_cron_with_four_fields() -> None:
    path, message = only_error(check(lambda d: d.update(trigger={"type": "broadcast", "cron": "0 10 * *"})))
    assert path == "trigger.cron" and "has 4 fields, not 5" in message


def test_a_broadcast_time_without_a_time_zone() -> None:
    change = lambda d: d.update(trigger={"type": "broadcast", "at": "2026-05-01T10:00:00"})  # noqa: E731
    assert only_error(check(change)) == ("trigger.at", "give the time zone offset, e.g. +09:00 for Japan")


def test_a_broadcast_with_both_a_time_and_a_cron() -> None:
    change = lambda d: d.update(  # noqa: E731
        trigger={"type": "broadcast", "at": "2026-05-01T10:00:00+09:00", "cron": "0 10 * * 1"}
    )
    path, message = only_error(check(change))
    assert path == "trigger" and "exactly one of `at`" in message


def test_a_cool_down_re_entry_without_its_cool_down() -> None:
    path, message = only_error(check(lambda d: d.update(entry={"reentry": "cooldown"})))
    assert path == "entry" and "needs `cooldown`" in message


def test_a_misspelt_operator_in_a_trigger_condition() -> None:
    change = lambda d: d["trigger"].update(where=[{"property": "sku", "op": "equals", "value": "x"}])  # noqa: E731
    path, message = only_error(check(change))
    assert path == "trigger.where[0].op"
    assert "use one of eq, ne" in message


def test_in_without_a_list() -> None:
    change = lambda d: d["trigger"].update(where=[{"property": "sku", "op": "in", "value": "x"}])  # noqa: E731
    path, message = only_error(check(change))
    assert path == "trigger.where[0]" and "non-empty list" in message


def test_exists_with_a_value_is_pointed_at_the_condition() -> None:
    change = lambda d: d.update(audience={"kind": "trait", "trait": "x", "op": "exists", "value": 1})  # noqa: E731
    path, message = only_error(check(change))
    assert path == "audience" and "`exists` takes no `value`" in message


def test_a_misspelt_condition_kind() -> None:
    path, message = only_error(check(lambda d: d.update(audience={"kind": "trate", "trait": "x"})))
    assert path == "audience.kind" and 'did you mean "trait"?' in message


def test_an_rfm_score_out_of_range_deep_in_a_condition() -> None:
    def change(d: dict[str, Any]) -> None:
        d["audience"] = {"kind": "all", "conditions": [{"kind": "rfm", "recency": {"min": 6}}]}

    assert only_error(check(change)) == (
        "audience.conditions[0].recency.min",
        "6 is too large: the most allowed is 5",
    )


def test_a_wait_that_says_nothing() -> None:
    assert only_error(check(lambda d: d["steps"][0].pop("duration"))) == (
        "steps[0]",
        "a wait needs `duration`, `until` or `at`",
    )


def test_a_wait_for_event_without_a_time_out() -> None:
    change = lambda d: d["steps"].__setitem__(0, {"id": "wait", "type": "wait_for_event", "event": "x"})  # noqa: E731
    assert only_error(check(change)) == ("steps[0].timeout", "`timeout` is required here")


def test_an_invalid_step_id() -> None:
    path, message = only_error(check(lambda d: d["steps"][2].update(id="Done!")))
    assert path == "steps[2].id" and '"Done!" is not a valid id' in message


def test_a_rich_menu_id_that_is_not_one() -> None:
    change = lambda d: d["steps"].insert(2, {"id": "rm", "type": "rich_menu", "rich_menu_id": "abc"})  # noqa: E731
    path, message = only_error(check(change))
    assert path == "steps[2].rich_menu_id" and "not a LINE rich menu id" in message


def test_an_empty_step_list() -> None:
    assert only_error(check(lambda d: d.update(steps=[]))) == ("steps", "needs at least 1 item(s) (has 0)")


# -- semantics: references, reachability, loops ----------------------------------------------------------


def test_a_reference_to_a_step_that_does_not_exist() -> None:
    report = check(lambda d: d["steps"][0].update(next="hallo"))
    assert only_error(report) == ("steps[0].next", 'there is no step "hallo"; did you mean "hello"?')
    assert report.errors[0].step == "wait" and report.errors[0].code == "unknown_step"


def test_a_branch_target_that_does_not_exist() -> None:
    branch = {
        "id": "b",
        "type": "branch",
        "branches": [{"when": {"kind": "reachable", "channel": "line"}, "next": "nowhere"}],
    }
    path, message = only_error(check(lambda d: d["steps"].insert(0, branch)))
    assert path == "steps[0].branches[0].next" and 'no step "nowhere"' in message


def test_two_steps_with_one_id() -> None:
    report = check(lambda d: d["steps"][2].update(id="hello"))
    assert only_error(report) == ("steps[2].id", 'step id "hello" is already used by steps[1]')


def test_a_step_nothing_leads_to() -> None:
    def change(d: dict[str, Any]) -> None:
        d["steps"][1]["next"] = "done"
        d["steps"].insert(2, {"id": "orphan", "type": "end"})

    path, message = only_error(check(change))
    assert path == "steps[2]" and 'step "orphan" can never be reached' in message


def test_a_loop_without_a_wait() -> None:
    change = lambda d: d["steps"].__setitem__(  # noqa: E731
        2, {"id": "done", "type": "set_trait", "trait": "x", "value": 1, "next": "hello"}
    )
    path, message = only_error(check(change))
    assert path == "steps[1]"
    assert "loop without waiting (hello → done → hello)" in message


def test_a_loop_through_a_long_enough_wait_is_allowed() -> None:
    change = lambda d: d["steps"].__setitem__(  # noqa: E731
        2, {"id": "done", "type": "set_trait", "trait": "x", "value": 1, "next": "wait"}
    )
    assert check(change).valid


def test_a_step_that_goes_to_itself() -> None:
    path, message = only_error(check(lambda d: d["steps"][1].update(next="hello")))
    assert path == "steps[1].next" and "goes to itself" in message


def test_ab_weights_that_add_up_to_zero() -> None:
    split = {
        "id": "ab",
        "type": "split",
        "variants": [{"name": "A", "weight": 0, "next": "wait"}, {"name": "B", "weight": 0, "next": "hello"}],
    }
    path, message = only_error(check(lambda d: d["steps"].insert(0, split)))
    assert (path, message) == ("steps[0].variants", "the variants' weights add up to 0; give some weight")


def test_line_or_email_without_email_content() -> None:
    path, message = only_error(check(lambda d: d["steps"][1].update(channel="line_or_email")))
    assert (path, message) == ("steps[1].email", 'channel "line_or_email" needs `email` content')


def test_a_wait_on_the_trigger_event_of_a_broadcast() -> None:
    def change(d: dict[str, Any]) -> None:
        d["trigger"] = {"type": "broadcast", "at": "2026-05-01T10:00:00+09:00"}
        d["steps"][0] = {"id": "wait", "type": "wait", "until": {"date": "trigger_event", "offset": "1d"}}

    path, message = only_error(check(change))
    assert path == "steps[0].until.date" and "no trigger event" in message


# -- content: Liquid and LINE ---------------------------------------------------------------------------


def text_is(text: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["steps"][1]["line"][0].update(text=text)


def test_a_liquid_template_that_does_not_parse() -> None:
    path, message = only_error(check(text_is("{{ profile.traits.name ")))
    assert path == "steps[1].line[0].text" and message.startswith("Liquid syntax:")


def test_a_liquid_variable_that_is_not_in_scope() -> None:
    assert only_error(check(text_is("{{ custmer.name }}"))) == (
        "steps[1].line[0].text",
        "`custmer` is not in scope; templates can use profile, event, step, scenario",
    )


def test_an_unknown_liquid_filter() -> None:
    assert only_error(check(text_is("{{ profile.traits.name | upcasee }}"))) == (
        "steps[1].line[0].text",
        "unknown Liquid filter `upcasee`",
    )


def test_a_line_message_the_sdk_refuses() -> None:
    path, message = only_error(check(lambda d: d["steps"][1]["line"][0].pop("text")))
    assert (path, message) == ("steps[1].line[0].text", "`text` is required in a text message")


def test_an_unknown_line_message_type() -> None:
    path, message = only_error(check(lambda d: d["steps"][1]["line"][0].update(type="txt")))
    assert path == "steps[1].line[0].type" and 'did you mean "text"?' in message


def test_more_than_five_line_messages() -> None:
    change = lambda d: d["steps"][1].update(line=[{"type": "text", "text": "a"}] * 6)  # noqa: E731
    assert only_error(check(change)) == ("steps[1].line", "6 LINE messages; LINE sends at most 5 at a time")


def test_a_line_text_over_five_thousand_characters() -> None:
    assert only_error(check(text_is("あ" * 5001))) == (
        "steps[1].line[0].text",
        "the text is 5,001 characters; LINE accepts at most 5,000",
    )


def test_a_quick_reply_label_longer_than_line_allows() -> None:
    item = {"type": "action", "action": {"type": "postback", "label": "あ" * 21, "data": "x=1"}}
    change = lambda d: d["steps"][1]["line"][0].update(quickReply={"items": [item]})  # noqa: E731
    path, message = only_error(check(change))
    assert path == "steps[1].line[0].quickReply.items[0].action.label" and "at most 20" in message


def test_a_survey_postback_with_a_bad_question_name() -> None:
    action = {"type": "postback", "label": "a", "data": "survey=bad question&answer=x"}

    def change(d: dict[str, Any]) -> None:
        d["steps"][1]["line"][0]["quickReply"] = {"items": [{"type": "action", "action": action}]}

    path, message = only_error(check(change))
    assert path == "steps[1].line[0].quickReply.items[0].action.data"
    assert message.startswith('survey question "bad question"')


def test_an_email_subject_template_that_does_not_parse() -> None:
    def change(d: dict[str, Any]) -> None:
        d["steps"][1] = {
            "id": "hello",
            "type": "send",
            "channel": "email",
            "email": {"subject": "{% if %}", "text": "x"},
        }

    path, message = only_error(check(change))
    assert path == "steps[1].email.subject" and "Liquid syntax" in message


def test_event_in_a_broadcast_is_a_warning_not_an_error() -> None:
    def change(d: dict[str, Any]) -> None:
        d["trigger"] = {"type": "broadcast", "at": "2026-05-01T10:00:00+09:00"}
        d["audience"] = {"kind": "reachable", "channel": "line"}  # no audience warning beside it
        d["steps"][1]["line"][0]["text"] = "{{ event.properties.name }}"

    report = check(change)
    assert report.valid
    assert [w.path for w in report.warnings] == ["steps[1].line[0].text"]


# -- whole files and the report ------------------------------------------------------------------------


def test_several_mistakes_are_all_reported() -> None:
    def change(d: dict[str, Any]) -> None:
        d["steps"][0]["duration"] = "soon"
        d["steps"][1]["chanel"] = "line"
        d["priority"] = 5000

    report = check(change)
    assert {e.path for e in report.errors} == {"steps[0].duration", "steps[1].chanel", "priority"}


# One file with a mistake of every class validation knows: field errors (type, unknown field,
# missing field, value not allowed, out of range, unknown union member, duration, cron, time zone,
# time of day, a key given twice) and whole-document errors (a step that does not exist, an
# unreachable step, a loop without a wait, a date the trigger has not got, content for the channel,
# A/B weights, a LINE message LINE refuses, an unknown Liquid variable).
EVERY_MISTAKE = """{
  "id": "every-mistake",
  "name": "間違いだらけ",
  "name": "二度目の名前",
  "version": "1",
  "prioriti": 5,
  "time_zone": "Tokyo",
  "trigger": {"type": "broadcast", "cron": "0 25 * * *"},
  "audience": {"kind": "trate", "trait": "x"},
  "entry": {"reentry": "sometimes", "holdout_percent": 80},
  "goal": {"event": "Order Completed"},
  "send_window": {"start": "25:00"},
  "frequency_cap": {"give_up_after": "soon"},
  "steps": [
    {"id": "start", "type": "wait", "until": {"date": "trigger_event"}, "next": "helo"},
    {"id": "hello", "type": "send", "channel": "line",
     "line": [{"type": "text", "text": "{{ custmer.name }} さん"}, {"type": "txt"}], "next": "again"},
    {"id": "again", "type": "set_trait", "trait": "greeted", "value": true, "next": "hello"},
    {"id": "mail", "type": "send", "channel": "email", "next": "ab"},
    {"id": "ab", "type": "split", "variants": [
      {"name": "A", "weight": 0, "next": "done"}, {"name": "B", "weight": 0, "next": "done"}]},
    {"id": "done", "type": "end"}
  ]
}"""

EVERY_CLASS = {
    # fields (pydantic, translated by error type)
    ("version", "int_type"),
    ("prioriti", "extra_forbidden"),
    ("goal.within", "missing"),
    ("entry.reentry", "literal_error"),
    ("entry.holdout_percent", "less_than_equal"),
    ("audience.kind", "union_tag_invalid"),
    ("frequency_cap.give_up_after", "value_error"),  # a duration
    ("trigger.cron", "value_error"),
    ("time_zone", "value_error"),
    ("send_window.start", "value_error"),  # a time of day
    ("(the whole file)", "duplicate_key"),
    # the whole document (graph, dates, content, Liquid)
    ("steps[0].next", "unknown_step"),
    ("steps[3]", "unreachable_step"),
    ("steps[1]", "loop_without_wait"),
    ("steps[0].until.date", "date_source"),
    ("steps[3].email", "channel_content"),
    ("steps[4].variants", "split_weights"),
    ("steps[1].line[1].type", "line_message"),
    ("steps[1].line[0].text", "liquid"),
}


def test_a_file_with_every_class_of_mistake_gets_them_all_in_one_report() -> None:
    report = validate_text(EVERY_MISTAKE, "every.json")
    found = {(e.path, e.code) for e in report.errors}
    assert found >= EVERY_CLASS, sorted(EVERY_CLASS - found)
    assert not report.valid and report.scenario is None
    for issue in report.errors:
        english(issue.message)  # Japanese first, English alongside
    by_path = {e.path: e.message for e in report.errors}
    assert 'there is no step "helo"; did you mean "hello"?' in by_path["steps[0].next"]
    assert "`custmer` is not in scope" in by_path["steps[1].line[0].text"]
    assert "hello → again → hello" in by_path["steps[1]"]
    # The typo "helo" is taken as "hello" for reachability, so hello and again are not called
    # orphans too; mail, ab and done are (the loop never leaves).
    unreachable = [e.path for e in report.errors if e.code == "unreachable_step"]
    assert unreachable == ["steps[3]", "steps[4]", "steps[5]"]


def test_a_step_after_a_reference_to_nowhere_in_particular_is_not_called_unreachable() -> None:
    # What "nowhere" was meant to be is unknown, so reachability waits until it is fixed.
    report = check(lambda d: d["steps"][0].update(next="zzz"))
    assert [e.code for e in report.errors] == ["unknown_step"]
    assert english(report.errors[0].message) == 'there is no step "zzz"; step ids here: wait, hello, done'


def test_the_graph_checks_know_every_step_type_the_models_know() -> None:
    # The graph checks read JSON, so nothing but this test tells them about a new step type.
    from typing import get_args

    from cems.scenario.graph import _TARGETS
    from cems.scenario.model import Step

    step_types = {
        get_args(member.model_fields["type"].annotation)[0] for member in get_args(get_args(Step)[0])
    }
    assert set(_TARGETS) == step_types


def test_the_graph_is_checked_even_when_a_field_is_invalid() -> None:
    def change(d: dict[str, Any]) -> None:
        d["priority"] = "high"
        d["steps"][0]["next"] = "hallo"
        d["steps"][1]["line"][0]["text"] = "{{ custmer.name }}"

    report = check(change)
    assert [(e.path, e.code) for e in report.errors] == [
        ("priority", "int_type"),
        ("steps[0].next", "unknown_step"),
        ("steps[1].line[0].text", "liquid"),
    ]


@pytest.mark.parametrize(
    "error",
    [
        {"type": "multiple_of", "loc": ("priority",), "msg": "Input should be a multiple of 5", "input": 3},
        {"type": "value_error", "loc": ("priority",), "msg": "Value error, plain English", "input": 3},
    ],
    ids=["untranslated type", "English-only value error"],
)
def test_an_error_pydantic_gives_that_is_not_translated_still_has_japanese(error: dict[str, Any]) -> None:
    from cems.scenario.validation import _translate

    issue = _translate(error, {"priority": 3})
    assert english(issue.message) in ("Input should be a multiple of 5", "plain English")


def test_a_file_that_is_not_json() -> None:
    report = validate_text('{"id": "x",\n  "name": }', "bad.json")
    assert only_error(report)[1].startswith("not valid JSON at line 2, column 11")


def test_a_key_written_twice() -> None:
    report = validate_text(json.dumps(BASE)[:-1] + ', "id": "other"}')
    assert any('the key "id" appears twice' in e.message for e in report.errors)
    assert not report.valid


def test_a_missing_file() -> None:
    report = validate_file("/nonexistent/scenario.json")
    assert only_error(report) == ("(the whole file)", "there is no file /nonexistent/scenario.json")


def test_the_json_report_names_path_message_code_and_step() -> None:
    report = check(lambda d: d["steps"][0].update(next="hallo"))
    data = json.loads(report.to_json())
    assert data["valid"] is False
    assert data["errors"] == [
        {
            "path": "steps[0].next",
            "message": 'ステップ "hallo" はありません。"hello" のことですか？ / '
            'there is no step "hallo"; did you mean "hello"?',
            "code": "unknown_step",
            "step": "wait",
        }
    ]
    assert data["summary_ja"].startswith("無効なシナリオです")


def test_the_text_report_has_a_japanese_summary_and_one_line_per_error() -> None:
    lines = check(lambda d: d["steps"][0].update(next="hallo")).to_text().splitlines()
    assert lines[0].endswith("invalid: 1 error(s)")
    assert lines[1].startswith("無効なシナリオです")
    assert lines[2] == (
        '  error: steps[0].next (step "wait"): ステップ "hallo" はありません。"hello" のことですか？ / '
        'there is no step "hallo"; did you mean "hello"?'
    )


def test_cli_validate_exits_0_for_a_valid_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scenario", "validate", str(EXAMPLES[0])]) == 0
    assert "有効なシナリオです" in capsys.readouterr().out


def test_cli_validate_exits_1_and_prints_the_json_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = copy.deepcopy(BASE)
    document["steps"][0]["duration"] = "3x"
    target = tmp_path / "bad.json"
    target.write_text(json.dumps(document), encoding="utf-8")
    assert main(["scenario", "validate", str(target), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["errors"][0]["path"] == "steps[0].duration"


# -- robustness: the whole-document checks read raw JSON of any shape -----------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(WORDS),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELD_NAMES), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.dictionaries(st.sampled_from(FIELD_NAMES), _JSON, max_size=6), max_size=4), _JSON)
def test_any_json_gets_a_report_not_an_exception(steps: list[dict[str, Any]], trigger: Any) -> None:
    document = {**copy.deepcopy(BASE), "steps": steps, "trigger": trigger}
    report = validate_document(document)
    assert report.valid == (report.scenario is not None)
    if report.valid:  # the models run the same checks on their own JSON form
        Scenario.model_validate(document)
    for issue in report.errors + report.warnings:
        english(issue.message)

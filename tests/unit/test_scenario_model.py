"""The scenario models: each trigger, step, entry and exit rule, window and cap; durations, cron,
deterministic assignment, how steps follow each other, and the committed JSON Schema."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cems.scenario.assignment import in_holdout, pick_variant
from cems.scenario.cron import CronSchedule
from cems.scenario.durations import DURATION_PATTERN, LOCAL_TIME_PATTERN, format_duration, parse_duration
from cems.scenario.model import (
    BranchStep,
    BroadcastTrigger,
    DateTrigger,
    EndStep,
    EventTrigger,
    LineFollowTrigger,
    RichMenuStep,
    Scenario,
    SendStep,
    SendWindow,
    SetTraitStep,
    SplitStep,
    SurveyAnswerTrigger,
    Variant,
    WaitForEventStep,
    WaitStep,
    json_schema_text,
)
from pydantic import ValidationError

ROOT = Path(__file__).resolve().parents[2]
TOKYO = ZoneInfo("Asia/Tokyo")
SEND = {"id": "hello", "type": "send", "channel": "line", "line": [{"type": "text", "text": "こんにちは"}]}


def scenario(**fields: Any) -> Scenario:
    document: dict[str, Any] = {
        "id": "s1",
        "name": "テスト",
        "trigger": {"type": "event", "event": "Order Completed"},
        "steps": [SEND],
    }
    document.update(fields)
    return Scenario.model_validate(document)


# -- the schema -------------------------------------------------------------------------------------------


def test_the_committed_json_schema_is_current() -> None:
    committed = (ROOT / "schemas" / "scenario.schema.json").read_text(encoding="utf-8")
    assert committed == json_schema_text(), (
        "run: .venv/bin/cems scenario schema > schemas/scenario.schema.json"
    )


def _descriptions(node: Any, path: str = "") -> list[tuple[str, str]]:
    if isinstance(node, dict):
        found = [(path, node["description"])] if isinstance(node.get("description"), str) else []
        return found + [d for key, value in node.items() for d in _descriptions(value, f"{path}/{key}")]
    if isinstance(node, list):
        return [d for i, value in enumerate(node) for d in _descriptions(value, f"{path}/{i}")]
    return []


def test_every_description_in_the_schema_is_in_japanese_and_english() -> None:
    # The editor shows these on hover; the people who write scenarios read Japanese first.
    descriptions = _descriptions(json.loads(json_schema_text()))
    assert len(descriptions) > 60
    for path, text in descriptions:
        japanese, _, english = text.partition("\n\n")
        assert re.search(r"[\u3040-\u30ff\u3400-\u9fff]", japanese), (path, text)
        assert re.search(r"[A-Za-z]{3}", english), (path, text)


def _patterned_defaults(node: Any) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        if isinstance(node.get("default"), str) and "pattern" in node:
            found.append((node["default"], node["pattern"]))
        found += [d for value in node.values() for d in _patterned_defaults(value)]
    elif isinstance(node, list):
        found += [d for value in node for d in _patterned_defaults(value)]
    return found


def test_the_schema_shows_defaults_as_a_scenario_file_writes_them() -> None:
    # An editor offers these; "P3D" or "09:00:00" would be refused by the very schema that offers them.
    defaults = _patterned_defaults(json.loads(json_schema_text()))
    assert ("3d", DURATION_PATTERN) in defaults and ("09:00", LOCAL_TIME_PATTERN) in defaults
    assert all(re.match(pattern, default) for default, pattern in defaults), defaults


def test_the_schema_forbids_unknown_fields_so_editors_flag_typos() -> None:
    schema = json.loads(json_schema_text())
    assert schema["additionalProperties"] is False
    assert schema["$defs"]["WaitStep"]["additionalProperties"] is False


def test_examples_point_editors_at_the_schema() -> None:
    for path in (ROOT / "examples" / "scenarios").glob("*.json"):
        assert json.loads(path.read_text(encoding="utf-8"))["$schema"] == "../../schemas/scenario.schema.json"


# -- modules ----------------------------------------------------------------------------------------------


def _scenario_imports() -> dict[str, set[str]]:
    """Each module of cems.scenario -> the cems.scenario modules it imports, inside functions too."""
    graph: dict[str, set[str]] = {}
    for path in (ROOT / "shared" / "cems" / "scenario").glob("*.py"):
        name = "cems.scenario" if path.stem == "__init__" else f"cems.scenario.{path.stem}"
        imported: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module == "cems.scenario":
                imported |= {f"cems.scenario.{alias.name}" for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cems.scenario."):
                imported.add(str(node.module))
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("cems.scenario.")}
        graph[name] = imported - {name}
    return graph


def test_no_scenario_module_imports_one_that_imports_it_back() -> None:
    graph = _scenario_imports()

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph.get(current, ()))
        return False

    cycles = [(a, b) for a, targets in graph.items() for b in targets if reaches(b, a)]
    assert not cycles
    # The schema and the checks of the whole document live apart; the checks do not know the models.
    assert "cems.scenario.model" not in graph["cems.scenario.graph"] | graph["cems.scenario.semantics"]


# -- defaults ---------------------------------------------------------------------------------------------


def test_defaults_tokyo_nine_to_nine_never_reenter_no_holdout_defer_when_capped() -> None:
    s = scenario()
    assert s.time_zone == "Asia/Tokyo" and s.zone == TOKYO
    # No window of its own: the deployment's quiet hours decide, or with none set SendWindow()'s.
    assert s.send_window is None
    assert (SendWindow().start, SendWindow().end) == (time(9), time(21)) and len(SendWindow().days) == 7
    assert s.entry.reentry == "never" and s.entry.holdout_percent == 0
    assert s.frequency_cap.when_capped == "defer" and s.frequency_cap.give_up_after == timedelta(days=3)
    assert s.exit.yield_to_higher_priority and s.exit.no_response_after_sends is None
    assert s.priority == 100 and s.version == 1


def test_a_scenario_with_a_semantic_problem_cannot_be_built() -> None:
    with pytest.raises(ValidationError, match='there is no step "nowhere"'):
        scenario(steps=[{**SEND, "next": "nowhere"}])


def test_a_scenario_round_trips_through_json() -> None:
    s = Scenario.model_validate(
        json.loads((ROOT / "examples/scenarios/post_purchase_tea.json").read_text("utf-8"))
    )
    again = Scenario.model_validate(json.loads(s.model_dump_json(by_alias=True, exclude_none=True)))
    assert again == s


# -- triggers ---------------------------------------------------------------------------------------------


def test_event_trigger_with_property_conditions() -> None:
    trigger = scenario(
        trigger={
            "type": "event",
            "event": "Order Completed",
            "where": [{"property": "products.sku", "value": "X"}],
        }
    ).trigger
    assert isinstance(trigger, EventTrigger) and trigger.where[0].op == "eq"


def test_line_follow_trigger_includes_unblocks_by_default() -> None:
    trigger = scenario(trigger={"type": "line_follow"}).trigger
    assert isinstance(trigger, LineFollowTrigger) and trigger.include_unblocked


def test_survey_answer_trigger() -> None:
    trigger = scenario(trigger={"type": "survey_answer", "question": "taste", "answers": ["bitter"]}).trigger
    assert isinstance(trigger, SurveyAnswerTrigger) and trigger.answers == ["bitter"]


def test_date_trigger_n_days_after_the_last_purchase_at_ten() -> None:
    trigger = scenario(
        trigger={"type": "date", "date": "last_purchase_at", "offset": "30d", "at": "10:00"}
    ).trigger
    assert isinstance(trigger, DateTrigger)
    assert (trigger.offset, trigger.at, trigger.yearly) == (timedelta(days=30), time(10), False)


def test_date_trigger_on_a_trait_every_year() -> None:
    trigger = scenario(
        trigger={"type": "date", "date": "traits.birthday", "at": "09:30", "yearly": True}
    ).trigger
    assert isinstance(trigger, DateTrigger) and trigger.yearly


def test_date_trigger_refuses_an_unknown_date() -> None:
    with pytest.raises(ValidationError, match="is not a date CEMS knows"):
        scenario(trigger={"type": "date", "date": "birthday", "at": "10:00"})


def test_broadcast_once_at_a_time() -> None:
    trigger = scenario(trigger={"type": "broadcast", "at": "2026-05-08T10:00:00+09:00"}).trigger
    assert isinstance(trigger, BroadcastTrigger)
    assert trigger.at == datetime(2026, 5, 8, 1, 0, tzinfo=UTC)


def test_broadcast_on_a_cron() -> None:
    trigger = scenario(trigger={"type": "broadcast", "cron": "0 10 * * mon"}).trigger
    assert isinstance(trigger, BroadcastTrigger) and trigger.cron == "0 10 * * mon"


# -- steps ------------------------------------------------------------------------------------------------


def test_send_on_line_falling_back_to_email() -> None:
    step = scenario(
        steps=[{**SEND, "channel": "line_or_email", "email": {"subject": "件名", "text": "本文"}}]
    ).steps[0]
    assert isinstance(step, SendStep) and step.email is not None and step.email.subject == "件名"


def test_send_by_email_needs_html_or_text() -> None:
    with pytest.raises(ValidationError, match="an email needs `html`, `text` or both"):
        scenario(steps=[{"id": "m", "type": "send", "channel": "email", "email": {"subject": "件名"}}])


def test_wait_for_a_duration() -> None:
    step = scenario(steps=[{"id": "w", "type": "wait", "duration": "1d12h"}, SEND]).steps[0]
    assert isinstance(step, WaitStep) and step.duration == timedelta(days=1, hours=12)


def test_wait_until_a_time_of_day() -> None:
    step = scenario(steps=[{"id": "w", "type": "wait", "at": "10:00"}, SEND]).steps[0]
    assert isinstance(step, WaitStep) and step.at == time(10)


def test_wait_until_a_profile_date_minus_an_offset() -> None:
    step = scenario(
        steps=[
            {"id": "w", "type": "wait", "until": {"date": "traits.birthday", "offset": "-3d"}, "at": "10:00"},
            SEND,
        ]
    ).steps[0]
    assert isinstance(step, WaitStep) and step.until is not None and step.until.offset == timedelta(days=-3)


def test_wait_refuses_both_a_duration_and_a_date() -> None:
    with pytest.raises(ValidationError, match="give `duration` or `until`, not both"):
        scenario(
            steps=[{"id": "w", "type": "wait", "duration": "1d", "until": {"date": "first_seen_at"}}, SEND]
        )


def test_wait_for_an_event_with_a_time_out() -> None:
    s = scenario(
        steps=[
            {
                "id": "w",
                "type": "wait_for_event",
                "event": "Order Completed",
                "timeout": "1h",
                "on_event": "done",
            },
            SEND,
            {"id": "done", "type": "end"},
        ]
    )
    step = s.steps[0]
    assert isinstance(step, WaitForEventStep) and step.timeout == timedelta(hours=1)
    assert s.successors(step) == ["done", "hello"]


def test_branch_goes_to_otherwise_or_the_step_below() -> None:
    branch = {
        "id": "b",
        "type": "branch",
        "branches": [{"when": {"kind": "reachable", "channel": "line"}, "next": "hello"}],
    }
    s = scenario(steps=[branch, {"id": "mail", "type": "end"}, SEND])
    step = s.steps[0]
    assert isinstance(step, BranchStep) and s.successors(step) == ["hello", "mail"]


def test_split_with_weights() -> None:
    split = {
        "id": "ab",
        "type": "split",
        "variants": [{"name": "A", "weight": 70, "next": "hello"}, {"name": "B", "weight": 30, "next": "b"}],
    }
    s = scenario(steps=[split, SEND, {"id": "b", "type": "end"}])
    assert isinstance(s.steps[0], SplitStep) and [v.weight for v in s.steps[0].variants] == [70, 30]


def test_split_needs_two_variants() -> None:
    with pytest.raises(ValidationError, match="at least 2"):
        scenario(
            steps=[
                {"id": "ab", "type": "split", "variants": [{"name": "A", "weight": 1, "next": "hello"}]},
                SEND,
            ]
        )


def test_set_trait() -> None:
    step = scenario(steps=[{"id": "t", "type": "set_trait", "trait": "vip", "value": True}, SEND]).steps[0]
    assert isinstance(step, SetTraitStep) and step.value is True


def test_switch_rich_menu_and_back_to_the_default() -> None:
    s = scenario(
        steps=[
            {"id": "m", "type": "rich_menu", "rich_menu_id": "richmenu-0123abcd"},
            {"id": "d", "type": "rich_menu", "rich_menu_id": None},
        ]
    )
    assert isinstance(s.steps[0], RichMenuStep) and isinstance(s.steps[1], RichMenuStep)
    assert s.steps[1].rich_menu_id is None


def test_end_has_no_successor() -> None:
    s = scenario(steps=[SEND, {"id": "end", "type": "end"}])
    assert isinstance(s.steps[1], EndStep) and s.successors(s.steps[1]) == []


def test_a_step_without_next_goes_to_the_one_listed_below_and_the_last_ends() -> None:
    s = scenario(steps=[SEND, {"id": "t", "type": "set_trait", "trait": "x", "value": 1}])
    assert s.next_of(s.steps[0]) == "t" and s.next_of(s.steps[1]) is None


# -- entry, goal, exits, window, cap ------------------------------------------------------------------------


def test_reentry_after_exit() -> None:
    assert scenario(entry={"reentry": "after_exit"}).entry.reentry == "after_exit"


def test_reentry_after_a_cool_down() -> None:
    assert scenario(entry={"reentry": "cooldown", "cooldown": "30d"}).entry.cooldown == timedelta(days=30)


def test_cool_down_is_refused_with_another_reentry_rule() -> None:
    with pytest.raises(ValidationError, match="applies only to"):
        scenario(entry={"reentry": "never", "cooldown": "30d"})


def test_holdout_percent_up_to_fifty() -> None:
    assert scenario(entry={"holdout_percent": 50}).entry.holdout_percent == 50
    with pytest.raises(ValidationError):
        scenario(entry={"holdout_percent": 50.5})


def test_goal_event_with_conditions_within_a_window() -> None:
    goal = scenario(
        goal={
            "event": "Order Completed",
            "where": [{"property": "total", "op": "gte", "value": 3000}],
            "within": "30d",
        }
    ).goal
    assert goal is not None and goal.within == timedelta(days=30)


def test_exit_after_n_sends_without_response_and_staying_despite_higher_priority() -> None:
    rules = scenario(exit={"no_response_after_sends": 3, "yield_to_higher_priority": False}).exit
    assert rules.no_response_after_sends == 3 and not rules.yield_to_higher_priority


def test_send_window_with_its_own_days_and_time_zone() -> None:
    s = scenario(
        time_zone="Asia/Seoul", send_window={"start": "10:00", "end": "18:00", "days": ["mon", "fri"]}
    )
    assert s.zone == ZoneInfo("Asia/Seoul") and s.send_window is not None
    assert s.send_window.days == ["mon", "fri"]


def test_send_window_needs_a_day() -> None:
    with pytest.raises(ValidationError):
        scenario(send_window={"days": []})


def test_capped_sends_may_be_skipped() -> None:
    assert scenario(frequency_cap={"when_capped": "skip"}).frequency_cap.when_capped == "skip"


def test_priority_is_bounded() -> None:
    assert scenario(priority=1000).priority == 1000
    with pytest.raises(ValidationError):
        scenario(priority=1001)


# -- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("3d", timedelta(days=3)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
    ],
)
def test_durations_read(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "3", "3x", "1h1d", "1d1d", "1.5h", "P3D", "-1d"])
def test_durations_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_offsets_may_be_negative() -> None:
    assert parse_duration("-1d", signed=True) == timedelta(days=-1)
    assert format_duration(timedelta(days=-1)) == "-1d"


# -- cron ---------------------------------------------------------------------------------------------------


def test_cron_next_monday_at_ten_tokyo() -> None:
    schedule = CronSchedule.parse("0 10 * * 1")
    after = datetime(2026, 5, 6, 3, 0, tzinfo=UTC)  # Wednesday 12:00 in Tokyo
    assert schedule.next_after(after, TOKYO) == datetime(2026, 5, 11, 10, 0, tzinfo=TOKYO)


def test_cron_steps_ranges_and_names() -> None:
    schedule = CronSchedule.parse("*/15 9-17 * jan-mar mon-fri")
    assert schedule.minutes == {0, 15, 30, 45} and schedule.hours == set(range(9, 18))
    assert schedule.months == {1, 2, 3} and schedule.weekdays == {1, 2, 3, 4, 5}


def test_cron_day_of_month_or_day_of_week_when_both_are_given() -> None:
    schedule = CronSchedule.parse("0 10 1 * 0")
    after = datetime(2026, 5, 1, 2, 0, tzinfo=UTC)  # Friday 1 May, 11:00 Tokyo
    assert schedule.next_after(after, TOKYO) == datetime(2026, 5, 3, 10, 0, tzinfo=TOKYO)  # Sunday


def test_cron_that_never_fires() -> None:
    assert CronSchedule.parse("0 0 31 2 *").next_after(datetime(2026, 1, 1, tzinfo=UTC), TOKYO) is None


# -- assignment -------------------------------------------------------------------------------------------


def test_holdout_is_deterministic_and_close_to_its_percentage() -> None:
    customers = [f"cus_{i:05d}" for i in range(5000)]
    held = [c for c in customers if in_holdout("post-purchase", c, 10)]
    assert held == [c for c in customers if in_holdout("post-purchase", c, 10)]
    assert 400 < len(held) < 600


def test_no_holdout_at_zero_percent() -> None:
    assert not any(in_holdout("s", f"cus_{i}", 0) for i in range(1000))


def test_ab_variants_follow_the_weights_and_stay_put() -> None:
    variants = [Variant(name="A", weight=70, next="a"), Variant(name="B", weight=30, next="b")]
    picks = [pick_variant("s", "ab", f"cus_{i}", variants).name for i in range(4000)]
    assert picks == [pick_variant("s", "ab", f"cus_{i}", variants).name for i in range(4000)]
    assert 2600 < picks.count("A") < 3000


def test_a_variant_with_no_weight_is_never_picked() -> None:
    variants = [Variant(name="A", weight=0, next="a"), Variant(name="B", weight=1, next="b")]
    assert {pick_variant("s", "ab", f"cus_{i}", variants).name for i in range(500)} == {"B"}

"""The checks that need the whole scenario file, run on its JSON: graph, content, dates, A/B weights.

The field checks (the pydantic models in cems.scenario.model) see one value at a time. What needs
the whole document is checked here, on the parsed JSON rather than the models, so the checks run
whether or not the fields are valid and a file's mistakes are all reported at once. Each check skips
a value of the wrong shape (the field checks report that). The models run `document_problems` on
their own JSON form after the fields validate, so a `Scenario` object is always a usable scenario.
"""

from __future__ import annotations

from typing import Any

from cems.scenario.content import content_problems, content_warnings
from cems.scenario.graph import graph_problems
from cems.scenario.problems import Problem, bilingual
from cems.scenario.reach import reach_warnings

# Triggers that bring an event a wait may count from.
_EVENT_TRIGGERS = ("event", "line_follow", "survey_answer")
_TRIGGERS = (*_EVENT_TRIGGERS, "date", "broadcast")


def document_problems(document: Any) -> list[Problem]:
    """Every error of a parsed JSON document that the field checks cannot see: step references,
    reachability, loops, content for each send's channel, LINE messages, Liquid, date sources, A/B
    weights."""
    if not isinstance(document, dict):
        return []
    return [
        *graph_problems(document.get("steps")),
        *content_problems(document),
        *_date_problems(document),
        *_split_problems(document),
    ]


def document_warnings(document: Any) -> list[Problem]:
    """Accepted, but probably not what was meant."""
    if not isinstance(document, dict):
        return []
    return [*content_warnings(document), *reach_warnings(document)]


def _date_problems(document: dict[str, Any]) -> list[Problem]:
    trigger = document.get("trigger")
    kind = trigger.get("type") if isinstance(trigger, dict) else None
    if kind not in _TRIGGERS:
        return []  # the field checks name the trigger type
    assert isinstance(trigger, dict)
    problems: list[Problem] = []
    if kind == "date" and trigger.get("date") == "trigger_event":
        problems.append(
            Problem(
                ("trigger", "date"),
                bilingual(
                    "日付トリガーはトリガーイベントの日付から始められません。プロフィールの日付を使ってください",
                    "a date trigger cannot start from the trigger event; use a profile date",
                ),
                "date_source",
            )
        )
    if kind in _EVENT_TRIGGERS:
        return problems
    steps = document.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        until = step.get("until") if isinstance(step, dict) and step.get("type") == "wait" else None
        if isinstance(until, dict) and until.get("date") == "trigger_event":
            problems.append(
                Problem(
                    ("steps", i, "until", "date"),
                    bilingual(
                        f"{kind} トリガーには基準にするトリガーイベントがありません。"
                        "プロフィールの日付を使ってください",
                        f"a {kind} trigger has no trigger event to count from; use a profile date",
                    ),
                    "date_source",
                )
            )
    return problems


def _split_problems(document: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    steps = document.get("steps")
    for i, step in enumerate(steps if isinstance(steps, list) else []):
        variants = step.get("variants") if isinstance(step, dict) and step.get("type") == "split" else None
        if not isinstance(variants, list):
            continue
        weights = [v.get("weight") if isinstance(v, dict) else None for v in variants]
        numbers = [w for w in weights if isinstance(w, int | float) and not isinstance(w, bool)]
        if len(numbers) == len(weights) and sum(numbers) <= 0:
            problems.append(
                Problem(
                    ("steps", i, "variants"),
                    bilingual(
                        "バリアントの重みの合計が 0 です。重みを付けてください",
                        "the variants' weights add up to 0; give some weight",
                    ),
                    "split_weights",
                )
            )
        names: set[str] = set()
        for j, variant in enumerate(variants):
            name = variant.get("name") if isinstance(variant, dict) else None
            if not isinstance(name, str):
                continue
            if name in names:
                problems.append(
                    Problem(
                        ("steps", i, "variants", j, "name"),
                        bilingual(
                            f'バリアント名 "{name}" が 2 回使われています', f'variant "{name}" is named twice'
                        ),
                        "split_weights",
                    )
                )
            names.add(name)
    return problems

"""The step graph of a scenario file, checked on its JSON: unique ids, references, reachability, loops.

The checks read the parsed JSON document, not the models, so they run even when some fields are
invalid: a file with a misspelt field still hears about its bad `next`. What cannot be read is left
to the field errors. Reachability and loops need the whole graph: they run once every step can be
read, step ids are unique and every reference either resolves or is a typo with one close match (the
"did you mean" of its error), which reachability takes as meant, so one typo is one error, not also
every step after it "never reached". A reference to nowhere in particular, or a step that names
itself, leaves what was meant unknown, so reachability and loops wait until it is fixed.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cems.scenario.durations import format_duration, parse_duration
from cems.scenario.problems import Path, Problem, bilingual

# The shortest wait a cycle of steps must contain, so a loop can never send in a tight circle.
MIN_CYCLE_WAIT = timedelta(hours=1)

# Per step type: the fields naming other steps, and the one whose absence means "the step listed
# below" (None: the step never falls through). `branches` and `variants` are lists of objects with
# a `next`. Kept in step with the models' `Scenario.successors`, which the engine walks.
_TARGETS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "send": (("next",), "next"),
    "wait": (("next",), "next"),
    "set_trait": (("next",), "next"),
    "rich_menu": (("next",), "next"),
    "wait_for_event": (("on_event", "on_timeout"), "on_timeout"),
    "branch": (("branches", "otherwise"), "otherwise"),
    "split": (("variants",), None),
    "end": ((), None),
}
_LISTS = ("branches", "variants")


@dataclass(frozen=True)
class StepNode:
    """What the graph checks need of one step."""

    index: int
    id: str
    references: tuple[tuple[Path, str], ...]  # (path within the step, step id named there)
    falls_through: bool  # goes on to the step listed below it
    slow: bool | None  # a wait of at least MIN_CYCLE_WAIT; None when its length cannot be read

    def targets(self) -> list[str]:
        return [target for _, target in self.references]


def graph_problems(steps: Any) -> list[Problem]:
    """Every graph problem of a document's `steps` that can be seen with the steps as written."""
    if not isinstance(steps, list):
        return []
    nodes = [_node(i, raw) for i, raw in enumerate(steps)]
    problems = _id_problems(steps)
    unique_ids = not problems
    ids = list(
        dict.fromkeys(raw["id"] for raw in steps if isinstance(raw, dict) and isinstance(raw.get("id"), str))
    )
    meant: dict[str, str] = {}  # an unknown reference -> the step its "did you mean" names
    unclear = False  # a reference whose meaning cannot be guessed
    for i, raw in enumerate(steps):
        step_id = raw.get("id") if isinstance(raw, dict) else None
        for path, target in _references(raw)[0]:
            found = _reference_problems(("steps", i, *path), step_id, target, ids, meant)
            problems += found
            unclear = unclear or bool(found and target not in meant)
    readable = [node for node in nodes if node is not None]
    if not unique_ids or len(readable) != len(steps) or not readable or unclear:
        return problems
    problems += _reachability_problems(readable, meant)
    if all(node.slow is not None for node in readable):
        problems += _cycle_problems(readable)
    return problems


# -------------------------------------------------------------------------------------------- reading


def _node(index: int, raw: Any) -> StepNode | None:
    """The step as a graph node; None when its type, id or a reference cannot be read."""
    if not isinstance(raw, dict) or not isinstance(raw.get("id"), str) or _step_type(raw) is None:
        return None
    references, complete = _references(raw)
    if not complete:
        return None
    default = _TARGETS[raw["type"]][1]
    return StepNode(
        index=index,
        id=raw["id"],
        references=tuple(references),
        falls_through=default is not None and raw.get(default) is None,
        slow=_slow(raw),
    )


def _references(raw: Any) -> tuple[list[tuple[Path, str]], bool]:
    """The step ids a step names, at their paths within it, and whether every one could be read."""
    if not isinstance(raw, dict) or _step_type(raw) is None:
        return [], False
    found: list[tuple[Path, str]] = []
    complete = True
    for name in _TARGETS[raw["type"]][0]:
        value = raw.get(name)
        if name in _LISTS:
            if not isinstance(value, list):
                complete = False
                continue
            for j, item in enumerate(value):
                target = item.get("next") if isinstance(item, dict) else None
                if isinstance(target, str):
                    found.append(((name, j, "next"), target))
                else:
                    complete = False
        elif isinstance(value, str):
            found.append(((name,), value))
        elif value is not None:
            complete = False
    return found, complete


def _step_type(raw: Mapping[str, Any]) -> str | None:
    """The step's type if the graph checks know it (any JSON value may stand there)."""
    kind = raw.get("type")
    return kind if isinstance(kind, str) and kind in _TARGETS else None


def _slow(raw: Mapping[str, Any]) -> bool | None:
    """Whether a step is a wait of at least MIN_CYCLE_WAIT (a loop through it cannot spin)."""
    if raw["type"] == "wait_for_event":
        timeout = _duration(raw.get("timeout"))
        return None if timeout is None else timeout >= MIN_CYCLE_WAIT
    if raw["type"] == "wait":
        if raw.get("duration") is not None:
            duration = _duration(raw["duration"])
            return None if duration is None else duration >= MIN_CYCLE_WAIT
        # A wait until the next `at` alone lasts up to a day, and at least until the clock moves on.
        return raw.get("until") is None and raw.get("at") is not None
    return False


def _duration(value: Any) -> timedelta | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------- checks


def _id_problems(steps: list[Any]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(steps):
        step_id = raw.get("id") if isinstance(raw, dict) else None
        if not isinstance(step_id, str):
            continue
        if step_id in seen:
            problems.append(
                Problem(
                    ("steps", i, "id"),
                    bilingual(
                        f'ステップ ID "{step_id}" は steps[{seen[step_id]}] がすでに使っています',
                        f'step id "{step_id}" is already used by steps[{seen[step_id]}]',
                    ),
                    "duplicate_step_id",
                )
            )
        else:
            seen[step_id] = i
    return problems


def _reference_problems(
    path: Path, step_id: Any, target: str, ids: list[str], meant: dict[str, str]
) -> list[Problem]:
    """A reference to itself or to no step; a typo's likely meaning is added to `meant`."""
    if target == step_id:
        return [
            Problem(
                path,
                bilingual(f'ステップ "{step_id}" が自分自身に進みます', f'step "{step_id}" goes to itself'),
                "loop_without_wait",
            )
        ]
    if target in ids:
        return []
    close = difflib.get_close_matches(target, ids, n=1)
    if close:
        meant[target] = close[0]
        hint_ja, hint_en = f'。"{close[0]}" のことですか？', f'; did you mean "{close[0]}"?'
    else:
        listed = ", ".join(ids)
        hint_ja, hint_en = f"。このファイルのステップ ID: {listed}", f"; step ids here: {listed}"
    return [
        Problem(
            path,
            bilingual(f'ステップ "{target}" はありません{hint_ja}', f'there is no step "{target}"{hint_en}'),
            "unknown_step",
        )
    ]


def _successors(
    node: StepNode, nodes: list[StepNode], by_id: Mapping[str, StepNode], meant: Mapping[str, str]
) -> list[str]:
    """The steps `node` goes to, a typo taken as what it probably meant (see `meant`)."""
    targets = [meant.get(t, t) for t in node.targets()]
    if node.falls_through and node.index + 1 < len(nodes):
        targets.append(nodes[node.index + 1].id)
    return list(dict.fromkeys(t for t in targets if t in by_id))


def _reachability_problems(nodes: list[StepNode], meant: Mapping[str, str]) -> list[Problem]:
    by_id = {node.id: node for node in nodes}
    reached = {nodes[0].id}
    todo = [nodes[0]]
    while todo:
        for target in _successors(todo.pop(), nodes, by_id, meant):
            if target not in reached:
                reached.add(target)
                todo.append(by_id[target])
    return [
        Problem(
            ("steps", node.index),
            bilingual(
                f'ステップ "{node.id}" にはどのステップからも進めません'
                "（`next` のないステップは、そのすぐ下に書かれたステップに進みます）",
                f'step "{node.id}" can never be reached: no step goes to it (a step without `next` '
                "goes to the one listed below it)",
            ),
            "unreachable_step",
        )
        for node in nodes
        if node.id not in reached
    ]


def _cycle_problems(nodes: list[StepNode]) -> list[Problem]:
    """A loop is allowed only through a wait of at least an hour (a `duration` or a
    `wait_for_event` time-out of 1h or more, or a wait until the next `at`): steps that loop
    without one would send in a tight circle. Only references as written count (no typo's guess)."""
    by_id = {node.id: node for node in nodes}
    # Look for cycles in the graph without the slow waits: any cycle left has no such wait.
    edges = {
        node.id: [] if node.slow else [t for t in _successors(node, nodes, by_id, {}) if not by_id[t].slow]
        for node in nodes
    }
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    problems: list[Problem] = []
    wait = format_duration(MIN_CYCLE_WAIT)

    def visit(current: str, stack: list[str]) -> None:
        state[current] = 1
        stack.append(current)
        for target in edges[current]:
            if state.get(target) == 1:
                loop = " → ".join([*stack[stack.index(target) :], target])
                problems.append(
                    Problem(
                        ("steps", by_id[target].index),
                        bilingual(
                            f"ステップが待たずにループしています（{loop}）。ループの中に {wait} 以上の"
                            "待機を入れてください",
                            f"steps loop without waiting ({loop}); put a wait of at least {wait} in the loop",
                        ),
                        "loop_without_wait",
                    )
                )
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[current] = 2

    for node in nodes:
        if not node.slow and node.id not in state:
            visit(node.id, [])
    return problems

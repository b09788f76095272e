"""Scenario diagrams (cems.console.diagram): the layout's promises, checked on every example scenario
and on hand-made ones that exercise each kind of step, and the SVG drawn from it."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from cems.console.diagram import (
    EXIT_NO_RESPONSE_ID,
    EXIT_YIELD_ID,
    GOAL_ID,
    JOURNEY_END_ID,
    TRIGGER_ID,
    Diagram,
    Edge,
    Point,
    Rect,
    bilingual_lines,
    clip,
    layout,
    render_page,
    render_svg,
    text_columns,
)
from cems.scenario.model import Scenario
from cems.scenario.validation import validate_file

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples" / "scenarios").glob("*.json"))
SVG = "{http://www.w3.org/2000/svg}"


def _text(text: str = "こんにちは") -> dict[str, Any]:
    return {"type": "send", "channel": "line", "line": [{"type": "text", "text": text}]}


def scenario(steps: list[dict[str, Any]], **fields: Any) -> Scenario:
    document: dict[str, Any] = {
        "id": "hand-made",
        "name": "手作りのシナリオ / Hand-made",
        "trigger": {"type": "event", "event": "Order Completed"},
        "steps": steps,
        **fields,
    }
    return Scenario.model_validate(document)


def branch_of_three() -> Scenario:
    return scenario(
        [
            {
                "id": "by-stage",
                "name": "ステージで分岐",
                "type": "branch",
                "branches": [
                    {"when": {"kind": "lifecycle", "stages": ["new"]}, "next": "welcome-new"},
                    {
                        "when": {"kind": "profile", "field": "purchase_count", "op": "gte", "value": 5},
                        "next": "thank-loyal",
                    },
                    {
                        "when": {
                            "kind": "all",
                            "conditions": [
                                {"kind": "trait", "trait": "vip", "op": "eq", "value": True},
                                {"kind": "not", "condition": {"kind": "bought", "categories": ["緑茶"]}},
                            ],
                        },
                        "next": "vip-offer",
                    },
                ],
                "otherwise": "done",
            },
            {"id": "welcome-new", **_text(), "next": "done"},
            {"id": "thank-loyal", **_text(), "next": "done"},
            {"id": "vip-offer", **_text(), "next": "done"},
            {"id": "done", "type": "end"},
        ]
    )


def split_of_three() -> Scenario:
    return scenario(
        [
            {
                "id": "ab",
                "type": "split",
                "variants": [
                    {"name": "A", "weight": 1, "next": "a"},
                    {"name": "B", "weight": 1, "next": "b"},
                    {"name": "C", "weight": 2, "next": "c"},
                ],
            },
            {"id": "a", **_text("A"), "next": "done"},
            {"id": "b", **_text("B"), "next": "done"},
            {"id": "c", **_text("C")},
            {"id": "done", "type": "end"},
        ]
    )


def wait_for_event() -> Scenario:
    # No on_event: the journey ends when the event comes; the time-out falls through to the next step.
    return scenario(
        [
            {
                "id": "wait-order",
                "type": "wait_for_event",
                "event": "Order Completed",
                "where": [{"property": "total", "op": "gte", "value": 3000}],
                "timeout": "3d",
            },
            {"id": "remind", **_text("まだですか？")},
        ]
    )


def loop_with_wait() -> Scenario:
    # Weekly reminders until the customer has bought: a loop, allowed because it waits 7 days.
    return scenario(
        [
            {"id": "remind", **_text("お忘れではありませんか")},
            {"id": "wait-week", "type": "wait", "duration": "7d", "at": "10:00"},
            {
                "id": "bought",
                "type": "branch",
                "branches": [
                    {
                        "when": {"kind": "profile", "field": "purchase_count", "op": "lt", "value": 1},
                        "next": "remind",
                    }
                ],
                "otherwise": "done",
            },
            {"id": "done", "type": "end"},
        ]
    )


def goal_and_exits() -> Scenario:
    return scenario(
        [
            {
                "id": "wait-day",
                "type": "wait",
                "until": {"date": "trigger_event", "offset": "1d"},
                "at": "10:00",
            },
            {"id": "hello", **_text()},
            {"id": "mark", "type": "set_trait", "trait": "hello_sent", "value": True},
        ],
        goal={"event": "Order Completed", "within": "30d"},
        exit={"yield_to_higher_priority": True, "no_response_after_sends": 2},
        audience={"kind": "reachable", "channel": "line"},
        entry={"holdout_percent": 10},
    )


def many_steps() -> Scenario:
    # Sixty steps, every fifth a branch that skips ahead: long edges through many layers.
    steps: list[dict[str, Any]] = []
    for i in range(60):
        if i % 5 == 2 and i + 7 < 60:
            when = {"kind": "trait", "trait": f"t{i}", "op": "exists"}
            steps.append({"id": f"s{i}", "type": "branch", "branches": [{"when": when, "next": f"s{i + 7}"}]})
        elif i == 59:
            steps.append({"id": f"s{i}", "type": "end"})
        else:
            steps.append({"id": f"s{i}", **_text()})
    return scenario(steps)


HAND_MADE = {
    "branch_of_three": branch_of_three,
    "split_of_three": split_of_three,
    "wait_for_event": wait_for_event,
    "loop_with_wait": loop_with_wait,
    "goal_and_exits": goal_and_exits,
    "many_steps": many_steps,
}


def _example(path: Path) -> Scenario:
    report = validate_file(path)
    assert report.scenario is not None and report.valid, report.to_text()
    return report.scenario


def all_scenarios() -> list[Any]:
    examples = [pytest.param(path, id=path.stem) for path in EXAMPLES]
    return examples + [pytest.param(name, id=name) for name in HAND_MADE]


def load(which: Path | str) -> Scenario:
    return _example(which) if isinstance(which, Path) else HAND_MADE[which]()


def test_there_are_examples_to_draw() -> None:
    assert len(EXAMPLES) >= 5


# -- the layout's promises ------------------------------------------------------------------------------


def _segments(edge: Edge) -> list[tuple[Point, Point]]:
    return list(itertools.pairwise(edge.points))


def _crosses_inside(a: Point, b: Point, rect: Rect) -> bool:
    """Whether an axis-parallel segment runs through the inside of `rect` (borders excluded)."""
    eps = 0.01
    if abs(a.x - b.x) < eps:  # vertical
        low, high = sorted((a.y, b.y))
        return rect.x + eps < a.x < rect.right - eps and low < rect.bottom - eps and high > rect.y + eps
    low, high = sorted((a.x, b.x))
    return rect.y + eps < a.y < rect.bottom - eps and low < rect.right - eps and high > rect.x + eps


@pytest.mark.parametrize("which", all_scenarios())
def test_layout_keeps_boxes_labels_and_edges_apart(which: Path | str) -> None:
    model = load(which)
    diagram = layout(model)
    boxes = {box.id: box for box in diagram.boxes}
    labels = [edge.label for edge in diagram.edges if edge.label is not None]

    # Every step exactly once, plus the trigger.
    ids = [box.id for box in diagram.boxes]
    assert sorted(i for i in ids if not i.startswith("@")) == sorted(step.id for step in model.steps)
    assert len(ids) == len(set(ids))
    assert TRIGGER_ID in boxes

    for box_a, box_b in itertools.combinations(diagram.boxes, 2):
        assert not box_a.rect.overlaps(box_b.rect), f"boxes {box_a.id} and {box_b.id} overlap"
    for label in labels:
        for box in diagram.boxes:
            assert not label.rect.overlaps(box.rect), f"label {label.lines} overlaps box {box.id}"
    for label_a, label_b in itertools.combinations(labels, 2):
        assert not label_a.rect.overlaps(label_b.rect), f"labels {label_a.lines} and {label_b.lines} overlap"

    for edge in diagram.edges:
        assert len(edge.points) >= 2
        assert boxes[edge.source].rect.on_border(edge.points[0]), f"{edge.source}→{edge.target} start"
        assert boxes[edge.target].rect.on_border(edge.points[-1]), f"{edge.source}→{edge.target} end"
        for a, b in _segments(edge):
            assert abs(a.x - b.x) < 0.01 or abs(a.y - b.y) < 0.01, "edges are orthogonal"
            for box in diagram.boxes:
                assert not _crosses_inside(a, b, box.rect), f"{edge.source}→{edge.target} crosses {box.id}"

    # Everything inside the drawing.
    for rect in [box.rect for box in diagram.boxes] + [label.rect for label in labels]:
        assert rect.x >= 0 and rect.y >= 0
        assert rect.right <= diagram.width and rect.bottom <= diagram.height


@pytest.mark.parametrize("which", all_scenarios())
def test_every_way_a_step_can_go_is_an_edge(which: Path | str) -> None:
    model = load(which)
    diagram = layout(model)
    pairs = {(edge.source, edge.target) for edge in diagram.edges}
    assert (TRIGGER_ID, model.first_step().id) in pairs
    for step in model.steps:
        for target in model.successors(step):
            assert (step.id, target) in pairs
    # Each pair once: two ways to the same step share one edge and its label.
    assert len(pairs) == len(diagram.edges)


@pytest.mark.parametrize("which", all_scenarios())
def test_the_svg_is_xml_with_every_step(which: Path | str) -> None:
    model = load(which)
    diagram = layout(model)
    svg = render_svg(diagram)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG}svg"
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    groups = {g.get("data-id") for g in root.iter(f"{SVG}g") if g.get("data-id")}
    for step in model.steps:
        assert step.id in texts
        assert step.id in groups
    assert len(list(root.iter(f"{SVG}path"))) >= len(diagram.edges)
    page = render_page(diagram, model.name)
    assert page.startswith("<!doctype html>")
    assert '<html lang="ja">' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page


def test_the_layout_does_not_change_between_runs() -> None:
    model = _example(EXAMPLES[0])
    assert layout(model) == layout(model)


# -- what the diagram says ----------------------------------------------------------------------------


def _labels(diagram: Diagram, source: str) -> dict[str, tuple[str, ...]]:
    return {e.target: (e.label.lines if e.label else ()) for e in diagram.edges if e.source == source}


def test_a_branch_has_an_edge_per_branch_and_otherwise() -> None:
    diagram = layout(branch_of_three())
    labels = _labels(diagram, "by-stage")
    assert set(labels) == {"welcome-new", "thank-loyal", "vip-offer", "done"}
    assert labels["welcome-new"][0].startswith("1. ")
    assert "purchase_count ≥ 5" in " ".join(labels["thank-loyal"])
    assert "vip = true" in " ".join(labels["vip-offer"])
    assert labels["done"] == ("それ以外 / otherwise",)
    assert diagram.box("by-stage").kind == "branch"


def test_a_split_shows_each_variants_share() -> None:
    labels = _labels(layout(split_of_three()), "ab")
    assert labels == {"a": ("A 25%",), "b": ("B 25%",), "c": ("C 50%",)}


def test_wait_for_event_shows_the_event_and_the_time_out() -> None:
    diagram = layout(wait_for_event())
    labels = _labels(diagram, "wait-order")
    # No on_event: the journey ends when the event comes.
    assert JOURNEY_END_ID in labels
    assert "on event Order Completed" in " ".join(labels[JOURNEY_END_ID])
    assert labels["remind"] == ("3日後 / after 3d",)
    box = diagram.box("wait-order")
    assert box.kind == "wait_for_event"
    assert "total ≥ 3000" in box.lines
    # The last step has no next: it too ends the journey, at the same end box.
    assert tuple(_labels(diagram, "remind")) == (JOURNEY_END_ID,)


def test_a_loop_goes_back_up_and_says_so() -> None:
    diagram = layout(loop_with_wait())
    [back] = [e for e in diagram.edges if e.back]
    assert (back.source, back.target) == ("bought", "remind")
    assert back.label is not None and back.label.lines == ("1. purchase_count < 1",)
    # It ends at the bottom of the earlier step: the arrow points up.
    assert back.points[-1].y == pytest.approx(diagram.box("remind").rect.bottom)
    assert diagram.box("wait-week").lines[0] == "待機 7日後の 10:00 まで"
    assert diagram.box("wait-week").lines[1] == "wait 7d, then until 10:00"


def test_goal_and_exit_rules_hang_off_the_trigger() -> None:
    diagram = layout(goal_and_exits())
    rules = {e.target: e for e in diagram.edges if e.kind == "rule"}
    assert set(rules) == {GOAL_ID, EXIT_YIELD_ID, EXIT_NO_RESPONSE_ID}
    assert all(e.source == TRIGGER_ID for e in rules.values())
    goal_label = rules[GOAL_ID].label
    assert goal_label is not None and goal_label.lines == ("30日以内 / within 30d",)
    assert diagram.box(EXIT_NO_RESPONSE_ID).kind == "exit"
    assert any("2 sends" in line for line in diagram.box(EXIT_NO_RESPONSE_ID).lines)
    trigger = diagram.box(TRIGGER_ID).lines
    assert "Order Completed" in trigger
    assert "対象 / audience: 配信可能 line" in trigger
    assert "対照群 / holdout 10%" in trigger
    assert diagram.box("wait-day").lines[0].startswith("待機 トリガーの1日後の 10:00 まで")


def test_a_cut_line_is_whole_in_the_tooltip() -> None:
    name = "とても長いステップの名前" * 6
    diagram = layout(scenario([{"id": "long", "name": name, **_text()}]))
    box = diagram.box("long")
    assert name not in box.lines
    assert any(line.endswith("…") for line in box.lines)
    assert name in box.tooltip
    root = ET.fromstring(render_svg(diagram))
    [group] = [g for g in root.iter(f"{SVG}g") if g.get("data-id") == "long"]
    assert name in (group.findtext(f"{SVG}title") or "")


def test_a_box_is_as_wide_as_its_longest_line() -> None:
    diagram = layout(scenario([{"id": "long", "name": "あ" * 20, **_text()}]))
    narrow = layout(scenario([{"id": "long", "name": "a" * 20, **_text()}]))
    # Twenty wide characters take twice the columns of twenty narrow ones.
    assert diagram.box("long").w > narrow.box("long").w * 1.6


# -- text ------------------------------------------------------------------------------------------------


def test_wide_characters_count_as_two_columns() -> None:
    assert text_columns("abc") == 3
    assert text_columns("日本語") == 6
    assert text_columns("ｶﾀｶﾅ") == 4  # half-width katakana are narrow
    assert text_columns("Ａ") == 2  # a full-width letter is wide


def test_long_text_is_cut_and_bilingual_text_wraps() -> None:
    assert clip("a" * 50, 10) == "a" * 8 + "…"
    assert text_columns(clip("あ" * 50, 10)) <= 10
    assert bilingual_lines("待機 3日", "wait 3d", 40) == ["待機 3日 / wait 3d"]
    assert bilingual_lines("待機 " + "あ" * 20, "wait", 20)[1] == "wait"


def test_markup_in_names_is_escaped() -> None:
    hostile = "<script>alert('x')</script> & \"co\""
    model = scenario([{"id": "s", "name": hostile, **_text()}], name=hostile)
    diagram = layout(model)
    svg = render_svg(diagram)
    page = render_page(diagram, hostile)
    for text in (svg, page):
        assert "<script>" not in text
        assert "&lt;script&gt;" in text
        assert "& " not in text.replace("&amp; ", "")
    root = ET.fromstring(svg)
    assert hostile in ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert root.get("aria-label") == hostile


# -- counts ----------------------------------------------------------------------------------------------


def test_counts_are_drawn_under_each_step_that_has_them() -> None:
    model = goal_and_exits()
    diagram = layout(model)
    counts = {
        "hello": {"entered": 1200, "waiting": 3, "sent": 1180, "suppressed": 17, "converted": 96},
        "mark": {"entered": 5},
        "no-such-step": {"entered": 1},
    }
    root = ET.fromstring(render_svg(diagram, counts))
    shown = {
        g.get("data-id"): "".join(t.text or "" for t in g.iter(f"{SVG}text") if t.get("class") == "counts")
        for g in root.iter(f"{SVG}g")
        if g.get("data-id")
    }
    assert shown["hello"] == "入 1,200 · 待 3 · 送 1,180 · 抑 17 · 成 96"
    assert shown["mark"] == "入 5 · 待 – · 送 – · 抑 – · 成 –"
    assert shown["wait-day"] == ""  # no counts for it: nothing drawn
    assert shown[TRIGGER_ID] == ""
    legend = [t for t in root.iter(f"{SVG}text") if t.get("class") == "legend"]
    assert legend and "converted" in (legend[0].text or "")
    # The tooltip spells the counts out.
    titles = ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]
    assert any("エントリー 1,200 / entered 1,200" in t for t in titles)


def test_counts_do_not_move_anything() -> None:
    """The counts line has its room in every step box whether or not counts are given, so live
    counts can be drawn on the same layout."""
    diagram = layout(goal_and_exits())
    plain = ET.fromstring(render_svg(diagram))
    counted = ET.fromstring(render_svg(diagram, {"hello": {"entered": 99_999_999}}))
    rects = [(r.get("x"), r.get("y")) for r in plain.iter(f"{SVG}rect")]
    assert rects[1:] == [(r.get("x"), r.get("y")) for r in counted.iter(f"{SVG}rect")][1:]
    # A count too long for its box is squeezed into it.
    [long] = [t for t in counted.iter(f"{SVG}text") if t.get("class") == "counts"]
    assert long.get("textLength") is not None
    assert float(long.get("textLength") or 0) < diagram.box("hello").w

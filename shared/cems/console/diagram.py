"""Scenario diagrams: a scenario drawn as a flowchart of trigger → steps → end, goal and exits.

`layout(scenario)` builds the graph (the trigger, every step, the goal and the exit rules, and an
"journey ends" box where a step simply stops) and lays it out; `render_svg` and `render_page` draw
the result. Nothing here touches AWS or the clock: the same scenario always gives the same picture,
so the console can redraw it with fresh counts without anything moving (docs/diagrams.md).

The layout is layered, top to bottom:

1. Layers: longest path from the trigger over the graph without its back edges (a loop's way back,
   found by a depth-first walk), so every edge but a loop's points downwards.
2. An edge that spans several layers gets a placeholder in each layer between, so edges take room
   like boxes and never run through one.
3. Order within a layer: barycenter sweeps down and up, keeping the order with the fewest crossings.
4. Horizontal places: each box as near the mean of its neighbours as the order and spacing allow
   (an exact least-squares fit per layer, pool-adjacent-violators), in alternating sweeps.
5. Between two layers: first a band for the labels of the edges that leave the upper layer (rows
   added until no label overlaps another), then one track per sideways jog. Edges are orthogonal
   polylines: down from a port on the bottom border, across on their track, down into a port on
   the top border. No box and no label is ever in a band, so neither can overlap the other.

Box sizes come from the text: a character counts as one column, two when it is wide (kanji, kana,
full-width forms) or ambiguous (drawn wide by Japanese fonts); a column is a fixed fraction of the
font size, chosen so that common sans-serif fonts fit.
"""

from __future__ import annotations

import itertools
import json
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from html import escape
from typing import Any, Literal

from cems.channels.registry import channels_of, plugin
from cems.scenario.condition_models import (
    AllCondition,
    AnyCondition,
    BoughtCondition,
    EngagementStageCondition,
    EventCountCondition,
    LifecycleCondition,
    NotCondition,
    ProfileCondition,
    PropertyCondition,
    ReachableCondition,
    RfmCondition,
    ScoreRange,
    SurveyCondition,
    TraitCondition,
)
from cems.scenario.durations import format_local_time
from cems.scenario.model import (
    BranchStep,
    BroadcastTrigger,
    Condition,
    DateTrigger,
    EndStep,
    EventTrigger,
    LineFollowTrigger,
    RichMenuStep,
    Scenario,
    SendStep,
    SetTraitStep,
    SplitStep,
    Step,
    SurveyAnswerTrigger,
    WaitForEventStep,
    WaitStep,
)

BoxKind = Literal[
    "trigger",
    "send",
    "wait",
    "wait_for_event",
    "branch",
    "split",
    "set_trait",
    "rich_menu",
    "end",
    "journey_end",
    "goal",
    "exit",
]
# A step's edge is part of the journey; a rule's (goal, exit) holds at any step of it.
EdgeKind = Literal["flow", "rule"]

# Ids of the boxes that are not steps: a step id never contains "@" (cems.scenario.values).
TRIGGER_ID = "@trigger"
GOAL_ID = "@goal"
EXIT_YIELD_ID = "@exit-yield"
EXIT_NO_RESPONSE_ID = "@exit-no-response"
JOURNEY_END_ID = "@journey-end"

COUNT_KEYS = ("entered", "waiting", "sent", "suppressed", "converted")
# The counts line is short so that it fits a box: one character per count, explained by a legend.
_COUNT_MARKS = {
    "entered": ("入", "エントリー", "entered"),
    "waiting": ("待", "待機中", "waiting"),
    "sent": ("送", "送信", "sent"),
    "suppressed": ("抑", "抑止", "suppressed"),
    "converted": ("成", "コンバージョン", "converted"),
}

# -- sizes (px) ---------------------------------------------------------------------------------------
FONT_SIZE = 13.0
LABEL_FONT_SIZE = 11.0
COUNTS_FONT_SIZE = 10.0
# One text column as a share of the font size: DejaVu Sans, the widest common fallback, averages
# about 0.6 em for Latin text; a wide character (two columns) is then 1.2 em, above any CJK font's 1 em.
COLUMN_EM = 0.62
LINE_HEIGHT = 18.0
LABEL_LINE_HEIGHT = 14.0
BOX_PAD_X = 12.0
BOX_PAD_Y = 7.0
LABEL_PAD_X = 5.0
LABEL_PAD_Y = 3.0
COUNTS_HEIGHT = 17.0
MIN_BOX_WIDTH = 150.0
NODE_GAP = 40.0  # between neighbouring boxes of a layer
EDGE_SLOT = 14.0  # the width an edge passing through a layer takes
MIN_LAYER_GAP = 34.0  # between layers without labels or jogs: room for an arrowhead
LABEL_GAP = 6.0  # around labels: from their edge, from each other
TRACK_SPACING = 10.0
ARROW_ROOM = 12.0  # under the last label row or track, above the arrowheads' box
MIN_JOG = 0.5  # ends of a segment nearer than this are drawn straight
STRAIGHTEN = 6.0  # a box this near its one incoming line is moved onto it
MARGIN = 20.0
BOX_COLUMNS = 46  # longer lines are cut with "…"
LABEL_COLUMNS = 34
SWEEPS = 12
PLACEMENT_SWEEPS = 16
RULE_WEIGHT = 0.05


# ------------------------------------------------------------------------------------------ the diagram


@dataclass(frozen=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float

    @property
    def right(self) -> float:
        return self.x + self.w

    @property
    def bottom(self) -> float:
        return self.y + self.h

    def overlaps(self, other: Rect) -> bool:
        """Whether the two share any area (touching borders do not count)."""
        return (
            self.x < other.right and other.x < self.right and self.y < other.bottom and other.y < self.bottom
        )

    def on_border(self, point: Point, tolerance: float = 0.01) -> bool:
        inside_x = self.x - tolerance <= point.x <= self.right + tolerance
        inside_y = self.y - tolerance <= point.y <= self.bottom + tolerance
        on_x = abs(point.x - self.x) <= tolerance or abs(point.x - self.right) <= tolerance
        on_y = abs(point.y - self.y) <= tolerance or abs(point.y - self.bottom) <= tolerance
        return inside_x and inside_y and (on_x or on_y)


@dataclass(frozen=True)
class Box:
    """A box of the diagram: a step (its id is the step id), the trigger, the goal, an exit rule, or
    the end of the journey where a step stops without an end step. `lines[0]` is its heading."""

    id: str
    kind: BoxKind
    lines: tuple[str, ...]
    rect: Rect
    is_step: bool  # has a counts line at the bottom
    tooltip: str  # the whole text, lines uncut

    @property
    def x(self) -> float:
        return self.rect.x

    @property
    def y(self) -> float:
        return self.rect.y

    @property
    def w(self) -> float:
        return self.rect.w

    @property
    def h(self) -> float:
        return self.rect.h


@dataclass(frozen=True)
class Label:
    lines: tuple[str, ...]
    rect: Rect


@dataclass(frozen=True)
class Edge:
    """From box `source` to box `target` along `points`: the first on the source's border, the
    last (the arrowhead) on the target's. `back` marks a loop's way back up."""

    source: str
    target: str
    kind: EdgeKind
    points: tuple[Point, ...]
    label: Label | None
    back: bool


@dataclass(frozen=True)
class Diagram:
    scenario_id: str
    scenario_name: str
    width: float
    height: float
    boxes: tuple[Box, ...]
    edges: tuple[Edge, ...]

    def box(self, box_id: str) -> Box:
        for box in self.boxes:
            if box.id == box_id:
                return box
        raise KeyError(box_id)


# ----------------------------------------------------------------------------------------------- text


def text_columns(text: str) -> int:
    """The width of `text` in columns: wide and ambiguous East Asian characters take two, combining
    marks none."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F", "A") else 1
    return total


def text_width(text: str, font_size: float) -> float:
    return text_columns(text) * COLUMN_EM * font_size


def clip(text: str, columns: int) -> str:
    """`text` on one line, cut to `columns` with "…" when longer."""
    flat = " ".join(text.split())
    if text_columns(flat) <= columns:
        return flat
    out = ""
    for ch in flat:
        if text_columns(out + ch) > columns - 2:
            break
        out += ch
    return out.rstrip() + "…"


def bilingual_lines(ja: str, en: str, columns: int) -> list[str]:
    """ "ja / en" on one line when it fits, else Japanese then English on two; one line when equal."""
    if ja == en:
        return [clip(ja, columns)]
    both = f"{ja} / {en}"
    if text_columns(both) <= columns:
        return [both]
    return [clip(ja, columns), clip(en, columns)]


def _duration_parts(value: timedelta) -> list[tuple[int, str]]:
    """Days, hours and minutes: no weeks, so that "30d" reads as 30 days, not as 4w2d."""
    minutes = int(abs(value).total_seconds() // 60)
    parts = []
    for unit, size in (("d", 24 * 60), ("h", 60), ("m", 1)):
        count, minutes = divmod(minutes, size)
        if count:
            parts.append((count, unit))
    return parts or [(0, "m")]


def duration_en(value: timedelta) -> str:
    """`3d`, `1d12h`, `30m`: as a scenario file writes it, in days at most."""
    return "".join(f"{count}{unit}" for count, unit in _duration_parts(value))


def duration_ja(value: timedelta) -> str:
    """`3d` as 「3日」, `1d12h` as 「1日12時間」."""
    units = {"d": "日", "h": "時間", "m": "分"}
    return "".join(f"{count}{units[unit]}" for count, unit in _duration_parts(value))


_DATE_SOURCES_JA = {
    "trigger_event": "トリガー",
    "last_purchase_at": "最終購入",
    "first_purchase_at": "初回購入",
    "first_seen_at": "初回訪問",
}


def _date_source_ja(source: str) -> str:
    if source.startswith("traits."):
        return f"属性 {source.removeprefix('traits.')}"
    return _DATE_SOURCES_JA.get(source, source)


def _date_ref(source: str, offset: timedelta) -> tuple[str, str]:
    """A date plus an offset: 「トリガーの3日後」 / "3d after trigger_event"."""
    ja, en = _date_source_ja(source), source
    if offset > timedelta(0):
        return f"{ja}の{duration_ja(offset)}後", f"{duration_en(offset)} after {en}"
    if offset < timedelta(0):
        return f"{ja}の{duration_ja(offset)}前", f"{duration_en(-offset)} before {en}"
    return ja, en


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():  # profile numbers are floats: 5, not 5.0
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


_OPS = {
    "eq": "=",
    "ne": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": "∈",
    "not_in": "∉",
    "contains": "∋",
}


def _comparison(subject: str, op: str, value: Any) -> tuple[str, str]:
    if op == "exists":
        return f"{subject} あり", f"{subject} exists"
    text = f"{subject} {_OPS.get(op, op)} {_value(value)}"
    return text, text


def where_text(where: Sequence[PropertyCondition]) -> str:
    """Property tests as one line of symbols: `products.sku = X, total ≥ 3000`."""
    return ", ".join(_comparison(c.property, c.op, c.value)[0] for c in where)


def _range(name: str, scores: ScoreRange | None) -> str:
    if scores is None:
        return ""
    return f"{name}{scores.min}" if scores.min == scores.max else f"{name}{scores.min}–{scores.max}"


def condition_text(condition: Condition) -> tuple[str, str]:
    """A condition summarised on one line, in Japanese and in English (equal when it is all symbols)."""
    if isinstance(condition, AllCondition | AnyCondition):
        joiner = (" かつ ", " and ") if isinstance(condition, AllCondition) else (" または ", " or ")
        parts = [_nested(c) for c in condition.conditions]
        return joiner[0].join(p[0] for p in parts), joiner[1].join(p[1] for p in parts)
    if isinstance(condition, NotCondition):
        ja, en = _nested(condition.condition)
        return f"{ja} でない", f"not {en}"
    if isinstance(condition, TraitCondition):
        return _comparison(condition.trait, condition.op, condition.value)
    if isinstance(condition, ProfileCondition):
        return _comparison(condition.field, condition.op, condition.value)
    if isinstance(condition, BoughtCondition):
        items = ", ".join([*condition.categories, *condition.skus, *condition.product_ids])
        return f"購入済み {items}", f"bought {items}"
    if isinstance(condition, SurveyCondition):
        if condition.answers is None:
            return f"回答あり {condition.question}", f"answered {condition.question}"
        answers = condition.answers[0] if len(condition.answers) == 1 else _value(condition.answers)
        op = "=" if len(condition.answers) == 1 else "∈"
        return f"回答 {condition.question} {op} {answers}", f"answer {condition.question} {op} {answers}"
    if isinstance(condition, EventCountCondition):
        where = f"（{where_text(condition.where)}）" if condition.where else ""
        where_en = f" ({where_text(condition.where)})" if condition.where else ""
        if condition.at_most is None:
            times_ja, times_en = f"{condition.at_least}回以上", f"≥{condition.at_least}×"
        else:
            times_ja = f"{condition.at_least}〜{condition.at_most}回"
            times_en = f"{condition.at_least}–{condition.at_most}×"
        days_ja = f" 直近{condition.within_days}日" if condition.within_days else ""
        days_en = f" in {condition.within_days}d" if condition.within_days else ""
        return (
            f"{condition.event}{where} {times_ja}{days_ja}",
            f"{condition.event}{where_en} {times_en}{days_en}",
        )
    if isinstance(condition, ReachableCondition):
        return f"配信可能 {condition.channel}", f"reachable {condition.channel}"
    if isinstance(condition, RfmCondition):
        ranges = [
            _range("R", condition.recency),
            _range("F", condition.frequency),
            _range("M", condition.monetary),
        ]
        text = "RFM " + " ".join(r for r in ranges if r)
        return text, text
    if isinstance(condition, EngagementStageCondition):
        stages = ", ".join(condition.stages)
        return f"エンゲージメント {stages}", f"engagement {stages}"
    if isinstance(condition, LifecycleCondition):
        stages = ", ".join(condition.stages)
        return f"ステージ {stages}", f"stage {stages}"
    name = type(condition).__name__  # a condition kind added later: still drawn, by its name
    return name, name


def _nested(condition: Condition) -> tuple[str, str]:
    ja, en = condition_text(condition)
    if isinstance(condition, AllCondition | AnyCondition):
        return f"（{ja}）", f"({en})"
    return ja, en


def _channel(step: SendStep) -> str:
    """A send step's channel option in its channels' own labels ("LINE→メール Email"); `best` as
    the channels it chooses among ("最適 best: LINE / メール Email")."""
    if step.chooses_best:
        return "最適 best: " + " / ".join(plugin(channel).label for channel in step.channels())
    try:
        return "→".join(plugin(channel).label for channel in channels_of(step.channel))
    except (KeyError, ValueError):
        return str(step.channel)


def _percent(share: float) -> str:
    text = f"{share:.1f}".removesuffix(".0")
    return f"{text}%"


# -------------------------------------------------------------------------------------------- the graph


@dataclass
class _Node:
    id: str
    kind: BoxKind | None  # None: a placeholder for an edge passing through the layer
    lines: list[str]
    is_step: bool = False
    w: float = EDGE_SLOT
    tooltip: str = ""
    h: float = 0.0
    layer: int = 0
    x: float = 0.0  # the centre

    @property
    def placeholder(self) -> bool:
        return self.kind is None


@dataclass
class _Edge:
    source: str
    target: str
    kind: EdgeKind
    label: list[str]
    back: bool = False
    chain: list[str] = field(default_factory=list)  # node ids in layout order, top to bottom

    def merge_label(self, lines: list[str]) -> None:
        self.label.extend(line for line in lines if line not in self.label)


def _box_size(lines: Sequence[str], is_step: bool) -> tuple[float, float]:
    # The heading is bold: a tenth wider.
    widths = [text_width(line, FONT_SIZE) * (1.1 if i == 0 else 1.0) for i, line in enumerate(lines)]
    w = max(MIN_BOX_WIDTH, max(widths, default=0) + 2 * BOX_PAD_X)
    h = 2 * BOX_PAD_Y + LINE_HEIGHT * len(lines) + (COUNTS_HEIGHT if is_step else 0)
    return round(w), h


def _label_size(lines: Sequence[str]) -> tuple[float, float]:
    w = max(text_width(line, LABEL_FONT_SIZE) for line in lines) + 2 * LABEL_PAD_X
    return round(w), 2 * LABEL_PAD_Y + LABEL_LINE_HEIGHT * len(lines)


def _heading(ja: str, en: str) -> list[str]:
    """A box's heading: on one line when it fits (the heading is bold, so it has fewer columns)."""
    return bilingual_lines(ja, en, BOX_COLUMNS - 4)


def _trigger_lines(scenario: Scenario) -> list[str]:
    trigger = scenario.trigger
    lines: list[str]
    if isinstance(trigger, EventTrigger):
        lines = [*_heading("トリガー: イベント", "trigger: event"), trigger.event]
        if trigger.where:
            lines.append(where_text(trigger.where))
    elif isinstance(trigger, LineFollowTrigger):
        lines = _heading("トリガー: LINE 友だち追加", "trigger: LINE follow")
        if trigger.include_unblocked:
            lines.append("ブロック解除も含む / unblocks too")
        else:
            lines.append("ブロック解除は除く / not unblocks")
    elif isinstance(trigger, SurveyAnswerTrigger):
        lines = [*_heading("トリガー: アンケート回答", "trigger: survey answer"), trigger.question]
        if trigger.answers:
            lines.append("∈ " + _value(trigger.answers))
    elif isinstance(trigger, DateTrigger):
        ja, en = _date_ref(trigger.date, trigger.offset)
        at = format_local_time(trigger.at)
        lines = [
            *_heading("トリガー: 日付", "trigger: date"),
            *bilingual_lines(f"{ja} {at}", f"{en}, {at}", BOX_COLUMNS),
        ]
        if trigger.yearly:
            lines.append("毎年 / yearly")
    elif isinstance(trigger, BroadcastTrigger):
        lines = _heading("トリガー: 一斉配信", "trigger: broadcast")
        if trigger.at is not None:
            lines.append(trigger.at.astimezone(scenario.zone).strftime("%Y-%m-%d %H:%M"))
        else:
            lines.append(f"cron {trigger.cron}")
    else:  # a trigger type added later: still drawn, by its type
        lines = [f"トリガー / trigger: {trigger.type}"]
    if scenario.audience is not None:
        ja, _ = condition_text(scenario.audience)
        lines.append(f"対象 / audience: {ja}")
    if scenario.entry.holdout_percent:
        lines.append(f"対照群 / holdout {_percent(scenario.entry.holdout_percent)}")
    return lines


def _wait_heading(step: WaitStep) -> list[str]:
    at = format_local_time(step.at) if step.at is not None else None
    if step.duration is not None:
        ja, en = duration_ja(step.duration), duration_en(step.duration)
        if at is None:
            return bilingual_lines(f"待機 {ja}", f"wait {en}", BOX_COLUMNS)
        return bilingual_lines(f"待機 {ja}後の {at} まで", f"wait {en}, then until {at}", BOX_COLUMNS)
    if step.until is not None:
        ja, en = _date_ref(step.until.date, step.until.offset)
        if at is None:
            return bilingual_lines(f"待機 {ja}まで", f"wait until {en}", BOX_COLUMNS)
        return bilingual_lines(f"待機 {ja}の {at} まで", f"wait until {at}, {en}", BOX_COLUMNS)
    return bilingual_lines(f"待機 次の {at} まで", f"wait until the next {at}", BOX_COLUMNS)


def _step_lines(step: Step) -> list[str]:
    if isinstance(step, SendStep):
        lines = [f"送信 / send · {_channel(step)}"]
    elif isinstance(step, WaitStep):
        lines = _wait_heading(step)
    elif isinstance(step, WaitForEventStep):
        lines = ["イベント待ち / wait for event", step.event]
        if step.where:
            lines.append(where_text(step.where))
    elif isinstance(step, BranchStep):
        lines = ["分岐 / branch"]
    elif isinstance(step, SplitStep):
        lines = ["A/B テスト / A/B split"]
    elif isinstance(step, SetTraitStep):
        lines = ["属性を設定 / set trait", f"{step.trait} = {_value(step.value)}"]
    elif isinstance(step, RichMenuStep):
        menu = step.rich_menu_id or "デフォルトに戻す / back to default"
        lines = ["リッチメニュー / rich menu", menu]
    elif isinstance(step, EndStep):
        lines = ["終了 / end"]
    else:  # a step type added later: still drawn, by its type
        lines = [str(getattr(step, "type", "step"))]
    if step.name:
        lines.append(step.name)
    lines.append(step.id)
    return lines


def _step_edges(scenario: Scenario, step: Step) -> list[_Edge]:
    """The edges leaving `step`, with the defaults the engine takes (Scenario.successors); None as
    a target is the journey ending there."""
    out: list[tuple[str | None, list[str]]] = []
    if isinstance(step, EndStep):
        return []
    if isinstance(step, BranchStep):
        for i, branch in enumerate(step.branches, start=1):
            ja, en = condition_text(branch.when)
            out.append((branch.next, bilingual_lines(f"{i}. {ja}", f"{i}. {en}", LABEL_COLUMNS)))
        otherwise = step.otherwise or scenario.following(step.id)
        out.append((otherwise, ["それ以外 / otherwise"]))
    elif isinstance(step, SplitStep):
        total = sum(v.weight for v in step.variants)
        for variant in step.variants:
            share = _percent(100 * variant.weight / total) if total else f"weight {variant.weight:g}"
            out.append((variant.next, [clip(f"{variant.name} {share}", LABEL_COLUMNS)]))
    elif isinstance(step, WaitForEventStep):
        event = clip(step.event, LABEL_COLUMNS - 10)
        out.append((step.on_event, bilingual_lines(f"{event} あり", f"on event {event}", LABEL_COLUMNS)))
        timeout = step.on_timeout or scenario.following(step.id)
        ja, en = duration_ja(step.timeout), duration_en(step.timeout)
        out.append((timeout, [f"{ja}後 / after {en}"]))
    else:
        out.append((scenario.next_of(step), []))
    edges: dict[str, _Edge] = {}
    for target, label in out:
        target_id = target or JOURNEY_END_ID
        if target_id in edges:  # two ways to the same step: one edge with both labels
            edges[target_id].merge_label(label)
        else:
            edges[target_id] = _Edge(
                step.id, target_id, "flow", [clip(line, LABEL_COLUMNS) for line in label]
            )
    return list(edges.values())


def _graph(scenario: Scenario) -> tuple[dict[str, _Node], list[_Edge]]:
    nodes: dict[str, _Node] = {}

    def add(node_id: str, kind: BoxKind, lines: list[str], is_step: bool = False) -> None:
        clipped = [clip(line, BOX_COLUMNS) for line in lines]
        w, h = _box_size(clipped, is_step)
        nodes[node_id] = _Node(node_id, kind, clipped, is_step, w=w, h=h, tooltip=" — ".join(lines))

    add(TRIGGER_ID, "trigger", _trigger_lines(scenario))
    edges = [_Edge(TRIGGER_ID, scenario.first_step().id, "flow", [])]
    for step in scenario.steps:
        add(step.id, step.type, _step_lines(step), is_step=True)
        edges += _step_edges(scenario, step)
    if any(e.target == JOURNEY_END_ID for e in edges):
        add(JOURNEY_END_ID, "journey_end", ["ジャーニー終了 / journey ends"])
    goal = scenario.goal
    if goal is not None:
        lines = ["ゴール / goal", goal.event]
        if goal.where:
            lines.append(where_text(goal.where))
        add(GOAL_ID, "goal", lines)
        within = [f"{duration_ja(goal.within)}以内 / within {duration_en(goal.within)}"]
        edges.append(_Edge(TRIGGER_ID, GOAL_ID, "rule", within))
    if scenario.exit.yield_to_higher_priority:
        lines = [
            "離脱 / exit",
            *bilingual_lines("優先度の高いシナリオへ", "to a higher priority", BOX_COLUMNS),
        ]
        add(EXIT_YIELD_ID, "exit", lines)
        edges.append(_Edge(TRIGGER_ID, EXIT_YIELD_ID, "rule", []))
    sends = scenario.exit.no_response_after_sends
    if sends is not None:
        add(
            EXIT_NO_RESPONSE_ID,
            "exit",
            ["離脱 / exit", f"反応なしで {sends} 回送信 / {sends} sends, no response"],
        )
        edges.append(_Edge(TRIGGER_ID, EXIT_NO_RESPONSE_ID, "rule", []))
    return nodes, edges


# ------------------------------------------------------------------------------------------- layering


def _mark_back_edges(nodes: Mapping[str, _Node], edges: list[_Edge]) -> list[str]:
    """Marks the edges that close a loop (to a node on the depth-first path); returns the nodes in
    the order the walk first reached them, a natural first order within layers."""
    outgoing: dict[str, list[_Edge]] = {node_id: [] for node_id in nodes}
    for edge in edges:
        outgoing[edge.source].append(edge)
    state: dict[str, int] = {}  # 1 on the path, 2 done
    reached: list[str] = []
    for root in nodes:  # the trigger first; the rest only if something could not be reached
        if root in state:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        state[root] = 1
        reached.append(root)
        while stack:
            node_id, index = stack[-1]
            if index == len(outgoing[node_id]):
                stack.pop()
                state[node_id] = 2
                continue
            stack[-1] = (node_id, index + 1)
            edge = outgoing[node_id][index]
            if state.get(edge.target) == 1:
                edge.back = True
            elif edge.target not in state:
                state[edge.target] = 1
                reached.append(edge.target)
                stack.append((edge.target, 0))
    return reached


def _assign_layers(nodes: Mapping[str, _Node], edges: list[_Edge], reached: list[str]) -> None:
    """Longest path from the top over the edges pointing down (back edges are turned around)."""
    down: dict[str, list[str]] = {node_id: [] for node_id in nodes}
    indegree = dict.fromkeys(nodes, 0)
    for edge in edges:
        top, bottom = (edge.target, edge.source) if edge.back else (edge.source, edge.target)
        down[top].append(bottom)
        indegree[bottom] += 1
    ready = [node_id for node_id in reached if indegree[node_id] == 0]
    while ready:
        node_id = ready.pop(0)
        for child in down[node_id]:
            nodes[child].layer = max(nodes[child].layer, nodes[node_id].layer + 1)
            indegree[child] -= 1
            if indegree[child] == 0:
                ready.append(child)


def _add_placeholders(nodes: dict[str, _Node], edges: list[_Edge]) -> None:
    for index, edge in enumerate(edges):
        top, bottom = (edge.target, edge.source) if edge.back else (edge.source, edge.target)
        chain = [top]
        for layer in range(nodes[top].layer + 1, nodes[bottom].layer):
            placeholder = _Node(f"@edge-{index}-{layer}", None, [], layer=layer)
            nodes[placeholder.id] = placeholder
            chain.append(placeholder.id)
        chain.append(bottom)
        edge.chain = chain


# ------------------------------------------------------------------------------------------- ordering


def _neighbours(
    edges: list[_Edge],
) -> tuple[dict[str, list[tuple[str, float]]], dict[str, list[tuple[str, float]]]]:
    """Per node, the nodes one layer up and one layer down it is linked with, once per edge, with
    the weight of the link: a rule's edge pulls little, so the goal and exits, which hang off the
    trigger, do not draw the journey aside."""
    up: dict[str, list[tuple[str, float]]] = {}
    down: dict[str, list[tuple[str, float]]] = {}
    for edge in edges:
        weight = RULE_WEIGHT if edge.kind == "rule" else 1.0
        for top, bottom in itertools.pairwise(edge.chain):
            down.setdefault(top, []).append((bottom, weight))
            up.setdefault(bottom, []).append((top, weight))
    return up, down


def _mean(linked: Sequence[tuple[float, float]], default: float) -> float:
    """The weighted mean of (value, weight) pairs; `default` when there are none."""
    total = sum(weight for _, weight in linked)
    if not total:
        return default
    return sum(value * weight for value, weight in linked) / total


def _crossings(
    layers: list[list[str]], down: Mapping[str, list[tuple[str, float]]], position: Mapping[str, int]
) -> int:
    total = 0
    for layer in layers:
        pairs = [(position[top], position[bottom]) for top in layer for bottom, _ in down.get(top, [])]
        for i, (a1, b1) in enumerate(pairs):
            for a2, b2 in pairs[i + 1 :]:
                if (a1 - a2) * (b1 - b2) < 0:
                    total += 1
    return total


def _order_layers(nodes: Mapping[str, _Node], edges: list[_Edge], reached: list[str]) -> list[list[str]]:
    rank = {node_id: i for i, node_id in enumerate(reached)}
    count = max(node.layer for node in nodes.values()) + 1
    layers: list[list[str]] = [[] for _ in range(count)]
    # Placeholders start where the edge's source stands, so an edge's run starts straight.
    for node_id in sorted(nodes, key=lambda n: rank.get(n, rank.get(_edge_owner(n, edges), 0))):
        layers[nodes[node_id].layer].append(node_id)
    up, down = _neighbours(edges)

    def positions() -> dict[str, int]:
        return {node_id: i for layer in layers for i, node_id in enumerate(layer)}

    best = [list(layer) for layer in layers]
    best_crossings = _crossings(layers, down, positions())
    for sweep in range(SWEEPS):
        downwards = sweep % 2 == 0
        indices = range(1, count) if downwards else range(count - 2, -1, -1)
        for index in indices:
            position = positions()
            linked = up if downwards else down

            def barycenter(node_id: str, position: dict[str, int] = position, linked: Any = linked) -> float:
                others = [(float(position[o]), w) for o, w in linked.get(node_id, [])]
                return _mean(others, float(position[node_id]))

            layers[index].sort(key=barycenter)
        crossings = _crossings(layers, down, positions())
        if crossings < best_crossings:
            best, best_crossings = [list(layer) for layer in layers], crossings
    return best


def _edge_owner(node_id: str, edges: list[_Edge]) -> str:
    """The top node of the edge a placeholder belongs to."""
    if node_id.startswith("@edge-"):
        return edges[int(node_id.split("-")[1])].chain[0]
    return node_id


# ------------------------------------------------------------------------------------ horizontal places


def _fit_in_order(wanted: list[float], weights: list[float], gaps: list[float]) -> list[float]:
    """The places nearest `wanted` (weighted least squares) that keep the order and at least
    `gaps[i]` between place i and i + 1: with the gaps taken out it is a monotone fit, which pooling
    adjacent violators solves exactly."""
    offsets = [0.0]
    for gap in gaps:
        offsets.append(offsets[-1] + gap)
    blocks: list[tuple[float, float, int]] = []  # (weighted mean, total weight, size)
    for target, weight in zip((w - o for w, o in zip(wanted, offsets, strict=True)), weights, strict=True):
        mean, total, size = target, weight, 1
        while blocks and blocks[-1][0] > mean:
            previous_mean, previous_total, previous_size = blocks.pop()
            mean = (previous_mean * previous_total + mean * total) / (previous_total + total)
            total += previous_total
            size += previous_size
        blocks.append((mean, total, size))
    fitted: list[float] = []
    for mean, _, size in blocks:
        fitted += [mean] * size
    return [f + o for f, o in zip(fitted, offsets, strict=True)]


def _place_horizontally(nodes: Mapping[str, _Node], edges: list[_Edge], layers: list[list[str]]) -> None:
    """Sweeps down, up, ..., and finally both ways: each node wants the weighted mean of its linked
    neighbours, and as much say in its layer's fit as its links weigh, so a goal or exit box (a
    rule's light link) gives way to the journey's boxes rather than pushing them aside."""

    def gaps(layer: list[str]) -> list[float]:
        return [_left_room(nodes[left], nodes[right]) for left, right in itertools.pairwise(layer)]

    for layer in layers:  # packed, centred on 0
        placed = _fit_in_order([0.0] * len(layer), [1.0] * len(layer), gaps(layer))
        for node_id, x in zip(layer, placed, strict=True):
            nodes[node_id].x = x
    up, down = _neighbours(edges)
    count = len(layers)
    for sweep in range(PLACEMENT_SWEEPS + 1):
        if sweep == PLACEMENT_SWEEPS:  # last: both sides at once, so neither end dominates
            order, linked = list(range(count)), [up, down]
        elif sweep % 2 == 0:
            order, linked = list(range(1, count)), [up]
        else:
            order, linked = list(range(count - 2, -1, -1)), [down]
        for index in order:
            layer = layers[index]
            wanted, weights = [], []
            for node_id in layer:
                links = [(nodes[o].x, w) for side in linked for o, w in side.get(node_id, [])]
                wanted.append(_mean(links, nodes[node_id].x))
                weights.append(max(RULE_WEIGHT, sum(w for _, w in links)))
            for node_id, x in zip(layer, _fit_in_order(wanted, weights, gaps(layer)), strict=True):
                nodes[node_id].x = x


# ------------------------------------------------------------------------------------- between layers


@dataclass
class _Segment:
    """The part of an edge between two neighbouring layers, from a port at the bottom of the upper
    node to a port at the top of the lower one."""

    edge: int
    top: str
    bottom: str
    x_top: float = 0.0
    x_bottom: float = 0.0
    track: int | None = None  # the sideways jog's track; None when it goes straight down


@dataclass
class _PlacedLabel:
    edge: int
    lines: list[str]
    x: float
    w: float
    h: float
    band: int  # 0: under the upper layer, by the edges' starts; 1: over the lower, by their ends
    row: int


@dataclass
class _Gap:
    """The space between two layers: a band of label rows, the jogs' tracks, another band of rows."""

    segments: list[_Segment] = field(default_factory=list)
    labels: list[_PlacedLabel] = field(default_factory=list)
    row_heights: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))
    tracks: int = 0

    def band_height(self, band: int) -> float:
        rows = self.row_heights[band]
        return sum(h + LABEL_GAP for h in rows) + LABEL_GAP if rows else 0.0

    def tracks_height(self) -> float:
        return (self.tracks + 1) * TRACK_SPACING

    def height(self) -> float:
        # Under the lower band (or the tracks) room for the arrowheads.
        natural = self.band_height(0) + self.tracks_height() + self.band_height(1) + ARROW_ROOM
        return max(MIN_LAYER_GAP, natural)

    def row_tops(self, gap_top: float, band: int) -> list[float]:
        top = gap_top + LABEL_GAP
        if band == 1:
            top += self.band_height(0) + self.tracks_height()
        out = [top]
        for h in self.row_heights[band]:
            out.append(out[-1] + h + LABEL_GAP)
        return out


def _straighten(nodes: Mapping[str, _Node], layers: list[list[str]], segments: list[_Segment]) -> None:
    """Moves a box (or an edge's placeholder) reached by one edge onto that edge's line when it is
    only a few pixels off and there is room, layer by layer downwards: a chain of steps then runs
    straight instead of jogging by a pixel at every box."""
    entering: dict[str, list[_Segment]] = {}
    for segment in segments:
        entering.setdefault(segment.bottom, []).append(segment)
    for layer in layers[1:]:
        for i, node_id in enumerate(layer):
            arriving = entering.get(node_id, [])
            if len(arriving) != 1:
                continue
            shift = arriving[0].x_top - arriving[0].x_bottom
            if not 0 < abs(shift) <= STRAIGHTEN:
                continue
            node = nodes[node_id]
            moved = node.x + shift
            if i > 0 and moved - _left_room(nodes[layer[i - 1]], node) < nodes[layer[i - 1]].x:
                continue
            if i + 1 < len(layer) and moved + _left_room(node, nodes[layer[i + 1]]) > nodes[layer[i + 1]].x:
                continue
            node.x = moved
        _spread_ports(nodes, segments)


def _align_runs(segments: list[_Segment]) -> None:
    """Makes a segment that is all but straight (its ends less than a jog apart) exactly straight,
    carrying its x on to the next segment of the edge, so that no line is drawn a hair askew."""
    by_edge: dict[int, list[_Segment]] = {}
    for segment in segments:
        by_edge.setdefault(segment.edge, []).append(segment)
    for parts in by_edge.values():
        current = parts[0].x_top
        for segment in parts:
            segment.x_top = current
            if abs(segment.x_bottom - current) <= MIN_JOG:
                segment.x_bottom = current
            current = segment.x_bottom


def _left_room(left: _Node, right: _Node) -> float:
    """The least distance between the centres of neighbours in a layer."""
    space = EDGE_SLOT / 2 if left.placeholder and right.placeholder else NODE_GAP
    return (left.w + right.w) / 2 + space


def _spread_ports(nodes: Mapping[str, _Node], segments: list[_Segment]) -> None:
    """Spreads the segments leaving a box along its bottom and those entering along its top,
    ordered by where their other end is, so that they do not cross at the box."""
    leaving: dict[str, list[_Segment]] = {}
    entering: dict[str, list[_Segment]] = {}
    for segment in segments:
        leaving.setdefault(segment.top, []).append(segment)
        entering.setdefault(segment.bottom, []).append(segment)
    for node_id, attached in leaving.items():
        attached.sort(key=lambda s: (nodes[s.bottom].x, s.edge))
        for segment, x in zip(attached, _ports(nodes[node_id], len(attached)), strict=True):
            segment.x_top = x
    for node_id, attached in entering.items():
        attached.sort(key=lambda s: (nodes[s.top].x, s.edge))
        for segment, x in zip(attached, _ports(nodes[node_id], len(attached)), strict=True):
            segment.x_bottom = x


def _ports(node: _Node, count: int) -> list[float]:
    """`count` places evenly along a box's side; a placeholder's one place is its line."""
    if node.placeholder:
        return [node.x] * count
    left = node.x - node.w / 2
    return [round(left + node.w * (k + 1) / (count + 1), 1) for k in range(count)]


def _place_labels(gap: _Gap, labelled: list[tuple[_Segment, list[str], int]]) -> None:
    """Puts each label beside its edge's line: in the upper band by where the line starts or in
    the lower band by where it ends (preferably the band by the edge's source), in the lowest row
    where it overlaps no other label, preferring places that cross no other edge's line. A new row
    always has room, so every label finds one."""
    lines_x = ([s.x_top for s in gap.segments], [s.x_bottom for s in gap.segments])
    rows: tuple[list[list[tuple[float, float]]], list[list[tuple[float, float]]]] = ([], [])
    for segment, lines, preferred in sorted(labelled, key=lambda item: item[0].x_top):
        w, h = _label_size(lines)
        best: tuple[float, int, int, float] | None = None  # (cost, band, row, x)
        for band, anchor in ((0, segment.x_top), (1, segment.x_bottom)):
            for row in range(len(rows[band]) + 1):
                taken = rows[band][row] if row < len(rows[band]) else []
                for side, x in enumerate((anchor + LABEL_GAP, anchor - LABEL_GAP - w)):
                    if any(x < right + LABEL_GAP and left < x + w + LABEL_GAP for left, right in taken):
                        continue
                    crossed = sum(
                        1 for lx in lines_x[band] if x - 2 < lx < x + w + 2 and abs(lx - anchor) > 0.5
                    )
                    cost = row + 3 * crossed + side * 0.5 + (band != preferred) * 0.75
                    if best is None or cost < best[0]:
                        best = (cost, band, row, x)
        assert best is not None
        _, band, row, x = best
        if row == len(rows[band]):
            rows[band].append([])
            gap.row_heights[band].append(0.0)
        rows[band][row].append((x, x + w))
        gap.row_heights[band][row] = max(gap.row_heights[band][row], h)
        gap.labels.append(_PlacedLabel(segment.edge, lines, x, w, h, band, row))


def _assign_tracks(gap: _Gap) -> None:
    """One track per sideways jog, shared only by jogs whose spans are apart; jogs to the left take
    upper tracks, jogs to the right lower ones, from the outside in, so they cross less."""
    jogs = [s for s in gap.segments if s.x_top != s.x_bottom]
    jogs.sort(key=lambda s: (s.x_bottom > s.x_top, min(s.x_top, s.x_bottom)))
    ends: list[float] = []  # per track, the right end of its last jog
    for segment in jogs:
        left, right = sorted((segment.x_top, segment.x_bottom))
        for track, end in enumerate(ends):
            if end + TRACK_SPACING < left:
                segment.track, ends[track] = track, right
                break
        else:
            segment.track = len(ends)
            ends.append(right)
    gap.tracks = len(ends)


# ------------------------------------------------------------------------------------------------ layout


def layout(scenario: Scenario) -> Diagram:
    """The diagram of `scenario`, laid out (see the module's description)."""
    nodes, edges = _graph(scenario)
    reached = _mark_back_edges(nodes, edges)
    _assign_layers(nodes, edges, reached)
    _add_placeholders(nodes, edges)
    layers = _order_layers(nodes, edges, reached)
    _place_horizontally(nodes, edges, layers)

    gaps = [_Gap() for _ in range(len(layers) - 1)]
    segments: list[_Segment] = []
    for index, edge in enumerate(edges):
        for top, bottom in itertools.pairwise(edge.chain):
            segment = _Segment(index, top, bottom)
            segments.append(segment)
            gaps[nodes[top].layer].segments.append(segment)
    _spread_ports(nodes, segments)
    _straighten(nodes, layers, segments)
    _align_runs(segments)
    for gap in gaps:
        labelled = []
        for segment in gap.segments:
            edge = edges[segment.edge]
            # A label sits next to where the edge leaves its source: the first gap going down, the
            # last gap of a loop's way back up.
            first = edge.chain[1] == segment.bottom
            last = edge.chain[-2] == segment.top
            if edge.label and ((not edge.back and first) or (edge.back and last)):
                # A loop's way back starts at the bottom of the gap, at its source's top.
                labelled.append((segment, edge.label, 1 if edge.back else 0))
        _place_labels(gap, labelled)
        _assign_tracks(gap)

    # Vertical places: each layer's boxes are aligned at the top; its band is as tall as the tallest.
    layer_top: list[float] = []
    band: list[float] = []
    y = MARGIN
    for index, layer in enumerate(layers):
        layer_top.append(y)
        band.append(max((nodes[n].h for n in layer), default=0.0))
        y += band[-1]
        if index < len(gaps):
            y += gaps[index].height()

    boxes: dict[str, Rect] = {}
    for node in nodes.values():
        if not node.placeholder:
            boxes[node.id] = Rect(node.x - node.w / 2, layer_top[node.layer], node.w, node.h)

    labels: dict[int, Rect] = {}
    for index, gap in enumerate(gaps):
        tops = (
            gap.row_tops(layer_top[index] + band[index], 0),
            gap.row_tops(layer_top[index] + band[index], 1),
        )
        for placed in gap.labels:
            labels[placed.edge] = Rect(placed.x, tops[placed.band][placed.row], placed.w, placed.h)

    def track_y(gap_index: int, track: int) -> float:
        gap = gaps[gap_index]
        return layer_top[gap_index] + band[gap_index] + gap.band_height(0) + (track + 1) * TRACK_SPACING

    by_edge: dict[int, list[_Segment]] = {}
    for segment in segments:
        by_edge.setdefault(segment.edge, []).append(segment)
    drawn: list[Edge] = []
    for index, edge in enumerate(edges):
        parts = by_edge[index]
        points = [Point(parts[0].x_top, boxes[edge.chain[0]].bottom)]
        for segment in parts:
            if segment.track is not None:
                y_jog = track_y(nodes[segment.top].layer, segment.track)
                points += [Point(segment.x_top, y_jog), Point(segment.x_bottom, y_jog)]
            lower = nodes[segment.bottom]
            if lower.placeholder:  # straight through the layer's band
                points += [
                    Point(segment.x_bottom, layer_top[lower.layer]),
                    Point(segment.x_bottom, layer_top[lower.layer] + band[lower.layer]),
                ]
            else:
                points.append(Point(segment.x_bottom, boxes[lower.id].y))
        points = _simplified(points)
        if edge.back:
            points.reverse()
        label = labels.get(index)
        drawn.append(
            Edge(
                edge.source,
                edge.target,
                edge.kind,
                tuple(points),
                None if label is None else Label(tuple(edge.label), label),
                edge.back,
            )
        )

    # Everything moved so that the leftmost thing is at the margin.
    lefts = [r.x for r in boxes.values()] + [r.x for r in labels.values()]
    rights = [r.right for r in boxes.values()] + [r.right for r in labels.values()]
    lefts += [p.x for e in drawn for p in e.points]
    rights += [p.x for e in drawn for p in e.points]
    dx = MARGIN - min(lefts)
    width = max(rights) + dx + MARGIN
    height = layer_top[-1] + band[-1] + MARGIN
    kinds = {node.id: node for node in nodes.values()}
    return Diagram(
        scenario_id=scenario.id,
        scenario_name=scenario.name,
        width=round(width, 1),
        height=round(height, 1),
        boxes=tuple(
            Box(
                node_id,
                _kind(kinds[node_id]),
                tuple(kinds[node_id].lines),
                _moved(rect, dx),
                kinds[node_id].is_step,
                kinds[node_id].tooltip,
            )
            for node_id, rect in boxes.items()
        ),
        edges=tuple(
            Edge(
                e.source,
                e.target,
                e.kind,
                tuple(Point(round(p.x + dx, 1), round(p.y, 1)) for p in e.points),
                None if e.label is None else Label(e.label.lines, _moved(e.label.rect, dx)),
                e.back,
            )
            for e in drawn
        ),
    )


def _kind(node: _Node) -> BoxKind:
    assert node.kind is not None
    return node.kind


def _moved(rect: Rect, dx: float) -> Rect:
    return Rect(round(rect.x + dx, 1), round(rect.y, 1), rect.w, rect.h)


def _simplified(points: list[Point]) -> list[Point]:
    """Without repeated points and without points in the middle of a straight run."""
    out: list[Point] = []
    for point in points:
        if out and abs(out[-1].x - point.x) < 0.05 and abs(out[-1].y - point.y) < 0.05:
            continue
        if len(out) >= 2:
            a, b = out[-2], out[-1]
            if (abs(a.x - b.x) < 0.05 and abs(b.x - point.x) < 0.05) or (
                abs(a.y - b.y) < 0.05 and abs(b.y - point.y) < 0.05
            ):
                out[-1] = point
                continue
        out.append(point)
    return out


# ------------------------------------------------------------------------------------------------ SVG

_STYLE = {
    # kind: (fill, stroke, corner radius, dash)
    "trigger": ("#e3f8ef", "#127a3a", 18, ""),
    "send": ("#e6efff", "#2563eb", 6, ""),
    "wait": ("#fff6db", "#b7791f", 6, ""),
    "wait_for_event": ("#fff0e0", "#c2410c", 6, ""),
    "branch": ("#f3e8ff", "#7e22ce", 2, ""),
    "split": ("#e0f7fa", "#0e7490", 2, ""),
    "set_trait": ("#f1f5f9", "#475569", 6, ""),
    "rich_menu": ("#f1f5f9", "#475569", 6, ""),
    "end": ("#e5e7eb", "#1f2933", 18, ""),
    "journey_end": ("#ffffff", "#1f2933", 18, "4 3"),
    "goal": ("#ecfdf3", "#15803d", 6, ""),
    "exit": ("#fef2f2", "#b42318", 6, "5 3"),
}
_FONTS = '"Hiragino Sans","Noto Sans CJK JP","Noto Sans JP","Yu Gothic",Meiryo,sans-serif'


def _attr(value: object) -> str:
    """A value for a double-quoted attribute: every markup character escaped."""
    return escape(str(value), quote=True)


def _number(value: float) -> str:
    return f"{value:.1f}".removesuffix(".0")


def counts_text(counts: Mapping[str, int]) -> str:
    """`入 12 · 待 3 · 送 9 · 抑 1 · 成 2`; a count not given is "–"."""
    parts = []
    for key in COUNT_KEYS:
        value = counts.get(key)
        parts.append(
            f"{_COUNT_MARKS[key][0]} {value:,}" if isinstance(value, int) else f"{_COUNT_MARKS[key][0]} –"
        )
    return " · ".join(parts)


def _counts_title(counts: Mapping[str, int]) -> str:
    parts = []
    for key in COUNT_KEYS:
        _, ja, en = _COUNT_MARKS[key]
        value = counts.get(key)
        shown = f"{value:,}" if isinstance(value, int) else "–"
        parts.append(f"{ja} {shown} / {en} {shown}")
    return ", ".join(parts)


COUNTS_LEGEND = " · ".join(f"{mark} {ja} {en}" for mark, ja, en in _COUNT_MARKS.values())


def render_svg(diagram: Diagram, counts: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """The diagram as one self-contained SVG document: no font, stylesheet or image fetched.

    `counts` (step id -> entered, waiting, sent, suppressed, converted) fills the counts line at the
    bottom of each step box and adds a legend under the diagram; a step without counts shows none.
    """
    legend_height = 24.0 if counts is not None else 0.0
    width, height = diagram.width, diagram.height + legend_height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_number(width)}" height="{_number(height)}" '
        f'viewBox="0 0 {_number(width)} {_number(height)}" role="img" '
        f'aria-label="{_attr(diagram.scenario_name)}" font-family="{_attr(_FONTS)}" '
        f'font-size="{_number(FONT_SIZE)}" data-scenario="{_attr(diagram.scenario_id)}">',
        f"<title>{escape(diagram.scenario_name, quote=False)}</title>",
        "<defs>",
        *(
            f'<marker id="cems-arrow-{kind}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" '
            f'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>'
            for kind, colour in (("flow", "#52606d"), ("rule", "#9aa5b1"))
        ),
        "</defs>",
        f'<rect width="{_number(width)}" height="{_number(height)}" fill="#ffffff"/>',
        '<g class="edges" fill="none">',
    ]
    for edge in diagram.edges:
        path = " ".join(
            f"{'M' if i == 0 else 'L'}{_number(p.x)},{_number(p.y)}" for i, p in enumerate(edge.points)
        )
        colour, dash = ("#52606d", "") if edge.kind == "flow" else ("#9aa5b1", ' stroke-dasharray="6 4"')
        out.append(
            f'<path class="edge edge-{edge.kind}" d="{path}" stroke="{colour}" stroke-width="1.5"{dash} '
            f'marker-end="url(#cems-arrow-{edge.kind})" data-source="{_attr(edge.source)}" '
            f'data-target="{_attr(edge.target)}"/>'
        )
    out.append("</g>")
    out.append('<g class="boxes">')
    for box in diagram.boxes:
        out += _box_svg(box, None if counts is None else counts.get(box.id))
    out.append("</g>")
    out.append(f'<g class="labels" font-size="{_number(LABEL_FONT_SIZE)}">')
    for edge in diagram.edges:
        if edge.label is not None:
            out += _label_svg(edge.label)
    out.append("</g>")
    if counts is not None:
        out.append(
            f'<text class="legend" x="{_number(MARGIN)}" y="{_number(diagram.height + 12)}" '
            f'font-size="{_number(COUNTS_FONT_SIZE)}" fill="#52606d">'
            f"{escape(COUNTS_LEGEND, quote=False)}</text>"
        )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _box_svg(box: Box, counts: Mapping[str, int] | None) -> list[str]:
    fill, stroke, radius, dash = _STYLE[box.kind]
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    centre = box.x + box.w / 2
    out = [
        f'<g class="box box-{box.kind}" data-id="{_attr(box.id)}">',
        f"<title>{escape(box.tooltip, quote=False)}</title>",
        f'<rect x="{_number(box.x)}" y="{_number(box.y)}" width="{_number(box.w)}" height="{_number(box.h)}" '
        f'rx="{radius}" fill="{fill}" stroke="{stroke}" stroke-width="1.5"{dashed}/>',
    ]
    for i, line in enumerate(box.lines):
        y = box.y + BOX_PAD_Y + LINE_HEIGHT * i + LINE_HEIGHT * 0.72
        style = ' font-weight="bold"' if i == 0 else ""
        if box.is_step and i == len(box.lines) - 1:  # the step id
            style = ' fill="#52606d" font-family="ui-monospace,Menlo,Consolas,monospace"'
        out.append(
            f'<text class="line" x="{_number(centre)}" y="{_number(y)}" text-anchor="middle"{style}>'
            f"{escape(line, quote=False)}</text>"
        )
    if box.is_step:
        strip = box.y + box.h - COUNTS_HEIGHT
        out.append(
            f'<line x1="{_number(box.x)}" y1="{_number(strip)}" x2="{_number(box.x + box.w)}" '
            f'y2="{_number(strip)}" stroke="{stroke}" stroke-width="0.5"/>'
        )
        if counts is not None:
            text = counts_text(counts)
            room = box.w - 2 * 6
            # Only a line that would not fit is squeezed; a short one keeps its natural spacing.
            squeeze = (
                f' textLength="{_number(room)}" lengthAdjust="spacingAndGlyphs"'
                if text_width(text, COUNTS_FONT_SIZE) > room
                else ""
            )
            # The tooltip spells the counts out; it names the group, so the text stays plain text.
            out.append(
                f"<g><title>{escape(_counts_title(counts), quote=False)}</title>"
                f'<text class="counts" x="{_number(centre)}" y="{_number(strip + COUNTS_HEIGHT * 0.72)}" '
                f'text-anchor="middle" font-size="{_number(COUNTS_FONT_SIZE)}" fill="#1f2933"{squeeze}>'
                f"{escape(text, quote=False)}</text></g>"
            )
    out.append("</g>")
    return out


def _label_svg(label: Label) -> list[str]:
    rect = label.rect
    out = [
        '<g class="label">',
        f'<rect x="{_number(rect.x)}" y="{_number(rect.y)}" width="{_number(rect.w)}" '
        f'height="{_number(rect.h)}" rx="3" fill="#ffffff" stroke="#cbd2d9" stroke-width="0.75"/>',
    ]
    for i, line in enumerate(label.lines):
        y = rect.y + LABEL_PAD_Y + LABEL_LINE_HEIGHT * i + LABEL_LINE_HEIGHT * 0.75
        out.append(
            f'<text x="{_number(rect.x + LABEL_PAD_X)}" y="{_number(y)}" fill="#334e68">'
            f"{escape(line, quote=False)}</text>"
        )
    out.append("</g>")
    return out


def render_page(diagram: Diagram, title: str, counts: Mapping[str, Mapping[str, int]] | None = None) -> str:
    """A standalone HTML page (lang="ja") showing the diagram; inline styles only."""
    return (
        '<!doctype html>\n<html lang="ja">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title, quote=False)}</title>\n"
        "<style>\n"
        f"body{{font-family:{_FONTS};margin:1.5rem;color:#1f2933;background:#f8fafc}}\n"
        "h1{font-size:1.3rem;margin:0 0 .25rem}.meta{color:#52606d;font-size:.9rem;margin:0 0 1rem}\n"
        ".diagram{overflow:auto;background:#fff;border:1px solid #d9e2ec;border-radius:6px;padding:.5rem}\n"
        ".diagram svg{display:block}\n"
        "</style>\n</head>\n<body>\n"
        f"<h1>{escape(title, quote=False)}</h1>\n"
        f'<p class="meta">シナリオ / scenario: <code>{escape(diagram.scenario_id, quote=False)}</code></p>\n'
        f'<div class="diagram">\n{render_svg(diagram, counts)}</div>\n'
        "</body>\n</html>\n"
    )

"""The scenario language: pydantic models of a scenario file (docs/scenarios.md is the reference).

Every object forbids unknown fields, so a typo is an error, not a silently ignored setting. Unions
are discriminated: triggers and steps by `type`, conditions by `kind`. Values are strict (no "3"
for 3, no "true" for true). Structure is checked by the models; what needs the whole document
(step references, reachability, cycles, content) is checked by `semantic_problems`, which
`Scenario` runs after the fields validate, so a `Scenario` object is always a usable scenario.
`cems.scenario.validation` runs the same checks to report each problem at its JSON path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from cems.scenario.cron import CRON_HINT, CronSchedule
from cems.scenario.durations import (
    DURATION_HINT,
    DURATION_PATTERN,
    LOCAL_TIME_PATTERN,
    OFFSET_PATTERN,
    format_duration,
    format_local_time,
    parse_duration,
    parse_local_time,
)
from cems.scenario.rfm import Stage

DEFAULT_TIME_ZONE = "Asia/Tokyo"
MAX_HOLDOUT_PERCENT = 50
MAX_STEPS = 100
# The shortest wait a cycle of steps must contain, so a loop can never send in a tight circle.
MIN_CYCLE_WAIT = timedelta(hours=1)
# Passed as validation context to check fields only (cems.scenario.validation reports the rest).
STRUCTURE_ONLY = "structure_only"

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ID_PATTERN = _ID.pattern
ID_HINT = "lower-case letters, digits, `_` and `-`, starting with a letter or digit, at most 64 characters"
_SURVEY_QUESTION = re.compile(r"^[\w.-]{1,64}$")
_DATE_SOURCE = re.compile(r"^(trigger_event|last_purchase_at|first_purchase_at|first_seen_at|traits\..+)$")
DATE_SOURCES = ("trigger_event", "last_purchase_at", "first_purchase_at", "first_seen_at", "traits.<name>")
_RICH_MENU_ID = re.compile(r"^richmenu-[0-9A-Za-z]{1,64}$")


# ---------------------------------------------------------------------------------------------- values


def _duration(value: Any) -> Any:
    return parse_duration(value) if isinstance(value, str) else _not_text(value, DURATION_HINT)


def _offset(value: Any) -> Any:
    return parse_duration(value, signed=True) if isinstance(value, str) else _not_text(value, DURATION_HINT)


def _local_time(value: Any) -> Any:
    return parse_local_time(value) if isinstance(value, str) else _not_text(value, 'e.g. "10:00"')


def _not_text(value: Any, hint: str) -> Any:
    if isinstance(value, time | timedelta):  # already parsed (model_copy, tests)
        return value
    raise ValueError(f"{value} must be text in quotes; {hint}")


def _identifier(value: Any) -> Any:
    if isinstance(value, str) and not _ID.match(value):
        raise ValueError(f'"{value}" is not a valid id: use {ID_HINT}')
    return value


def _aware_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f'"{value}" is not a date and time; write e.g. "2026-05-01T10:00:00+09:00"'
            ) from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("give the time zone offset, e.g. +09:00 for Japan")
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "description": f"A duration: {DURATION_HINT}"}
    ),
]
Offset = Annotated[
    timedelta,
    BeforeValidator(_offset),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": OFFSET_PATTERN, "description": 'A signed duration, e.g. "3d" or "-1d"'}
    ),
]
LocalTime = Annotated[
    time,
    BeforeValidator(_local_time),
    PlainSerializer(format_local_time, return_type=str),
    WithJsonSchema({"type": "string", "pattern": LOCAL_TIME_PATTERN, "description": 'Local time "HH:MM"'}),
]
AwareDatetime = Annotated[
    datetime,
    BeforeValidator(_aware_datetime),
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time", "description": "ISO 8601 with an offset"}),
]
StepId = Annotated[
    str,
    BeforeValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "description": f"A step id: {ID_HINT}"}),
]
ScenarioId = Annotated[
    str,
    BeforeValidator(_identifier),
    WithJsonSchema({"type": "string", "pattern": ID_PATTERN, "description": f"A scenario id: {ID_HINT}"}),
]
EventName = Annotated[str, Field(min_length=1, max_length=200)]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Percent = Annotated[float, Field(ge=0, le=MAX_HOLDOUT_PERCENT)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ------------------------------------------------------------------------------------------ comparisons

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains"]
ORDER_OPS = ("gt", "gte", "lt", "lte")


def check_comparison(op: str, value: Any, has_value: bool) -> None:
    """The value an operator needs: none for exists, a list for in/not_in, a number or text to order."""
    if op == "exists":
        if has_value:
            raise ValueError('`exists` takes no `value`; to test for absence wrap it in {"kind": "not"}')
        return
    if not has_value:
        raise ValueError(f"`{op}` needs a `value`")
    if op in ("in", "not_in") and not (isinstance(value, list) and value):
        raise ValueError(f'`{op}` needs a non-empty list as `value`, e.g. ["a", "b"]')
    if op in ORDER_OPS and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        raise ValueError(f"`{op}` compares with a number or a text (e.g. a date), not {type(value).__name__}")


class PropertyCondition(_Model):
    """A test of one property of an event: `{"property": "products.sku", "op": "eq", "value": "X"}`.

    The property is a dotted path into the event's properties; a path through a list (e.g.
    `products.sku`) yields every element's value, and the test holds when any of them passes
    (`ne` and `not_in` hold when none of them is the value)."""

    property: Annotated[str, Field(min_length=1, max_length=200)]
    op: Op = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> PropertyCondition:
        check_comparison(self.op, self.value, "value" in self.model_fields_set)
        return self


Where = Annotated[list[PropertyCondition], Field(max_length=20)]


# ------------------------------------------------------------------------------------------- conditions


class AllCondition(_Model):
    """Every condition holds. / すべて満たす"""

    kind: Literal["all"]
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=50)]


class AnyCondition(_Model):
    """At least one condition holds. / いずれかを満たす"""

    kind: Literal["any"]
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=50)]


class NotCondition(_Model):
    """The condition does not hold. / 満たさない"""

    kind: Literal["not"]
    condition: Condition


class TraitCondition(_Model):
    """A profile trait compared with a value. The trait name is looked up as written first
    (`survey.taste` is one trait), then as a dotted path into nested traits (`address.prefecture`)."""

    kind: Literal["trait"]
    trait: Annotated[str, Field(min_length=1, max_length=200)]
    op: Op = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> TraitCondition:
        check_comparison(self.op, self.value, "value" in self.model_fields_set)
        return self


ProfileField = Literal[
    "purchase_count",
    "monetary_total",
    "days_since_last_purchase",
    "days_since_first_purchase",
    "days_since_first_seen",
]


class ProfileCondition(_Model):
    """A purchase fact CEMS keeps on every profile, compared with a number. The `days_since_*`
    fields of a customer who never bought do not exist (only `exists` inside `not` matches them)."""

    kind: Literal["profile"]
    field: ProfileField
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "exists"] = "eq"
    value: float | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> ProfileCondition:
        check_comparison(self.op, self.value, self.value is not None)
        return self


class BoughtCondition(_Model):
    """The customer bought any of these products, SKUs or categories (ever). / 購入履歴"""

    kind: Literal["bought"]
    product_ids: Annotated[list[str], Field(max_length=100)] = []
    skus: Annotated[list[str], Field(max_length=100)] = []
    categories: Annotated[list[str], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _something(self) -> BoughtCondition:
        if not (self.product_ids or self.skus or self.categories):
            raise ValueError("name at least one of `product_ids`, `skus` or `categories`")
        return self


class SurveyCondition(_Model):
    """The customer answered a survey question (any answer, or one of `answers`). / アンケート回答"""

    kind: Literal["survey"]
    question: Annotated[str, Field(pattern=_SURVEY_QUESTION.pattern)]
    answers: Annotated[list[str], Field(min_length=1, max_length=50)] | None = None


class EventCountCondition(_Model):
    """The customer did `event` (matching `where`) at least `at_least` and at most `at_most` times
    within the last `within_days` days (or the whole kept history). / 行動履歴"""

    kind: Literal["event_count"]
    event: EventName
    where: Where = []
    at_least: Annotated[int, Field(ge=0)] = 1
    at_most: Annotated[int, Field(ge=0)] | None = None
    within_days: Annotated[int, Field(ge=1, le=395)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> EventCountCondition:
        if self.at_most is not None and self.at_most < self.at_least:
            raise ValueError(f"`at_most` ({self.at_most}) is below `at_least` ({self.at_least})")
        return self


class ReachableCondition(_Model):
    """The customer can be sent to on this channel now (reachable and consenting). / 配信可能"""

    kind: Literal["reachable"]
    channel: Literal["line", "email", "any"]


class ScoreRange(_Model):
    min: Annotated[int, Field(ge=1, le=5)] = 1
    max: Annotated[int, Field(ge=1, le=5)] = 5

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is above `max` ({self.max})")
        return self


class RfmCondition(_Model):
    """RFM scores (1-5 each, cems.scenario.rfm) within ranges; never true for a customer who has
    not bought. / RFM スコア"""

    kind: Literal["rfm"]
    recency: ScoreRange | None = None
    frequency: ScoreRange | None = None
    monetary: ScoreRange | None = None

    @model_validator(mode="after")
    def _something(self) -> RfmCondition:
        if self.recency is None and self.frequency is None and self.monetary is None:
            raise ValueError("give at least one of `recency`, `frequency` or `monetary`")
        return self


class LifecycleCondition(_Model):
    """The customer's lifecycle stage (cems.scenario.rfm) is one of `stages`. / ライフサイクル"""

    kind: Literal["lifecycle"]
    stages: Annotated[list[Stage], Field(min_length=1)]


Condition = Annotated[
    AllCondition
    | AnyCondition
    | NotCondition
    | TraitCondition
    | ProfileCondition
    | BoughtCondition
    | SurveyCondition
    | EventCountCondition
    | ReachableCondition
    | RfmCondition
    | LifecycleCondition,
    Field(discriminator="kind"),
]


# ------------------------------------------------------------------------------------------------ dates


def _date_source(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_SOURCE.match(value):
        raise ValueError(f'"{value}" is not a date CEMS knows; use one of {", ".join(DATE_SOURCES)}')
    return value


DateSource = Annotated[
    str,
    BeforeValidator(_date_source),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DATE_SOURCE.pattern,
            "description": "trigger_event, last_purchase_at, first_purchase_at, first_seen_at "
            "or traits.<name>",
        }
    ),
]


class DateRef(_Model):
    """A date taken from the profile or the trigger event, moved by `offset`."""

    date: DateSource
    offset: Offset = timedelta(0)


# --------------------------------------------------------------------------------------------- triggers


class EventTrigger(_Model):
    """Enter when the customer does `event` and its properties pass every `where` test."""

    type: Literal["event"]
    event: EventName
    where: Where = []


class LineFollowTrigger(_Model):
    """Enter when the customer adds the LINE account as a friend (`line_follow`)."""

    type: Literal["line_follow"]
    # A friend who had blocked the account and unblocks it also sends `follow` (is_unblocked).
    include_unblocked: bool = True


class SurveyAnswerTrigger(_Model):
    """Enter when the customer answers a survey question (a `survey=<question>&answer=<value>`
    postback), with any answer or one of `answers`."""

    type: Literal["survey_answer"]
    question: Annotated[str, Field(pattern=_SURVEY_QUESTION.pattern)]
    answers: Annotated[list[str], Field(min_length=1, max_length=50)] | None = None


class DateTrigger(_Model):
    """Enter on a date of the profile plus `offset`, at local time `at`: "30 days after the last
    purchase at 10:00". With `yearly`, every year on that month and day (birthdays)."""

    type: Literal["date"]
    date: DateSource
    offset: Offset = timedelta(0)
    at: LocalTime
    yearly: bool = False


class BroadcastTrigger(_Model):
    """Everyone in the audience, once `at` a given time or on a `cron` schedule (scenario time zone)."""

    type: Literal["broadcast"]
    at: AwareDatetime | None = None
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            CronSchedule.parse(value)
        return value

    @model_validator(mode="after")
    def _once_or_cron(self) -> BroadcastTrigger:
        if (self.at is None) == (self.cron is None):
            raise ValueError(f"give exactly one of `at` (once) or `cron` (recurring); {CRON_HINT}")
        return self


Trigger = Annotated[
    EventTrigger | LineFollowTrigger | SurveyAnswerTrigger | DateTrigger | BroadcastTrigger,
    Field(discriminator="type"),
]


# ------------------------------------------------------------------------------------------------ steps

LineMessage = dict[str, Any]


class EmailContent(_Model):
    """An email's parts, each a Liquid template. / メール本文"""

    subject: Annotated[str, Field(min_length=1, max_length=998)]
    html: str | None = None
    text: str | None = None

    @model_validator(mode="after")
    def _a_body(self) -> EmailContent:
        if not self.html and not self.text:
            raise ValueError("an email needs `html`, `text` or both")
        return self


class _Step(_Model):
    id: StepId
    # A label for people reading the scenario or its reports.
    name: Name | None = None


class SendStep(_Step):
    """Send on LINE, by email, or on LINE falling back to email when LINE is unreachable."""

    type: Literal["send"]
    channel: Literal["line", "email", "line_or_email"]
    line: list[LineMessage] | None = None
    email: EmailContent | None = None
    notification_disabled: bool = False
    next: StepId | None = None


class WaitStep(_Step):
    """Wait for a `duration`, or `until` a date, and/or until the local time `at`.

    - `duration`: continue after that long; with `at`, at the first `at` on or after then.
    - `until`: continue at that date plus its offset; with `at`, at that time on that local day.
    - `at` alone: continue at the next `at` (later today, else tomorrow).
    A moment already past continues at once."""

    type: Literal["wait"]
    duration: Duration | None = None
    until: DateRef | None = None
    at: LocalTime | None = None
    next: StepId | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WaitStep:
        if self.duration is None and self.until is None and self.at is None:
            raise ValueError("a wait needs `duration`, `until` or `at`")
        if self.duration is not None and self.until is not None:
            raise ValueError("give `duration` or `until`, not both")
        return self


class WaitForEventStep(_Step):
    """Wait up to `timeout` for the customer to do `event`; go to `on_event` if they do (by default
    the journey ends), else to `on_timeout` (by default the next step)."""

    type: Literal["wait_for_event"]
    event: EventName
    where: Where = []
    timeout: Duration
    on_event: StepId | None = None
    on_timeout: StepId | None = None


class Branch(_Model):
    when: Condition
    next: StepId


class BranchStep(_Step):
    """Go to the first branch whose condition holds, else `otherwise` (by default the next step)."""

    type: Literal["branch"]
    branches: Annotated[list[Branch], Field(min_length=1, max_length=20)]
    otherwise: StepId | None = None


class Variant(_Model):
    name: Annotated[str, Field(min_length=1, max_length=40)]
    weight: Annotated[float, Field(ge=0)]
    next: StepId


class SplitStep(_Step):
    """An A/B test: each customer goes to one variant, chosen by weight and fixed per customer."""

    type: Literal["split"]
    variants: Annotated[list[Variant], Field(min_length=2, max_length=10)]


class SetTraitStep(_Step):
    """Set a profile trait; a text value is a Liquid template."""

    type: Literal["set_trait"]
    trait: Annotated[str, Field(min_length=1, max_length=200)]
    value: Any
    next: StepId | None = None


class RichMenuStep(_Step):
    """Link a LINE rich menu to the customer, or with `rich_menu_id: null` go back to the default."""

    type: Literal["rich_menu"]
    rich_menu_id: str | None
    next: StepId | None = None

    @field_validator("rich_menu_id")
    @classmethod
    def _rich_menu(cls, value: str | None) -> str | None:
        if value is not None and not _RICH_MENU_ID.match(value):
            raise ValueError(f'"{value}" is not a LINE rich menu id (richmenu-…)')
        return value


class EndStep(_Step):
    """The journey ends here (not converted, unless the goal was reached)."""

    type: Literal["end"]


Step = Annotated[
    SendStep | WaitStep | WaitForEventStep | BranchStep | SplitStep | SetTraitStep | RichMenuStep | EndStep,
    Field(discriminator="type"),
]


# ------------------------------------------------------------------------------------ scenario settings


class EntryRules(_Model):
    """Who may enter again, and the control group. / 再エントリーとホールドアウト"""

    # never: once per customer, ever; after_exit: again once the previous journey ended;
    # cooldown: again once `cooldown` has passed since the previous entry (and it ended).
    reentry: Literal["never", "after_exit", "cooldown"] = "never"
    cooldown: Duration | None = None
    # Percent of entrants kept as a control group: recorded, sent nothing, measured against the goal.
    holdout_percent: Percent = 0

    @model_validator(mode="after")
    def _cooldown(self) -> EntryRules:
        if self.reentry == "cooldown" and self.cooldown is None:
            raise ValueError('`reentry: "cooldown"` needs `cooldown`, e.g. "30d"')
        if self.reentry != "cooldown" and self.cooldown is not None:
            raise ValueError(f'`cooldown` applies only to `reentry: "cooldown"` (this is "{self.reentry}")')
        return self


class Goal(_Model):
    """The conversion: `event` (passing `where`) within `within` of entering. / ゴール"""

    event: EventName
    where: Where = []
    within: Duration


class ExitRules(_Model):
    """When a journey stops early. Opting out of a step's channel and being blacklisted always
    stop it (not configurable); reaching the goal always exits as converted. / 離脱条件"""

    # Leave this scenario when a scenario of higher priority takes the customer.
    yield_to_higher_priority: bool = True
    # Leave after this many sends in a row with no response from the customer.
    no_response_after_sends: Annotated[int, Field(ge=1, le=100)] | None = None


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SendWindow(_Model):
    """Sends happen between `start` and `end` (local time) on `days`; one that falls due outside
    waits for the window to open. / 配信時間帯"""

    start: LocalTime = time(9, 0)
    end: LocalTime = time(21, 0)
    days: Annotated[list[Weekday], Field(min_length=1)] = list(WEEKDAYS)

    @model_validator(mode="after")
    def _possible(self) -> SendWindow:
        if self.start >= self.end:
            raise ValueError(
                f"the window opens at {format_local_time(self.start)} and closes at "
                f"{format_local_time(self.end)}: `start` must be before `end` on the same day"
            )
        return self


class FrequencyCapRule(_Model):
    """What a send does when the customer's global cap for the channel is reached. / 配信上限"""

    when_capped: Literal["skip", "defer"] = "defer"
    # A deferred send is skipped after this long (it is no longer timely).
    give_up_after: Duration = timedelta(days=3)


class Tracking(_Model):
    """What CEMS measures on this scenario's sends. / 効果測定 (クリック・開封)"""

    # Links (email `<a href>` and bare URLs in the text part; LINE `uri` actions) go through the click
    # tracker, so clicks are counted and can be goals, exits or branches.
    clicks: bool = True
    # A 1x1 image in the HTML part of emails counts opens (images blocked: no open counted).
    opens: bool = True


class ChannelCap(_Model):
    per_day: Annotated[int, Field(ge=1)] | None = 1
    per_week: Annotated[int, Field(ge=1)] | None = 3


class FrequencyCaps(_Model):
    """Global caps per customer per channel, counted across all scenarios (engine configuration,
    not part of a scenario file). Days and weeks are calendar days and Monday-start weeks in
    Asia/Tokyo."""

    line: ChannelCap = ChannelCap()
    email: ChannelCap = ChannelCap()


# ------------------------------------------------------------------------------------------------ scenario


class Scenario(_Model):
    """A scenario: who enters, when, and the steps of their journey. / シナリオ"""

    # Lets editors find the JSON Schema; ignored otherwise.
    schema_: str | None = Field(default=None, alias="$schema")
    id: ScenarioId
    name: Name
    description: Annotated[str, Field(max_length=2000)] | None = None
    version: Annotated[int, Field(ge=1)] = 1
    # Higher wins when two scenarios want the same customer.
    priority: Annotated[int, Field(ge=0, le=1000)] = 100
    time_zone: str = DEFAULT_TIME_ZONE
    trigger: Trigger
    audience: Condition | None = None
    entry: EntryRules = EntryRules()
    goal: Goal | None = None
    exit: ExitRules = ExitRules()
    send_window: SendWindow = SendWindow()
    frequency_cap: FrequencyCapRule = FrequencyCapRule()
    tracking: Tracking = Tracking()
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)]

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f'"{value}" is not a time zone; use an IANA name such as Asia/Tokyo') from None
        return value

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> Scenario:
        if isinstance(info.context, dict) and info.context.get(STRUCTURE_ONLY):
            return self
        problems = semantic_problems(self)
        if problems:
            listed = "; ".join(f"{format_path(p.path)}: {p.message}" for p in problems[:10])
            raise ValueError(f"{len(problems)} problem(s): {listed}")
        return self

    # -- for the engine ---------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def first_step(self) -> Step:
        return self.steps[0]

    def following(self, step_id: str) -> str | None:
        """The step listed after `step_id` (where a step without `next` goes), None after the last."""
        ids = [s.id for s in self.steps]
        index = ids.index(step_id)
        return ids[index + 1] if index + 1 < len(ids) else None

    def next_of(self, step: Step) -> str | None:
        """Where a send, wait, set_trait or rich_menu step goes: `next`, else the step below it."""
        explicit = getattr(step, "next", None)
        return explicit if isinstance(explicit, str) else self.following(step.id)

    def successors(self, step: Step) -> list[str]:
        """Every step `step` may go to (for checks and drawings), defaults included."""
        if isinstance(step, EndStep):
            return []
        if isinstance(step, BranchStep):
            targets = [b.next for b in step.branches]
            otherwise = step.otherwise or self.following(step.id)
            return _unique([*targets, *([otherwise] if otherwise else [])])
        if isinstance(step, SplitStep):
            return _unique([v.next for v in step.variants])
        if isinstance(step, WaitForEventStep):
            timeout = step.on_timeout or self.following(step.id)
            return _unique([t for t in (step.on_event, timeout) if t])
        following = self.next_of(step)
        return [following] if following else []

    def channels(self) -> set[str]:
        out: set[str] = set()
        for step in self.steps:
            if isinstance(step, SendStep):
                out.update({"line", "email"} if step.channel == "line_or_email" else {step.channel})
        return out


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


for _model in (AllCondition, AnyCondition, NotCondition, Branch, Scenario):
    _model.model_rebuild()


# ------------------------------------------------------------------------------------------- semantics

Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    path: Path
    message: str
    code: str = "semantic"


def format_path(path: Path) -> str:
    """('steps', 2, 'next') -> 'steps[2].next'"""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(the whole file)"


def iter_steps(scenario: Scenario) -> Iterator[tuple[int, Step]]:
    yield from enumerate(scenario.steps)


def semantic_problems(scenario: Scenario) -> list[Problem]:
    """What the field validators cannot see: references, reachability, cycles, channel content,
    date sources. Liquid and LINE content are checked by cems.scenario.validation.content_problems."""
    from cems.scenario.validation import content_problems

    problems = _reference_problems(scenario)
    if not problems:  # the graph checks assume every reference resolves
        problems += _reachability_problems(scenario)
        problems += _cycle_problems(scenario)
    problems += _send_problems(scenario)
    problems += _date_problems(scenario)
    problems += _split_problems(scenario)
    problems += content_problems(scenario)
    return problems


def step_references(step: Step) -> Iterator[tuple[Path, str]]:
    """(path within the step, step id) of every step this step names."""
    if isinstance(step, BranchStep):
        for j, branch in enumerate(step.branches):
            yield ("branches", j, "next"), branch.next
        if step.otherwise:
            yield ("otherwise",), step.otherwise
    elif isinstance(step, SplitStep):
        for j, variant in enumerate(step.variants):
            yield ("variants", j, "next"), variant.next
    elif isinstance(step, WaitForEventStep):
        if step.on_event:
            yield ("on_event",), step.on_event
        if step.on_timeout:
            yield ("on_timeout",), step.on_timeout
    else:
        target = getattr(step, "next", None)
        if isinstance(target, str):
            yield ("next",), target


def _reference_problems(scenario: Scenario) -> list[Problem]:
    import difflib

    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, step in iter_steps(scenario):
        if step.id in seen:
            problems.append(
                Problem(
                    ("steps", i, "id"),
                    f'step id "{step.id}" is already used by steps[{seen[step.id]}]',
                    "duplicate_step_id",
                )
            )
        else:
            seen[step.id] = i
    for i, step in iter_steps(scenario):
        for path, target in step_references(step):
            if target == step.id:
                problems.append(
                    Problem(("steps", i, *path), f'step "{step.id}" goes to itself', "loop_without_wait")
                )
            elif target not in seen:
                close = difflib.get_close_matches(target, list(seen), n=1)
                hint = f'; did you mean "{close[0]}"?' if close else f"; step ids here: {', '.join(seen)}"
                problems.append(
                    Problem(("steps", i, *path), f'there is no step "{target}"{hint}', "unknown_step")
                )
    return problems


def _reachability_problems(scenario: Scenario) -> list[Problem]:
    reached = {scenario.steps[0].id}
    todo = [scenario.steps[0]]
    while todo:
        for target in scenario.successors(todo.pop()):
            if target not in reached:
                reached.add(target)
                todo.append(scenario.step(target))
    return [
        Problem(
            ("steps", i),
            f'step "{step.id}" can never be reached: no step goes to it (a step without `next` '
            "goes to the one listed below it)",
            "unreachable_step",
        )
        for i, step in iter_steps(scenario)
        if step.id not in reached
    ]


def _slow_wait(step: Step) -> bool:
    if isinstance(step, WaitForEventStep):
        return step.timeout >= MIN_CYCLE_WAIT
    if isinstance(step, WaitStep):
        return (step.duration is not None and step.duration >= MIN_CYCLE_WAIT) or (
            step.duration is None and step.until is None and step.at is not None
        )
    return False


def _cycle_problems(scenario: Scenario) -> list[Problem]:
    """A loop is allowed only through a wait of at least an hour (a `duration` or a
    `wait_for_event` time-out of 1h or more, or a wait until the next `at`): steps that loop
    without one would send in a tight circle."""
    index = {s.id: i for i, s in iter_steps(scenario)}
    # Look for cycles in the graph without the slow waits: any cycle left has no such wait.
    edges = {
        s.id: [] if _slow_wait(s) else [t for t in scenario.successors(s) if not _slow_wait(scenario.step(t))]
        for s in scenario.steps
    }
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    problems: list[Problem] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in edges[node]:
            if state.get(target) == 1:
                loop = [*stack[stack.index(target) :], target]
                problems.append(
                    Problem(
                        ("steps", index[target]),
                        f"steps loop without waiting ({' → '.join(loop)}); put a wait of at least "
                        f"{format_duration(MIN_CYCLE_WAIT)} in the loop",
                        "loop_without_wait",
                    )
                )
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for step in scenario.steps:
        if _slow_wait(step) or step.id in state:
            continue
        visit(step.id, [])
    return problems


def _send_problems(scenario: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    for i, step in iter_steps(scenario):
        if not isinstance(step, SendStep):
            continue
        # (content field, the channel sends it, content given, content missing, what is needed)
        for name, wanted, given, missing, needed in (
            (
                "line",
                step.channel in ("line", "line_or_email"),
                step.line is not None,
                not step.line,
                "LINE messages in `line`",
            ),
            (
                "email",
                step.channel in ("email", "line_or_email"),
                step.email is not None,
                step.email is None,
                "`email` content",
            ),
        ):
            if wanted and missing:
                message = f'channel "{step.channel}" needs {needed}'
            elif not wanted and given:
                message = f'`{name}` content is never sent on channel "{step.channel}"'
            else:
                continue
            problems.append(Problem(("steps", i, name), message, "channel_content"))
    return problems


def _date_problems(scenario: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    trigger = scenario.trigger
    has_event = trigger.type in ("event", "line_follow", "survey_answer")
    if isinstance(trigger, DateTrigger) and trigger.date == "trigger_event":
        problems.append(
            Problem(
                ("trigger", "date"),
                "a date trigger cannot start from the trigger event; use a profile date",
                "date_source",
            )
        )
    for i, step in iter_steps(scenario):
        waits_on_event = (
            isinstance(step, WaitStep) and step.until is not None and step.until.date == "trigger_event"
        )
        if waits_on_event and not has_event:
            problems.append(
                Problem(
                    ("steps", i, "until", "date"),
                    f"a {trigger.type} trigger has no trigger event to count from; use a profile date",
                    "date_source",
                )
            )
    return problems


def _split_problems(scenario: Scenario) -> list[Problem]:
    problems: list[Problem] = []
    for i, step in iter_steps(scenario):
        if not isinstance(step, SplitStep):
            continue
        if sum(v.weight for v in step.variants) <= 0:
            problems.append(
                Problem(
                    ("steps", i, "variants"),
                    "the variants' weights add up to 0; give some weight",
                    "split_weights",
                )
            )
        names: set[str] = set()
        for j, variant in enumerate(step.variants):
            if variant.name in names:
                problems.append(
                    Problem(
                        ("steps", i, "variants", j, "name"),
                        f'variant "{variant.name}" is named twice',
                        "split_weights",
                    )
                )
            names.add(variant.name)
    return problems


# ---------------------------------------------------------------------------------------------- schema


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files, for editors (committed as schemas/scenario.schema.json)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cems.example/schemas/scenario.schema.json",
        **schema,
    }


def json_schema_text() -> str:
    import json

    return json.dumps(json_schema(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

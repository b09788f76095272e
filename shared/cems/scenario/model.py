"""The scenario language: pydantic models of a scenario file (docs/scenarios.md is the reference).

Here: the scenario, its triggers, steps and settings, and the JSON Schema. The conditions are in
`cems.scenario.condition_models`, the value types (durations, times, ids) and the base model in
`cems.scenario.values`.

Every object forbids unknown fields, so a typo is an error, not a silently ignored setting. Unions
are discriminated: triggers and steps by `type`, conditions by `kind`. Values are strict (no "3"
for 3, no "true" for true). Structure is checked by the models; what needs the whole document
(step references, reachability, loops, content) is checked on the JSON by
`cems.scenario.semantics.document_problems`, which `Scenario` runs on its own JSON form after the
fields validate, so a `Scenario` object is always a usable scenario. `cems.scenario.validation` runs
both to report every problem at its JSON path.

Every error a validator here raises, and every description in the generated JSON Schema (an editor's
hover help), is in Japanese first with English alongside: the people who write scenarios read
Japanese. A model's English description is its docstring; its Japanese one is `doc_ja`.
"""

from __future__ import annotations

import json
import re
from datetime import time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError

from cems.channels.registry import BEST, SEND_OPTIONS, channels_of, plugins
from cems.models import Channel
from cems.scenario.caps import TOTAL, CapScope

# Other modules take these from here too (the engine, the loader, tests): re-exported.
from cems.scenario.condition_models import Condition as Condition
from cems.scenario.condition_models import PropertyCondition as PropertyCondition
from cems.scenario.condition_models import Where
from cems.scenario.cron import CRON_HINT, CRON_HINT_JA, CronSchedule
from cems.scenario.durations import format_duration, format_local_time
from cems.scenario.problems import bilingual, format_path
from cems.scenario.semantics import document_problems
from cems.scenario.values import ID_HINT as ID_HINT
from cems.scenario.values import ID_HINT_JA as ID_HINT_JA
from cems.scenario.values import (
    SURVEY_QUESTION,
    AwareDatetime,
    DateSource,
    Duration,
    EventName,
    LocalTime,
    Name,
    Offset,
    ScenarioId,
    StepId,
    StrictModel,
    described,
)
from cems.topics import TopicId


class _Model(StrictModel, BaseModel):
    """StrictModel; BaseModel is named again so that linters see a pydantic model (field defaults
    such as `[]` are copied per instance, not shared)."""


DEFAULT_TIME_ZONE = "Asia/Tokyo"
MAX_HOLDOUT_PERCENT = 50
MAX_STEPS = 100
# Passed as validation context to check fields only (cems.scenario.validation reports the rest).
STRUCTURE_ONLY = "structure_only"

_RICH_MENU_ID = re.compile(r"^richmenu-[0-9A-Za-z]{1,64}$")


Percent = Annotated[float, Field(ge=0, le=MAX_HOLDOUT_PERCENT)]


class DateRef(_Model):
    """A date taken from the profile or the trigger event, moved by `offset`."""

    doc_ja: ClassVar[str] = "プロフィールかトリガーイベントの日付を `offset` だけずらした日時。"

    date: DateSource
    offset: Offset = timedelta(0)


# --------------------------------------------------------------------------------------------- triggers


class EventTrigger(_Model):
    """Enter when the customer does `event` and its properties pass every `where` test."""

    doc_ja: ClassVar[str] = (
        "顧客が `event` を行い、そのプロパティが `where` の条件をすべて満たしたときにエントリー。"
    )

    type: Literal["event"]
    event: EventName
    where: Where = []


class LineFollowTrigger(_Model):
    """Enter when the customer adds the LINE account as a friend (`line_follow`)."""

    doc_ja: ClassVar[str] = "顧客が LINE 公式アカウントを友だち追加したときにエントリー（`line_follow`）。"

    type: Literal["line_follow"]
    include_unblocked: bool = Field(
        default=True,
        description=described(
            "ブロックを解除した友だちもエントリーさせる（LINE はブロック解除でも `follow` を送ります）",
            "A friend who had blocked the account and unblocks it also enters (LINE sends `follow` "
            "for an unblock too)",
        ),
    )


class SurveyAnswerTrigger(_Model):
    """Enter when the customer answers a survey question (a `survey=<question>&answer=<value>`
    postback), with any answer or one of `answers`."""

    doc_ja: ClassVar[str] = (
        "顧客がアンケートの質問に答えたとき（`survey=<質問>&answer=<回答>` の postback）にエントリー。"
        "回答は何でも、または `answers` のどれか。"
    )

    type: Literal["survey_answer"]
    question: Annotated[str, Field(pattern=SURVEY_QUESTION.pattern)]
    answers: Annotated[list[str], Field(min_length=1, max_length=50)] | None = None


class DateTrigger(_Model):
    """Enter on a date of the profile plus `offset`, at local time `at`: "30 days after the last
    purchase at 10:00". With `yearly`, every year on that month and day (birthdays)."""

    doc_ja: ClassVar[str] = (
        "プロフィールの日付に `offset` を足した日の、ローカル時刻 `at` にエントリー"
        "（例「最終購入の 30 日後の 10:00」）。`yearly` なら毎年その月日に（誕生日など）。"
    )

    type: Literal["date"]
    date: DateSource
    offset: Offset = timedelta(0)
    at: LocalTime
    yearly: bool = False


class BroadcastTrigger(_Model):
    """Everyone in the audience, once `at` a given time or on a `cron` schedule (scenario time zone)."""

    doc_ja: ClassVar[str] = (
        "対象者全員に、`at` の日時に 1 回、または `cron` のスケジュールで繰り返し（シナリオのタイムゾーン）。"
    )

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
            raise ValueError(
                bilingual(
                    f"`at`（1 回）か `cron`（繰り返し）のどちらか一方だけを書いてください。{CRON_HINT_JA}",
                    f"give exactly one of `at` (once) or `cron` (recurring); {CRON_HINT}",
                )
            )
        return self


Trigger = Annotated[
    EventTrigger | LineFollowTrigger | SurveyAnswerTrigger | DateTrigger | BroadcastTrigger,
    Field(discriminator="type"),
]


# ------------------------------------------------------------------------------------------------ steps


# A send step's `channel`: a registered channel's name, or a preference of several
# (cems.channels.registry.SEND_OPTIONS); built from the registry, so the JSON Schema lists them.
# Or `best` (chosen per customer from their engagement, cems.activity), or a list of
# channels in the step's own order of preference.
if TYPE_CHECKING:
    SendOption = str
    ChannelName = str
else:
    SendOption = Literal[(*SEND_OPTIONS, BEST)]
    ChannelName = Literal[tuple(p.channel.value for p in plugins())]
SendChannel = SendOption | Annotated[list[ChannelName], Field(min_length=1, max_length=len(plugins()))]


class _Step(_Model):
    """A step of the journey."""

    doc_ja: ClassVar[str] = "ジャーニーのステップ。"

    id: StepId
    name: Name | None = Field(
        default=None,
        description=described(
            "シナリオやレポートを読む人のための名前", "A label for people reading the scenario or its reports"
        ),
    )


class _SendStep(_Step):
    """Send on LINE, by email or on the site; on the first of several channels that reaches the
    customer (`line_or_email`, or a list in order of preference); or on the channel the customer
    engages with most (`best`)."""

    doc_ja: ClassVar[str] = (
        "LINE・メール・サイト上で送る。`line_or_email` やチャネルの一覧（優先順）では届く最初のチャネルに、"
        "`best` では顧客がいちばん反応しているチャネルに送ります。"
    )

    if TYPE_CHECKING:  # the fields as mypy sees them; SendStep below declares them for pydantic
        type: Literal["send"]
        channel: SendOption | list[ChannelName]
        notification_disabled: bool
        next: StepId | None

    def content(self, channel: Channel) -> Any:
        """The step's content for `channel`: its field named after the channel (None: none given)."""
        return getattr(self, channel.value)

    @property
    def chooses_best(self) -> bool:
        """Whether the channel is chosen per customer from their engagement (`best`)."""
        return self.channel == BEST

    def channels(self) -> tuple[Channel, ...]:
        """Every channel the step may send on, in its order of preference. `best` may choose any
        channel the step has content for, in the registry's order (its default order)."""
        if self.chooses_best:
            return tuple(p.channel for p in plugins() if self.content(p.channel) not in (None, []))
        return channels_of(self.channel)

    @field_validator("channel", mode="before", check_fields=False)
    @classmethod
    def _one_channel_form(cls, value: Any) -> Any:
        """One error for a wrong channel, not one per form of the union (a name, a list): a name that
        is no option, or a list naming no channel, is told the names it may use."""
        if isinstance(value, str):
            _known(value, (*SEND_OPTIONS, BEST))
        elif isinstance(value, list):
            for item in value:
                _known(item, tuple(p.channel.value for p in plugins()))
            if len(set(value)) != len(value):
                raise ValueError(
                    bilingual("チャネルの一覧に同じチャネルが二度あります", "a channel is listed twice")
                )
        return value


def _known(value: Any, allowed: tuple[str, ...]) -> None:
    """Raise pydantic's own literal error (cems.scenario.validation words it, with "did you mean")."""
    if value not in allowed:
        expected = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
        raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


# A send step has one content field per registered channel, named after it and typed by the
# channel's plugin (`line`: LINE messages, `email`: an EmailContent), so a new channel's content is
# in the model and the JSON Schema without an edit here.
if TYPE_CHECKING:
    SendStep = _SendStep
else:
    SendStep = create_model(
        "SendStep",
        __base__=_SendStep,
        __module__=__name__,
        __doc__=_SendStep.__doc__,
        type=(Literal["send"], ...),
        channel=(
            SendChannel,
            Field(
                ...,
                description=described(
                    "送るチャネル: line・email・web、line_or_email（LINE に届かなければメール）、"
                    '優先順のチャネルの一覧（例: ["email", "line"]。届く最初のチャネルに送ります）、'
                    "または best（内容のあるチャネルのうち、直近 90 日に顧客がいちばん反応したチャネル）",
                    "Where to send: line, email, web, line_or_email (email when LINE cannot reach), a "
                    'list of channels in order of preference (e.g. ["email", "line"]: the first that '
                    "reaches), or best (of the channels the step has content for, the one the customer "
                    "engaged with most in the last 90 days)",
                ),
            ),
        ),
        **{p.channel.value: (p.content_type() | None, None) for p in plugins()},
        notification_disabled=(bool, False),
        next=(StepId | None, None),
    )


class WaitStep(_Step):
    """Wait for a `duration`, or `until` a date, and/or until the local time `at`.

    - `duration`: continue after that long; with `at`, at the first `at` on or after then.
    - `until`: continue at that date plus its offset; with `at`, at that time on that local day.
    - `at` alone: continue at the next `at` (later today, else tomorrow).
    A moment already past continues at once."""

    doc_ja: ClassVar[str] = (
        "`duration` の間、または `until` の日時まで、そして／またはローカル時刻 `at` まで待つ。\n"
        "- `duration`: その時間のあと進む。`at` もあれば、その後の最初の `at` に。\n"
        "- `until`: その日付に offset を足した時点で進む。`at` もあれば、その日の `at` に。\n"
        "- `at` だけ: 次の `at`（今日の `at` がまだなら今日、過ぎていれば明日）に進む。\n"
        "すでに過ぎた時点ならすぐに進みます。"
    )

    type: Literal["wait"]
    duration: Duration | None = None
    until: DateRef | None = None
    at: LocalTime | None = None
    next: StepId | None = None

    @model_validator(mode="after")
    def _one_form(self) -> WaitStep:
        if self.duration is None and self.until is None and self.at is None:
            raise ValueError(
                bilingual(
                    "待機には `duration`・`until`・`at` のどれかが必要です",
                    "a wait needs `duration`, `until` or `at`",
                )
            )
        if self.duration is not None and self.until is not None:
            raise ValueError(
                bilingual(
                    "`duration` と `until` はどちらか一方だけにしてください",
                    "give `duration` or `until`, not both",
                )
            )
        return self


class WaitForEventStep(_Step):
    """Wait up to `timeout` for the customer to do `event`; go to `on_event` if they do (by default
    the journey ends), else to `on_timeout` (by default the next step)."""

    doc_ja: ClassVar[str] = (
        "顧客が `event` を行うのを最大 `timeout` まで待つ。行えば `on_event` へ（なければジャーニー終了）、"
        "行わなければ `on_timeout` へ（なければ次のステップ）。"
    )

    type: Literal["wait_for_event"]
    event: EventName
    where: Where = []
    timeout: Duration
    on_event: StepId | None = None
    on_timeout: StepId | None = None


class Branch(_Model):
    """A branch of a branch step: where to go when `when` holds."""

    doc_ja: ClassVar[str] = "分岐の 1 つ: `when` の条件を満たしたら `next` へ進む。"

    when: Condition
    next: StepId


class BranchStep(_Step):
    """Go to the first branch whose condition holds, else `otherwise` (by default the next step)."""

    doc_ja: ClassVar[str] = (
        "条件を満たす最初の分岐へ進む。どれも満たさなければ `otherwise` へ（なければ次のステップ）。"
    )

    type: Literal["branch"]
    branches: Annotated[list[Branch], Field(min_length=1, max_length=20)]
    otherwise: StepId | None = None


class Variant(_Model):
    """A variant of an A/B test: its share (`weight`, relative to the others) and where it goes."""

    doc_ja: ClassVar[str] = "A/B テストのバリアント: 割合（`weight`、他との相対値）と進み先。"

    name: Annotated[str, Field(min_length=1, max_length=40)]
    weight: Annotated[float, Field(ge=0)]
    next: StepId


class SplitStep(_Step):
    """An A/B test: each customer goes to one variant, chosen by weight and fixed per customer."""

    doc_ja: ClassVar[str] = (
        "A/B テスト: 顧客ごとに重みで 1 つのバリアントを選び、その顧客ではいつも同じになります。"
    )

    type: Literal["split"]
    variants: Annotated[list[Variant], Field(min_length=2, max_length=10)]


class SetTraitStep(_Step):
    """Set a profile trait; a text value is a Liquid template."""

    doc_ja: ClassVar[str] = "プロフィールの属性（trait）を設定する。テキストの値は Liquid テンプレートです。"

    type: Literal["set_trait"]
    trait: Annotated[str, Field(min_length=1, max_length=200)]
    value: Any
    next: StepId | None = None


class RichMenuStep(_Step):
    """Link a LINE rich menu to the customer, or with `rich_menu_id: null` go back to the default."""

    doc_ja: ClassVar[str] = (
        "顧客に LINE のリッチメニューを設定する。"
        "`rich_menu_id: null` ならデフォルトのリッチメニューに戻します。"
    )

    type: Literal["rich_menu"]
    rich_menu_id: str | None
    next: StepId | None = None

    @field_validator("rich_menu_id")
    @classmethod
    def _rich_menu(cls, value: str | None) -> str | None:
        if value is not None and not _RICH_MENU_ID.match(value):
            raise ValueError(
                bilingual(
                    f'"{value}" は LINE のリッチメニュー ID（richmenu-…）ではありません',
                    f'"{value}" is not a LINE rich menu id (richmenu-…)',
                )
            )
        return value


class EndStep(_Step):
    """The journey ends here (not converted, unless the goal was reached)."""

    doc_ja: ClassVar[str] = "ジャーニーはここで終わる（ゴールに達していなければ未コンバージョン）。"

    type: Literal["end"]


Step = Annotated[
    SendStep | WaitStep | WaitForEventStep | BranchStep | SplitStep | SetTraitStep | RichMenuStep | EndStep,
    Field(discriminator="type"),
]


# ------------------------------------------------------------------------------------ scenario settings


class EntryRules(_Model):
    """Who may enter again, and the control group."""

    doc_ja: ClassVar[str] = "再エントリーとホールドアウト: 誰がもう一度エントリーできるか、と対照群。"

    reentry: Literal["never", "after_exit", "cooldown"] = Field(
        default="never",
        description=described(
            "never: 1 人 1 回だけ。after_exit: 前のジャーニーが終わればもう一度。"
            "cooldown: 前のエントリーから `cooldown` が過ぎ、ジャーニーが終わっていればもう一度",
            "never: once per customer, ever; after_exit: again once the previous journey ended; "
            "cooldown: again once `cooldown` has passed since the previous entry (and it ended)",
        ),
    )
    cooldown: Duration | None = None
    holdout_percent: Percent = Field(
        default=0,
        description=described(
            "対照群にするエントリーの割合（%）: 記録はしても何も送らず、ゴールの達成を比べます",
            "Percent of entrants kept as a control group: recorded, sent nothing, measured against the goal",
        ),
    )

    @model_validator(mode="after")
    def _cooldown(self) -> EntryRules:
        if self.reentry == "cooldown" and self.cooldown is None:
            raise ValueError(
                bilingual(
                    '`reentry: "cooldown"` には `cooldown`（例 "30d"）が必要です',
                    '`reentry: "cooldown"` needs `cooldown`, e.g. "30d"',
                )
            )
        if self.reentry != "cooldown" and self.cooldown is not None:
            raise ValueError(
                bilingual(
                    f'`cooldown` は `reentry: "cooldown"` のときだけ使えます（いまは "{self.reentry}"）',
                    f'`cooldown` applies only to `reentry: "cooldown"` (this is "{self.reentry}")',
                )
            )
        return self


class Goal(_Model):
    """The conversion: `event` (passing `where`) within `within` of entering."""

    doc_ja: ClassVar[str] = (
        "ゴール（コンバージョン）: エントリーから `within` 以内に `where` に合う `event` を行う。"
    )

    event: EventName
    where: Where = []
    within: Duration


class ExitRules(_Model):
    """When a journey stops early. Opting out of a step's channel and being blacklisted always
    stop it (not configurable); reaching the goal always exits as converted."""

    doc_ja: ClassVar[str] = (
        "離脱条件: ジャーニーが途中で終わるとき。ステップのチャネルの配信停止とブラックリスト登録では"
        "いつも終わり（設定できません）、ゴールに達するといつもコンバージョンとして離脱します。"
    )

    yield_to_higher_priority: bool = Field(
        default=True,
        description=described(
            "優先度の高いシナリオが顧客をエントリーさせたら、このシナリオから離脱する",
            "Leave this scenario when a scenario of higher priority takes the customer",
        ),
    )
    no_response_after_sends: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None,
        description=described(
            "顧客の反応がないまま、この回数続けて送ったら離脱する",
            "Leave after this many sends in a row with no response from the customer",
        ),
    )


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class SendWindow(_Model):
    """Sends happen between `start` and `end` (local time) on `days`; one that falls due outside
    waits for the window to open."""

    doc_ja: ClassVar[str] = (
        "配信時間帯: 送信は `days` の曜日の `start` から `end`（ローカル時刻）の間に行います。"
        "時間帯の外で送る時が来たら、時間帯が開くまで待ちます。"
    )

    start: LocalTime = time(9, 0)
    end: LocalTime = time(21, 0)
    days: Annotated[list[Weekday], Field(min_length=1)] = list(WEEKDAYS)

    @model_validator(mode="after")
    def _possible(self) -> SendWindow:
        if self.start >= self.end:
            start, end = format_local_time(self.start), format_local_time(self.end)
            raise ValueError(
                bilingual(
                    f"配信時間帯が {start} に開いて {end} に閉じます。"
                    "`start` は同じ日の `end` より前にしてください",
                    f"the window opens at {start} and closes at {end}: "
                    "`start` must be before `end` on the same day",
                )
            )
        return self


class FrequencyCapRule(_Model):
    """What a send does when the customer's global cap for the channel is reached."""

    doc_ja: ClassVar[str] = "配信上限: 顧客のチャネルごとの全体の上限に達したとき、送信をどうするか。"

    when_capped: Literal["skip", "defer"] = Field(
        default="defer",
        description=described(
            "skip: 送らずに次のステップへ。defer: 上限が空くまで待って送る",
            "skip: go on without sending; defer: send once the cap allows",
        ),
    )
    # The type's own description (a duration) stays; this one says what the duration is for.
    give_up_after: Duration = Field(
        default=timedelta(days=3),
        description=described(
            "待たせた送信をあきらめるまでの期間（それより後では時機を逸しているため）",
            "A deferred send is skipped after this long (it is no longer timely)",
        ),
    )


class Tracking(_Model):
    """What CEMS measures on this scenario's sends."""

    doc_ja: ClassVar[str] = "効果測定: このシナリオの送信で CEMS が計測するもの（クリック・開封）。"

    clicks: bool = Field(
        default=True,
        description=described(
            "リンク（メールの `<a href>` とテキスト部の URL、LINE の `uri` アクション）をクリック計測に通す。"
            "クリックは数えられ、ゴール・離脱・分岐に使えます",
            "Links (email `<a href>` and bare URLs in the text part; LINE `uri` actions) go through the "
            "click tracker, so clicks are counted and can be goals, exits or branches",
        ),
    )
    opens: bool = Field(
        default=True,
        description=described(
            "メールの HTML 部に 1x1 の画像を入れて開封を数える"
            "（画像を表示しない受信者の開封は数えられません）",
            "A 1x1 image in the HTML part of emails counts opens (images blocked: no open counted)",
        ),
    )


class ChannelCap(_Model):
    """The most sends a customer gets on one channel per day and per week (null: no limit); as the
    total cap (FrequencyCaps.of(TOTAL)), the most on all channels together."""

    doc_ja: ClassVar[str] = "1 つのチャネルで顧客に送る 1 日と 1 週間あたりの上限（null なら上限なし）。"

    per_day: Annotated[int, Field(ge=1)] | None = 1
    per_week: Annotated[int, Field(ge=1)] | None = 3


# A channel without caps of its own has these (frozen, so one instance serves every engine run).
_DEFAULT_CAP = ChannelCap()
# The total cap when the deployment sets none: existing deployments keep their behaviour (each
# channel's own caps only) until an operator chooses a total.
NO_CAP = ChannelCap(per_day=None, per_week=None)


class FrequencyCaps(RootModel[dict[CapScope, ChannelCap]]):
    """Global caps per customer, keyed by channel, counted across all scenarios (engine configuration
    from CEMS_CAP_<CHANNEL>_PER_DAY|WEEK, not part of a scenario file); a channel left out has
    ChannelCap's defaults. Under TOTAL, the cap of all channels together (CEMS_CAP_TOTAL_PER_DAY|
    WEEK; left out: none), checked beside the channel's. Days and weeks are calendar days and
    Monday-start weeks in Asia/Tokyo."""

    model_config = ConfigDict(frozen=True)

    root: dict[CapScope, ChannelCap] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _total_limits_only_what_it_names(cls, value: Any) -> Any:
        # A period the total leaves out limits nothing (a channel's keeps ChannelCap's default): a
        # total of one a day must not also mean three a week.
        if isinstance(value, dict) and isinstance(value.get(TOTAL.value), dict):
            return {**value, TOTAL.value: {"per_day": None, "per_week": None, **value[TOTAL.value]}}
        return value

    def of(self, channel: CapScope) -> ChannelCap:
        return self.root.get(channel) or (NO_CAP if channel is TOTAL else _DEFAULT_CAP)

    @property
    def total(self) -> ChannelCap | None:
        """The cap across channels, None when it limits nothing (no total counter is taken or read)."""
        cap = self.of(TOTAL)
        return None if cap.per_day is None and cap.per_week is None else cap


class QuietHours(_Model):
    """The deployment's quiet hours (CEMS_QUIET_HOURS, e.g. `21:00-09:00`), every day in Asia/Tokyo:
    no scenario sends from `start` until `end` (across midnight when `end` is earlier). A scenario's
    `send_window` only narrows what they leave (engine configuration, not part of a scenario file)."""

    start: LocalTime
    end: LocalTime

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _some_quiet(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError(f"quiet hours that start and end at {format_local_time(self.start)} are empty")
        return self

    @classmethod
    def parse(cls, text: str) -> QuietHours | None:
        """`21:00-09:00` (quiet from 21:00 to 09:00 the next morning); `none`: no quiet hours."""
        if text.strip().lower() == "none":
            return None
        start, found, end = text.partition("-")
        if not found:
            raise ValueError(
                f'"{text}" is not quiet hours: write "HH:MM-HH:MM", e.g. "21:00-09:00", or "none"'
            )
        return cls(start=start.strip(), end=end.strip())  # type: ignore[arg-type]  # LocalTime parses text

    def __str__(self) -> str:
        return f"{format_local_time(self.start)}-{format_local_time(self.end)}"


# ------------------------------------------------------------------------------------------------ scenario


class Scenario(_Model):
    """A scenario: who enters, when, and the steps of their journey."""

    doc_ja: ClassVar[str] = "シナリオ: 誰が、いつエントリーし、どんなステップのジャーニーを進むか。"

    schema_: str | None = Field(
        default=None,
        alias="$schema",
        description=described(
            "エディターが JSON Schema を見つけるためのパス（ほかには使いません）",
            "Lets editors find the JSON Schema; ignored otherwise",
        ),
    )
    id: ScenarioId
    name: Name = Field(
        description=described("シナリオの名前（レポートに表示）", "The scenario's name, shown in reports")
    )
    description: Annotated[str, Field(max_length=2000)] | None = Field(
        default=None, description=described("メモ（動作には影響しません）", "Notes; they change nothing")
    )
    version: Annotated[int, Field(ge=1)] = Field(
        default=1,
        description=described(
            "書き手のためのバージョン番号（公開されるバージョンはアップロードごとに CEMS が付けます）",
            "A version number for the writer (CEMS numbers the live versions per upload)",
        ),
    )
    priority: Annotated[int, Field(ge=0, le=1000)] = Field(
        default=100,
        description=described(
            "2 つのシナリオが同じ顧客をエントリーさせようとしたとき、大きいほうが優先されます",
            "Higher wins when two scenarios want the same customer",
        ),
    )
    # None: a scenario of no topic (e.g. an order's follow-up), which only a channel's opt-out stops.
    topic: TopicId | None = Field(
        default=None,
        description=described(
            "配信トピック（CEMS_TOPICS に登録されたもの。例: news, restock, campaigns）。"
            "トピックの配信を停止した顧客には、このシナリオから送りません。"
            "省略時はトピックなし（チャネルごとの配信停止だけが効きます）",
            "The topic of the scenario's messages, one the deployment lists in CEMS_TOPICS (e.g. news, "
            "restock, campaigns). A customer who left the topic gets no send from this scenario. Left "
            "out: no topic (only a channel's own opt-out stops it)",
        ),
    )
    time_zone: str = Field(
        default=DEFAULT_TIME_ZONE,
        description=described(
            "時刻・日付・配信時間帯を読むタイムゾーン（IANA の名前）",
            "The time zone times, dates and the send window are read in (an IANA name)",
        ),
    )
    trigger: Trigger = Field(description=described("エントリーのきっかけ", "What makes a customer enter"))
    audience: Condition | None = Field(
        default=None,
        description=described(
            "エントリーできる顧客の条件（なければ全員）", "Who may enter (everyone when absent)"
        ),
    )
    entry: EntryRules = EntryRules()
    goal: Goal | None = None
    exit: ExitRules = ExitRules()
    # None: the deployment's quiet hours alone decide, or with none set, 09:00-21:00 (SendWindow()).
    send_window: SendWindow | None = Field(
        default=None,
        description=described(
            "配信時間帯。デプロイの静かな時間帯（CEMS_QUIET_HOURS）を狭めるだけで、広げることはできません。"
            "省略時は静かな時間帯の外ならいつでも（設定がなければ 09:00-21:00）",
            "When sends may go; it only narrows the deployment's quiet hours (CEMS_QUIET_HOURS), never "
            "widens them. Left out: any time outside the quiet hours (09:00-21:00 when none are set)",
        ),
    )
    frequency_cap: FrequencyCapRule = FrequencyCapRule()
    tracking: Tracking = Tracking()
    steps: Annotated[list[Step], Field(min_length=1, max_length=MAX_STEPS)] = Field(
        description=described(
            "ジャーニーのステップ。最初のステップから始まり、"
            "`next` のないステップはすぐ下のステップに進みます",
            "The journey's steps: it starts at the first, and a step without `next` goes to the one below it",
        )
    )

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                bilingual(
                    f'"{value}" はタイムゾーンではありません。'
                    "Asia/Tokyo のような IANA の名前を使ってください",
                    f'"{value}" is not a time zone; use an IANA name such as Asia/Tokyo',
                )
            ) from None
        return value

    @model_validator(mode="after")
    def _semantics(self, info: ValidationInfo) -> Scenario:
        if isinstance(info.context, dict) and info.context.get(STRUCTURE_ONLY):
            return self
        # The checks read JSON so that they also run on files whose fields are invalid (validation).
        problems = document_problems(self.model_dump(mode="json", by_alias=True))
        if problems:
            listed = "; ".join(f"{format_path(p.path)}: {p.message}" for p in problems[:10])
            raise ValueError(
                bilingual(f"問題が {len(problems)} 件あります", f"{len(problems)} problem(s)") + f": {listed}"
            )
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

    def channels(self) -> set[Channel]:
        """Every channel a send step of the scenario may send on (engine.send_channels)."""
        out: set[Channel] = set()
        for step in self.steps:
            if isinstance(step, SendStep):
                out.update(step.channels())
        return out


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


for _model in (Branch, Scenario):
    _model.model_rebuild()


# ---------------------------------------------------------------------------------------------- schema


class _ScenarioSchema(GenerateJsonSchema):
    """Writes a default duration or time of day as a scenario file would ("3d", "09:00"): pydantic
    encodes a default without the field's serializer, as ISO 8601 ("P3D"), which the pattern refuses."""

    def encode_default(self, dft: Any) -> Any:
        if isinstance(dft, timedelta):
            return format_duration(dft)
        if isinstance(dft, time):
            return format_local_time(dft)
        return super().encode_default(dft)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files, for editors (committed as schemas/scenario.schema.json)."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation", schema_generator=_ScenarioSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cems.example/schemas/scenario.schema.json",
        **schema,
    }


def json_schema_text() -> str:
    return json.dumps(json_schema(), ensure_ascii=False, indent=2, sort_keys=False) + "\n"

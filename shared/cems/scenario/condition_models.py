"""The conditions of a scenario file: property tests (`where`), and audience and branch conditions.

These are the models (what a file may write); cems.scenario.conditions evaluates them. Conditions
are a union discriminated by `kind`; `all`, `any` and `not` nest them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from cems.activity import EngagementStage
from cems.channels.registry import plugins
from cems.scenario.problems import bilingual
from cems.scenario.rfm import Stage
from cems.scenario.values import SURVEY_QUESTION, EventName, StrictModel, described


class _Model(StrictModel, BaseModel):
    """StrictModel; BaseModel is named again so that linters see a pydantic model (field defaults
    such as `[]` are copied per instance, not shared)."""


# ------------------------------------------------------------------------------------------ comparisons

Op = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains"]
ORDER_OPS = ("gt", "gte", "lt", "lte")


def check_comparison(op: str, value: Any, has_value: bool) -> None:
    """The value an operator needs: none for exists, a list for in/not_in, a number or text to order."""
    if op == "exists":
        if has_value:
            raise ValueError(
                bilingual(
                    "`exists` には `value` を付けません。"
                    '「ない」ことを調べるには {"kind": "not"} で包んでください',
                    '`exists` takes no `value`; to test for absence wrap it in {"kind": "not"}',
                )
            )
        return
    if not has_value:
        raise ValueError(bilingual(f"`{op}` には `value` が必要です", f"`{op}` needs a `value`"))
    if op in ("in", "not_in") and not (isinstance(value, list) and value):
        raise ValueError(
            bilingual(
                f'`{op}` の `value` は空でないリストです（例 ["a", "b"]）',
                f'`{op}` needs a non-empty list as `value`, e.g. ["a", "b"]',
            )
        )
    if op in ORDER_OPS and (isinstance(value, bool) or not isinstance(value, int | float | str)):
        kind = type(value).__name__
        raise ValueError(
            bilingual(
                f"`{op}` で比べられるのは数かテキスト（日付など）で、{kind} ではありません",
                f"`{op}` compares with a number or a text (e.g. a date), not {kind}",
            )
        )


class PropertyCondition(_Model):
    """A test of one property of an event: `{"property": "products.sku", "op": "eq", "value": "X"}`.

    The property is a dotted path into the event's properties; a path through a list (e.g.
    `products.sku`) yields every element's value, and the test holds when any of them passes
    (`ne` and `not_in` hold when none of them is the value)."""

    doc_ja: ClassVar[str] = (
        'イベントのプロパティ 1 つの条件: `{"property": "products.sku", "op": "eq", "value": "X"}`。'
        "プロパティはドット区切りのパスです。リストを通るパス（`products.sku` など）は各要素の値を見て、"
        "どれか 1 つが合えば成り立ちます（`ne` と `not_in` はどれも値と等しくないときに成り立ちます）。"
    )

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
    """Every condition holds."""

    doc_ja: ClassVar[str] = "すべての条件を満たす。"

    kind: Literal["all"]
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=50)]


class AnyCondition(_Model):
    """At least one condition holds."""

    doc_ja: ClassVar[str] = "いずれかの条件を満たす。"

    kind: Literal["any"]
    conditions: Annotated[list[Condition], Field(min_length=1, max_length=50)]


class NotCondition(_Model):
    """The condition does not hold."""

    doc_ja: ClassVar[str] = "条件を満たさない。"

    kind: Literal["not"]
    condition: Condition


class TraitCondition(_Model):
    """A profile trait compared with a value. The trait name is looked up as written first
    (`survey.taste` is one trait), then as a dotted path into nested traits (`address.prefecture`)."""

    doc_ja: ClassVar[str] = (
        "プロフィールの属性（trait）を値と比べる。属性名はまず書いたとおりの名前で探し"
        "（`survey.taste` で 1 つの属性）、なければ入れ子の属性へのドット区切りのパスとして探します"
        "（`address.prefecture`）。"
    )

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

    doc_ja: ClassVar[str] = (
        "CEMS がすべてのプロフィールに持つ購入の事実を数と比べる。購入したことのない顧客には "
        "`days_since_*` の項目がありません（一致するのは `not` の中の `exists` だけです）。"
    )

    kind: Literal["profile"]
    field: ProfileField
    op: Literal["eq", "ne", "gt", "gte", "lt", "lte", "exists"] = "eq"
    value: float | None = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> ProfileCondition:
        check_comparison(self.op, self.value, self.value is not None)
        return self


class BoughtCondition(_Model):
    """The customer bought any of these products, SKUs or categories (ever)."""

    doc_ja: ClassVar[str] = (
        "購入履歴: これらの商品・SKU・カテゴリーのどれかを（これまでに）買ったことがある。"
    )

    kind: Literal["bought"]
    product_ids: Annotated[list[str], Field(max_length=100)] = []
    skus: Annotated[list[str], Field(max_length=100)] = []
    categories: Annotated[list[str], Field(max_length=100)] = []

    @model_validator(mode="after")
    def _something(self) -> BoughtCondition:
        if not (self.product_ids or self.skus or self.categories):
            raise ValueError(
                bilingual(
                    "`product_ids`・`skus`・`categories` のどれかを 1 つ以上書いてください",
                    "name at least one of `product_ids`, `skus` or `categories`",
                )
            )
        return self


class SurveyCondition(_Model):
    """The customer answered a survey question (any answer, or one of `answers`)."""

    doc_ja: ClassVar[str] = "アンケート回答: 質問に答えた（回答は何でも、または `answers` のどれか）。"

    kind: Literal["survey"]
    question: Annotated[str, Field(pattern=SURVEY_QUESTION.pattern)]
    answers: Annotated[list[str], Field(min_length=1, max_length=50)] | None = None


class EventCountCondition(_Model):
    """The customer did `event` (matching `where`) at least `at_least` and at most `at_most` times
    within the last `within_days` days (or the whole kept history)."""

    doc_ja: ClassVar[str] = (
        "行動履歴: 直近 `within_days` 日（なければ保存している全期間）に、`where` に合う `event` を "
        "`at_least` 回以上 `at_most` 回以下した。"
    )

    kind: Literal["event_count"]
    event: EventName
    where: Where = []
    at_least: Annotated[int, Field(ge=0)] = 1
    at_most: Annotated[int, Field(ge=0)] | None = None
    within_days: Annotated[int, Field(ge=1, le=395)] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> EventCountCondition:
        if self.at_most is not None and self.at_most < self.at_least:
            raise ValueError(
                bilingual(
                    f"`at_most`（{self.at_most}）が `at_least`（{self.at_least}）より小さくなっています",
                    f"`at_most` ({self.at_most}) is below `at_least` ({self.at_least})",
                )
            )
        return self


# A `reachable` condition's channel: a registered channel's name, or `any` (built from the registry,
# so the JSON Schema lists them).
ANY_CHANNEL = "any"
if TYPE_CHECKING:
    ReachableOn = str
else:
    ReachableOn = Literal[(*(p.channel.value for p in plugins()), ANY_CHANNEL)]


class ReachableCondition(_Model):
    """The customer can be sent to on this channel now (reachable and consenting)."""

    doc_ja: ClassVar[str] = "配信可能: いまこのチャネルで送れる（届く手段があり、同意している）。"

    kind: Literal["reachable"]
    channel: ReachableOn


class ScoreRange(_Model):
    """A range of RFM scores, 1 to 5, both ends included."""

    doc_ja: ClassVar[str] = "RFM スコアの範囲（1〜5、両端を含む）。"

    min: Annotated[int, Field(ge=1, le=5)] = 1
    max: Annotated[int, Field(ge=1, le=5)] = 5

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min > self.max:
            raise ValueError(
                bilingual(
                    f"`min`（{self.min}）が `max`（{self.max}）より大きくなっています",
                    f"`min` ({self.min}) is above `max` ({self.max})",
                )
            )
        return self


class RfmCondition(_Model):
    """RFM scores (1-5 each, cems.scenario.rfm) within ranges; never true for a customer who has
    not bought."""

    doc_ja: ClassVar[str] = (
        "RFM スコア（それぞれ 1〜5、cems.scenario.rfm）が範囲内にある。"
        "購入したことのない顧客では成り立ちません。"
    )

    kind: Literal["rfm"]
    recency: ScoreRange | None = None
    frequency: ScoreRange | None = None
    monetary: ScoreRange | None = None

    @model_validator(mode="after")
    def _something(self) -> RfmCondition:
        if self.recency is None and self.frequency is None and self.monetary is None:
            raise ValueError(
                bilingual(
                    "`recency`・`frequency`・`monetary` のどれかを 1 つ以上書いてください",
                    "give at least one of `recency`, `frequency` or `monetary`",
                )
            )
        return self


class LifecycleCondition(_Model):
    """The customer's lifecycle stage (cems.scenario.rfm) is one of `stages`."""

    doc_ja: ClassVar[str] = "ライフサイクル: 顧客のステージ（cems.scenario.rfm）が `stages` のどれかである。"

    kind: Literal["lifecycle"]
    stages: Annotated[list[Stage], Field(min_length=1)]


# The stages by name (values are strict: a scenario file writes a name, not an enum member).
if TYPE_CHECKING:
    EngagementStageName = str
else:
    EngagementStageName = Literal[tuple(s.value for s in EngagementStage)]


class EngagementStageCondition(_Model):
    """The customer's engagement stage (cems.activity: from their opens, clicks, replies,
    impressions and orders, not from orders alone) is one of `stages`."""

    doc_ja: ClassVar[str] = (
        "エンゲージメント: 顧客のエンゲージメントステージ（開封・クリック・返信・表示と購入から。"
        "cems.activity）が `stages` のどれかである。"
    )

    kind: Literal["engagement_stage"]
    stages: Annotated[
        list[EngagementStageName],
        Field(
            min_length=1,
            description=described(
                "active（30 日以内に反応か購入）・cooling（30〜89 日前）・dormant（90 日以上前）・"
                "unengaged（反応も購入もない）",
                "active (engaged or bought within 30 days), cooling (30-89 days ago), dormant (90 days or "
                "more ago), unengaged (never engaged nor bought)",
            ),
        ),
    ]


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
    | LifecycleCondition
    | EngagementStageCondition,
    Field(discriminator="kind"),
]


for _model in (AllCondition, AnyCondition, NotCondition):
    _model.model_rebuild()

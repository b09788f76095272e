"""A scenario's report from its counter cells: the funnel per step and variant, conversion of the
treatment group and the holdout, the lift and its interval, revenue.

How cells are read (what the runner and senders count, docs/reports.md):
- scenario level (step None), variant None: `enrolled` in the treatment cell (holdout False) is the
  treatment group; the holdout cell's `held_out` (or `enrolled`, whichever is larger, so counting
  either or both works) is the holdout group;
- scenario level with a variant: customers who entered that variant at a split (`enrolled` /
  `held_out`) and their conversions;
- `converted` and `revenue` at scenario level, any variant, add up to the group's conversions:
  a customer who converts before reaching a split is counted with variant None;
- step level: sends and their outcomes (sent ... clicked) per step, variant and channel; a holdout
  cell at a step counts the sends held back there;
- `converted` and `revenue` since issue 12 sit in the cell of the last send before the conversion
  (its step, variant and channel): the scenario level only for a holdout customer or one who
  converted before any send; so a group's conversions are the sum over every cell, any step;
- every cell counted since issue 12 has a day (Tokyo): the per-day series; older cells have none.
The treatment group is everyone enrolled and not held out (intention to treat): a customer whose
send was capped or failed stays in it, so the lift measures the scenario as it ran.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Literal, Never

from pydantic import BaseModel, ConfigDict, PlainSerializer

from cems import clock
from cems.channels.registry import plugins
from cems.models import Channel
from cems.reports.counters import REVENUE, Metric, ReportCell
from cems.reports.stats import Comparison, compare, ratio
from cems.scenario.model import (
    BranchStep,
    EndStep,
    RichMenuStep,
    SendStep,
    SetTraitStep,
    SplitStep,
    Step,
    WaitForEventStep,
    WaitStep,
)

if TYPE_CHECKING:
    from cems.ports import ReportReader, ScenarioReader

CONFIDENCE = 0.95
# Revenue is kept as Decimal and answered as a JSON number (yen amounts; no float sums on the way).
Money = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]
STEP_METRICS: tuple[Metric, ...] = (
    Metric.SENT,
    Metric.DELIVERED,
    Metric.FAILED,
    Metric.SUPPRESSED,
    Metric.CAPPED,
    Metric.DEFERRED,
    Metric.OPENED,
    Metric.CLICKED,
    Metric.CHOSEN_BY_ENGAGEMENT,
    Metric.CHOSEN_BY_DEFAULT,
)
Counts = dict[str, int | Decimal]
# Counted per step with no channel, reported as `StepJourneys`, not as step rows.
JOURNEY_METRICS = frozenset({Metric.ENTERED.value, Metric.WAIT_BEGUN.value, Metric.WAIT_ENDED.value})

# IMP (sent) per channel, and the figures a channel cannot report per message with the reason (None
# with this reason on a report, never 0): each channel's plugin says (cems.channels.registry).
IMP_DEFINITION: dict[str, str] = {p.channel.value: p.imp_definition for p in plugins()}
NOT_MEASURED: dict[str, dict[str, str]] = {p.channel.value: dict(p.not_measured) for p in plugins()}
# How conversions are attributed (ConversionShare.attributed_to), besides a channel's name.
NO_MESSAGE = "no_message"  # treatment, converted before the scenario sent them anything
HOLDOUT = "holdout"  # the holdout: sent nothing, so no channel
NOT_RECORDED = "not_recorded"  # counted before issue 12, when conversions kept no channel


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interval(_Model):
    low: float
    high: float


class Lift(_Model):
    """Treatment against holdout. `absolute`: difference of the conversion rates (percentage points
    as a fraction); `relative`: ratio - 1. None (with a note) where it cannot be computed."""

    treatment_rate: float | None
    holdout_rate: float | None
    absolute: float | None
    absolute_ci: Interval | None
    relative: float | None
    relative_ci: Interval | None
    p_value: float | None
    confidence: float = CONFIDENCE
    notes: list[str] = []

    @classmethod
    def of(cls, comparison: Comparison) -> Lift:
        def interval(bounds: tuple[float, float] | None) -> Interval | None:
            return None if bounds is None else Interval(low=bounds[0], high=bounds[1])

        return cls(
            treatment_rate=comparison.treatment_rate,
            holdout_rate=comparison.control_rate,
            absolute=comparison.absolute_lift,
            absolute_ci=interval(comparison.absolute_ci),
            relative=comparison.relative_lift,
            relative_ci=interval(comparison.relative_ci),
            p_value=comparison.p_value,
            confidence=comparison.confidence,
            notes=comparison.notes,
        )


class Group(_Model):
    """Customers of one group (treatment or holdout), all variants or one."""

    enrolled: int
    converted: int
    conversion_rate: float | None
    revenue: Money
    revenue_per_enrolled: float | None


class VariantReport(_Model):
    """One A/B variant: those who entered it, and its lift over the holdout customers who entered
    the same variant (they passed the same split, so they are alike); over the whole holdout when
    no holdout customer reached the split."""

    variant: str
    treatment: Group
    holdout: Group | None
    compared_with: Literal["variant_holdout", "holdout"]
    lift: Lift


class StepRow(_Model):
    """One step, variant and channel: what happened to its sends. Rates are per sent (IMP; None:
    nothing sent). A figure the channel cannot report (LINE's delivery and opens) is None, its
    rate too, with the reason in `not_measured`. `channel` None: facts of the step with no channel
    (held back, capped, deferred, suppressed before a multi-channel step chose one) or sends counted
    before issue 12 of a step that may send on several channels. `converted`: conversions whose
    last message before converting was this step's (on this channel)."""

    step_id: str
    name: str | None = None
    type: str | None = None
    variant: str | None
    channel: str | None = None
    held_out: int
    sent: int
    delivered: int | None
    failed: int
    suppressed: int
    capped: int
    deferred: int
    opened: int | None
    clicked: int
    converted: int
    revenue: Money = Decimal(0)
    delivery_rate: float | None
    open_rate: float | None
    click_rate: float | None
    not_measured: dict[str, str] = {}
    # A `best` step's sends on this channel by why it was chosen: the customer's engagement, or the
    # default order (no engagement in the window, or a tie). Zero for other steps.
    chosen_by_engagement: int = 0
    chosen_by_default: int = 0


class StepJourneys(_Model):
    """Journeys at one step and variant (treatment and holdout together, as both travel the steps):
    how many arrived there, and how many wait there now (a wait, a wait for an event, or a send
    held for its window or its cap). Counted from issue 12 on: journeys that arrived before are
    not in `entered`, and one waiting since before is not in `waiting`."""

    step_id: str
    variant: str | None
    entered: int
    waiting: int


class ChannelRow(_Model):
    """One channel's sends and outcomes over every step and variant, and the conversions whose last
    message came on it. `imp`: what a count of `sent` means on this channel (IMP_DEFINITION)."""

    channel: str
    imp: str | None
    sent: int
    delivered: int | None
    opened: int | None
    clicked: int
    converted: int
    revenue: Money
    delivery_rate: float | None
    open_rate: float | None
    click_rate: float | None
    not_measured: dict[str, str] = {}


class ConversionShare(_Model):
    """A part of all conversions (treatment and holdout): the shares add up to the total.
    `attributed_to`: a channel (the last message before converting came on it), `no_message`,
    `holdout` or `not_recorded` (counted before issue 12)."""

    attributed_to: str
    converted: int
    revenue: Money


class DayRow(_Model):
    """One Tokyo day: what was counted on it (`day` None: counted before issue 12, no day kept).
    `enrolled`: customers who entered (treatment and holdout); `converted`: the treatment's
    conversions, `holdout_converted` the holdout's. `delivered` counts mail only (LINE reports
    none): None, with the reason, when every send counted that day went by LINE."""

    day: str | None
    enrolled: int
    sent: int
    delivered: int | None
    clicked: int
    converted: int
    holdout_converted: int
    not_measured: dict[str, str] = {}


class ScenarioReport(_Model):
    scenario_id: str
    name: str | None
    state: str | None  # active / stopped; None when the scenario is not in JourneysTable any more
    active_version: int | None
    latest_version: int | None
    version: int | None  # the version reported; None: every version added together
    versions: list[int]  # versions that counted something
    generated_at: datetime
    goal: str | None  # e.g. "Order Completed within 7d"
    enrolled: int  # treatment + holdout
    held_out: int
    treatment: Group
    holdout: Group
    lift: Lift
    variants: list[VariantReport]
    steps: list[StepRow]
    journeys: list[StepJourneys] = []
    channels: list[ChannelRow] = []
    conversions: list[ConversionShare] = []
    days: list[DayRow] = []
    notes: list[str]


class ScenarioListItem(_Model):
    scenario_id: str
    name: str | None
    state: str | None
    active_version: int | None
    latest_version: int | None
    enrolled: int
    held_out: int
    treatment_rate: float | None
    holdout_rate: float | None
    absolute_lift: float | None
    p_value: float | None
    revenue: Money


@dataclass(frozen=True)
class ScenarioMeta:
    """What JourneysTable says about the scenario itself (None fields: not known)."""

    name: str | None = None
    state: str | None = None
    active_version: int | None = None
    latest_version: int | None = None
    goal: str | None = None
    # step id → (name, type), in the scenario's order
    steps: tuple[tuple[str, str | None, str], ...] = ()
    # send step id → the one channel it sends on (steps that may send on several are left out): the
    # channel of its cells counted before issue 12, which kept none
    step_channels: tuple[tuple[str, str], ...] = ()


def _int(counts: Counts, metric: Metric) -> int:
    return int(counts.get(metric.value, 0))


def _revenue(counts: Counts) -> Decimal:
    return Decimal(counts.get(REVENUE, 0))


def _sum(into: dict[str, int | Decimal], counts: Counts) -> None:
    for name, value in counts.items():
        into[name] = into.get(name, 0) + value


def _group(enrolled: int, converted: int, revenue: Decimal) -> Group:
    return Group(
        enrolled=enrolled,
        converted=converted,
        conversion_rate=ratio(converted, enrolled),
        revenue=revenue,
        revenue_per_enrolled=(float(revenue / enrolled) if enrolled else None),
    )


def _lift(treatment: Group, holdout: Group) -> Lift:
    x1, n1, x0, n0 = treatment.converted, treatment.enrolled, holdout.converted, holdout.enrolled
    if x1 > n1 or x0 > n0:
        # Counters out of step (e.g. conversions counted for entries that were not): say so.
        return Lift(
            treatment_rate=None,
            holdout_rate=None,
            absolute=None,
            absolute_ci=None,
            relative=None,
            relative_ci=None,
            p_value=None,
            notes=[f"more conversions than customers counted ({x1}/{n1}, {x0}/{n0}): no lift"],
        )
    return Lift.of(compare(x1, n1, x0, n0, CONFIDENCE))


def _group_size(counts: Counts, holdout: bool) -> int:
    if holdout:
        return max(_int(counts, Metric.HELD_OUT), _int(counts, Metric.ENROLLED))
    return _int(counts, Metric.ENROLLED)


def build_report(
    scenario_id: str,
    cells: Iterable[tuple[ReportCell, Counts]],
    *,
    version: int | None = None,
    meta: ScenarioMeta | None = None,
    at: datetime | None = None,
) -> ScenarioReport:
    """The report of `scenario_id` from its cells (`ReportReader.cells`), of one version or of
    every version added together."""
    meta = meta or ScenarioMeta()
    cells = list(cells)
    versions = sorted({cell.version for cell, _ in cells})
    chosen = [(c, n) for c, n in cells if version is None or c.version == version]

    # (variant, holdout) → counts, scenario level; (step, variant, holdout, channel) → counts, step
    # level; (variant, holdout) → conversions and revenue wherever they were counted
    scenario_level: dict[tuple[str | None, bool], Counts] = defaultdict(dict)
    step_level: dict[tuple[str, str | None, bool, str | None], Counts] = defaultdict(dict)
    conversions: dict[tuple[str | None, bool], Counts] = defaultdict(dict)
    # (step, variant) → entered and waiting counts, kept out of the step rows (they have no channel)
    at_step: dict[tuple[str, str | None], Counts] = defaultdict(dict)
    step_channel = dict(meta.step_channels)
    for cell, counts in chosen:
        if cell.step_id is None:
            _sum(scenario_level[(cell.variant, cell.holdout)], counts)
        else:
            journeys = {k: v for k, v in counts.items() if k in JOURNEY_METRICS}
            if journeys:
                _sum(at_step[(cell.step_id, cell.variant)], journeys)
            rest = {k: v for k, v in counts.items() if k not in JOURNEY_METRICS}
            if rest or not journeys:
                channel = cell.channel or step_channel.get(cell.step_id)
                _sum(step_level[(cell.step_id, cell.variant, cell.holdout, channel)], rest)
        _sum(conversions[(cell.variant, cell.holdout)], _conversion_counts(counts))

    def totals(holdout: bool) -> Group:
        enrolled = _group_size(scenario_level.get((None, holdout), {}), holdout)
        converted, revenue = 0, Decimal(0)
        for (_, h), counts in conversions.items():
            if h == holdout:
                converted += _int(counts, Metric.CONVERTED)
                revenue += _revenue(counts)
        return _group(enrolled, converted, revenue)

    treatment, holdout = totals(False), totals(True)
    notes: list[str] = []
    if not chosen:
        notes.append("nothing counted yet for this version" if version is not None else "nothing counted yet")

    variants: list[VariantReport] = []
    for name in sorted({v for v, _ in scenario_level if v is not None} | {v for v, _ in conversions if v}):
        counts = scenario_level.get((name, False), {})
        converted = conversions.get((name, False), {})
        group = _group(_group_size(counts, False), _int(converted, Metric.CONVERTED), _revenue(converted))
        held = scenario_level.get((name, True))
        held_converted = conversions.get((name, True), {})
        held_group = (
            _group(_group_size(held, True), _int(held_converted, Metric.CONVERTED), _revenue(held_converted))
            if held is not None
            else None
        )
        if held_group is not None and held_group.enrolled > 0:
            variants.append(
                VariantReport(
                    variant=name,
                    treatment=group,
                    holdout=held_group,
                    compared_with="variant_holdout",
                    lift=_lift(group, held_group),
                )
            )
        else:
            variants.append(
                VariantReport(
                    variant=name,
                    treatment=group,
                    holdout=held_group,
                    compared_with="holdout",
                    lift=_lift(group, holdout),
                )
            )
        if group.enrolled == 0 and group.converted > 0:
            notes.append(f"variant {name}: conversions but no entries counted (no rate)")

    steps = _step_rows(step_level, meta)
    notes += [
        f"step {row.step_id}: sends counted before issue 12 kept no channel; delivered and opened "
        "cover its mail only"
        for row in steps
        if row.channel is None and row.sent > 0
    ]
    return ScenarioReport(
        scenario_id=scenario_id,
        name=meta.name,
        state=meta.state,
        active_version=meta.active_version,
        latest_version=meta.latest_version,
        version=version,
        versions=versions,
        generated_at=at or clock.now(),
        goal=meta.goal,
        enrolled=treatment.enrolled + holdout.enrolled,
        held_out=holdout.enrolled,
        treatment=treatment,
        holdout=holdout,
        lift=_lift(treatment, holdout),
        variants=variants,
        steps=steps,
        journeys=_journey_rows(at_step, meta),
        channels=_channel_rows(steps),
        conversions=_conversion_shares(chosen),
        days=_day_rows(chosen, step_channel),
        notes=notes,
    )


def _conversion_counts(counts: Counts) -> Counts:
    return {name: value for name, value in counts.items() if name in (Metric.CONVERTED.value, REVENUE)}


def _measured(channel: str | None, name: str, value: int) -> int | None:
    """`value`, or None where `channel` cannot report `name` (NOT_MEASURED): never a zero."""
    return None if name in NOT_MEASURED.get(channel or "", {}) else value


def _rate(part: int | None, sent: int) -> float | None:
    return None if part is None else ratio(part, sent)


def _step_rows(
    step_level: dict[tuple[str, str | None, bool, str | None], Counts],
    meta: ScenarioMeta,
) -> list[StepRow]:
    order = {step_id: i for i, (step_id, _, _) in enumerate(meta.steps)}
    described = {step_id: (name, kind) for step_id, name, kind in meta.steps}
    keys = sorted(
        {(step, variant, channel) for step, variant, _, channel in step_level},
        key=lambda k: (
            order.get(k[0], len(order)),
            k[0],
            k[1] is not None,
            k[1] or "",
            k[2] is None,
            k[2] or "",
        ),
    )
    rows: list[StepRow] = []
    for step, variant, channel in keys:
        sent_counts = step_level.get((step, variant, False, channel), {})
        held = step_level.get((step, variant, True, channel), {})
        values = {m.value: _int(sent_counts, m) for m in STEP_METRICS}
        sent = values["sent"]
        delivered = _measured(channel, "delivered", values.pop("delivered"))
        opened = _measured(channel, "opened", values.pop("opened"))
        name, kind = described.get(step, (None, None))
        rows.append(
            StepRow(
                step_id=step,
                name=name,
                type=kind,
                variant=variant,
                channel=channel,
                held_out=max(_int(held, Metric.HELD_OUT), _int(held, Metric.ENROLLED)),
                delivered=delivered,
                opened=opened,
                converted=_int(sent_counts, Metric.CONVERTED),
                revenue=_revenue(sent_counts),
                delivery_rate=_rate(delivered, sent),
                open_rate=_rate(opened, sent),
                click_rate=ratio(values["clicked"], sent),
                not_measured=NOT_MEASURED.get(channel or "", {}),
                **values,
            )
        )
    return rows


def _journey_rows(at_step: dict[tuple[str, str | None], Counts], meta: ScenarioMeta) -> list[StepJourneys]:
    order = {step_id: i for i, (step_id, _, _) in enumerate(meta.steps)}
    rows = []
    for step, variant in sorted(at_step, key=lambda k: (order.get(k[0], len(order)), k[0], k[1] or "")):
        counts = at_step[(step, variant)]
        # A wait that began before these counts existed can end after: never below zero.
        waiting = max(_int(counts, Metric.WAIT_BEGUN) - _int(counts, Metric.WAIT_ENDED), 0)
        entered = _int(counts, Metric.ENTERED)
        rows.append(StepJourneys(step_id=step, variant=variant, entered=entered, waiting=waiting))
    return rows


def _channel_rows(steps: list[StepRow]) -> list[ChannelRow]:
    """The step rows of each channel added up (rows without a channel are left out: their sends'
    channel is not known)."""
    rows: list[ChannelRow] = []
    for channel in sorted({row.channel for row in steps if row.channel is not None}):
        of = [row for row in steps if row.channel == channel]
        sent = sum(row.sent for row in of)
        delivered = _measured(channel, "delivered", sum(row.delivered or 0 for row in of))
        opened = _measured(channel, "opened", sum(row.opened or 0 for row in of))
        clicked = sum(row.clicked for row in of)
        rows.append(
            ChannelRow(
                channel=channel,
                imp=IMP_DEFINITION.get(channel),
                sent=sent,
                delivered=delivered,
                opened=opened,
                clicked=clicked,
                converted=sum(row.converted for row in of),
                revenue=sum((row.revenue for row in of), Decimal(0)),
                delivery_rate=_rate(delivered, sent),
                open_rate=_rate(opened, sent),
                click_rate=ratio(clicked, sent),
                not_measured=NOT_MEASURED.get(channel, {}),
            )
        )
    return rows


def _attribution(cell: ReportCell) -> str:
    if cell.holdout:
        return HOLDOUT
    if cell.channel is not None:
        return cell.channel
    # No channel: before any send, unless the cell is older than channels in cells (no day).
    return NO_MESSAGE if cell.day is not None else NOT_RECORDED


def _conversion_shares(cells: list[tuple[ReportCell, Counts]]) -> list[ConversionShare]:
    """Every conversion in exactly one share, so the shares add up to the groups' conversions."""
    shares: dict[str, Counts] = defaultdict(dict)
    for cell, counts in cells:
        if Metric.CONVERTED.value in counts or REVENUE in counts:
            _sum(shares[_attribution(cell)], _conversion_counts(counts))
    first = [c.value for c in Channel] + [NO_MESSAGE, HOLDOUT, NOT_RECORDED]
    return [
        ConversionShare(
            attributed_to=name, converted=_int(shares[name], Metric.CONVERTED), revenue=_revenue(shares[name])
        )
        for name in sorted(shares, key=lambda n: (first.index(n) if n in first else len(first), n))
    ]


# A per-day series is filled in between its first and last day (a line needs its zero days), up to
# this many days; a longer gap is left as it is.
MAX_FILLED_DAYS = 400


def _day_rows(cells: list[tuple[ReportCell, Counts]], step_channel: dict[str, str]) -> list[DayRow]:
    by_day: dict[str | None, Counts] = defaultdict(dict)
    entered: dict[str | None, int] = defaultdict(int)
    held_converted: dict[str | None, int] = defaultdict(int)
    mailed: set[str | None] = set()
    for cell, counts in cells:
        if cell.holdout:
            held_converted[cell.day] += _int(counts, Metric.CONVERTED)
            counts = {k: v for k, v in counts.items() if k != Metric.CONVERTED.value}
        _sum(by_day[cell.day], counts)
        if cell.step_id is None and cell.variant is None:  # entries at a split are not new customers
            entered[cell.day] += _group_size(counts, cell.holdout)
        channel = cell.channel or (step_channel.get(cell.step_id) if cell.step_id else None)
        reports_delivery = channel is None or "delivered" not in NOT_MEASURED.get(channel, {})
        if reports_delivery and cell.step_id is not None and _int(counts, Metric.SENT):
            mailed.add(cell.day)  # sends on a channel that may report deliveries
        if _int(counts, Metric.DELIVERED):
            mailed.add(cell.day)
    dated = sorted(day for day in by_day if day is not None)
    if dated:
        first, last = date.fromisoformat(dated[0]), date.fromisoformat(dated[-1])
        if (last - first).days <= MAX_FILLED_DAYS:
            for n in range((last - first).days + 1):
                by_day.setdefault((first + timedelta(days=n)).isoformat(), {})
    not_measured = {
        "delivered": "計測なし / not measured: この日の送信は LINE のみ / only LINE sends this day"
    }
    rows = []
    for day in sorted(d for d in by_day if d is not None) + ([None] if None in by_day else []):
        counts = by_day[day]
        measured = day in mailed or not _int(counts, Metric.SENT)
        rows.append(
            DayRow(
                day=day,
                enrolled=entered[day],
                sent=_int(counts, Metric.SENT),
                delivered=_int(counts, Metric.DELIVERED) if measured else None,
                clicked=_int(counts, Metric.CLICKED),
                converted=_int(counts, Metric.CONVERTED),
                holdout_converted=held_converted[day],
                not_measured={} if measured else not_measured,
            )
        )
    return rows


def reported_type(step: Step) -> str:
    """A step's type as its report rows name it. Each arm says what is counted at that type of step,
    so a new type in the Step union (mypy names this match) has its counters decided, not forgotten;
    one that slipped past validation is refused loudly."""
    match step:
        case SendStep():
            return step.type  # sends and their outcomes; the holdout's sends held back (held_out)
        case RichMenuStep():
            return step.type  # the holdout's switches held back (held_out)
        case SplitStep():
            return step.type  # each variant's entrants, counted at the scenario level per variant
        case WaitStep() | WaitForEventStep() | BranchStep() | SetTraitStep() | EndStep():
            return step.type  # nothing counted: the funnel passes through
        case _:
            raise _unknown_step(step)


def _unknown_step(step: Never) -> ValueError:
    """The error for a step of no known type (typed Never: mypy names a type the match lacks)."""
    kind = getattr(step, "type", type(step).__name__)
    return ValueError(
        f"step {getattr(step, 'id', '?')!r}: the report does not know steps of type {kind!r}; "
        "decide what it counts in cems.reports.report.reported_type"
    )


def list_item(report: ScenarioReport) -> ScenarioListItem:
    return ScenarioListItem(
        scenario_id=report.scenario_id,
        name=report.name,
        state=report.state,
        active_version=report.active_version,
        latest_version=report.latest_version,
        enrolled=report.enrolled,
        held_out=report.held_out,
        treatment_rate=report.treatment.conversion_rate,
        holdout_rate=report.holdout.conversion_rate,
        absolute_lift=report.lift.absolute,
        p_value=report.lift.p_value,
        revenue=report.treatment.revenue + report.holdout.revenue,
    )


class UnknownScenario(LookupError):
    """No such scenario (never uploaded and nothing counted), or no such version of it."""


class ReportService:
    """Reports as the admin API answers them: counters plus what ScenarioStore knows."""

    def __init__(self, counters: ReportReader, scenarios: ScenarioReader) -> None:
        self.counters = counters
        self.scenarios = scenarios

    def meta(self, scenario_id: str, version: int | None = None) -> ScenarioMeta | None:
        state = self.scenarios.active(scenario_id)
        if state is None:
            return None
        stored = self.scenarios.version(scenario_id, version or state.version)
        if stored is None and version is not None:
            stored = self.scenarios.version(scenario_id, state.version)
        scenario = stored.scenario if stored is not None else None
        goal = None
        if scenario is not None and scenario.goal is not None:
            goal = f"{scenario.goal.event} within {_duration_text(scenario.goal.within)}"
        return ScenarioMeta(
            name=scenario.name if scenario else None,
            state=state.state,
            active_version=state.version,
            latest_version=state.latest,
            goal=goal,
            steps=tuple((s.id, s.name, reported_type(s)) for s in scenario.steps) if scenario else (),
            step_channels=_step_channels(scenario.steps) if scenario else (),
        )

    def report(self, scenario_id: str, version: int | None = None) -> ScenarioReport:
        """Raises UnknownScenario for a scenario (or version) that was never stored nor counted."""
        cells = self.counters.cells(scenario_id)
        meta = self.meta(scenario_id, version)
        if meta is None and not cells:
            raise UnknownScenario(f"no scenario {scenario_id!r}")
        if version is not None and not any(c.version == version for c, _ in cells):
            latest = meta.latest_version if meta else None
            if latest is None or not 1 <= version <= latest:
                raise UnknownScenario(f"scenario {scenario_id!r} has no version {version}")
        return build_report(scenario_id, cells, version=version, meta=meta)

    def scenario_ids(self) -> list[str]:
        """Active scenarios (SCENARIOS) and every scenario that counted something (RPTINDEX)."""
        active = {s.scenario_id for s in self.scenarios.active_summaries()}
        return sorted(active | set(self.counters.scenario_ids()))

    def list(self) -> list[ScenarioListItem]:
        return [list_item(self.report(scenario_id)) for scenario_id in self.scenario_ids()]


def _step_channels(steps: Iterable[Step]) -> tuple[tuple[str, str], ...]:
    found = []
    for step in steps:
        if isinstance(step, SendStep) and len(channels := step.channels()) == 1:
            found.append((step.id, channels[0].value))
    return tuple(found)


def _duration_text(value: object) -> str:
    if isinstance(value, timedelta):
        if value % timedelta(days=1) == timedelta(0):
            return f"{value.days}d"
        if value % timedelta(hours=1) == timedelta(0):
            return f"{int(value.total_seconds() // 3600)}h"
        return f"{int(value.total_seconds() // 60)}m"
    return str(value)


def step_counts(report: ScenarioReport) -> dict[str, dict[str, int]]:
    """Each step's counts as the scenario diagram shows them over its box (cems.console.diagram):
    entered, waiting there now, sent, suppressed and converted, every variant and channel added up.
    Every step that counted anything is there, with a zero for what it did not count."""
    counts: dict[str, dict[str, int]] = {}

    def of(step_id: str) -> dict[str, int]:
        return counts.setdefault(
            step_id, {"entered": 0, "waiting": 0, "sent": 0, "suppressed": 0, "converted": 0}
        )

    for at in report.journeys:
        of(at.step_id)["entered"] += at.entered
        of(at.step_id)["waiting"] += at.waiting
    for row in report.steps:
        step = of(row.step_id)
        step["sent"] += row.sent
        step["suppressed"] += row.suppressed
        step["converted"] += row.converted
    return counts

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
- step level: sends and their outcomes (sent ... clicked) per step and variant; a holdout cell at a
  step counts the sends held back there.
The treatment group is everyone enrolled and not held out (intention to treat): a customer whose
send was capped or failed stays in it, so the lift measures the scenario as it ran.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Literal, Never

from pydantic import BaseModel, ConfigDict, PlainSerializer

from cems import clock
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
)
Counts = dict[str, int | Decimal]


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
    """One step (and variant): what happened to its sends. Rates are per sent (None: nothing sent)."""

    step_id: str
    name: str | None = None
    type: str | None = None
    variant: str | None
    held_out: int
    sent: int
    delivered: int
    failed: int
    suppressed: int
    capped: int
    deferred: int
    opened: int
    clicked: int
    converted: int
    delivery_rate: float | None
    open_rate: float | None
    click_rate: float | None


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

    # (variant, holdout) → counts, scenario level; (step, variant, holdout) → counts, step level
    scenario_level: dict[tuple[str | None, bool], Counts] = defaultdict(dict)
    step_level: dict[tuple[str, str | None, bool], Counts] = defaultdict(dict)
    for cell, counts in chosen:
        if cell.step_id is None:
            _sum(scenario_level[(cell.variant, cell.holdout)], counts)
        else:
            _sum(step_level[(cell.step_id, cell.variant, cell.holdout)], counts)

    def totals(holdout: bool) -> Group:
        enrolled = _group_size(scenario_level.get((None, holdout), {}), holdout)
        converted, revenue = 0, Decimal(0)
        for (_, h), counts in scenario_level.items():
            if h == holdout:
                converted += _int(counts, Metric.CONVERTED)
                revenue += _revenue(counts)
        return _group(enrolled, converted, revenue)

    treatment, holdout = totals(False), totals(True)
    notes: list[str] = []
    if not chosen:
        notes.append("nothing counted yet for this version" if version is not None else "nothing counted yet")

    variants: list[VariantReport] = []
    for name in sorted({v for v, _ in scenario_level if v is not None}):
        counts = scenario_level.get((name, False), {})
        group = _group(_group_size(counts, False), _int(counts, Metric.CONVERTED), _revenue(counts))
        held = scenario_level.get((name, True))
        held_group = (
            _group(_group_size(held, True), _int(held, Metric.CONVERTED), _revenue(held))
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

    steps = _step_rows(step_level, scenario_level, meta)
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
        notes=notes,
    )


def _step_rows(
    step_level: dict[tuple[str, str | None, bool], Counts],
    scenario_level: dict[tuple[str | None, bool], Counts],
    meta: ScenarioMeta,
) -> list[StepRow]:
    order = {step_id: i for i, (step_id, _, _) in enumerate(meta.steps)}
    described = {step_id: (name, kind) for step_id, name, kind in meta.steps}
    keys = sorted(
        {(step, variant) for step, variant, _ in step_level},
        key=lambda k: (order.get(k[0], len(order)), k[0], k[1] is not None, k[1] or ""),
    )
    rows: list[StepRow] = []
    for step, variant in keys:
        sent_counts = step_level.get((step, variant, False), {})
        held = step_level.get((step, variant, True), {})
        values = {m.value: _int(sent_counts, m) for m in STEP_METRICS}
        sent = values["sent"]
        name, kind = described.get(step, (None, None))
        rows.append(
            StepRow(
                step_id=step,
                name=name,
                type=kind,
                variant=variant,
                held_out=max(_int(held, Metric.HELD_OUT), _int(held, Metric.ENROLLED)),
                converted=_int(sent_counts, Metric.CONVERTED),
                delivery_rate=ratio(values["delivered"], sent),
                open_rate=ratio(values["opened"], sent),
                click_rate=ratio(values["clicked"], sent),
                **values,
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


def _duration_text(value: object) -> str:
    if isinstance(value, timedelta):
        if value % timedelta(days=1) == timedelta(0):
            return f"{value.days}d"
        if value % timedelta(hours=1) == timedelta(0):
            return f"{int(value.total_seconds() // 3600)}h"
        return f"{int(value.total_seconds() // 60)}m"
    return str(value)

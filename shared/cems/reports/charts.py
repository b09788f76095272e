"""A scenario report's charts for the console: the same SVG the HTML report draws (cems.reports.html),
each chart as its own SVG document beside the report's figures, so the console's page puts them in as
drawings (checked, never as HTML) and writes the headings and tables around them from the report.

One drawing of each chart for both: a chart read wrong in one place (a LINE figure drawn as 0) is
fixed for both by fixing html.py.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from cems.reports.html import (
    channel_name,
    channel_svg,
    conversions_svg,
    days_svg,
    funnel_svg,
    has_dated_days,
    lift_svg,
)
from cems.reports.report import ScenarioReport


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VariantChart(_Model):
    """One A/B variant's treatment vs holdout (its own holdout, or the whole one: `compared_with`)."""

    variant: str
    svg: str


class StepChart(_Model):
    """The funnel of one step row: `report.steps[i]` is drawn by `steps[i]` (the keys repeat it)."""

    step_id: str
    variant: str | None
    channel: str | None
    svg: str


class ChannelChart(_Model):
    """The funnel of one channel row, `label` its name as its plugin gives it."""

    channel: str
    label: str
    svg: str


class ReportCharts(_Model):
    """Every chart of a report. `conversions` is None when nothing converted, `days` when no cell
    has a day (all counted before issue 12): the page then shows what the tables hold."""

    lift: str
    variants: list[VariantChart]
    steps: list[StepChart]
    channels: list[ChannelChart]
    conversions: str | None
    days: str | None


def report_charts(report: ScenarioReport) -> ReportCharts:
    return ReportCharts(
        lift=lift_svg(report.treatment, report.holdout, report.lift),
        variants=[
            VariantChart(
                variant=v.variant,
                # Compared with the whole holdout when none of it reached the split (VariantReport).
                svg=lift_svg(v.treatment, v.holdout or report.holdout, v.lift),
            )
            for v in report.variants
        ],
        steps=[
            StepChart(step_id=row.step_id, variant=row.variant, channel=row.channel, svg=funnel_svg(row))
            for row in report.steps
        ],
        channels=[
            ChannelChart(channel=row.channel, label=channel_name(row.channel), svg=channel_svg(row))
            for row in report.channels
        ],
        conversions=conversions_svg(report.conversions) if report.conversions else None,
        days=days_svg(report.days) if has_dated_days(report.days) else None,
    )

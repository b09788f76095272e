"""The report's charts as the console gets them (issue 12): the HTML report's own drawings, each a
standalone SVG the page can check and put in under its CSP, LINE's unmeasured figures as words."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from cems.reports.charts import report_charts
from cems.reports.counters import ReportCell
from cems.reports.html import render_html
from cems.reports.report import Counts, ScenarioMeta, build_report

from tests.unit.test_report_html import SVG, _bars, _line_and_mail_report, _not_measured

AT = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
NOT_MEASURED = "計測なし / not measured"


def _every_svg(charts: dict[str, object]) -> list[str]:
    found: list[str] = []
    for value in charts.values():
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, list):
            found += [item["svg"] for item in value]
    return found


def test_the_console_gets_the_html_reports_own_charts() -> None:
    report = _line_and_mail_report()
    charts = report_charts(report).model_dump(mode="json")
    page = render_html(report)
    svgs = _every_svg(charts)
    # lift, two step funnels, two channel funnels, conversions, per day: drawn once, shown in both.
    assert len(svgs) == 7
    for svg in svgs:
        assert svg in page


def test_each_chart_is_plain_svg_the_page_can_check_under_its_policy() -> None:
    """What console.js's safeSvg accepts, and what the CSP lets through: SVG elements only, no
    script, event attribute or link, no style attribute (style-src 'self' refuses inline styles),
    no id (several charts share one page)."""
    for svg in _every_svg(report_charts(_line_and_mail_report()).model_dump(mode="json")):
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg" and root.get("viewBox"), svg[:80]
        for element in root.iter():
            assert element.tag.startswith(SVG), element.tag
            assert element.tag.removeprefix(SVG) not in {"script", "foreignObject", "image", "a"}
            for name in element.attrib:
                assert not name.lower().startswith("on") and "href" not in name, name
                assert name not in {"style", "id"}, name


def test_the_funnel_charts_follow_the_report_steps_and_channels() -> None:
    report = _line_and_mail_report()
    charts = report_charts(report)
    assert [(c.step_id, c.variant, c.channel) for c in charts.steps] == [
        (r.step_id, r.variant, r.channel) for r in report.steps
    ]
    assert [(c.channel, c.label) for c in charts.channels] == [("email", "メール Email"), ("line", "LINE")]


def test_line_delivered_and_opened_read_not_measured_never_zero() -> None:
    charts = report_charts(_line_and_mail_report())
    line_step = next(c for c in charts.steps if c.channel == "line")
    line = next(c for c in charts.channels if c.channel == "line")
    for svg in (line_step.svg, line.svg):
        chart = ET.fromstring(svg)
        assert _not_measured(chart) == [NOT_MEASURED] * 2
        titles = ["".join(bar.itertext()) for bar in _bars(chart)]
        assert not any(t.startswith(("到達 Delivered", "開封 Opened")) for t in titles), titles
        assert "LINE reports no per-recipient delivery" in svg
    # Mail measures both: bars, no words.
    mail = ET.fromstring(next(c for c in charts.channels if c.channel == "email").svg)
    assert len(_bars(mail)) == 5 and _not_measured(mail) == []


def test_per_day_bars_and_conversions_by_channel() -> None:
    charts = report_charts(_line_and_mail_report())
    assert charts.days is not None and charts.conversions is not None
    days = ET.fromstring(charts.days)
    # Three days × sent, clicked, converted, and deliveries on the day with mail only: the LINE-only
    # day's deliveries are a dash titled "not measured", not a bar of 0.
    bars = _bars(days)
    assert len(bars) == 3 * 3 + 2
    assert {"".join(b.itertext()).split(" ")[0] for b in bars} == {"2026-04-29", "2026-04-30", "2026-05-01"}
    dashes = [t for t in days.iter(f"{SVG}text") if t.get("class") == "not-measured"]
    assert len(dashes) == 1 and "2026-04-29" in "".join(dashes[0].itertext())
    conversions = ET.fromstring(charts.conversions)
    assert conversions.get("aria-label") == "CV の帰属 Conversions by channel (計 total 40)"
    assert len(_bars(conversions)) == 4


def test_a_report_with_nothing_counted_has_the_lift_chart_only() -> None:
    charts = report_charts(build_report("s", [], at=AT))
    assert ET.fromstring(charts.lift).get("aria-label") == "コントロール群との比較 Treatment vs holdout"
    assert (charts.variants, charts.steps, charts.channels, charts.conversions, charts.days) == (
        [],
        [],
        [],
        None,
        None,
    )


def test_a_variant_without_holdout_of_its_own_is_drawn_against_the_whole_holdout() -> None:
    cells: list[tuple[ReportCell, Counts]] = [
        (ReportCell("s", 1), {"enrolled": 100, "converted": 10}),
        (ReportCell("s", 1, holdout=True), {"enrolled": 100, "converted": 5}),
        (ReportCell("s", 1, variant="A"), {"enrolled": 100}),
    ]
    report = build_report("s", cells, meta=ScenarioMeta(name="s"), at=AT)
    assert report.variants[0].holdout is None
    (variant,) = report_charts(report).variants
    chart = ET.fromstring(variant.svg)
    assert variant.variant == "A" and len(_bars(chart)) == 2  # the whole holdout's rate is drawn
    assert "5.0%" in variant.svg

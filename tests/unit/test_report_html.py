"""The HTML report and the CLI's table: escaped, self-contained, aligned, honest about chance."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal

from cems.reports.cli import _width, render_text, table
from cems.reports.counters import ReportCell
from cems.reports.html import render_html
from cems.reports.report import Counts, ScenarioMeta, ScenarioReport, build_report

AT = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


def _report(treatment: tuple[int, int], holdout: tuple[int, int], variant: str = "A") -> str:
    cells = [
        (ReportCell("s", 1), {"enrolled": treatment[0], "converted": treatment[1]}),
        (ReportCell("s", 1, holdout=True), {"enrolled": holdout[0], "converted": holdout[1]}),
        (ReportCell("s", 1, variant=variant), {"enrolled": treatment[0]}),
        (ReportCell("s", 1, "mail", variant), {"sent": 10, "delivered": 9, "opened": 4, "clicked": 1}),
    ]
    meta = ScenarioMeta(name="<b>Sale</b> & co", state="active", steps=(("mail", "メール", "send"),))
    return render_html(build_report("s", cells, meta=meta, at=AT))


def test_everything_from_the_report_is_escaped() -> None:
    page = _report((100, 10), (100, 5), variant='"><script>alert(1)</script>')
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "&lt;b&gt;Sale&lt;/b&gt; &amp; co" in page


def test_the_page_is_self_contained() -> None:
    page = _report((100, 10), (100, 5))
    assert page.startswith("<!DOCTYPE html>") and '<html lang="ja">' in page
    assert not re.search(r"(src|href)=|@import|url\(|<link|<script", page)
    # Treatment vs holdout, one funnel per step and variant (sent, delivered, opened, clicked and
    # conversions as bars), the per-day series: every chart inline SVG.
    assert page.count("<svg") == 3 and "送信 Sent" in page and "クリック Clicked" in page


def test_only_a_lift_clear_of_zero_is_coloured() -> None:
    assert '<p class="lift up">' in _report((1000, 300), (1000, 200))
    assert '<p class="lift down">' in _report((1000, 200), (1000, 300))
    chance = _report((100, 10), (100, 8))
    assert '<p class="lift ">' in chance and "could be chance" in chance


def test_the_table_lines_up_japanese_and_english() -> None:
    text = table(["ステップ Step", "送信 Sent"], [["first", "1,000"], ["お礼 thanks", "5"]])
    lines = text.splitlines()
    assert len({_width(line) for line in lines}) == 1
    assert lines[2].endswith("1,000") and lines[3].endswith("    5")


def test_the_text_report_of_an_empty_scenario() -> None:
    text = render_text(build_report("s", [], at=AT))
    assert "nothing counted yet" in text and "no customers in the holdout" in text


# ------------------------------------------------------------------------------------ charts (issue 12)

SVG = "{http://www.w3.org/2000/svg}"


def _charts(page: str) -> list[ET.Element]:
    """Every chart of the page, each parsed as XML on its own (a malformed one raises)."""
    return [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, flags=re.DOTALL)]


def _bars(chart: ET.Element) -> list[ET.Element]:
    return [rect for rect in chart.iter(f"{SVG}rect") if rect.get("class") == "bar"]


def _not_measured(chart: ET.Element) -> list[str]:
    """The words in place of each figure that cannot exist (the reason is in its title)."""
    return [t.text or "" for t in chart.iter(f"{SVG}text") if t.get("class") == "not-measured"]


def _line_and_mail_report() -> ScenarioReport:
    day1, day2 = "2026-04-29", "2026-05-01"
    cells: list[tuple[ReportCell, Counts]] = [
        (ReportCell("s", 1, day=day1), {"enrolled": 900}),
        (ReportCell("s", 1, holdout=True, day=day1), {"enrolled": 100}),
        (ReportCell("s", 1, "push", channel="line", day=day1), {"sent": 800, "clicked": 80}),
        (ReportCell("s", 1, "push", channel="line", day=day2), {"converted": 30, "revenue": Decimal(30000)}),
        (ReportCell("s", 1, "mail", channel="email", day=day2), {"sent": 100, "delivered": 98, "opened": 40}),
        (ReportCell("s", 1, "mail", channel="email", day=day2), {"clicked": 10, "converted": 5}),
        (ReportCell("s", 1, day=day2), {"converted": 2}),
        (ReportCell("s", 1, holdout=True, day=day2), {"converted": 3}),
    ]
    meta = ScenarioMeta(
        name="Sale",
        steps=(("push", "LINE", "send"), ("mail", "メール", "send")),
        step_channels=(("push", "line"), ("mail", "email")),
    )
    return build_report("s", cells, meta=meta, at=AT)


def test_every_chart_is_well_formed_svg_with_a_bar_per_figure() -> None:
    page = render_html(_line_and_mail_report())
    charts = _charts(page)
    titles = [chart.get("aria-label") for chart in charts]
    assert titles == [
        "コントロール群との比較 Treatment vs holdout",
        "push / line",
        "mail / email",
        "メール Email",
        "LINE",
        "CV の帰属 Conversions by channel (計 total 40)",
        "日別 Per day (JST)",
    ]
    lift, push, mail, email, line, conversions, days = charts
    assert len(_bars(lift)) == 2 and lift.find(f".//{SVG}g[@class='whisker']") is not None
    # LINE: sent, clicked, converted are bars; delivered and opened are words, not zero bars.
    assert len(_bars(push)) == 3 and _not_measured(push) == ["計測なし / not measured"] * 2
    assert len(_bars(line)) == 3 and _not_measured(line) == ["計測なし / not measured"] * 2
    assert len(_bars(mail)) == 5 and len(_bars(email)) == 5 and _not_measured(mail) == []
    # line, email, before any message, holdout: one bar each, adding up to the 40 conversions.
    assert len(_bars(conversions)) == 4
    # Three days (the empty one between filled in) × sent, clicked, converted; deliveries only on
    # the day with mail: the LINE-only day shows a dash titled "not measured", the empty day a bar.
    assert len(_bars(days)) == 3 * 3 + 2
    dashes = [t for t in days.iter(f"{SVG}text") if t.get("class") == "not-measured"]
    assert len(dashes) == 1 and "only LINE sends" in "".join(dashes[0].itertext())


def test_line_figures_read_not_measured_in_the_page_never_zero() -> None:
    page = render_html(_line_and_mail_report())
    assert "0.0%" not in page.split("ステップ別ファネル")[1]
    assert "LINE reports no per-recipient delivery" in page
    assert "IMP (送信 sent) = LINE の push / multicast API" in page
    assert "SES が受け付けた" in page


def test_chart_text_is_escaped() -> None:
    cells: list[tuple[ReportCell, Counts]] = [
        (ReportCell("s", 1), {"enrolled": 10}),
        (ReportCell("s", 1, '<step a="1">&', "<v>", channel="line"), {"sent": 5}),
    ]
    page = render_html(build_report("s", cells, at=AT))
    assert "<step" not in page and "<v>" not in page
    push = next(c for c in _charts(page) if (c.get("aria-label") or "").startswith("<step"))
    assert push.get("aria-label") == '<step a="1">& / <v> / line'  # parsed back from the escaped text

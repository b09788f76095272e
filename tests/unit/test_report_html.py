"""The HTML report and the CLI's table: escaped, self-contained, aligned, honest about chance."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from cems.reports.cli import _width, render_text, table
from cems.reports.counters import ReportCell
from cems.reports.html import render_html
from cems.reports.report import ScenarioMeta, build_report

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
    # One funnel per step and variant: sent, delivered, opened, clicked as bars.
    assert page.count("<svg") == 1 and page.count("<rect") == 4
    assert "送信 Sent" in page and "クリック Clicked" in page


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

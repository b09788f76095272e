"""A scenario report as one self-contained HTML page: inline CSS and an inline SVG funnel per step
and variant, labels in Japanese and English, no script, font, image or stylesheet fetched from
anywhere (it is mailed around and opened offline). Every value from the report is escaped."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from cems.reports.report import Group, Lift, ScenarioReport, StepRow

_CSS = """
body{font-family:"Hiragino Sans","Noto Sans JP","Yu Gothic",system-ui,sans-serif;margin:2rem;color:#1f2933}
h1{font-size:1.4rem;margin:0 0 .25rem}h2{font-size:1.1rem;margin:2rem 0 .5rem}
.meta{color:#52606d;font-size:.9rem}table{border-collapse:collapse;margin:.5rem 0}
th,td{border-bottom:1px solid #d9e2ec;padding:.35rem .7rem;text-align:right;font-variant-numeric:tabular-nums}
th:first-child,td:first-child{text-align:left}th{background:#f0f4f8;font-weight:600}
.lift{font-size:1.05rem}.up{color:#127a3a}.down{color:#b42318}.note{color:#8a6d00;font-size:.9rem}
.funnels{display:flex;flex-wrap:wrap;gap:1.5rem}
.funnel{border:1px solid #d9e2ec;border-radius:6px;padding:.75rem}
.funnel h3{font-size:.95rem;margin:0 0 .5rem}.small{font-size:.8rem;color:#52606d}
"""
_BAR_COLOURS = ("#2563eb", "#0891b2", "#16a34a", "#ca8a04")
_FUNNEL = (
    ("sent", "送信 Sent"),
    ("delivered", "到達 Delivered"),
    ("opened", "開封 Opened"),
    ("clicked", "クリック Clicked"),
)


def pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


def points(value: float | None) -> str:
    """A difference of rates in percentage points."""
    return "—" if value is None else f"{value * 100:+.1f} pt"


def yen(value: Decimal | float | None) -> str:
    return "—" if value is None else f"¥{round(float(value)):,}"


def interval(lift: Lift, *, relative: bool) -> str:
    bounds = lift.relative_ci if relative else lift.absolute_ci
    if bounds is None:
        return "—"
    if relative:
        return f"{pct(bounds.low, signed=True)} … {pct(bounds.high, signed=True)}"
    return f"{points(bounds.low)} … {points(bounds.high)}"


def p_text(value: float | None) -> str:
    if value is None:
        return "—"
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _group_row(label: str, group: Group | None) -> str:
    if group is None:
        return f"<tr><td>{escape(label)}</td>" + "<td>—</td>" * 5 + "</tr>"
    cells = (
        f"{group.enrolled:,}",
        f"{group.converted:,}",
        pct(group.conversion_rate),
        yen(group.revenue),
        yen(group.revenue_per_enrolled),
    )
    return f"<tr><td>{escape(label)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


_GROUP_HEADER = (
    "<tr><th>グループ Group</th><th>対象 Enrolled</th><th>CV Converted</th><th>CV率 Rate</th>"
    "<th>売上 Revenue</th><th>売上/人 Per enrolled</th></tr>"
)


def _lift_block(lift: Lift) -> str:
    # Coloured only when the interval leaves out zero: a lift that could be chance is not "up".
    ci = lift.absolute_ci
    direction = "" if ci is None else "up" if ci.low > 0 else "down" if ci.high < 0 else ""
    verdict = {"up": "有意に上昇 clearly up", "down": "有意に低下 clearly down"}.get(
        direction, "差は偶然の範囲 could be chance" if ci is not None else ""
    )
    level = f"{lift.confidence * 100:.0f}%"
    parts = [
        f'<p class="lift {direction}">リフト Lift: <strong>{points(lift.absolute)}</strong> '
        f"({level} CI {interval(lift, relative=False)}) · 相対 Relative: "
        f"<strong>{pct(lift.relative, signed=True)}</strong> ({level} CI {interval(lift, relative=True)}) · "
        f"p = {p_text(lift.p_value)}" + (f" · {verdict}" if verdict else "") + "</p>"
    ]
    parts += [f'<p class="note">{escape(n)}</p>' for n in lift.notes]
    return "".join(parts)


def funnel_svg(row: StepRow) -> str:
    """Horizontal bars sent → delivered → opened → clicked, each as wide as its share of sent."""
    width, bar_height, gap, label_width, value_width = 440, 22, 8, 130, 110
    values = [(label, getattr(row, name)) for name, label in _FUNNEL]
    top = max(row.sent, 1)
    height = len(values) * (bar_height + gap)
    bars = []
    for i, (label, value) in enumerate(values):
        y = i * (bar_height + gap)
        length = (width - label_width - value_width) * value / top
        share = f"{value / row.sent * 100:.0f}%" if row.sent else "—"
        bars.append(
            f'<text x="0" y="{y + 15}" font-size="12">{escape(label)}</text>'
            f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" rx="3" '
            f'fill="{_BAR_COLOURS[i]}"><title>{escape(label)}: {value:,}</title></rect>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" font-size="12">{value:,} ({share})</text>'
        )
    title = f"{row.step_id}" + (f" / {row.variant}" if row.variant is not None else "")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}">{"".join(bars)}</svg>'
    )


def _funnel_card(row: StepRow) -> str:
    heading = escape(row.step_id)
    if row.name:
        heading += f" <span class=small>{escape(row.name)}</span>"
    if row.variant is not None:
        heading += f" · バリアント Variant <strong>{escape(row.variant)}</strong>"
    extra = (
        f"失敗 failed {row.failed:,} · 抑止 suppressed {row.suppressed:,} · 上限 capped {row.capped:,} · "
        f"延期 deferred {row.deferred:,} · 保留 held out {row.held_out:,}"
    )
    return f'<div class="funnel"><h3>{heading}</h3>{funnel_svg(row)}<div class="small">{extra}</div></div>'


def render_html(report: ScenarioReport) -> str:
    title = report.name or report.scenario_id
    version = f"v{report.version}" if report.version is not None else "全バージョン all versions"
    meta = [
        f"ID {escape(report.scenario_id)}",
        f"状態 state {escape(report.state or '—')}",
        f"対象 {escape(version)} (counted: {', '.join(f'v{v}' for v in report.versions) or '—'})",
        f"ゴール goal {escape(report.goal or '—')}",
        f"作成 generated {report.generated_at.isoformat(timespec='seconds')}",
    ]
    body = [
        f"<h1>{escape(title)} — 効果測定 Effect report</h1>",
        f'<p class="meta">{" · ".join(meta)}</p>',
        "<h2>コントロール群との比較 Treatment vs holdout</h2>",
        "<table>",
        _GROUP_HEADER,
        _group_row("配信群 Treatment", report.treatment),
        _group_row("コントロール群 Holdout", report.holdout),
        "</table>",
        _lift_block(report.lift),
    ]
    if report.variants:
        body += ["<h2>A/Bテスト A/B variants</h2>"]
        for variant in report.variants:
            against = (
                "同じバリアントのコントロール群 its own holdout"
                if variant.compared_with == "variant_holdout"
                else "コントロール群全体 whole holdout"
            )
            body += [
                f"<h3>バリアント Variant {escape(variant.variant)}",
                f" <span class=small>vs {against}</span></h3>",
                "<table>",
                _GROUP_HEADER,
                _group_row("配信群 Treatment", variant.treatment),
                _group_row("コントロール群 Holdout", variant.holdout),
                "</table>",
                _lift_block(variant.lift),
            ]
    if report.steps:
        body += ["<h2>ステップ別ファネル Funnel per step and variant</h2>", '<div class="funnels">']
        body += [_funnel_card(row) for row in report.steps]
        body += ["</div>"]
    if report.notes:
        body += [f'<p class="note">{escape(n)}</p>' for n in report.notes]
    return (
        '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} — CEMS report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )

"""A scenario report as one self-contained HTML page: inline CSS and inline SVG charts (the funnel per
step, variant and channel; treatment vs holdout with the lift's interval; per channel; per day),
labels in Japanese and English, no script, font, image or stylesheet fetched from
anywhere (it is mailed around and opened offline). Every value from the report is escaped.

The charts' functions (`lift_svg`, `funnel_svg`, `channel_svg`, `conversions_svg`, `days_svg`) are
also what the console shows (cems.reports.charts): one drawing of each chart, in both places."""

from __future__ import annotations

from decimal import Decimal
from html import escape

from cems.channels.registry import plugins
from cems.reports.report import ChannelRow, ConversionShare, DayRow, Group, Lift, ScenarioReport, StepRow

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


NOT_MEASURED = "計測なし / not measured"
# A bar: (label, value or None where the figure cannot exist, why not).
Bar = tuple[str, int | None, str | None]
_SVG = 'xmlns="http://www.w3.org/2000/svg" role="img"'
_CHANNEL_NAMES = {p.channel.value: p.label for p in plugins()}  # each channel's plugin names it
_ATTRIBUTION_NAMES = {
    "no_message": "配信前 before any message",
    "holdout": "コントロール群 holdout (配信なし nothing sent)",
    "not_recorded": "記録なし not recorded (issue 12 以前 counted before issue 12)",
}


def _svg(width: int, height: int, title: str, body: str) -> str:
    """One chart: an SVG element that is also well-formed XML (every value escaped), titled for
    screen readers."""
    label = escape(title)
    return (
        f'<svg {_SVG} width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="{label}"><title>{label}</title>{body}</svg>'
    )


def _count(value: int | None) -> str:
    return NOT_MEASURED if value is None else f"{value:,}"


def bars_svg(title: str, bars: list[Bar], top: int) -> str:
    """Horizontal bars, each as long as its share of `top`, with the count and that share beside
    it. A figure that cannot exist is the words "not measured", never a bar of zero."""
    width, bar_height, gap, label_width, value_width = 440, 22, 8, 130, 120
    scale = width - label_width - value_width
    parts = []
    for i, (label, value, reason) in enumerate(bars):
        y = i * (bar_height + gap)
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(label)}</text>')
        if value is None:
            parts.append(
                f'<text class="not-measured" x="{label_width}" y="{y + 15}" font-size="12" fill="#8a6d00">'
                f"{NOT_MEASURED}<title>{escape(reason or NOT_MEASURED)}</title></text>"
            )
            continue
        length = min(scale * value / top, scale) if top else 0.0
        share = f"{value / top * 100:.0f}%" if top else "—"
        parts.append(
            f'<rect class="bar" x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" rx="3" '
            f'fill="{_BAR_COLOURS[i % len(_BAR_COLOURS)]}"><title>{escape(label)}: {value:,}</title></rect>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" font-size="12">{value:,} ({share})</text>'
        )
    return _svg(width, max(len(bars), 1) * (bar_height + gap), title, "".join(parts))


def _funnel_bars(row: StepRow | ChannelRow) -> list[Bar]:
    bars: list[Bar] = [(label, getattr(row, name), row.not_measured.get(name)) for name, label in _FUNNEL]
    return [*bars, ("CV Converted", row.converted, None)]


def funnel_svg(row: StepRow) -> str:
    """Sent → delivered → opened → clicked, and the conversions whose last message this was, each
    as long as its share of sent; LINE's delivered and opened are "not measured"."""
    title = " / ".join(p for p in (row.step_id, row.variant, row.channel) if p is not None)
    return bars_svg(title, _funnel_bars(row), top=row.sent)


def lift_svg(treatment: Group, holdout: Group, lift: Lift) -> str:
    """The two conversion rates as a bar pair, and under them the absolute lift as a point with
    its interval as a whisker, on an axis that always shows zero (so "could be chance" is seen)."""
    width, label_width, bar_height = 440, 150, 22
    rates = [
        ("配信群 Treatment", treatment.conversion_rate),
        ("コントロール群 Holdout", holdout.conversion_rate),
    ]
    top = max((r for _, r in rates if r is not None), default=0.0)
    scale = width - label_width - 80
    parts = []
    for i, (label, rate) in enumerate(rates):
        y = i * (bar_height + 8)
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{escape(label)}</text>')
        if rate is None:
            parts.append(f'<text x="{label_width}" y="{y + 15}" font-size="12">— (0 人 no one)</text>')
            continue
        length = scale * rate / top if top else 0.0
        parts.append(
            f'<rect class="bar" x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" rx="3" '
            f'fill="{_BAR_COLOURS[i]}"><title>{escape(label)}: {pct(rate)}</title></rect>'
            f'<text x="{label_width + length + 6:.1f}" y="{y + 15}" font-size="12">{pct(rate)}</text>'
        )
    axis_y = 2 * (bar_height + 8) + 24
    parts.append(f'<text x="0" y="{axis_y + 4}" font-size="12">リフト Lift</text>')
    if lift.absolute is None:
        parts.append(
            f'<text x="{label_width}" y="{axis_y + 4}" font-size="12">'
            "— (計算できない cannot be computed)</text>"
        )
    else:
        parts.append(_whisker(lift, lift.absolute, label_width + 10, width - 50, axis_y))
    return _svg(width, axis_y + 30, "コントロール群との比較 Treatment vs holdout", "".join(parts))


def _whisker(lift: Lift, point: float, x0: int, x1: int, axis_y: int) -> str:
    ci = lift.absolute_ci
    low, high = (ci.low, ci.high) if ci is not None else (point, point)
    left, right = min(low, 0.0, point), max(high, 0.0, point)
    span = (right - left) or 1.0

    def x(value: float) -> str:
        return f"{x0 + (value - left) / span * (x1 - x0):.1f}"

    parts = [
        f'<line x1="{x0}" y1="{axis_y}" x2="{x1}" y2="{axis_y}" stroke="#9aa5b1"/>',
        f'<line x1="{x(0)}" y1="{axis_y - 12}" x2="{x(0)}" y2="{axis_y + 12}" stroke="#52606d" '
        'stroke-dasharray="3 2"/>',
        f'<text x="{x(0)}" y="{axis_y + 24}" font-size="10" text-anchor="middle">0</text>',
    ]
    if ci is not None:
        parts.append(
            '<g class="whisker" stroke="#1f2933" stroke-width="2">'
            f'<line x1="{x(low)}" y1="{axis_y}" x2="{x(high)}" y2="{axis_y}"/>'
            f'<line x1="{x(low)}" y1="{axis_y - 6}" x2="{x(low)}" y2="{axis_y + 6}"/>'
            f'<line x1="{x(high)}" y1="{axis_y - 6}" x2="{x(high)}" y2="{axis_y + 6}"/>'
            f"<title>{lift.confidence * 100:.0f}% CI {escape(interval(lift, relative=False))}</title></g>"
        )
    shown = escape(points(point))
    parts.append(
        f'<circle cx="{x(point)}" cy="{axis_y}" r="5" fill="#2563eb"><title>{shown}</title></circle>'
        f'<text x="{x(point)}" y="{axis_y - 10}" font-size="11" text-anchor="middle">{shown}</text>'
    )
    return "".join(parts)


_DAY_SERIES = (
    ("sent", "送信 Sent"),
    ("delivered", "到達 Delivered (メールのみ mail only)"),
    ("clicked", "クリック Clicked"),
    ("converted", "CV Converted"),
)


def days_svg(days: list[DayRow]) -> str:
    """Per day (JST), one small bar chart per series, each on its own scale (sends dwarf
    conversions). A day whose figure cannot exist (deliveries on a LINE-only day) shows a dash
    titled "not measured", not a bar. Days counted before issue 12 (no day) are left to the table."""
    dated = [d for d in days if d.day is not None]
    width, label_width, chart_height, gap = 640, 150, 60, 18
    slot = (width - label_width) / max(len(dated), 1)
    parts = []
    for i, (name, label) in enumerate(_DAY_SERIES):
        top_y = i * (chart_height + gap)
        base = top_y + chart_height
        values: list[int | None] = [getattr(d, name) for d in dated]
        peak = max((v for v in values if v is not None), default=0)
        parts.append(
            f'<text x="0" y="{top_y + 14}" font-size="12">{escape(label)}</text>'
            f'<text x="0" y="{top_y + 30}" font-size="10" fill="#52606d">最大 max {peak:,}</text>'
            f'<line x1="{label_width}" y1="{base}" x2="{width}" y2="{base}" stroke="#d9e2ec"/>'
        )
        for j, (day, value) in enumerate(zip(dated, values, strict=True)):
            x = label_width + j * slot
            tip = f"{day.day} {label}"
            if value is None:
                reason = day.not_measured.get(name, NOT_MEASURED)
                parts.append(
                    f'<text class="not-measured" x="{x + slot / 2:.1f}" y="{base - 2}" font-size="10" '
                    f'text-anchor="middle">–<title>{escape(tip)}: {escape(reason)}</title></text>'
                )
                continue
            height = (chart_height - 4) * value / peak if peak else 0.0
            parts.append(
                f'<rect class="bar" x="{x + 1:.1f}" y="{base - height:.1f}" width="{max(slot - 2, 1):.1f}" '
                f'height="{height:.1f}" fill="{_BAR_COLOURS[i]}">'
                f"<title>{escape(tip)}: {value:,}</title></rect>"
            )
    axis_y = len(_DAY_SERIES) * (chart_height + gap)
    if dated:
        first, last = escape(dated[0].day or ""), escape(dated[-1].day or "")
        parts.append(
            f'<text x="{label_width}" y="{axis_y}" font-size="10">{first}</text>'
            f'<text x="{width}" y="{axis_y}" font-size="10" text-anchor="end">{last}</text>'
        )
    return _svg(width, axis_y + 6, "日別 Per day (JST)", "".join(parts))


def _day_table(days: list[DayRow]) -> str:
    header = (
        "<tr><th>日 Day (JST)</th><th>対象 Enrolled</th><th>送信 Sent</th><th>到達 Delivered</th>"
        "<th>クリック Clicked</th><th>CV 配信群 Treatment</th><th>CV コントロール群 Holdout</th></tr>"
    )
    rows = []
    for d in days:
        day = escape(d.day) if d.day is not None else "日付なし before per-day counts (issue 12 以前)"
        cells = (
            f"{d.enrolled:,}",
            f"{d.sent:,}",
            _count(d.delivered),
            f"{d.clicked:,}",
            f"{d.converted:,}",
            f"{d.holdout_converted:,}",
        )
        rows.append(f"<tr><td>{day}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{header}{''.join(rows)}</table>"


def channel_name(channel: str) -> str:
    """A channel as its plugin names it ("メール Email", "LINE"); an unknown one by its id."""
    return _CHANNEL_NAMES.get(channel, channel)


def channel_svg(row: ChannelRow) -> str:
    """One channel's funnel over every step: sent → delivered → opened → clicked and its
    conversions, with what the channel cannot report as "not measured"."""
    name = channel_name(row.channel)
    return bars_svg(name, _funnel_bars(row), top=row.sent)


def has_dated_days(days: list[DayRow]) -> bool:
    """Whether a per-day chart has anything to draw (cells counted before issue 12 have no day)."""
    return any(d.day is not None for d in days)


def _channel_card(row: ChannelRow) -> str:
    imp = f'<div class="small">IMP (送信 sent) = {escape(row.imp)}</div>' if row.imp else ""
    reasons = "".join(f'<div class="small note">{escape(r)}</div>' for r in row.not_measured.values())
    return (
        f'<div class="funnel"><h3>{escape(channel_name(row.channel))}</h3>{channel_svg(row)}'
        f'{imp}{reasons}<div class="small">売上 revenue {yen(row.revenue)}</div></div>'
    )


def conversions_svg(shares: list[ConversionShare]) -> str:
    """Every conversion once, by what it is attributed to: bars that add up to the total."""
    total = sum(s.converted for s in shares)
    bars: list[Bar] = [
        (
            _CHANNEL_NAMES.get(s.attributed_to) or _ATTRIBUTION_NAMES.get(s.attributed_to, s.attributed_to),
            s.converted,
            None,
        )
        for s in shares
    ]
    return bars_svg(f"CV の帰属 Conversions by channel (計 total {total:,})", bars, top=total)


def _funnel_card(row: StepRow) -> str:
    heading = escape(row.step_id)
    if row.name:
        heading += f" <span class=small>{escape(row.name)}</span>"
    if row.variant is not None:
        heading += f" · バリアント Variant <strong>{escape(row.variant)}</strong>"
    channel = channel_name(row.channel) if row.channel else "チャネルなし no channel"
    heading += f" · {escape(channel)}"
    extra = (
        f"失敗 failed {row.failed:,} · 抑止 suppressed {row.suppressed:,} · 上限 capped {row.capped:,} · "
        f"延期 deferred {row.deferred:,} · 保留 held out {row.held_out:,}"
    )
    if row.chosen_by_engagement or row.chosen_by_default:
        extra += (
            f" · 最適チャネル best: 反応で選択 by engagement {row.chosen_by_engagement:,} · "
            f"既定の順 by default order {row.chosen_by_default:,}"
        )
    reasons = "".join(f'<div class="small note">{escape(r)}</div>' for r in row.not_measured.values())
    chart = funnel_svg(row)
    return f'<div class="funnel"><h3>{heading}</h3>{chart}<div class="small">{extra}</div>{reasons}</div>'


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
        lift_svg(report.treatment, report.holdout, report.lift),
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
    if report.channels or report.conversions:
        body += ["<h2>チャネル別 Per channel</h2>", '<div class="funnels">']
        body += [_channel_card(row) for row in report.channels]
        if report.conversions:
            body += [
                f'<div class="funnel"><h3>CV の帰属 Conversions</h3>{conversions_svg(report.conversions)}'
                '<div class="small">購入前に最後に送ったメッセージのチャネル / the channel of the last '
                "message sent before converting</div></div>"
            ]
        body += ["</div>"]
    if report.days:
        body += ["<h2>日別 Per day (JST)</h2>"]
        if has_dated_days(report.days):
            body += [days_svg(report.days)]
        body += [_day_table(report.days)]
    if report.notes:
        body += [f'<p class="note">{escape(n)}</p>' for n in report.notes]
    return (
        '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} — CEMS report</title><style>{_CSS}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )

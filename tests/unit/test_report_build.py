"""build_report on hand-made cells: groups, variants, steps, versions, zero denominators."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from cems.reports.counters import ReportCell
from cems.reports.report import Counts, ScenarioMeta, build_report, list_item

AT = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
S = "welcome"


def cells() -> list[tuple[ReportCell, Counts]]:
    return [
        (ReportCell(S, 1), {"enrolled": 900}),
        (ReportCell(S, 1, holdout=True), {"held_out": 100, "enrolled": 100}),
        # Converted before the split (variant None) and within variants.
        (ReportCell(S, 1), {"converted": 20, "revenue": Decimal("20000")}),
        (ReportCell(S, 1, variant="A"), {"enrolled": 450, "converted": 60, "revenue": Decimal("60000")}),
        (ReportCell(S, 1, variant="B"), {"enrolled": 400, "converted": 40, "revenue": Decimal("40000")}),
        (ReportCell(S, 1, variant="A", holdout=True), {"held_out": 50, "converted": 4}),
        (ReportCell(S, 1, variant="B", holdout=True), {"held_out": 45, "converted": 3}),
        (ReportCell(S, 1, holdout=True), {"converted": 1, "revenue": Decimal("500")}),
        (ReportCell(S, 1, "mail-b", "B"), {"sent": 400, "delivered": 390, "opened": 100, "clicked": 20}),
        (ReportCell(S, 1, "mail-a", "A"), {"sent": 450, "delivered": 440, "failed": 10, "clicked": 45}),
        (ReportCell(S, 1, "mail-a", "A", holdout=True), {"held_out": 50}),
        (ReportCell(S, 1, "first"), {"sent": 880, "capped": 15, "deferred": 5}),
        (ReportCell(S, 2), {"enrolled": 10}),
        (ReportCell(S, 2, "first"), {"sent": 10}),
    ]


META = ScenarioMeta(
    name="Welcome",
    state="active",
    active_version=2,
    latest_version=2,
    goal="Order Completed within 7d",
    steps=(
        ("first", "最初", "send"),
        ("split", None, "split"),
        ("mail-a", None, "send"),
        ("mail-b", None, "send"),
    ),
)


def test_groups_of_one_version() -> None:
    report = build_report(S, cells(), version=1, meta=META, at=AT)
    assert report.versions == [1, 2] and report.version == 1
    assert (report.enrolled, report.held_out) == (1000, 100)
    # Treatment: 900 enrolled, 20 + 60 + 40 = 120 converted; holdout: 100, 4 + 3 + 1 = 8.
    assert (report.treatment.enrolled, report.treatment.converted) == (900, 120)
    assert (report.holdout.enrolled, report.holdout.converted) == (100, 8)
    assert report.treatment.revenue == Decimal("120000")
    assert report.treatment.revenue_per_enrolled == pytest.approx(120000 / 900)
    assert report.holdout.revenue == Decimal("500")
    # The hand-worked comparison of tests/unit/test_report_stats.py (120/900 vs 8/100).
    assert report.lift.absolute == pytest.approx(0.053333, abs=1e-6)
    assert report.lift.absolute_ci is not None
    assert report.lift.absolute_ci.low == pytest.approx(-0.004291, abs=1e-6)
    assert report.lift.p_value == pytest.approx(0.129910, abs=1e-6)


def test_variants_are_compared_with_the_holdout_of_the_same_variant() -> None:
    report = build_report(S, cells(), version=1, meta=META, at=AT)
    a, b = report.variants
    assert (a.variant, a.treatment.enrolled, a.treatment.converted) == ("A", 450, 60)
    assert a.holdout is not None and (a.holdout.enrolled, a.holdout.converted) == (50, 4)
    assert a.compared_with == "variant_holdout"
    assert a.lift.treatment_rate == pytest.approx(60 / 450) and a.lift.holdout_rate == pytest.approx(4 / 50)
    assert b.treatment.conversion_rate == pytest.approx(0.1)


def test_a_variant_without_holdout_entries_is_compared_with_the_whole_holdout() -> None:
    only = [c for c in cells() if not (c[0].variant and c[0].holdout)]
    report = build_report(S, only, version=1, meta=META, at=AT)
    assert [v.compared_with for v in report.variants] == ["holdout", "holdout"]
    assert report.variants[0].lift.holdout_rate == pytest.approx(1 / 100)


def test_steps_follow_the_scenario_order_with_rates_per_sent() -> None:
    report = build_report(S, cells(), version=1, meta=META, at=AT)
    assert [(r.step_id, r.variant) for r in report.steps] == [
        ("first", None),
        ("mail-a", "A"),
        ("mail-b", "B"),
    ]
    first, mail_a, mail_b = report.steps
    assert (first.name, first.type, first.capped, first.deferred) == ("最初", "send", 15, 5)
    assert (mail_a.held_out, mail_a.failed) == (50, 10)
    assert mail_a.click_rate == pytest.approx(0.1) and mail_a.open_rate == 0.0
    assert mail_b.open_rate == pytest.approx(0.25) and mail_b.delivery_rate == pytest.approx(390 / 400)


def test_every_version_together() -> None:
    report = build_report(S, cells(), meta=META, at=AT)
    assert report.version is None
    assert report.treatment.enrolled == 910
    assert report.steps[0].sent == 890


def test_nothing_counted_gives_nones_and_notes_never_nan() -> None:
    report = build_report(S, [], meta=META, at=AT)
    assert report.treatment.conversion_rate is None and report.treatment.revenue_per_enrolled is None
    assert report.lift.absolute is None and report.lift.notes
    assert report.notes == ["nothing counted yet"]
    text = report.model_dump_json()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["treatment"]["revenue"] == 0


def test_no_holdout_and_counters_out_of_step() -> None:
    no_holdout = build_report(S, [(ReportCell(S, 1), {"enrolled": 10, "converted": 2})], at=AT)
    assert no_holdout.treatment.conversion_rate == 0.2 and no_holdout.lift.absolute is None
    assert any("holdout" in n for n in no_holdout.lift.notes)
    odd = build_report(S, [(ReportCell(S, 1), {"enrolled": 1, "converted": 3})], at=AT)
    assert odd.lift.absolute is None and "more conversions" in odd.lift.notes[0]


def test_the_list_item_has_the_headline_numbers() -> None:
    item = list_item(build_report(S, cells(), version=1, meta=META, at=AT))
    assert (item.name, item.state, item.enrolled, item.held_out) == ("Welcome", "active", 1000, 100)
    assert item.treatment_rate == pytest.approx(120 / 900) and item.revenue == Decimal("120500")
    assert json.loads(item.model_dump_json())["revenue"] == 120500.0


# ------------------------------------------------------------------- channels and days (issue 12)

D1, D2 = "2026-04-30", "2026-05-01"
CHANNEL_META = ScenarioMeta(
    steps=(("push", None, "send"), ("mail", None, "send"), ("either", None, "send")),
    step_channels=(("push", "line"), ("mail", "email")),  # "either" may send on both
)


def channel_cells() -> list[tuple[ReportCell, Counts]]:
    return [
        (ReportCell(S, 1, day=D1), {"enrolled": 180}),
        (ReportCell(S, 1, holdout=True, day=D1), {"held_out": 20}),
        (ReportCell(S, 1, "push", channel="line", day=D1), {"sent": 150, "failed": 2, "clicked": 15}),
        (ReportCell(S, 1, "push", holdout=True, day=D1), {"held_out": 20}),
        (ReportCell(S, 1, "push", channel="line", day=D2), {"converted": 9, "revenue": Decimal("9000")}),
        (
            ReportCell(S, 1, "mail", channel="email", day=D2),
            {"sent": 30, "delivered": 29, "opened": 12, "clicked": 3},
        ),
        (ReportCell(S, 1, "mail", channel="email", day=D2), {"converted": 4, "revenue": Decimal("4000")}),
        (ReportCell(S, 1, day=D2), {"converted": 1}),  # before any send
        (ReportCell(S, 1, holdout=True, day=D2), {"converted": 1}),
    ]


def test_line_steps_have_no_delivered_or_opened_figure_never_zero() -> None:
    report = build_report(S, channel_cells(), meta=CHANNEL_META, at=AT)
    push = next(r for r in report.steps if r.step_id == "push")
    assert (push.channel, push.sent, push.held_out, push.clicked, push.converted) == ("line", 150, 20, 15, 9)
    assert push.delivered is None and push.opened is None
    assert push.delivery_rate is None and push.open_rate is None
    assert push.click_rate == pytest.approx(0.1)
    assert set(push.not_measured) == {"delivered", "opened"}
    assert all(r.startswith("計測なし / not measured") for r in push.not_measured.values())
    # In the JSON the admin API answers: null with the reason, never 0.
    answered = json.loads(report.model_dump_json())
    row = next(r for r in answered["steps"] if r["step_id"] == "push")
    assert row["delivered"] is None and row["opened"] is None and row["delivery_rate"] is None
    assert "LINE reports no per-recipient delivery" in row["not_measured"]["delivered"]


def test_email_steps_keep_delivered_and_opened() -> None:
    report = build_report(S, channel_cells(), meta=CHANNEL_META, at=AT)
    mail = next(r for r in report.steps if r.step_id == "mail")
    assert (mail.channel, mail.delivered, mail.opened, mail.converted) == ("email", 29, 12, 4)
    assert mail.delivery_rate == pytest.approx(29 / 30) and mail.open_rate == pytest.approx(0.4)
    assert mail.not_measured == {}


def test_cells_counted_before_issue_12_take_the_channel_of_a_single_channel_step() -> None:
    old = [
        (ReportCell(S, 1, "push"), {"sent": 10, "delivered": 0, "opened": 0}),  # the zeros read wrong
        (ReportCell(S, 1, "either"), {"sent": 5, "delivered": 2}),
    ]
    report = build_report(S, old, meta=CHANNEL_META, at=AT)
    push, either = report.steps
    assert (push.channel, push.delivered, push.opened) == ("line", None, None)
    # A step that may send on either channel: its old sends' channel is unknown, so the figures are
    # shown as counted (mail's only) and a note says so.
    assert (either.channel, either.delivered) == (None, 2)
    assert any("step either" in n and "mail only" in n for n in report.notes)
    assert [c.channel for c in report.channels] == ["line"]


def test_channels_add_up_their_steps_and_define_imp() -> None:
    report = build_report(S, channel_cells(), meta=CHANNEL_META, at=AT)
    email, line = report.channels
    assert (line.channel, line.sent, line.delivered, line.opened, line.clicked, line.converted) == (
        "line",
        150,
        None,
        None,
        15,
        9,
    )
    assert (
        line.imp is not None
        and "push / multicast" in line.imp
        and set(line.not_measured)
        == {
            "delivered",
            "opened",
        }
    )
    assert (email.channel, email.sent, email.delivered, email.opened, email.revenue) == (
        "email",
        30,
        29,
        12,
        Decimal("4000"),
    )
    assert email.imp is not None and "SES" in email.imp and email.not_measured == {}


def test_conversions_split_by_channel_add_up_to_the_total() -> None:
    report = build_report(S, channel_cells(), meta=CHANNEL_META, at=AT)
    shares = {s.attributed_to: s.converted for s in report.conversions}
    assert shares == {"line": 9, "email": 4, "no_message": 1, "holdout": 1}
    assert sum(shares.values()) == report.treatment.converted + report.holdout.converted == 15
    assert (report.treatment.converted, report.holdout.converted) == (14, 1)
    assert sum((s.revenue for s in report.conversions), Decimal(0)) == report.treatment.revenue


def test_conversions_counted_before_issue_12_are_not_recorded_not_guessed() -> None:
    cells = [*channel_cells(), (ReportCell(S, 1), {"converted": 6})]
    report = build_report(S, cells, meta=CHANNEL_META, at=AT)
    shares = {s.attributed_to: s.converted for s in report.conversions}
    assert shares["not_recorded"] == 6 and sum(shares.values()) == 21 == report.treatment.converted + 1


def test_per_day_series_in_tokyo_days() -> None:
    cells = [*channel_cells(), (ReportCell(S, 1, "push", channel="line", day="2026-05-03"), {"sent": 5})]
    report = build_report(S, cells, meta=CHANNEL_META, at=AT)
    assert [d.day for d in report.days] == [D1, D2, "2026-05-02", "2026-05-03"]
    first, second, gap, last = report.days
    assert (first.enrolled, first.sent, first.clicked, first.converted) == (200, 150, 15, 0)
    assert first.delivered is None and "only LINE" in first.not_measured["delivered"]  # LINE sends only
    assert (second.sent, second.delivered, second.converted, second.holdout_converted) == (30, 29, 14, 1)
    assert (gap.sent, gap.delivered) == (0, 0)  # a day with nothing counted, filled in
    assert last.delivered is None
    assert sum(d.sent for d in report.days) == sum(r.sent for r in report.steps)


def test_undated_cells_are_one_row_after_the_days() -> None:
    cells = [*channel_cells(), (ReportCell(S, 1, "mail", channel="email"), {"sent": 7})]
    report = build_report(S, cells, meta=CHANNEL_META, at=AT)
    assert [d.day for d in report.days] == [D1, D2, None] and report.days[-1].sent == 7

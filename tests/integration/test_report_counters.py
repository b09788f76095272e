"""Report counters under moto, what only DynamoDB does: a `once` marker with its TTL, a transaction
that collided tried again, the index of scenarios kept by another process, a planted outcome read
back as a report. Counting per cell, revenue, `once` and free-text variants are the journeys contract
suite's (tests/integration/test_journeys_contract.py); aggregated counts, shards, the layout before
them and racing workers are tests/integration/test_report_counters_contract.py's; a report of
journeys the runner counted is tested on the in-memory stores
(tests/unit/test_scenario_runner_behaviour.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cems import clock
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.adapters.dynamodb.report_counters import ONCE_TTL, ReportCounters, once_key
from cems.reports.counters import Metric, ReportCell, dated
from cems.reports.report import ReportService
from cems.scenario.assignment import in_holdout, pick_variant
from cems.scenario.model import Variant

TABLE = "JourneysTable"
EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
def counters(dynamodb: Any) -> ReportCounters:
    clock.freeze(NOW)
    return ReportCounters(TABLE, dynamodb)


def test_a_fact_named_once_counts_once(counters: ReportCounters, dynamodb: Any) -> None:
    cell = ReportCell("welcome", 1, "mail", None)
    assert counters.add(cell, Metric.OPENED, once="opened#d1") is True
    assert counters.add(cell, Metric.OPENED, once="opened#d1") is False
    assert counters.add(cell, Metric.OPENED, once="opened#d2") is True
    # The same fact name in another scenario is another fact.
    assert counters.add(ReportCell("other", 1), Metric.OPENED, once="opened#d1") is True
    # Dated by the store with the Tokyo day it counted on.
    assert dict(counters.cells("welcome"))[dated(cell, NOW)] == {"opened": 2}
    marker = dynamodb.get_item(TableName=TABLE, Key=once_key("welcome", "opened#d1"))["Item"]
    assert int(marker["expires_at"]["N"]) == int((NOW + ONCE_TTL).timestamp())


def test_a_conflicting_transaction_is_tried_again(counters: ReportCounters, dynamodb: Any) -> None:
    # moto in-process is not thread-safe, so a collision is played: the first attempt is cancelled
    # by a TransactionConflict (not by the marker), the second goes through.
    calls: list[int] = []
    real = dynamodb.transact_write_items

    def flaky(**kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise ClientError(
                {
                    "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
                    "CancellationReasons": [{"Code": "TransactionConflict"}, {"Code": "None"}],
                },
                "TransactWriteItems",
            )
        return real(**kwargs)

    dynamodb.transact_write_items = flaky
    cell = ReportCell("welcome", 1, "mail")
    assert counters.add(cell, Metric.CLICKED, once="clicked#d9") is True
    assert counters.add(cell, Metric.CLICKED, once="clicked#d9") is False
    assert len(calls) == 3
    assert dict(counters.cells("welcome"))[dated(cell, NOW)] == {"clicked": 1}


def test_scenarios_that_counted_are_listed(counters: ReportCounters, dynamodb: Any) -> None:
    counters.add(ReportCell("b", 1), Metric.ENROLLED)
    counters.add(ReportCell("a", 3), Metric.ENROLLED)
    # Another process (a fresh cache) adds to an indexed scenario: the index entry stays as it was.
    ReportCounters(TABLE, dynamodb).add(ReportCell("a", 3), Metric.ENROLLED)
    assert counters.scenario_ids() == ["a", "b"]


# -- a report for a planted outcome -------------------------------------------------------------------


def test_a_report_shows_the_planted_outcome(counters: ReportCounters, dynamodb: Any) -> None:
    """1,000 customers, a 10% holdout, an A/B split; conversions planted at 12% in the treatment
    group and 8% in the holdout, each worth ¥1,000. Counted as the runner and senders count them,
    read back as the admin API reads them."""
    scenario, customers, holdout_percent = "planted", 1000, 10
    variants = [Variant(name="A", weight=1, next="mail-a"), Variant(name="B", weight=1, next="mail-b")]
    seen = {False: 0, True: 0}
    expected = {False: [0, 0], True: [0, 0]}  # [enrolled, converted]
    for i in range(customers):
        customer = f"cus_{i:05d}"
        held = in_holdout(scenario, customer, holdout_percent)
        variant = pick_variant(scenario, "split", customer, variants).name
        counters.add(ReportCell(scenario, 1, holdout=held), Metric.HELD_OUT if held else Metric.ENROLLED)
        counters.add(ReportCell(scenario, 1, variant=variant, holdout=held), Metric.ENROLLED)
        step = f"mail-{variant.lower()}"
        if held:
            counters.add(ReportCell(scenario, 1, step, variant, holdout=True), Metric.HELD_OUT)
        else:
            sent = ReportCell(scenario, 1, step, variant)
            counters.add(sent, Metric.SENT)
            # Delivery and opens for the first 100 only: moto takes ~10 ms a request.
            if i < 100:
                counters.add(sent, Metric.DELIVERED)
                if i % 2 == 0:
                    counters.add(sent, Metric.OPENED)
        # Spread evenly: the n-th customer of a group converts when ⌊(n+1)·r⌋ passes ⌊n·r⌋, so the
        # first N customers hold ⌊N·r⌋ conversions (r = 3/25 = 12%, 2/25 = 8%).
        n, per_25 = seen[held], (2 if held else 3)
        seen[held] += 1
        expected[held][0] += 1
        if (n + 1) * per_25 // 25 > n * per_25 // 25:
            expected[held][1] += 1
            counters.add(
                ReportCell(scenario, 1, variant=variant, holdout=held),
                Metric.CONVERTED,
                revenue=Decimal(1000),
            )
    report = ReportService(counters, ScenarioStore(TABLE, dynamodb)).report(scenario)

    n1, x1 = expected[False]
    n0, x0 = expected[True]
    assert 60 <= n0 <= 140 and n1 + n0 == customers  # about 10% held out
    assert (report.enrolled, report.held_out) == (customers, n0)
    assert (report.treatment.enrolled, report.treatment.converted) == (n1, x1)
    assert (report.holdout.enrolled, report.holdout.converted) == (n0, x0)
    # The planted rates, within one conversion of rounding.
    assert report.treatment.conversion_rate == pytest.approx(0.12, abs=1 / n1)
    assert report.holdout.conversion_rate == pytest.approx(0.08, abs=1 / n0)
    assert report.lift.absolute_ci is not None and report.lift.relative_ci is not None
    assert report.lift.absolute_ci.low < 0.04 < report.lift.absolute_ci.high
    assert report.lift.relative_ci.low < 0.5 < report.lift.relative_ci.high
    assert report.treatment.revenue == Decimal(1000) * x1
    assert report.treatment.revenue_per_enrolled == pytest.approx(1000 * x1 / n1)
    # Per variant: entries add up, each compared with the holdout customers of the same variant.
    assert {v.variant for v in report.variants} == {"A", "B"}
    assert sum(v.treatment.enrolled for v in report.variants) == n1
    assert sum(v.treatment.converted for v in report.variants) == x1
    assert all(v.compared_with == "variant_holdout" for v in report.variants)
    # The funnel: every treatment customer was sent one mail; rates are per sent.
    rows = {row.step_id: row for row in report.steps}
    assert rows["mail-a"].sent + rows["mail-b"].sent == n1
    assert rows["mail-a"].held_out + rows["mail-b"].held_out == n0
    delivered = rows["mail-a"].delivered + rows["mail-b"].delivered
    assert delivered == sum(1 for i in range(100) if not in_holdout(scenario, f"cus_{i:05d}", 10))
    assert rows["mail-a"].delivery_rate == pytest.approx(rows["mail-a"].delivered / rows["mail-a"].sent)
    assert rows["mail-a"].open_rate == pytest.approx(rows["mail-a"].opened / rows["mail-a"].sent)
    json.loads(report.model_dump_json())  # plain JSON, no NaN

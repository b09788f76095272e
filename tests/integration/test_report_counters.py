"""Report counters under moto: ADD per cell, revenue, `once` facts counted once, cells read back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cems import clock
from cems.reports.counters import ONCE_TTL, Metric, ReportCell, ReportCounters, once_key

TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)


@pytest.fixture
def counters(dynamodb: Any) -> ReportCounters:
    clock.freeze(NOW)
    return ReportCounters(TABLE, dynamodb)


def test_counts_add_up_per_cell(counters: ReportCounters) -> None:
    scenario = ReportCell("welcome", 1)
    held = ReportCell("welcome", 1, holdout=True)
    step_a = ReportCell("welcome", 1, "offer", "A")
    for _ in range(3):
        assert counters.add(scenario, Metric.ENROLLED)
    counters.add(held, Metric.HELD_OUT)
    counters.add(step_a, Metric.SENT)
    counters.add(step_a, Metric.SENT)
    counters.add(step_a, Metric.CLICKED)
    cells = dict(counters.cells("welcome"))
    assert cells[scenario] == {"enrolled": 3}
    assert cells[held] == {"held_out": 1}
    assert cells[step_a] == {"sent": 2, "clicked": 1}
    assert counters.cells("nothing") == []


def test_revenue_is_added_with_the_conversion(counters: ReportCounters) -> None:
    cell = ReportCell("post-purchase", 2, variant="B")
    counters.add(cell, Metric.CONVERTED, revenue=Decimal("1200"))
    counters.add(cell, Metric.CONVERTED, revenue=Decimal("980.5"))
    [(read, counts)] = counters.cells("post-purchase")
    assert read == cell
    assert counts == {"converted": 2, "revenue": Decimal("2180.5")}


def test_a_fact_named_once_counts_once(counters: ReportCounters, dynamodb: Any) -> None:
    cell = ReportCell("welcome", 1, "mail", None)
    assert counters.add(cell, Metric.OPENED, once="opened#d1") is True
    assert counters.add(cell, Metric.OPENED, once="opened#d1") is False
    assert counters.add(cell, Metric.OPENED, once="opened#d2") is True
    # The same fact name in another scenario is another fact.
    assert counters.add(ReportCell("other", 1), Metric.OPENED, once="opened#d1") is True
    assert dict(counters.cells("welcome"))[cell] == {"opened": 2}
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
    assert dict(counters.cells("welcome"))[cell] == {"clicked": 1}


def test_cells_keep_free_text_variants_apart(counters: ReportCounters) -> None:
    # A variant named "-" or holding "#" must not collide with "no variant" or another cell.
    plain = ReportCell("s", 1, "step")
    dash = ReportCell("s", 1, "step", "-")
    hashy = ReportCell("s", 1, "step", "x#G#h")
    for cell in (plain, dash, hashy):
        counters.add(cell, Metric.SENT)
    assert {cell for cell, _ in counters.cells("s")} == {plain, dash, hashy}


def test_scenarios_that_counted_are_listed(counters: ReportCounters, dynamodb: Any) -> None:
    counters.add(ReportCell("b", 1), Metric.ENROLLED)
    counters.add(ReportCell("a", 3), Metric.ENROLLED)
    # Another process (a fresh cache) adds to an indexed scenario: the index entry stays as it was.
    ReportCounters(TABLE, dynamodb).add(ReportCell("a", 3), Metric.ENROLLED)
    assert counters.scenario_ids() == ["a", "b"]

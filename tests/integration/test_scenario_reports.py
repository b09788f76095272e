"""The engine's report counters under moto: entries of the treatment group and the holdout, a
conversion with its Order Completed revenue, and sends held back from the holdout, each counted once
however often the same event reaches the runner."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.reports.counters import Metric
from cems.reports.report import build_report
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import ScenarioRunner

from tests.integration.journeys import drain_queue, put_customer, put_track_event

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
TABLE = "JourneysTable"
SCENARIO = "cart-abandonment"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo: inside the send window


@pytest.fixture
def runner(dynamodb: Any, stores: Stores) -> tuple[ScenarioRunner, ReportCounters]:
    clock.freeze(NOW)
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    queue_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    scenarios = ScenarioStore(TABLE, dynamodb)
    document = json.loads((EXAMPLES / "cart_abandonment.json").read_text(encoding="utf-8"))
    scenarios.put_version(Scenario.model_validate(document), document, ScenarioSource("s.json", "e"))
    counters = ReportCounters(TABLE, dynamodb)
    runner = ScenarioRunner(
        scenarios,
        EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment),
        CapStore(TABLE, dynamodb),
        stores.customers,
        stores.events,
        QueueDispatchSink(sqs, queue_url),
        counters=counters,
    )
    runner.drain = lambda: drain_queue(sqs, queue_url)  # type: ignore[attr-defined]
    return runner, counters


def test_entries_conversions_and_revenue_are_counted_once_per_journey(
    runner: tuple[ScenarioRunner, ReportCounters], stores: Stores
) -> None:
    engine_runner, counters = runner
    ids = [f"cus_rep_{n:03d}" for n in range(200)]
    treated = [c for c in ids if not in_holdout(SCENARIO, c, 5)][:6]
    held = [c for c in ids if in_holdout(SCENARIO, c, 5)][:2]
    events = {}
    for n, customer_id in enumerate(treated + held):
        put_customer(stores.customers, customer_id, NOW)
        events[customer_id] = put_track_event(
            stores.events, customer_id, "Product Added", f"add-{n}", "shop", name="玉露"
        )
    for event in events.values():
        engine_runner.on_stored_event(event)
        engine_runner.on_stored_event(event)  # the stream delivers it again: counted once

    buyer = treated[0]
    order = put_track_event(
        stores.events, buyer, "Order Completed", "order-1", "shop", order_id="o-1", revenue=3000
    )
    engine_runner.on_stored_event(order)
    engine_runner.on_stored_event(order)

    report = build_report(SCENARIO, counters.cells(SCENARIO))
    assert report.treatment.enrolled == 6
    assert report.holdout.enrolled == 2
    assert report.treatment.converted == 1
    assert report.treatment.revenue == Decimal(3000)
    assert report.holdout.converted == 0

    # An hour on: the five who did not buy are reminded; the holdout's reminder is held back.
    clock.advance(2 * 3600)
    engine_runner.tick()
    sent = engine_runner.drain()  # type: ignore[attr-defined]
    assert len(sent) == 5
    cells = counters.cells(SCENARIO)
    remind = [counts for cell, counts in cells if cell.step_id == "remind" and cell.holdout]
    held_back = sum(int(counts.get(Metric.HELD_OUT, 0)) for counts in remind)
    assert held_back == 2
    engine_runner.tick()
    assert build_report(SCENARIO, counters.cells(SCENARIO)).treatment.enrolled == 6

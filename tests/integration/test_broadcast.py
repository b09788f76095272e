"""Broadcasts under moto: tick starts a run once; the broadcast worker works through the segments of
CustomersTable's parallel Scan (handing on when time runs low, resuming from recorded progress) and
every customer in the audience, outside the holdout, gets exactly one LINE dispatch."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.broadcasts import BroadcastStore
from cems.adapters.dynamodb.customers import CustomerStore, Stores
from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
from cems.adapters.dynamodb.keys import broadcast_segment_key
from cems.adapters.sqs import SqsQueue
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.broadcast import BroadcastStarter, BroadcastWorker, SegmentMessage, run_id, run_time
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import ScenarioRunner

from tests.integration.journeys import drain_queue, put_customer

TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
AT = NOW + timedelta(minutes=5)
SCENARIO_ID = "broadcast-test"
HOLDOUT = 10
SEGMENTS = 4
CUSTOMERS = 300

DOCUMENT: dict[str, Any] = {
    "id": SCENARIO_ID,
    "name": "新茶のご案内 (test)",
    "version": 1,
    "priority": 50,
    "trigger": {"type": "broadcast", "at": "2026-05-01T12:05:00+09:00"},
    "audience": {"kind": "reachable", "channel": "line"},
    "entry": {"reentry": "after_exit", "holdout_percent": HOLDOUT},
    "steps": [
        {
            "id": "announce",
            "type": "send",
            "channel": "line",
            "line": [{"type": "text", "text": "新茶が入荷しました🍃"}],
        },
        {"id": "done", "type": "end"},
    ],
}


class Broadcast:
    def __init__(self, dynamodb: Any, stores: Stores) -> None:
        self.dynamodb = dynamodb
        self.stores = stores
        self.sqs = boto3.client("sqs", region_name="ap-northeast-1")
        self.line_url = self.sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
        self.broadcast_url = self.sqs.create_queue(QueueName="BroadcastQueue")["QueueUrl"]
        self.scenarios = ScenarioStore(TABLE, dynamodb)
        self.enrolments = EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment)
        self.runner = ScenarioRunner(
            self.scenarios,
            self.enrolments,
            CapStore(TABLE, dynamodb),
            stores.customers,
            stores.events,
            QueueDispatchSink(self.sqs, self.line_url),
        )
        self.store = BroadcastStore(TABLE, dynamodb)
        queue = SqsQueue(self.sqs, self.broadcast_url)
        self.starter = BroadcastStarter(self.scenarios, self.store, queue, SEGMENTS)
        self.worker = BroadcastWorker(
            self.runner, self.store, CustomerStore("CustomersTable", dynamodb), queue, page_size=15
        )

    def customer(self, customer_id: str, line: bool) -> None:
        put_customer(self.stores.customers, customer_id, NOW, line=line)

    def drain(self, url: str) -> list[dict[str, Any]]:
        return drain_queue(self.sqs, url)


@pytest.fixture
def broadcast(dynamodb: Any, stores: Stores) -> Broadcast:
    clock.freeze(NOW)
    harness = Broadcast(dynamodb, stores)
    harness.scenarios.put_version(
        Scenario.model_validate(DOCUMENT), DOCUMENT, ScenarioSource("scenarios/b.json", "e1")
    )
    return harness


def _audience(harness: Broadcast) -> set[str]:
    """300 customers: every third without LINE (outside the audience); the rest, less the holdout."""
    expected: set[str] = set()
    for n in range(CUSTOMERS):
        customer_id = f"cus_{n:04d}"
        line = n % 3 != 0
        harness.customer(customer_id, line)
        if line and not in_holdout(SCENARIO_ID, customer_id, HOLDOUT):
            expected.add(customer_id)
    return expected


def _work(harness: Broadcast, remaining: list[int]) -> int:
    """Runs every message on BroadcastQueue (and those handed on) to the end; the invocations."""
    invocations = 0
    while True:
        bodies = harness.drain(harness.broadcast_url)
        if not bodies:
            return invocations
        for body in bodies:
            invocations += 1
            # Time runs low after the first page of every other invocation: the rest is handed on.
            ms = iter(remaining if invocations % 2 else [60_000] * 100)
            harness.worker.run_segment(SegmentMessage.model_validate(body), lambda ms=ms: next(ms, 60_000))


def test_a_broadcast_reaches_every_customer_in_its_audience_once(broadcast: Broadcast) -> None:
    expected = _audience(broadcast)
    assert 150 < len(expected) < 200  # some outside the audience, some held out

    assert broadcast.starter.start_due().started == 0  # not yet
    clock.advance(6 * 60)
    first, second = broadcast.starter.start_due(), broadcast.starter.start_due()
    assert (first.started, first.segments) == (1, SEGMENTS)
    assert (second.started, second.restarted, second.segments) == (0, 0, 0)  # started once

    messages = broadcast.drain(broadcast.broadcast_url)
    assert sorted(m["segment"] for m in messages) == list(range(SEGMENTS))
    for body in messages:
        broadcast.sqs.send_message(QueueUrl=broadcast.broadcast_url, MessageBody=json.dumps(body))
    invocations = _work(broadcast, remaining=[1_000])
    assert invocations > SEGMENTS  # segments were handed on when time ran low

    sent = broadcast.drain(broadcast.line_url)
    recipients = Counter(r for dispatch in sent for r in dispatch["recipients"])
    assert set(recipients) == expected
    assert all(count == 1 for count in recipients.values())

    run = run_id(AT)
    progress = [broadcast.store.progress(SCENARIO_ID, run, n) for n in range(SEGMENTS)]
    assert all(p is not None and p.done for p in progress)
    assert sum(p.profiles for p in progress if p is not None) == CUSTOMERS
    assert sum(p.dispatched for p in progress if p is not None) == len(expected)

    # A segment message delivered again sends nothing: finished segments are not scanned again...
    for body in messages:
        report = broadcast.worker.run_segment(SegmentMessage.model_validate(body), lambda: 60_000)
        assert report.outcome == "done" and report.profiles == 0
    # ...and a segment whose progress was lost (died before recording) skips who this run enrolled.
    broadcast.dynamodb.delete_item(TableName=TABLE, Key=broadcast_segment_key(SCENARIO_ID, run, 0))
    report = broadcast.worker.run_segment(SegmentMessage.model_validate(messages[0]), lambda: 60_000)
    assert report.outcome == "done" and report.profiles > 0
    assert report.run is not None and report.run.dispatched == 0
    assert broadcast.drain(broadcast.line_url) == []
    assert broadcast.drain(broadcast.broadcast_url) == []


def test_a_redelivered_segment_resumes_where_it_stopped(broadcast: Broadcast) -> None:
    expected = _audience(broadcast)
    clock.advance(6 * 60)
    broadcast.starter.start_due()
    messages = [SegmentMessage.model_validate(m) for m in broadcast.drain(broadcast.broadcast_url)]
    # The first invocation of segment 0 stops after a page (its hand-on message is lost) ...
    first = broadcast.worker.run_segment(messages[0], lambda: 0)
    assert first.outcome == "continued" and first.pages == 1
    broadcast.drain(broadcast.broadcast_url)
    # ... and the original message, redelivered, carries on from the recorded page.
    again = broadcast.worker.run_segment(messages[0], lambda: 60_000)
    assert again.outcome == "done"
    for message in messages[1:]:
        broadcast.worker.run_segment(message, lambda: 60_000)
    recipients = Counter(r for d in broadcast.drain(broadcast.line_url) for r in d["recipients"])
    assert set(recipients) == expected and set(recipients.values()) == {1}


def test_run_times() -> None:
    scenario = Scenario.model_validate({**DOCUMENT, "trigger": {"type": "broadcast", "cron": "0 10 * * *"}})
    uploaded = datetime(2026, 4, 1, tzinfo=UTC)
    ten_jst = datetime(2026, 5, 1, 1, 0, tzinfo=UTC)
    assert run_time(scenario, uploaded, ten_jst - timedelta(minutes=1)) is None
    assert run_time(scenario, uploaded, ten_jst) == ten_jst
    assert run_time(scenario, uploaded, ten_jst + timedelta(minutes=30)) == ten_jst
    assert run_time(scenario, uploaded, ten_jst + timedelta(hours=2)) is None  # too late to catch up
    assert run_time(scenario, ten_jst + timedelta(minutes=1), ten_jst + timedelta(minutes=30)) is None
    assert run_id(ten_jst) == "20260501T0100Z"

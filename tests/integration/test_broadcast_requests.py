"""The broadcast worker's AWS requests per recipient, counted from what moto receives (every HTTP send
botocore makes on the worker's clients, as bench/aws_requests.py counts them), with the runner built
by cems.wiring as the broadcast function builds it (report counters, the SQS dispatch sink): issue
11's ~12 sequential requests a customer become requests per page, shared by its recipients."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.broadcasts import BroadcastStore
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.adapters.sqs import SqsQueue
from cems.scenario.broadcast import BroadcastWorker, SegmentMessage
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource
from cems.settings import Settings
from cems.wiring import runner as wired_runner

from tests.integration.contract_tables import empty_dynamodb, empty_sqs, empty_stores, module_dynamodb  # noqa: F401
from tests.integration.journeys import put_customer

NOW = datetime(2026, 5, 8, 3, 1, tzinfo=UTC)  # 12:01 in Tokyo
RUN_AT = NOW - timedelta(minutes=1)
CUSTOMERS = 300
DOCUMENT: dict[str, Any] = {
    "id": "shincha",
    "name": "shincha",
    "version": 1,
    "trigger": {"type": "broadcast", "at": "2026-05-08T12:00:00+09:00"},
    "audience": {"kind": "reachable", "channel": "line"},
    "entry": {"reentry": "never", "holdout_percent": 5},
    "steps": [
        {"id": "announce", "type": "send", "channel": "line", "line": [{"type": "text", "text": "新茶🍃"}]},
        {"id": "done", "type": "end"},
    ],
}


def test_a_broadcast_page_costs_a_fraction_of_a_request_per_recipient(request: pytest.FixtureRequest) -> None:
    dynamodb: Any = request.getfixturevalue("empty_dynamodb")
    sqs: Any = request.getfixturevalue("empty_sqs")
    stores: Stores = request.getfixturevalue("empty_stores")
    clock.freeze(NOW)
    try:
        line_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
        broadcast_url = sqs.create_queue(QueueName="BroadcastQueue")["QueueUrl"]
        settings = Settings(
            {
                "LINE_SEND_QUEUE_URL": line_url,
                "BROADCAST_QUEUE_URL": broadcast_url,
                "CEMS_DUE_SHARDS": "4",
                "CEMS_TRACKING_SECRET": "test-tracking-secret-of-some-length-0123456789",
                "CEMS_LINE_CHANNEL_SECRET": "test-channel-secret",
                "CEMS_LINE_CHANNEL_ACCESS_TOKEN": "test-channel-access-token",
            }
        )
        scenario = Scenario.model_validate(DOCUMENT)
        ScenarioStore("JourneysTable", dynamodb).put_version(
            scenario, DOCUMENT, ScenarioSource("scenarios/shincha.json", "e1")
        )
        for n in range(CUSTOMERS):
            put_customer(stores.customers, f"cus_{n:04d}", NOW, line=n % 10 != 0)
        worker = BroadcastWorker(
            wired_runner(dynamodb, sqs, settings),
            BroadcastStore("JourneysTable", dynamodb),
            stores.customers,
            SqsQueue(sqs, broadcast_url),
        )
        message = SegmentMessage(
            scenario_id="shincha", version=1, run="20260508T0300Z", run_at=RUN_AT, segment=0, total_segments=1
        )
        sent: Counter[str] = Counter()

        def count(event_name: str, **_: Any) -> None:
            sent[event_name.split(".")[1] + ":" + event_name.rsplit(".", 1)[-1]] += 1

        for client in (dynamodb, sqs):
            client.meta.events.register("before-send.*.*", count)
        try:
            report = worker.run_segment(message, lambda: 300_000)
        finally:
            for client in (dynamodb, sqs):
                client.meta.events.unregister("before-send.*.*", count)
        assert report.outcome == "done" and report.run is not None
        recipients = report.run.dispatched
        assert 200 < recipients < CUSTOMERS
        per_recipient = sum(sent.values()) / recipients
        print(f"broadcast worker requests per recipient: {per_recipient:.3f} {dict(sent)}")
        assert per_recipient <= 0.25, dict(sent)
        # The scenario lists (each read at most once a minute): no history, no Query per customer.
        assert sent["dynamodb:Query"] <= 2
        # One page: its identical LINE sends are one shared dispatch on LineSendQueue.
        bodies = sqs.receive_message(QueueUrl=line_url, MaxNumberOfMessages=10)["Messages"]
        assert len(bodies) == 1
    finally:
        clock.reset()

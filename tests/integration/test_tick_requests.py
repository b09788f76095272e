"""The tick's read requests per due enrolment, counted from what moto receives (every HTTP send
botocore makes, as bench/aws_requests.py counts them): issue 11 aims at <= 2 (7 before). A tick
reads a batch's enrolments, profiles and cap counters in BatchGetItems, and the event history only
for a journey whose decision reads it."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
from cems.models import ChannelState, Profile
from cems.scenario import engine
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import ScenarioRunner

from tests.fakes.scenario_io import RecordingDispatchSink

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, empty_stores, module_dynamodb  # noqa: F401

TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
DUE = 60
READS = {"GetItem", "BatchGetItem", "Query", "Scan"}

DOCUMENT: dict[str, Any] = {
    "id": "coupon",
    "name": "coupon",
    "version": 1,
    "trigger": {"type": "event", "event": "Signed Up"},
    "steps": [
        {"id": "pause", "type": "wait", "duration": "1d"},
        {"id": "coupon", "type": "send", "channel": "line", "line": [{"type": "text", "text": "クーポン"}]},
    ],
}


def test_a_tick_reads_at_most_two_requests_per_due_enrolment(request: pytest.FixtureRequest) -> None:
    dynamodb: Any = request.getfixturevalue("empty_dynamodb")
    stores: Stores = request.getfixturevalue("empty_stores")
    clock.freeze(NOW)
    try:
        scenario = Scenario.model_validate(DOCUMENT)
        scenarios = ScenarioStore(TABLE, dynamodb)
        scenarios.put_version(scenario, DOCUMENT, ScenarioSource("scenarios/coupon.json", "e1"))
        enrolments = EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment)
        customers = stores.customers
        for n in range(DUE):
            customer_id = f"c{n:03d}"
            profile = Profile(
                customer_id=customer_id,
                line_user_id="U" + f"{n:032x}",
                channels={"line": ChannelState(reachable=True, consent=True, updated_at=NOW)},
                first_seen_at=NOW - timedelta(days=30),
                updated_at=NOW,
            )
            customers.client.put_item(TableName=customers.table_name, Item=customers.profile_item(profile))
            waiting = engine.Enrolment(
                customer_id=customer_id,
                scenario_id="coupon",
                version=1,
                step_id="pause",
                state=engine.EnrolmentState.WAITING,
                entered_at=NOW - timedelta(days=1, hours=1),
                due_at=NOW - timedelta(minutes=5),
            )
            assert enrolments.create(waiting) is not None
        sink = RecordingDispatchSink()
        runner = ScenarioRunner(
            scenarios, enrolments, CapStore(TABLE, dynamodb), customers, stores.events, sink
        )
        sent: Counter[str] = Counter()

        def count(event_name: str, **_: Any) -> None:
            sent[event_name.rsplit(".", 1)[-1]] += 1

        # Every client the runner uses is this one (the customer stores share it).
        assert customers.client is dynamodb
        dynamodb.meta.events.register("before-send.dynamodb.*", count)
        try:
            report = runner.tick(NOW)
        finally:
            dynamodb.meta.events.unregister("before-send.dynamodb.*", count)
        assert report.due == DUE and report.dispatched == DUE
        reads = sum(n for operation, n in sent.items() if operation in READS)
        per_due = reads / DUE
        # Shards' index queries, one scenario version read, and per batch of 100: one BatchGetItem
        # of enrolments, one of profiles, 4 cap counters a customer in BatchGetItems of 100; no history.
        print(f"tick reads per due enrolment: {per_due:.3f} {dict(sent)}")
        assert per_due <= 2, (per_due, dict(sent))
        assert sent["BatchGetItem"] <= 1 + 1 + 3
        assert sent["GetItem"] <= 1
    finally:
        clock.reset()

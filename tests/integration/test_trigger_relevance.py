"""The trigger skips what no scenario can use (issue 11), under moto: an irrelevant event costs no
request beyond its own write, counted from what moto receives; a relevant one still enrols and
advances; an event stored under a customer id since merged away reaches the surviving journeys; a
stopped scenario's running journeys still get their events (ScenarioStore's stopped marker itself:
test_journeys_contract.py)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.models import ChannelState, MessageType, Profile, StoredEvent
from cems.scenario.assignment import in_holdout
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource

from tests.integration.test_trigger_tick_handlers import ROOT, FakeLambdaContext, _load, _record

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
SCENARIO = "cart-abandonment"


class MotoRequests:
    """Every request moto's in-process backend receives (its recorder sees each one), by target."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from moto.moto_api import recorder

        self.sent: Counter[str] = Counter()
        original = recorder._record_request

        def record(request: Any, body: bytes | None = None) -> None:
            target = request.headers.get("X-Amz-Target") or request.host
            self.sent[str(target).rsplit(".", 1)[-1]] += 1
            original(request, body)

        monkeypatch.setattr(recorder, "_record_request", record)

    def clear(self) -> None:
        self.sent.clear()


@dataclass
class World:
    trigger: ModuleType
    dynamodb: Any
    stores: Stores
    scenarios: ScenarioStore
    moto: MotoRequests

    def handle(self, *events: StoredEvent) -> Counter[str]:
        """The events stored (not counted) and their stream records handled: what moto received."""
        records = [_record(self.stores, e) for e in events]
        self.moto.clear()
        answer = self.trigger.lambda_handler({"Records": records}, FakeLambdaContext())
        assert answer == {"batchItemFailures": []}
        return Counter(self.moto.sent)

    def enrolment(self, customer_id: str) -> Any:
        return self.trigger.runner.enrolments.get(customer_id, SCENARIO)


@pytest.fixture
def world(dynamodb: Any, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    clock.freeze(NOW)
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    for name, value in {
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "LINE_SEND_QUEUE_URL": sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"],
        "JOURNEYS_TABLE": "JourneysTable",
        "CEMS_DUE_SHARDS": "4",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()
    scenarios = ScenarioStore("JourneysTable", dynamodb)
    document = json.loads((ROOT / "examples" / "scenarios" / "cart_abandonment.json").read_text("utf-8"))
    scenarios.put_version(
        Scenario.model_validate(document), document, ScenarioSource("scenarios/cart.json", "e1")
    )
    yield World(_load("trigger"), dynamodb, stores, scenarios, MotoRequests(monkeypatch))
    clock.reset()
    aws.dynamodb.cache_clear()


def _customer(world: World, prefix: str = "cus_r", **update: Any) -> str:
    customer_id = next(c for c in (f"{prefix}{n:03d}" for n in range(100)) if not in_holdout(SCENARIO, c, 5))
    profile = Profile(
        customer_id=customer_id,
        line_user_id="U" + "b" * 32,
        channels={"line": ChannelState(reachable=True, consent=True, updated_at=NOW)},
        first_seen_at=NOW - timedelta(days=3),
        updated_at=NOW,
    ).model_copy(update=update)
    world.dynamodb.put_item(TableName="CustomersTable", Item=world.stores.customers.profile_item(profile))
    return customer_id


def _event(
    customer_id: str, message_id: str, name: str | None, kind: MessageType = MessageType.TRACK
) -> StoredEvent:
    return StoredEvent(
        customer_id=customer_id,
        site_id="shop",
        type=kind,
        message_id=message_id,
        event=name,
        timestamp=clock.now(),
        received_at=clock.now(),
        properties={"name": "煎茶"} if name else {},
    )


def test_an_irrelevant_event_costs_no_request_and_a_relevant_one_still_enrols(world: World) -> None:
    customer = _customer(world)
    # A warm container: the scenario summaries, the scenarios in play and the version are read once.
    first = world.handle(_event(customer, "m-0", None, MessageType.PAGE))
    assert first["Query"] >= 1 and "TransactWriteItems" not in first
    assert world.handle(_event(customer, "m-1", None, MessageType.PAGE)) == Counter()
    assert world.handle(_event(customer, "m-2", "Product Viewed")) == Counter()
    # A batch of page views: nothing either.
    pages = [_event(customer, f"m-p{n}", None, MessageType.PAGE) for n in range(20)]
    assert world.handle(*pages) == Counter()
    assert world.enrolment(customer) is None

    added = world.handle(_event(customer, "m-3", "Product Added"))
    assert added["GetItem"] >= 1 and added["TransactWriteItems"] + added["PutItem"] >= 1
    assert world.enrolment(customer).state == "waiting_event"
    # The goal (also the awaited event) still reaches the running journey.
    clock.advance(600)
    world.handle(_event(customer, "m-4", "Order Completed"))
    assert world.enrolment(customer).state == "converted"


def test_an_event_under_a_merged_away_id_reaches_the_surviving_journey(world: World) -> None:
    survivor = _customer(world, "cus_s")
    merged_away = _customer(world, "cus_m", merged_into=survivor)
    world.handle(_event(survivor, "m-1", "Product Added"))
    assert world.enrolment(survivor).state == "waiting_event"
    # An irrelevant event under the old id: judged by its kind alone, it costs nothing.
    assert world.handle(_event(merged_away, "m-2", None, MessageType.PAGE)) == Counter()
    # A relevant one under the old id: the runner follows the merge to the survivor's journey.
    clock.advance(600)
    world.handle(_event(merged_away, "m-3", "Order Completed"))
    assert world.enrolment(survivor).state == "converted"
    assert world.enrolment(merged_away) is None


def test_a_stopped_scenarios_running_journeys_still_get_their_events(world: World) -> None:
    customer = _customer(world)
    world.handle(_event(customer, "m-1", "Product Added"))
    assert world.scenarios.stop(SCENARIO)
    clock.advance(120)  # past the runner's minute of cached summaries
    # The minute's refresh: the active summaries and the scenarios in play, one Query each.
    assert world.handle(_event(customer, "m-2", None, MessageType.PAGE)) == Counter(Query=2)
    assert world.handle(_event(customer, "m-5", None, MessageType.PAGE)) == Counter()
    world.handle(_event(customer, "m-3", "Order Completed"))
    assert world.enrolment(customer).state == "converted"
    # No new journey starts on a stopped scenario.
    other = _customer(world, "cus_o")
    world.handle(_event(other, "m-4", "Product Added"))
    assert world.enrolment(other) is None

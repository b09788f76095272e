"""ScenarioRunner under moto: scenarios from examples/scenarios in JourneysTable, customers with LINE
contacts, events fed as `trigger` would, due work run as `tick` would; what reaches LineSendQueue."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.models import StoredEvent
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.model import ChannelCap, FrequencyCaps, Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import ScenarioRunner

from tests.integration.journeys import drain_queue, put_customer, put_track_event

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday: inside every send window


class Harness:
    def __init__(self, dynamodb: Any, stores: Stores) -> None:
        self.dynamodb = dynamodb
        self.stores = stores
        self.sqs = boto3.client("sqs", region_name="ap-northeast-1")
        self.queue_url = self.sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
        self.scenarios = ScenarioStore(TABLE, dynamodb)
        self.enrolments = EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment)
        self.runner = ScenarioRunner(
            self.scenarios,
            self.enrolments,
            CapStore(TABLE, dynamodb),
            stores.customers,
            stores.events,
            QueueDispatchSink(self.sqs, self.queue_url),
        )
        self.count = 0

    def upload(self, file: str) -> Scenario:
        document = json.loads((EXAMPLES / file).read_text(encoding="utf-8"))
        scenario = Scenario.model_validate(document)
        self.scenarios.put_version(scenario, document, ScenarioSource(f"scenarios/{file}", file))
        return scenario

    def customer(self, customer_id: str) -> str:
        return put_customer(self.stores.customers, customer_id, NOW)

    def event(
        self, customer_id: str, event_name: str, site_id: str = "shop", **properties: Any
    ) -> StoredEvent:
        self.count += 1
        return put_track_event(
            self.stores.events, customer_id, event_name, f"msg-{self.count}", site_id, **properties
        )

    def sent(self) -> list[dict[str, Any]]:
        """Every dispatch received from the queue since the last call."""
        return drain_queue(self.sqs, self.queue_url)


@pytest.fixture
def harness(dynamodb: Any, stores: Stores) -> Harness:
    clock.freeze(NOW)
    return Harness(dynamodb, stores)


def _treated(scenario_id: str, prefix: str, count: int) -> list[str]:
    """Customer ids outside the scenario's 5 % holdout (holdouts send nothing)."""
    ids = (f"{prefix}{n:03d}" for n in range(1000))
    return [c for c in ids if not in_holdout(scenario_id, c, 5)][:count]


def test_cart_abandonment_reminds_only_the_customer_who_did_not_buy(harness: Harness) -> None:
    harness.upload("cart_abandonment.json")
    lingers, buys = (harness.customer(c) for c in _treated("cart-abandonment", "cus_cart_", 2))
    added = {c: harness.event(c, "Product Added", name="玉露 100g") for c in (lingers, buys)}
    for event in added.values():
        report = harness.runner.on_stored_event(event)
        assert report.enrolled == 1 and report.dispatched == 0
    assert harness.sent() == []  # waiting an hour for an order

    clock.advance(600)
    harness.runner.on_stored_event(harness.event(buys, "Order Completed", order_id="o-1", revenue=3000))
    bought = harness.enrolments.get(buys, "cart-abandonment")
    assert bought is not None and bought.state is engine.EnrolmentState.CONVERTED

    clock.advance(30 * 60)
    assert harness.runner.tick().dispatched == 0  # not an hour yet
    clock.advance(2 * 3600)
    report = harness.runner.tick()
    assert report.dispatched == 1
    sent = harness.sent()
    assert len(sent) == 1
    assert sent[0]["recipients"] == [lingers]
    assert sent[0]["idempotency_key"] == f"{lingers}#cart-abandonment#v1#remind#e1"
    assert "玉露 100g" in json.dumps(sent[0]["messages"], ensure_ascii=False)
    reminded = harness.enrolments.get(lingers, "cart-abandonment")
    assert reminded is not None and reminded.state is engine.EnrolmentState.COMPLETED
    assert reminded.due_at is None

    # Nothing more: a second tick, and the same trigger event delivered again by the stream.
    clock.advance(3600)
    assert harness.runner.tick().dispatched == 0
    for event in added.values():
        assert harness.runner.on_stored_event(event).dispatched == 0
    assert harness.sent() == []


def test_line_welcome_greets_at_once_and_sends_the_coupon_three_days_later(harness: Harness) -> None:
    harness.upload("line_welcome.json")
    harness.upload("cart_abandonment.json")  # not triggered by a follow
    friend = harness.customer("cus_friend")
    follow = harness.event(friend, "line_follow", site_id="line")
    report = harness.runner.on_stored_event(follow)
    assert (report.enrolled, report.dispatched, report.rich_menus_unreachable) == (1, 1, 1)  # no linker here
    greeting = harness.sent()
    assert [d["idempotency_key"] for d in greeting] == [f"{friend}#line-welcome#v1#welcome#e1"]
    assert greeting[0]["recipients"] == [friend]

    # The same follow again (stream redelivery): never re-entered, nothing sent.
    assert harness.runner.on_stored_event(follow).dispatched == 0
    assert harness.runner.tick().dispatched == 0
    assert harness.sent() == []

    clock.advance(3 * 24 * 3600)
    report = harness.runner.tick()
    assert report.dispatched == 1
    coupon = harness.sent()
    assert [d["idempotency_key"] for d in coupon] == [f"{friend}#line-welcome#v1#first-coupon#e1"]
    assert harness.runner.tick().dispatched == 0
    done = harness.enrolments.get(friend, "line-welcome")
    assert done is not None and done.state is engine.EnrolmentState.COMPLETED


def test_a_lost_race_releases_its_cap_and_is_decided_again_on_a_fresh_read(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.upload("cart_abandonment.json")
    (customer,) = (harness.customer(c) for c in _treated("cart-abandonment", "cus_race_", 1))
    harness.runner.limits = FrequencyCaps(line=ChannelCap(per_day=5, per_week=5))
    harness.runner.on_stored_event(harness.event(customer, "Product Added"))
    clock.advance(3600 + 60)
    other = ScenarioRunner(
        harness.scenarios,
        harness.enrolments,
        harness.runner.caps,
        harness.stores.customers,
        harness.stores.events,
        harness.runner.sink,
        harness.runner.limits,
    )
    save = harness.enrolments.save
    raced = False

    def racing_save(enrolment: engine.Enrolment, at: datetime | None = None) -> engine.Enrolment | None:
        nonlocal raced
        if not raced:  # another tick reads, decides and writes between this one's read and write
            raced = True
            assert other.tick().changed == 1
        return save(enrolment, at)

    monkeypatch.setattr(harness.enrolments, "save", racing_save)
    report = harness.runner.tick()
    assert (report.conflicts, report.lost, report.changed) == (1, 0, 0)
    # Both enqueued the same dispatch key (the sender sends it once); the cap counted one send.
    keys = {d["idempotency_key"] for d in harness.sent()}
    assert keys == {f"{customer}#cart-abandonment#v1#remind#e1"}
    assert harness.runner.caps.counts(customer, "line", clock.now()) == (1, 1)
    done = harness.enrolments.get(customer, "cart-abandonment")
    assert done is not None and done.state is engine.EnrolmentState.COMPLETED


def test_an_unknown_customer_is_skipped(harness: Harness) -> None:
    harness.upload("cart_abandonment.json")
    report = harness.runner.on_stored_event(harness.event("cus_nobody", "Product Added"))
    assert report.missing == ["profile"] and report.enrolled == 0


def test_an_event_no_journey_cares_about_reads_no_event_history(harness: Harness) -> None:
    harness.upload("cart_abandonment.json")
    (customer,) = _treated("cart-abandonment", "cus_browse_", 1)
    harness.customer(customer)
    page_view = harness.event(customer, "Page Viewed")
    history_queries: list[str] = []

    def count(params: dict[str, Any], **_: Any) -> None:
        if params.get("TableName") == "EventsTable":
            history_queries.append(params["TableName"])

    harness.dynamodb.meta.events.register("provide-client-params.dynamodb.Query", count)
    try:
        report = harness.runner.on_stored_event(page_view)
    finally:
        harness.dynamodb.meta.events.unregister("provide-client-params.dynamodb.Query", count)
    assert (report.enrolled, report.dispatched) == (0, 0)
    assert history_queries == []
    # An event that does start a journey still reads the history its conditions may need.
    harness.dynamodb.meta.events.register("provide-client-params.dynamodb.Query", count)
    try:
        assert harness.runner.on_stored_event(harness.event(customer, "Product Added")).enrolled == 1
    finally:
        harness.dynamodb.meta.events.unregister("provide-client-params.dynamodb.Query", count)
    assert history_queries == ["EventsTable"]

"""Date triggers under moto: a purchase schedules the customer's entry in the due index (a DATE#
item, no scan of customers); tick enrols when the moment comes, after re-checking the date."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.models import OrderSummary, StoredEvent
from cems.scenario import engine
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource

from tests.integration.test_scenario_runner import NOW, Harness

SCENARIO_ID = "refill-30d"
# 30 days after 2026-05-01 12:00 JST, at 10:00 JST = 2026-05-31 01:00 UTC.
FIRST_DUE = datetime(2026, 5, 31, 1, 0, tzinfo=UTC)


def _document(reentry: str = "never") -> dict[str, Any]:
    return {
        "id": SCENARIO_ID,
        "name": "Refill reminder",
        "trigger": {"type": "date", "date": "last_purchase_at", "offset": "30d", "at": "10:00"},
        "entry": {"reentry": reentry},
        "steps": [
            {
                "id": "remind",
                "type": "send",
                "channel": "line",
                "line": [{"type": "text", "text": "そろそろ"}],
            },
            {"id": "done", "type": "end"},
        ],
    }


class DateHarness(Harness):
    def upload_document(self, document: dict[str, Any]) -> Scenario:
        scenario = Scenario.model_validate(document)
        self.scenarios.put_version(scenario, document, ScenarioSource("scenarios/refill.json", "etag"))
        return scenario

    def purchase(self, customer_id: str, order_id: str) -> StoredEvent:
        """An order as ingest stores it: the order on the profile, then the event."""
        profile = self.stores.customers.profile(customer_id)
        assert profile is not None
        orders = {**profile.orders, order_id: OrderSummary(at=clock.now(), amount=Decimal(3000))}
        updated = profile.model_copy(update={"orders": orders})
        self.dynamodb.put_item(TableName="CustomersTable", Item=self.stores.customers.profile_item(updated))
        return self.event(customer_id, "Order Completed", order_id=order_id, revenue=3000)


@pytest.fixture
def harness(dynamodb: Any, stores: Stores) -> DateHarness:
    clock.freeze(NOW)
    return DateHarness(dynamodb, stores)


def test_a_purchase_schedules_and_tick_enrols_at_the_moment(harness: DateHarness) -> None:
    harness.upload_document(_document())
    customer = harness.customer("cus_date_1")
    purchase = harness.purchase(customer, "o-1")
    report = harness.runner.on_stored_event(purchase)
    assert report.scheduled == 1 and report.enrolled == 0
    schedule = harness.enrolments.schedule(customer, SCENARIO_ID)
    assert schedule is not None and schedule.due_at == FIRST_DUE
    assert harness.enrolments.get(customer, SCENARIO_ID) is None

    # The same event again (the stream delivers at least once) schedules nothing new.
    assert harness.runner.on_stored_event(purchase).scheduled == 0

    clock.freeze(FIRST_DUE - timedelta(minutes=1))
    report = harness.runner.tick()
    assert report.enrolled == 0 and report.dispatched == 0
    assert harness.sent() == []

    clock.freeze(FIRST_DUE)
    report = harness.runner.tick()
    assert report.enrolled == 1 and report.dispatched == 1
    sent = harness.sent()
    assert [s["recipients"] for s in sent] == [[customer]]
    assert sent[0]["idempotency_key"] == f"{customer}#{SCENARIO_ID}#v1#remind#e1"
    enrolment = harness.enrolments.get(customer, SCENARIO_ID)
    assert enrolment is not None and enrolment.state is engine.EnrolmentState.COMPLETED
    assert harness.enrolments.schedule(customer, SCENARIO_ID) is None
    assert harness.runner.tick().enrolled == 0


def test_a_second_purchase_moves_the_moment(harness: DateHarness) -> None:
    harness.upload_document(_document())
    customer = harness.customer("cus_date_2")
    harness.runner.on_stored_event(harness.purchase(customer, "o-1"))
    clock.freeze(NOW + timedelta(days=10))
    report = harness.runner.on_stored_event(harness.purchase(customer, "o-2"))
    assert report.scheduled == 1
    moved = harness.enrolments.schedule(customer, SCENARIO_ID)
    assert moved is not None and moved.due_at == FIRST_DUE + timedelta(days=10)

    clock.freeze(FIRST_DUE + timedelta(hours=1))
    assert harness.runner.tick().enrolled == 0
    clock.freeze(FIRST_DUE + timedelta(days=10))
    assert harness.runner.tick().enrolled == 1
    assert len(harness.sent()) == 1


def test_tick_rechecks_a_date_that_moved_without_the_trigger(harness: DateHarness) -> None:
    """If the schedule was not moved (e.g. the later purchase's event is still in the stream), tick
    sees the new date at the old moment and reschedules instead of enrolling."""
    harness.upload_document(_document())
    customer = harness.customer("cus_date_3")
    harness.runner.on_stored_event(harness.purchase(customer, "o-1"))
    clock.freeze(NOW + timedelta(days=5))
    harness.purchase(customer, "o-2")  # stored, not yet seen by the trigger

    clock.freeze(FIRST_DUE)
    report = harness.runner.tick()
    assert report.enrolled == 0 and report.scheduled == 1
    schedule = harness.enrolments.schedule(customer, SCENARIO_ID)
    assert schedule is not None and schedule.due_at == FIRST_DUE + timedelta(days=5)
    clock.freeze(FIRST_DUE + timedelta(days=5))
    assert harness.runner.tick().enrolled == 1


@pytest.mark.parametrize(("reentry", "entries"), [("never", 1), ("after_exit", 2)])
def test_reentry_rules_apply(harness: DateHarness, reentry: str, entries: int) -> None:
    harness.upload_document(_document(reentry))
    customer = harness.customer("cus_date_4")
    harness.runner.on_stored_event(harness.purchase(customer, "o-1"))
    clock.freeze(FIRST_DUE)
    assert harness.runner.tick().enrolled == 1

    clock.freeze(FIRST_DUE + timedelta(days=1))
    assert harness.runner.on_stored_event(harness.purchase(customer, "o-2")).scheduled == 1
    clock.freeze(FIRST_DUE + timedelta(days=32))
    report = harness.runner.tick()
    assert report.enrolled == entries - 1
    enrolment = harness.enrolments.get(customer, SCENARIO_ID)
    assert enrolment is not None and enrolment.entry == entries
    assert len(harness.sent()) == entries
    assert harness.enrolments.schedule(customer, SCENARIO_ID) is None


def test_no_date_no_schedule(harness: DateHarness) -> None:
    harness.upload_document(_document())
    customer = harness.customer("cus_date_5")
    assert harness.runner.on_stored_event(harness.event(customer, "Order Completed")).scheduled == 0
    assert harness.enrolments.schedule(customer, SCENARIO_ID) is None

"""The audience count under moto, against a real broadcast of the same scenario on the same data.

A few hundred customers of varied consent (LINE friends, unfollowed, none; email), purchases (green
tea recently, long ago: dormant; black tea), browsing (three green-tea views in 60 days, or one) and
traits (blacklisted) are counted for examples/scenarios/broadcast_new_tea.json with the count the
admin API builds (cems.wiring.audience: parallel Scan segments, the Journeys table's enrolments, the
event history for the audience's `event_count`). Then tick's and the broadcast function's handlers
run the broadcast: the count is the number of customers it enrolled, its holdout the number held
out, and everyone outside the holdout got the one LINE message."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from cems import clock, wiring
from cems.adapters.dynamodb.journeys import EnrolmentStore
from cems.models import Channel, ChannelState, OrderSummary, address_hash
from cems.scenario.engine import Enrolment
from cems.scenario.model import Scenario

from tests.integration.journeys import put_customer, put_track_event
from tests.integration.test_broadcast_handlers import (  # noqa: F401 - the fixture
    AT,
    SCENARIO_ID,
    SEGMENTS,
    TABLE,
    BroadcastHandlers,
    handlers,
)

CUSTOMERS = 260


def _seed(world: BroadcastHandlers) -> list[str]:
    """Customer n: a LINE friend unless n % 5 == 0 (no LINE) or n % 7 == 0 (unfollowed); an email
    address with consent when n % 4 == 0; bought green tea 20 days ago when n % 3 == 0 (200 days ago,
    dormant, when also n % 11 == 0), black tea when n % 3 == 1; viewed green tea three times when
    n % 13 == 2, once when n % 17 == 2; blacklisted when n % 19 == 3."""
    customers = world.stores.customers
    events = world.stores.events
    ids: list[str] = []
    for n in range(CUSTOMERS):
        customer_id = f"cus_aud{n:04d}"
        put_customer(customers, customer_id, AT, line=n % 5 != 0, reachable=n % 7 != 0)
        profile = customers.profile(customer_id)
        assert profile is not None
        update: dict[str, Any] = {"traits": {"last_name": f"佐藤{n}", "blacklisted": n % 19 == 3}}
        if n % 4 == 0:
            address = f"aud{n}@example.jp"
            update["traits"]["email"] = address
            update["channels"] = {
                **profile.channels,
                Channel.EMAIL: ChannelState(
                    reachable=True, consent=True, updated_at=AT, address_hash=address_hash(address)
                ),
            }
        if n % 3 in (0, 1):
            days = 200 if n % 11 == 0 else 20
            update["orders"] = {f"o-{n}": OrderSummary(at=AT - timedelta(days=days), amount=Decimal(1620))}
            update["categories_bought"] = {"緑茶" if n % 3 == 0 else "紅茶"}
        customers.client.put_item(
            TableName="CustomersTable", Item=customers.profile_item(profile.model_copy(update=update))
        )
        views = 3 if n % 13 == 2 else 1 if n % 17 == 2 else 0
        for k in range(views):
            put_track_event(events, customer_id, "Product Viewed", f"v-{customer_id}-{k}", category="緑茶")
        ids.append(customer_id)
    return ids


def test_the_count_is_the_number_the_broadcast_reaches(request: pytest.FixtureRequest, dynamodb: Any) -> None:
    world: BroadcastHandlers = request.getfixturevalue("handlers")
    ids = _seed(world)
    clock.freeze(AT + timedelta(seconds=30))  # the moment the run's segments are worked through

    count = wiring.audience().count(_stored_scenario(world))

    assert count.complete and count.note is None
    assert count.segments == SEGMENTS and count.customers_read == CUSTOMERS
    assert count.requests is not None and count.requests > 0
    assert 20 < count.matching < CUSTOMERS
    assert count.holdout > 0  # 5 % of the audience, by the deterministic assignment
    assert set(count.excluded) >= {"audience", "blacklisted"}
    assert sum(count.excluded.values()) + count.matching == CUSTOMERS
    line = next(c for c in count.channels if c.channel is Channel.LINE)
    assert line.reachable == count.matching  # the audience asks for a LINE friend
    assert count.sendable == count.outside_holdout == line.reachable_outside_holdout

    world.tick_once()
    records = world.receive()
    assert len(records) == SEGMENTS
    assert world.deliver(records) == {"batchItemFailures": []}

    enrolments = EnrolmentStore(TABLE, dynamodb, 4, model=Enrolment).get_many([(c, SCENARIO_ID) for c in ids])
    assert len(enrolments) == count.matching
    assert sum(e.holdout for e in enrolments.values()) == count.holdout
    recipients = world.recipients()
    assert len(recipients) == count.outside_holdout and set(recipients.values()) == {1}
    sampled = {s.profile["customer_id"] for s in count.sample}
    assert len(sampled) == 10 and sampled <= {c for c, _ in enrolments}
    assert all(s.profile["masked"] and s.profile["traits"]["last_name"].endswith("*") for s in count.sample)


def _stored_scenario(world: BroadcastHandlers) -> Scenario:
    """The broadcast's scenario as stored (the file the handlers' fixture uploaded)."""
    stored = world.tick.runner.scenarios.active_version(SCENARIO_ID)
    assert stored is not None
    scenario: Scenario = stored.scenario
    return scenario

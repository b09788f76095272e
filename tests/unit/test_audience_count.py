"""The audience count (cems.console.audience) on the in-memory fakes: matching customers, reach and
consent per channel, the holdout, a masked sample, the note for triggers that enrol on events, and
that the count is the number a broadcast of the same scenario enrols on the same data (the same
decisions: cems.scenario.entrance). The DynamoDB path, and a real broadcast through the worker under
moto, are in tests/integration/test_audience.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from cems import clock
from cems.console.audience import REALTIME_NOTE, SAMPLE_SIZE, AudienceCounter
from cems.masking import mask_email, mask_identifier
from cems.models import Channel, ChannelState, OrderSummary, Profile, address_hash
from cems.scenario.assignment import in_holdout
from cems.scenario.broadcast import BroadcastStarter, BroadcastWorker, SegmentMessage
from cems.scenario.engine import Enrolment, EnrolmentState

from tests.fakes.broadcasts import InMemoryBroadcastStore, InMemoryQueue
from tests.fakes.journey_world import JourneyWorld, line_user_id

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo
AT = NOW + timedelta(minutes=5)
SCENARIO_ID = "aud-test"
HOLDOUT = 10
SEGMENTS = 4
CUSTOMERS = 240

DOCUMENT: dict[str, Any] = {
    "id": SCENARIO_ID,
    "name": "緑茶を買った方へ (test)",
    "version": 1,
    "trigger": {"type": "broadcast", "at": "2026-05-01T12:05:00+09:00"},
    "audience": {
        "kind": "all",
        "conditions": [
            {"kind": "bought", "categories": ["緑茶"]},
            {"kind": "not", "condition": {"kind": "trait", "trait": "plan", "op": "eq", "value": "trial"}},
        ],
    },
    "entry": {"reentry": "never", "holdout_percent": HOLDOUT},
    "steps": [
        {
            "id": "announce",
            "type": "send",
            "channel": "line_or_email",
            "line": [{"type": "text", "text": "新茶が入荷しました🍃"}],
            "email": {"subject": "新茶のご案内", "text": "新茶が入荷しました"},
        },
        {"id": "done", "type": "end"},
    ],
}


class World(JourneyWorld):
    def __init__(self) -> None:
        super().__init__()
        self.store = InMemoryBroadcastStore()
        self.queue = InMemoryQueue()
        self.counter = AudienceCounter(self.customers, self.runner.entrance, segments=SEGMENTS, page_size=15)

    def shopper(self, n: int) -> Profile:
        """Customer n: LINE (consenting) when n % 3 != 0, email (consenting) when n % 4 == 0, a
        green-tea buyer when n % 2 == 0 (else black tea), on a trial plan when n % 10 == 4."""
        customer_id = f"cus_{n:04d}"
        channels: dict[Channel, ChannelState] = {}
        traits: dict[str, Any] = {"plan": "trial" if n % 10 == 4 else "member", "last_name": f"山田{n}"}
        if n % 3:
            channels[Channel.LINE] = ChannelState(reachable=True, consent=True, updated_at=NOW)
        if n % 4 == 0:
            address = f"c{n}@example.jp"
            traits["email"] = address
            channels[Channel.EMAIL] = ChannelState(
                reachable=True, consent=True, updated_at=NOW, address_hash=address_hash(address)
            )
        profile = Profile(
            customer_id=customer_id,
            line_user_id=line_user_id(customer_id) if n % 3 else None,
            channels=channels,
            traits=traits,
            orders={f"o-{n}": OrderSummary(at=NOW - timedelta(days=5), amount=Decimal(1620))},
            categories_bought={"緑茶" if n % 2 == 0 else "紅茶"},
            first_seen_at=NOW - timedelta(days=30),
            updated_at=NOW,
        )
        self.customers.put_profile(profile)
        return profile

    def broadcast(self) -> None:
        """The scenario's run, through the starter and the worker, to the end."""
        BroadcastStarter(self.scenarios, self.store, self.queue, SEGMENTS).start_due(AT)
        worker = BroadcastWorker(self.runner, self.store, self.customers, self.queue, page_size=15)
        while bodies := self.queue.take():
            for body in bodies:
                worker.run_segment(SegmentMessage.model_validate_json(body), partial(int, 60_000), AT)


@pytest.fixture
def world() -> Iterator[World]:
    clock.freeze(NOW)
    yield World()
    clock.reset()


def _expected(profiles: list[Profile]) -> dict[str, Any]:
    matching = [p for p in profiles if "緑茶" in p.categories_bought and p.traits["plan"] != "trial"]
    held = [p for p in matching if in_holdout(SCENARIO_ID, p.customer_id, HOLDOUT)]
    sent = [p for p in matching if p not in held]
    line = [p for p in matching if p.line_user_id]
    email = [p for p in matching if "email" in p.traits]
    return {
        "matching": len(matching),
        "holdout": len(held),
        "line": (len(line), len([p for p in line if p not in held])),
        "email": (len(email), len([p for p in email if p not in held])),
        "sendable": len([p for p in sent if p.line_user_id or "email" in p.traits]),
    }


def test_the_count_says_who_matches_who_is_reachable_where_and_who_is_held_out(world: World) -> None:
    profiles = [world.shopper(n) for n in range(CUSTOMERS)]
    expected = _expected(profiles)
    scenario = world.upload(DOCUMENT)

    count = world.counter.count(scenario, now=AT)

    assert count.complete and count.note is None and count.trigger_type == "broadcast"
    assert count.matching == expected["matching"] > 0
    assert count.holdout == expected["holdout"] > 0
    assert count.outside_holdout == count.matching - count.holdout
    by_channel = {c.channel: (c.reachable, c.reachable_outside_holdout) for c in count.channels}
    # Every registered channel has its row; these shoppers were never seen on the site (no anonymous id).
    web = (0, 0)
    assert by_channel == {Channel.LINE: expected["line"], Channel.EMAIL: expected["email"], Channel.WEB: web}
    assert count.sendable == expected["sendable"]
    # Not matching: black tea buyers and green tea buyers on a trial plan, by the decision's reason.
    assert count.excluded == {"audience": CUSTOMERS - count.matching}
    assert count.customers_read == CUSTOMERS and count.segments == SEGMENTS
    assert count.requests is None  # no tally given


def test_the_count_is_what_a_broadcast_of_the_same_scenario_enrols(world: World) -> None:
    for n in range(CUSTOMERS):
        world.shopper(n)
    scenario = world.upload(DOCUMENT)
    count = world.counter.count(scenario, now=AT)

    world.broadcast()

    enrolled = [e for e in world.enrolments.enrolments.values() if e.scenario_id == SCENARIO_ID]
    assert len(enrolled) == count.matching
    assert sum(e.holdout for e in enrolled) == count.holdout
    # Sent: everyone outside the holdout a channel of `line_or_email` reaches.
    line = {r for d in world.sink.take_line() for r in d["recipients"]}
    assert len(line) + len(world.sink.take_email()) == count.sendable
    # After the run, nobody is left to enter (reentry: never): the count says why.
    again = world.counter.count(scenario, now=AT + timedelta(minutes=1))
    assert again.matching == 0 and again.excluded["already_entered"] == count.matching


def test_the_sample_is_at_most_ten_customers_masked(world: World) -> None:
    for n in range(CUSTOMERS):
        world.shopper(n)
    count = world.counter.count(world.upload(DOCUMENT), now=AT)

    assert len(count.sample) == SAMPLE_SIZE
    for member in count.sample:
        profile = member.profile
        customer_id = profile["customer_id"]
        assert profile["masked"] is True
        assert profile["traits"]["last_name"] == "山*"
        stored = world.profile(customer_id)
        if "email" in stored.traits:
            assert profile["traits"]["email"] == mask_email(stored.traits["email"])
        if stored.line_user_id:
            assert profile["line_user_id"] == mask_identifier(stored.line_user_id)
        assert member.holdout == in_holdout(SCENARIO_ID, customer_id, HOLDOUT)
        assert set(member.reachable) == {c for c, s in stored.channels.items() if s.consent}
    # Nothing personal in the answer as a whole.
    text = count.model_dump_json()
    for n in range(CUSTOMERS):
        assert f'"c{n}@example.jp"' not in text and line_user_id(f"cus_{n:04d}") not in text
        assert f"山田{n}" not in text


def test_an_event_trigger_counts_who_qualifies_today(world: World) -> None:
    for n in range(CUSTOMERS):
        world.shopper(n)
    document = {**DOCUMENT, "trigger": {"type": "event", "event": "Product Viewed"}}
    count = world.counter.count(world.upload(document), now=AT)

    assert count.trigger_type == "event" and count.note == REALTIME_NOTE
    assert count.matching == _expected([world.profile(f"cus_{n:04d}") for n in range(CUSTOMERS)])["matching"]


def test_a_higher_priority_journey_keeps_a_customer_out_as_it_would_in_the_broadcast(world: World) -> None:
    profiles = [world.shopper(n) for n in (0, 2, 6)]
    document = {**DOCUMENT, "priority": 10, "exit": {"yield_to_higher_priority": True}}
    scenario = world.upload(document)
    world.upload({**DOCUMENT, "id": "vip", "priority": 900, "trigger": {"type": "event", "event": "X"}})
    # The customer is on the way through the higher-priority scenario (waiting a day).
    world.enrolments.create(
        Enrolment(
            customer_id=profiles[0].customer_id,
            scenario_id="vip",
            version=1,
            step_id="announce",
            state=EnrolmentState.WAITING,
            entry=1,
            entered_at=NOW,
            due_at=NOW + timedelta(days=1),
        )
    )
    count = world.counter.count(scenario, now=AT)
    assert count.excluded.get("higher_priority_active") == 1
    assert count.matching == 2


def test_a_count_out_of_time_says_it_is_partial(world: World) -> None:
    for n in range(CUSTOMERS):
        world.shopper(n)
    ticks = iter(range(1000))
    counter = AudienceCounter(
        world.customers, world.runner.entrance, segments=1, page_size=15, monotonic=lambda: float(next(ticks))
    )
    count = counter.count(world.upload(DOCUMENT), now=AT, time_budget_s=3)
    assert not count.complete and count.note is not None and "Not every customer" in count.note
    assert 0 < count.customers_read < CUSTOMERS


class _Size:
    def __init__(self, items: int) -> None:
        self.items = items

    def approximate_items(self) -> int:
        return self.items


def test_segments_are_sized_to_the_table_as_a_broadcast_is(world: World) -> None:
    for n in range(30):
        world.shopper(n)
    scenario = world.upload(DOCUMENT)
    sized = partial(AudienceCounter, world.customers, world.runner.entrance, segment_customers=10)
    assert sized(sizing=_Size(0)).count(scenario, now=AT).segments == 1
    assert sized(sizing=_Size(95)).count(scenario, now=AT).segments == 10
    assert sized(sizing=_Size(10_000), max_segments=7).count(scenario, now=AT).segments == 7
    counts = {sized(sizing=_Size(n)).count(scenario, now=AT).matching for n in (0, 95, 500)}
    assert len(counts) == 1  # however it is read

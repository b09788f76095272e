"""What the runner reads for an event that enrols (issue 11): the customer's enrolments, read once at
the top of `on_stored_event`, serve the entry's decision while nothing of the call has written one;
after a write they are read again, so a decision never rests on what this call changed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock

from tests.fakes.journey_world import JourneyWorld

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo


def _scenario(scenario_id: str, trigger: str, priority: int = 100) -> dict[str, Any]:
    return {
        "id": scenario_id,
        "name": scenario_id,
        "version": 1,
        "priority": priority,
        "trigger": {"type": "event", "event": trigger},
        "steps": [
            {"id": "hello", "type": "send", "channel": "line", "line": [{"type": "text", "text": "hi"}]},
            {"id": "pause", "type": "wait", "duration": "3d"},
            {"id": "again", "type": "send", "channel": "line", "line": [{"type": "text", "text": "again"}]},
        ],
    }


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[JourneyWorld, Counter[str]]]:
    clock.freeze(NOW)
    world = JourneyWorld()
    reads: Counter[str] = Counter()
    for name in ("get", "of_customer"):
        real = getattr(world.enrolments, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            reads[_name] += 1
            return _real(*args)

        monkeypatch.setattr(world.enrolments, name, counted)
    yield world, reads
    clock.reset()


def test_an_entry_decides_on_the_enrolments_read_for_the_event(
    world: tuple[JourneyWorld, Counter[str]],
) -> None:
    journeys, reads = world
    journeys.upload(_scenario("welcome", "Signed Up"))
    customer = journeys.customer("cus_1")
    report = journeys.runner.on_stored_event(journeys.event(customer, "Signed Up"))
    assert (report.enrolled, report.dispatched) == (1, 1)
    # One Query of the customer's enrolments; no GetItem of the entry, no second Query for priority.
    assert reads == Counter({"of_customer": 1})


def test_after_a_write_in_the_same_call_the_next_entry_reads_again(
    world: tuple[JourneyWorld, Counter[str]],
) -> None:
    """One event enrols in two scenarios: the second entry must see the first (priority), so it
    reads the enrolments again; the lower-priority journey yields to the higher one as before."""
    journeys, reads = world
    journeys.upload(_scenario("a-high", "Signed Up", priority=500))
    journeys.upload(_scenario("b-low", "Signed Up", priority=10))
    customer = journeys.customer("cus_2")
    report = journeys.runner.on_stored_event(journeys.event(customer, "Signed Up"))
    assert report.enrolled == 1  # a-high first (summaries by id); b-low yields to it: not entered
    assert journeys.enrolments.get(customer, "b-low") is None
    assert reads["of_customer"] == 2 and reads["get"] == 2  # the counted reads include the test's


def test_a_ticks_due_date_entries_are_read_in_batches(world: tuple[JourneyWorld, Counter[str]]) -> None:
    """40 birthdays due at one moment: the entries, profiles, the customers' enrolments and caps are
    read together; each customer is enrolled once and sent once; nothing is read one by one."""
    journeys, reads = world
    journeys.upload(
        {
            "id": "birthday",
            "name": "birthday",
            "trigger": {"type": "date", "date": "traits.birthday", "at": "13:00", "yearly": True},
            "steps": [
                {"id": "wish", "type": "send", "channel": "line", "line": [{"type": "text", "text": "🎂"}]},
                {"id": "done", "type": "end"},
            ],
        }
    )
    moment = NOW + timedelta(hours=1)  # 13:00 in Tokyo
    ids = []
    for n in range(40):
        customer = journeys.customer(f"cus_b{n:02d}")
        profile = journeys.profile(customer)
        journeys.customers.put_profile(profile.model_copy(update={"traits": {"birthday": "1990-05-01"}}))
        assert journeys.enrolments.put_schedule(customer, "birthday", moment, None)
        ids.append(customer)
    single: Counter[str] = Counter()
    for store, name in ((journeys.enrolments, "schedule"), (journeys.customers, "profile")):
        real = getattr(store, name)

        def counted(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            single[_name] += 1
            return _real(*args, **kwargs)

        setattr(store, name, counted)
    clock.freeze(moment)
    report = journeys.runner.tick()
    assert (report.due, report.enrolled, report.dispatched) == (40, 40, 40)
    assert sorted(d.customer_id for d in journeys.sink.dispatches) == ids
    assert reads == Counter() and single == Counter()
    assert all(journeys.enrolments.schedule(c, "birthday") is not None for c in ids)  # next year's
    assert journeys.runner.tick().enrolled == 0


def test_a_backfill_page_reads_its_entries_at_once(world: tuple[JourneyWorld, Counter[str]]) -> None:
    journeys, _ = world
    scenario = journeys.upload(
        {
            "id": "birthday",
            "name": "birthday",
            "trigger": {"type": "date", "date": "traits.birthday", "at": "13:00", "yearly": True},
            "steps": [
                {"id": "wish", "type": "send", "channel": "line", "line": [{"type": "text", "text": "🎂"}]}
            ],
        }
    )
    profiles = []
    for n in range(25):
        customer = journeys.customer(f"cus_p{n:02d}")
        profile = journeys.profile(customer).model_copy(update={"traits": {"birthday": "1990-08-01"}})
        journeys.customers.put_profile(profile)
        profiles.append(profile)
    calls: Counter[str] = Counter()
    for name in ("schedule", "put_schedule"):
        real = getattr(journeys.enrolments, name)

        def counted(*args: Any, _real: Any = real, _name: str = name) -> Any:
            calls[_name] += 1
            return _real(*args)

        setattr(journeys.enrolments, name, counted)
    assert journeys.runner.schedule_date_triggers(scenario, profiles).scheduled == 25
    assert calls == Counter({"put_schedule": 25})  # no entry read one by one
    # The page done again (a redelivered message) finds every entry at its moment: no request each.
    assert journeys.runner.schedule_date_triggers(scenario, profiles).scheduled == 0
    assert calls == Counter({"put_schedule": 25})

"""The trigger's relevance rule (cems.scenario.relevance): which stored events any scenario in play
can use, judged without a request; and ScenariosInPlay's reads on the in-memory scenario store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.models import LINE_SOURCE_ID, MessageType, StoredEvent
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource, ScenarioSummary, ScenarioVersion
from cems.scenario.relevance import EVERY_EVENT, ScenariosInPlay, relevance_of
from cems.scenario.runner import _may_change

from tests.fakes.journey_world import EXAMPLES
from tests.fakes.journeys import InMemoryScenarioStore

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
SEND = {"id": "send", "type": "send", "channel": "line", "line": [{"type": "text", "text": "hi"}]}


def _scenario(trigger: dict[str, Any], steps: list[dict[str, Any]] | None = None, **extra: Any) -> Scenario:
    return Scenario.model_validate(
        {"id": "s", "name": "s", "trigger": trigger, "steps": steps or [SEND], **extra}
    )


def _event(kind: MessageType = MessageType.TRACK, name: str | None = None, **fields: Any) -> StoredEvent:
    values: dict[str, Any] = {
        "customer_id": "cus_1",
        "site_id": "shop",
        "type": kind,
        "message_id": "m-1",
        "event": name,
        "timestamp": NOW,
        "received_at": NOW,
    }
    return StoredEvent.model_validate({**values, **fields})


PAGE = _event(MessageType.PAGE)
VIEWED = _event(name="Product Viewed")
ADDED = _event(name="Product Added")
ORDERED = _event(name="Order Completed")
IDENTIFY = _event(MessageType.IDENTIFY, traits={"email": "a@example.jp"})
UNFOLLOW = _event(name="line_unfollow", site_id=LINE_SOURCE_ID)


def _example(name: str) -> Scenario:
    return Scenario.model_validate(json.loads((EXAMPLES / name).read_text("utf-8")))


def test_no_scenario_uses_only_opt_outs_and_the_blacklist() -> None:
    rule = relevance_of([])
    assert not any(rule.uses(e) for e in (PAGE, VIEWED, ADDED, ORDERED, IDENTIFY))
    # A LINE unfollow ends the journeys whose next sends are LINE only, whatever the scenario.
    assert rule.uses(UNFOLLOW)
    # Running journeys exit on the next event of a blacklisted customer.
    assert rule.uses(_event(MessageType.IDENTIFY, traits={"blacklisted": True}))


def test_triggers_goals_and_awaited_events_are_used_and_page_views_are_not() -> None:
    rule = relevance_of([_example("cart_abandonment.json")])
    assert rule.uses(ADDED) and rule.uses(ORDERED)
    assert not rule.uses(PAGE) and not rule.uses(VIEWED) and not rule.uses(IDENTIFY)
    assert not rule.every_event


def test_an_awaited_event_and_counted_events_in_nested_conditions() -> None:
    counted = {"kind": "event_count", "event": "Review Written", "at_least": 1}
    scenario = _scenario(
        {"type": "event", "event": "Signed Up"},
        [
            {
                "id": "wait",
                "type": "wait_for_event",
                "event": "Coupon Used",
                "timeout": "1d",
                "on_event": "b",
            },
            {
                "id": "b",
                "type": "branch",
                "branches": [{"when": {"kind": "not", "condition": counted}, "next": "send"}],
                "otherwise": "send",
            },
            SEND,
        ],
        audience={"kind": "any", "conditions": [{"kind": "event_count", "event": "page", "at_least": 2}]},
    )
    rule = relevance_of([scenario])
    for name in ("Signed Up", "Coupon Used", "Review Written"):
        assert rule.uses(_event(name=name))
    assert rule.uses(PAGE)  # counted by the audience
    assert not rule.uses(VIEWED)


def test_line_triggers_use_line_events_only_from_line() -> None:
    follow = relevance_of([_scenario({"type": "line_follow"})])
    assert follow.uses(_event(name="line_follow", site_id=LINE_SOURCE_ID))
    # A site's track call with a LINE event's name matches nothing (conditions.event_name).
    assert not follow.uses(_event(name="line_follow"))
    survey = relevance_of([_scenario({"type": "survey_answer", "question": "taste"})])
    assert survey.uses(_event(name="line_postback", site_id=LINE_SOURCE_ID))
    assert not survey.uses(PAGE)


def test_no_response_exit_makes_every_event_relevant() -> None:
    """Any event after a send is the customer's response (engine._is_response): a page view too."""
    rule = relevance_of([_scenario({"type": "event", "event": "X"}, exit={"no_response_after_sends": 2})])
    assert rule.every_event and rule.why_every == "s: exit.no_response_after_sends"
    assert rule.uses(PAGE) and rule.uses(IDENTIFY)


@pytest.mark.parametrize(
    "source", ["first_seen_at", "last_purchase_at", "first_purchase_at", "traits.birthday"]
)
def test_date_triggers_use_at_least_what_may_change_their_date(source: str) -> None:
    rule = relevance_of([_scenario({"type": "date", "date": source, "at": "10:00"})])
    for event in (PAGE, VIEWED, ORDERED, IDENTIFY, _event(MessageType.ALIAS, previous_id="a")):
        if _may_change(source, event):  # the runner's own test of what may move the date
            assert rule.uses(event), (source, event.type, event.event)
    assert rule.uses(PAGE) is (source == "first_seen_at")


def test_every_version_in_play_counts() -> None:
    old = relevance_of([_example("cart_abandonment.json"), _example("line_welcome.json")])
    assert old.uses(ADDED) and old.uses(_event(name="line_follow", site_id=LINE_SOURCE_ID))


# ------------------------------------------------------------------------------------ ScenariosInPlay


class _CountingStore(InMemoryScenarioStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def scenarios_in_play(self) -> list[tuple[str, int]]:
        self.reads.append("in_play")
        return super().scenarios_in_play()

    def versions(self, scenario_id: str) -> list[int]:
        self.reads.append(f"versions:{scenario_id}")
        return super().versions(scenario_id)

    def version(self, scenario_id: str, version: int) -> ScenarioVersion | None:
        self.reads.append(f"version:{scenario_id}:{version}")
        return super().version(scenario_id, version)


def _upload(store: InMemoryScenarioStore, document: dict[str, Any], etag: str) -> None:
    store.put_version(Scenario.model_validate(document), document, ScenarioSource("s.json", etag), NOW)


def _document(trigger_event: str, goal: str | None = None, **extra: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "id": "s",
        "name": "s",
        "trigger": {"type": "event", "event": trigger_event},
        "steps": [SEND],
        **extra,
    }
    if goal is not None:
        document["goal"] = {"event": goal, "within": "1d"}
    return document


def test_older_versions_and_stopped_scenarios_stay_in_play_for_their_journeys() -> None:
    store = _CountingStore()
    _upload(store, _document("Old Trigger", "Old Goal"), "e1")
    _upload(store, _document("New Trigger", "New Goal"), "e2")
    in_play = ScenariosInPlay(store)
    rule = in_play.current(NOW, store.active_summaries())
    # Journeys entered on version 1 still run it: its goal still converts them.
    assert rule.uses(_event(name="Old Goal")) and rule.uses(_event(name="New Goal"))
    # Only the active version enrols.
    assert rule.uses(_event(name="New Trigger")) and not rule.uses(_event(name="Old Trigger"))
    store.stop("s")
    assert store.active_summaries() == []
    stopped = in_play.current(NOW + timedelta(minutes=2), store.active_summaries())
    # Stopping leaves running journeys running (ScenarioStore.stop): both goals still count...
    assert stopped.uses(_event(name="Old Goal")) and stopped.uses(_event(name="New Goal"))
    # ... but nobody enters a stopped scenario.
    assert not stopped.uses(_event(name="New Trigger")) and not stopped.uses(PAGE)


def test_a_stopped_scenario_makes_every_event_relevant_only_for_its_running_journeys() -> None:
    store = _CountingStore()
    _upload(store, _document("page"), "e1")
    in_play = ScenariosInPlay(store)
    assert in_play.current(NOW, store.active_summaries()).uses(PAGE)
    store.stop("s")
    # A stopped scenario triggered by page views enrols nobody: page views are free again.
    assert not in_play.current(NOW + timedelta(minutes=2), store.active_summaries()).uses(PAGE)
    # A stopped one whose journeys exit without a response still hears every event.
    _upload(store, _document("X", exit={"no_response_after_sends": 2}), "e2")
    store.stop("s")
    assert in_play.current(NOW + timedelta(minutes=4), store.active_summaries()).uses(PAGE)


def test_a_stopped_date_trigger_schedules_nothing() -> None:
    first_seen = {"type": "date", "date": "first_seen_at", "at": "10:00"}
    scenario = _scenario(first_seen)
    assert relevance_of([scenario]).uses(PAGE)
    assert not relevance_of([], [scenario]).uses(PAGE)


def test_reads_are_per_refresh_not_per_event() -> None:
    store = _CountingStore()
    _upload(store, _document("A"), "e1")
    in_play = ScenariosInPlay(store)
    active = store.active_summaries()
    for second in range(50):
        in_play.current(NOW + timedelta(seconds=second), active).uses(PAGE)
    assert store.reads == ["in_play", "versions:s", "version:s:1"]
    store.reads.clear()
    # A new list of summaries (the runner read them again) refreshes at once; versions already
    # known are not asked for again.
    in_play.current(NOW + timedelta(seconds=51), list(active))
    assert store.reads == ["in_play", "version:s:1"]
    store.reads.clear()
    # An upload changes the summary's version: its version numbers are read again.
    _upload(store, _document("B"), "e2")
    rule = in_play.current(NOW + timedelta(seconds=52), store.active_summaries())
    assert rule.uses(_event(name="B"))
    assert "versions:s" in store.reads


def test_a_rollback_reads_the_version_numbers_again() -> None:
    store = _CountingStore()
    _upload(store, _document("A", "Goal A"), "e1")
    in_play = ScenariosInPlay(store)
    in_play.current(NOW, store.active_summaries())
    _upload(store, _document("B", "Goal B"), "e2")
    in_play.current(NOW, store.active_summaries())
    store.activate("s", 1)
    rule = in_play.current(NOW, store.active_summaries())
    assert rule.uses(_event(name="A")) and not rule.uses(_event(name="B"))
    # Journeys on version 2 keep running after a rollback to version 1.
    assert rule.uses(_event(name="Goal B"))


def test_an_unreadable_version_skips_nothing() -> None:
    store = _CountingStore()
    in_play = ScenariosInPlay(store)
    summary = ScenarioSummary("gone", 3, "gone", 0, "event", "X")
    assert in_play.current(NOW, [summary]) is EVERY_EVENT
    assert EVERY_EVENT.uses(PAGE)

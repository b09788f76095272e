"""Which stored events any scenario can use: the trigger hands the rest to no one (issue 11).

Every stored event reaches `trigger`; most (page views above all) concern no journey, yet giving one
to `ScenarioRunner.on_stored_event` costs a profile read and an enrolments Query. `relevance_of`
reads the scenarios in play once and answers, for each event, without a request: could anything
do something with it? It says yes whenever it cannot be sure (conservative):

- of the active versions (only they enrol): a trigger (event name; a LINE follow; a survey answer,
  a LINE postback), an event counted by the audience's `event_count` conditions;
- of every version in play: a goal (it also converts completed journeys), the event a
  `wait_for_event` step waits for, an event counted by a branch's `event_count` condition;
- the channels' opt-out events (a LINE unfollow): they end journeys of any scenario;
- `exit.no_response_after_sends`: *any* event after a send is the customer's response
  (engine.NOT_RESPONSES aside), so one such scenario in play makes every event relevant;
- the active date triggers (what runner._may_change says may move the date): a purchase for the
  purchase dates, an identify call for a trait, every event for `first_seen_at`;
- an identify call that sets the blacklist trait (running journeys exit on the customer's next event).

"In play" is wider than the active scenarios: a journey keeps the version it entered on, and stopping
a scenario leaves its running journeys running (ScenarioStore.stop), so what journeys react to is
taken from every version of every scenario, active or stopped (`ScenariosInPlay`).

A merged-away customer id changes nothing here: the rule looks only at the event (its kind, its
name, its traits), never at the customer, so an event stored under an id since merged into another
customer is judged like any other, and a relevant one goes on to the runner, which follows the merge
to the surviving profile and its journeys.

The double opt-in (cems.consent) has its own request-free test (asks_for_email_consent) and is run
before this rule, not through it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from cems.channels.registry import plugins
from cems.models import ORDER_COMPLETED, LineEvent, MessageType, StoredEvent
from cems.scenario.condition_models import (
    AllCondition,
    AnyCondition,
    Condition,
    EventCountCondition,
    NotCondition,
)
from cems.scenario.conditions import event_name
from cems.scenario.engine import BLACKLIST_TRAIT
from cems.scenario.model import (
    BranchStep,
    DateTrigger,
    EventTrigger,
    LineFollowTrigger,
    Scenario,
    SurveyAnswerTrigger,
    WaitForEventStep,
)
from cems.scenario.records import ScenarioSummary, ScenarioVersion

# Identify calls are relevant for these traits whatever the scenarios say (see the module docstring).
ALWAYS_WATCHED_TRAITS = frozenset({BLACKLIST_TRAIT})


@dataclass(frozen=True)
class EventRelevance:
    """What the scenarios in play can use. `every_event`: all of it (the reason in `why_every`)."""

    names: frozenset[str] = frozenset()
    every_identify: bool = False
    identify_traits: frozenset[str] = ALWAYS_WATCHED_TRAITS
    every_event: bool = False
    why_every: str | None = None

    def uses(self, event: StoredEvent) -> bool:
        if self.every_event:
            return True
        if event.type is MessageType.IDENTIFY:
            return self.every_identify or not self.identify_traits.isdisjoint(event.traits)
        name = event_name(event)
        return name is not None and name in self.names


# Every event: nothing can be skipped (an unreadable version, or no rule yet).
EVERY_EVENT = EventRelevance(every_event=True, why_every="unknown")


def relevance_of(entering: Iterable[Scenario], running: Iterable[Scenario] = ()) -> EventRelevance:
    """The events the scenarios can use. `entering`: the active versions, which enrol (triggers,
    audiences, date triggers); `running`: every other version in play (older versions, stopped
    scenarios), whose journeys only run on (goals, waits, branches, exits). The runner enrols and
    schedules date triggers only on the active versions, so a stopped scenario's trigger (a page view,
    say) does not keep every page view relevant for as long as its marker stays."""
    names = {p.opt_out_event for p in plugins() if p.opt_out_event}
    every_identify = False
    why_every: list[str] = []
    entering = list(entering)
    for scenario in entering:
        trigger = scenario.trigger
        if isinstance(trigger, EventTrigger):
            names.add(trigger.event)
        elif isinstance(trigger, LineFollowTrigger):
            names.add(LineEvent.FOLLOW.value)
        elif isinstance(trigger, SurveyAnswerTrigger):
            names.add(LineEvent.POSTBACK.value)
        elif isinstance(trigger, DateTrigger):
            source = trigger.date
            if source in ("last_purchase_at", "first_purchase_at"):
                names.add(ORDER_COMPLETED)
            elif source.startswith("traits."):
                every_identify = True
            elif source == "first_seen_at":
                why_every.append(f"{scenario.id}: a date trigger on first_seen_at")
        if scenario.audience is not None:
            names.update(_counted([scenario.audience]))
    for scenario in [*entering, *running]:
        if scenario.goal is not None:
            names.add(scenario.goal.event)
        if scenario.exit.no_response_after_sends is not None:
            why_every.append(f"{scenario.id}: exit.no_response_after_sends")
        for step in scenario.steps:
            if isinstance(step, WaitForEventStep):
                names.add(step.event)
            elif isinstance(step, BranchStep):
                names.update(_counted(branch.when for branch in step.branches))
    return EventRelevance(
        names=frozenset(names),
        every_identify=every_identify,
        every_event=bool(why_every),
        why_every=why_every[0] if why_every else None,
    )


def _counted(conditions: Iterable[Condition]) -> Iterator[str]:
    """The event names `event_count` conditions count, at any depth."""
    return (c.event for c in _walk(conditions) if isinstance(c, EventCountCondition))


def _walk(conditions: Iterable[Condition]) -> Iterator[Condition]:
    for condition in conditions:
        yield condition
        if isinstance(condition, AllCondition | AnyCondition):
            yield from _walk(condition.conditions)
        elif isinstance(condition, NotCondition):
            yield from _walk([condition.condition])


class ScenarioCatalog(Protocol):
    """What `ScenariosInPlay` reads (ScenarioStore and its in-memory fake)."""

    def scenarios_in_play(self) -> list[tuple[str, int]]: ...
    def versions(self, scenario_id: str) -> list[int]: ...
    def version(self, scenario_id: str, version: int) -> ScenarioVersion | None: ...


class ScenariosInPlay:
    """The rule for every version of every scenario that may have journeys, active or stopped.

    Its cost is per refresh, never per event: one Query of the scenarios in play (the active
    summaries and the stopped markers), a Query of a scenario's version numbers only when its summary
    names another version, and each version read once (ScenarioStore caches them: versions never
    change). `current(now, active)` refreshes when `active` is a new list (the runner's summaries,
    read once a minute) or after `ttl`, so an upload the runner sees is never skipped by an older rule.
    """

    def __init__(self, catalog: ScenarioCatalog, ttl: timedelta = timedelta(seconds=60)) -> None:
        self.catalog = catalog
        self.ttl = ttl
        self._rule = EVERY_EVENT
        self._for: object | None = None
        self._at: datetime | None = None
        # Per scenario: the version its summary named when its version numbers were read, and those.
        self._versions: dict[str, tuple[int, list[int]]] = {}

    def current(self, now: datetime, active: list[ScenarioSummary] | None = None) -> EventRelevance:
        fresh = self._at is not None and self._at <= now < self._at + self.ttl
        if not fresh or active is not self._for:
            self._rule = self._read(active)
            self._for, self._at = active, now
        return self._rule

    def _read(self, active: list[ScenarioSummary] | None) -> EventRelevance:
        entering: list[Scenario] = []
        running: list[Scenario] = []
        enrolling = {(s.scenario_id, s.version) for s in active or []}
        # The runner's summaries win over the marker read now (the same scenario, read moments apart).
        in_play = dict(self.catalog.scenarios_in_play()) | {s.scenario_id: s.version for s in active or []}
        for scenario_id, version in sorted(in_play.items()):
            known = self._versions.get(scenario_id)
            if known is None or known[0] != version:
                # Only an upload adds a version, and it (like a rollback) changes the summary's version.
                self._versions[scenario_id] = (version, self.catalog.versions(scenario_id) or [version])
            for number in self._versions[scenario_id][1]:
                stored = self.catalog.version(scenario_id, number)
                if stored is None:
                    return EVERY_EVENT  # a version we cannot read: skip nothing
                # Without the runner's summaries, every version counts as one that may enrol.
                enrols = (scenario_id, number) in enrolling if active is not None else True
                (entering if enrols else running).append(stored.scenario)
        return relevance_of(entering, running)

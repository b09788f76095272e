"""Who enters a scenario without an event: the decisions a broadcast page makes for its customers.

`Entrance.decide_page(scenario, version, profiles, now, run_at=)` reads what those decisions need
together (the page's enrolments in the scenario, in consistent BatchGetItems; the customers' other
journeys for priority; the event history only where `engine.needs_history` says the audience reads
it) and decides each customer with `engine.admit` (blacklist, re-entry, audience, priority; holdout
assigned). The broadcast worker (`ScenarioRunner.enrol_page`) and the audience count
(`cems.console.audience`) both call it, so the number the count answers is the number a broadcast
of the same scenario on the same data enrols: there is one place that says who is in the audience.

The caches here (the active scenarios' summaries, the scenarios in play) are the runner's: it holds
one Entrance and asks it for them too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property, partial
from typing import Any

from cems.models import Profile, StoredEvent
from cems.ports import EnrolmentReads, EventHistory, ScenarioReader
from cems.scenario.engine import EnrolDecision, Enrolment, OtherEnrolment, admit, needs_history, send_channels
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSummary

# The active scenarios' summaries and the ids in play are read at most this often.
SUMMARY_CACHE = timedelta(seconds=60)


class Customer:
    """One customer's profile, and their event history read at most once per call and only when a
    decision needs it (`engine.needs_history`): most events (page views above all) concern no
    journey, most broadcasts and waits read no event, and the history is a Query over every event
    the customer has."""

    def __init__(self, profile: Profile, read_history: Callable[[], list[StoredEvent]]) -> None:
        self.profile = profile
        self._read_history = read_history

    @cached_property
    def history(self) -> list[StoredEvent]:
        return self._read_history()

    def events_for(
        self,
        scenario: Scenario,
        enrolment: Enrolment | None,
        trigger_event: StoredEvent | None = None,
    ) -> Sequence[StoredEvent]:
        """The history if this decision reads it (`engine.needs_history`), else none (not read)."""
        return self.history if needs_history(scenario, enrolment, trigger_event) else ()

    def traits_written(self, traits: dict[str, Any]) -> None:
        """The traits this call wrote, seen by the customer's next decision in the same call."""
        self.profile = self.profile.model_copy(update={"traits": {**self.profile.traits, **traits}})


@dataclass
class Entry:
    """One customer of a page decided: the enrolment read in this scenario (None: never entered)
    and the decision (entered or why not, with the new enrolment and its holdout)."""

    customer: Customer
    read: Enrolment | None
    decision: EnrolDecision

    @property
    def entered(self) -> bool:
        return self.decision.entered and self.decision.enrolment is not None


@dataclass
class PageEntries:
    """Every customer of a page decided, in page order; `skipped`: those this run enrolled already
    (a broadcast page seen again), not decided."""

    entries: list[Entry] = field(default_factory=list)
    skipped: int = 0

    @property
    def entering(self) -> list[Entry]:
        return [e for e in self.entries if e.entered]


class Entrance:
    def __init__(self, scenarios: ScenarioReader, enrolments: EnrolmentReads, events: EventHistory) -> None:
        self.scenarios = scenarios
        self.enrolments = enrolments
        self.events = events
        self._summaries: list[ScenarioSummary] = []
        self._summaries_at: datetime | None = None
        self._in_play_ids: list[str] = []
        self._in_play_at: datetime | None = None

    def customer(self, profile: Profile) -> Customer:
        """The customer of `profile`, whose history is read on first need."""
        return Customer(profile, partial(self.events.history, profile))

    def decide_page(
        self,
        scenario: Scenario,
        version: int,
        profiles: Sequence[Profile],
        now: datetime,
        *,
        run_at: datetime | None = None,
    ) -> PageEntries:
        """Each customer of the page decided (a customer listed twice once): the page's enrolments
        in this scenario read in consistent BatchGetItems, a customer entered at or after `run_at`
        skipped (this run enrolled them: a page seen again; None: no run, nobody skipped), the
        others' journeys read together (`others_of_page`), then `engine.admit` for each."""
        page = PageEntries()
        unique = list({p.customer_id: p for p in profiles}.values())
        if not unique:
            return page
        reads = self.enrolments.get_many([(p.customer_id, scenario.id) for p in unique])
        todo: list[tuple[Profile, Enrolment | None]] = []
        for profile in unique:
            read = reads.get((profile.customer_id, scenario.id))
            if run_at is not None and read is not None and read.entered_at >= run_at:
                page.skipped += 1
                continue
            todo.append((profile, read))
        if not todo:
            return page
        others = self.others_of_page([p.customer_id for p, _ in todo], scenario.id, now)
        for profile, read in todo:
            customer = self.customer(profile)
            decision = admit(
                scenario,
                version,
                profile,
                None,
                read,
                now,
                events=customer.events_for(scenario, None),
                others=others[profile.customer_id],
            )
            page.entries.append(Entry(customer, read, decision))
        return page

    # -- what priority reads --------------------------------------------------------------------------

    def summaries(self, now: datetime) -> list[ScenarioSummary]:
        """The active scenarios' summaries, read at most once a minute."""
        if self._summaries_at is None or not (self._summaries_at <= now < self._summaries_at + SUMMARY_CACHE):
            self._summaries = self.scenarios.active_summaries()
            self._summaries_at = now
        return self._summaries

    def scenario(self, scenario_id: str, version: int) -> Scenario | None:
        stored = self.scenarios.version(scenario_id, version)
        return None if stored is None else stored.scenario

    def in_play(self, now: datetime) -> list[str]:
        """The ids of the scenarios that may have journeys (active or stopped), read at most once a
        minute as the summaries are."""
        if self._in_play_at is None or not (self._in_play_at <= now < self._in_play_at + SUMMARY_CACHE):
            self._in_play_ids = [scenario_id for scenario_id, _ in self.scenarios.scenarios_in_play()]
            self._in_play_at = now
        return self._in_play_ids

    def others(self, customer_id: str, scenario_id: str) -> list[OtherEnrolment]:
        return self.others_among(self.enrolments.of_customer(customer_id), scenario_id)

    def others_among(self, enrolments: Sequence[Enrolment], scenario_id: str) -> list[OtherEnrolment]:
        """The customer's journeys other than in `scenario_id`, as far as priority is concerned."""
        others: list[OtherEnrolment] = []
        for other in enrolments:
            if other.scenario_id == scenario_id:
                continue
            scenario = self.scenario(other.scenario_id, other.version)
            if scenario is None:
                continue
            others.append(
                OtherEnrolment(
                    scenario_id=other.scenario_id,
                    priority=scenario.priority,
                    yield_to_higher_priority=scenario.exit.yield_to_higher_priority,
                    active=not other.ended,
                    channels=send_channels(scenario),
                    topic=scenario.topic,
                )
            )
        return others

    def others_of_page(
        self, customer_ids: Sequence[str], scenario_id: str, now: datetime
    ) -> Mapping[str, list[OtherEnrolment]]:
        """Each customer's other journeys, as far as priority is concerned (what `others` reads with
        a Query per customer), from BatchGetItems of (customer, scenario) for every scenario that may
        have journeys: the active ones and the stopped ones (a stopped scenario's journeys still run,
        and still yield or make others yield), as the scenario store lists them
        (`scenarios_in_play`). Every enrolment is keyed by its scenario, so no journey of the
        customer is missed this way; each found is judged by the version it runs, as `others` does."""
        in_play = self.in_play(now)
        scenario_ids = set(in_play) | {s.scenario_id for s in self.summaries(now)}
        scenario_ids.discard(scenario_id)
        others: dict[str, list[OtherEnrolment]] = {customer_id: [] for customer_id in customer_ids}
        if not scenario_ids:
            return others
        found = self.enrolments.get_many([(c, s) for c in others for s in sorted(scenario_ids)])
        by_customer: dict[str, list[Enrolment]] = {}
        for (customer_id, _), other in sorted(found.items()):
            by_customer.setdefault(customer_id, []).append(other)
        for customer_id, theirs in by_customer.items():
            others[customer_id] = self.others_among(theirs, scenario_id)
        return others

"""What the scenario engine stores, as values: scenario versions, the active pointer, summaries,
enrolments, due keys, date schedules and cap outcomes (stored by cems.adapters.dynamodb.journeys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cems.scenario.caps import CapCounter, CapPeriod, CapScope
from cems.scenario.model import EventTrigger, Scenario

# S3 sequencers are hex strings of varying length, compared after left-padding with zeros.
SEQUENCER_WIDTH = 40


def padded_sequencer(sequencer: str) -> str:
    return sequencer.upper().rjust(SEQUENCER_WIDTH, "0")


@dataclass(frozen=True)
class ScenarioSource:
    """The S3 object a version came from (key, etag; version id and sequencer when S3 gives them)."""

    key: str
    etag: str
    version_id: str | None = None
    sequencer: str | None = None


@dataclass(frozen=True)
class ScenarioVersion:
    scenario_id: str
    version: int
    scenario: Scenario
    uploaded_at: datetime
    source: ScenarioSource | None


@dataclass(frozen=True)
class ActiveState:
    """The ACTIVE pointer: which version new enrolments start on, or that the scenario is stopped."""

    scenario_id: str
    state: Literal["active", "stopped"]
    version: int  # the active version; when stopped, the one that was active
    latest: int  # the highest version number given out
    updated_at: datetime
    etag: str | None = None
    sequencer: str | None = None

    @property
    def is_active(self) -> bool:
        return self.state == "active"


@dataclass(frozen=True)
class ScenarioSummary:
    """What `trigger` needs to match events to active scenarios without reading each version."""

    scenario_id: str
    version: int
    name: str
    priority: int
    trigger_type: str
    event: str | None  # the trigger's event name for `event` triggers

    @classmethod
    def of(cls, scenario: Scenario, version: int) -> ScenarioSummary:
        event = scenario.trigger.event if isinstance(scenario.trigger, EventTrigger) else None
        return cls(scenario.id, version, scenario.name, scenario.priority, scenario.trigger.type, event)


PublishResult = Literal["created", "duplicate", "unchanged", "superseded"]


@dataclass(frozen=True)
class PublishOutcome:
    """`created`: a new version, now active. `duplicate`: this S3 event was applied already.
    `unchanged`: the active version came from the same object content (etag). `superseded`: a later
    S3 event for the key was applied already. Only `created` wrote anything."""

    result: PublishResult
    version: int

    @property
    def created(self) -> bool:
        return self.result == "created"


class VersionRaceError(RuntimeError):
    """Conditional writes kept losing (far more concurrent uploads of one scenario than is plausible)."""


class Enrolment(BaseModel):
    """A customer's journey in one scenario. `revision` is the number every write is conditional on;
    `due_at` (UTC) is set while the enrolment waits for a time, which puts it in the due index.
    `data` holds whatever else the engine keeps (e.g. the trigger event, a deferred send)."""

    model_config = ConfigDict(extra="forbid")

    customer_id: str
    scenario_id: str
    version: int
    step_id: str | None = None
    state: str = "active"
    variant: str | None = None
    holdout: bool = False
    entered_at: datetime
    entries: int = 1
    sends: int = 0
    last_send_at: datetime | None = None
    due_at: datetime | None = None
    updated_at: datetime | None = None
    revision: int = 0
    data: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class DueKey:
    customer_id: str
    scenario_id: str
    due_at: datetime
    # "enrolment": an ENR# item (advance it); "date": a DATE# item, a date trigger's pending entry.
    kind: Literal["enrolment", "date"] = "enrolment"


@dataclass(frozen=True)
class DateSchedule:
    """A date trigger's pending entry (`DATE#<customer>` / `<scenario id>`): the customer enters
    `scenario_id` at `due_at` if the date it was computed from has not moved by then."""

    customer_id: str
    scenario_id: str
    due_at: datetime
    revision: int


@dataclass(frozen=True)
class DuePage:
    keys: list[DueKey]
    # Pass back as `start` for the next page; None when the shard has no more due items.
    cursor: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class CapOutcome:
    allowed: bool
    # When not allowed: which limit was reached.
    capped_by: CapPeriod | None = None
    # Allowed without counting anything: the send's key had taken the counters already (an earlier
    # attempt at the same send, e.g. one that died before writing its journey).
    already: bool = False
    # When not allowed: whose limit it was, the channel's or the total's (TOTAL).
    capped_scope: CapScope | None = None


@dataclass(frozen=True)
class CapCounts:
    """A customer's cap counters as read: the sends each counted (0 where none), and the keys of
    the sends that took each (a counter stored before takes were keyed holds none)."""

    counts: dict[CapCounter, int]
    holders: dict[CapCounter, frozenset[str]] = field(default_factory=dict)

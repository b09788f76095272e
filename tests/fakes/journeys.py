"""In-memory scenario, enrolment and cap stores with the JourneysTable adapters' semantics.

What the runner and the loader rely on is kept: every enrolment and schedule write is conditional on
the revision read (a stale one is refused, and the winner's write stands); the due index lists
enrolments and date schedules whose `due_at` has come, and leaves out the rest; cap counters count a
send on the day and the week together or not at all, and never past a limit; a version number is
given out once, an S3 event applied twice stores nothing. tests/integration/test_journeys_contract.py
runs the same assertions against these and against DynamoDB (moto).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Generic, TypeVar

from cems import clock
from cems.models import Channel
from cems.scenario.caps import TOTAL, CapCounter, CapScope, counters_of
from cems.scenario.model import ChannelCap, Scenario
from cems.scenario.records import (
    ActiveState,
    CapCounts,
    CapOutcome,
    DateSchedule,
    DueKey,
    PublishOutcome,
    ScenarioSource,
    ScenarioSummary,
    ScenarioVersion,
    padded_sequencer,
)
from pydantic import BaseModel

E = TypeVar("E", bound=BaseModel)


class InMemoryScenarioStore:
    """Versions, the ACTIVE pointer and the active summaries, in dictionaries."""

    def __init__(self) -> None:
        self.pointers: dict[str, ActiveState] = {}
        self.versions_stored: dict[tuple[str, int], ScenarioVersion] = {}
        self.summaries: dict[str, ScenarioSummary] = {}

    def active(self, scenario_id: str) -> ActiveState | None:
        return self.pointers.get(scenario_id)

    def active_version(self, scenario_id: str) -> ScenarioVersion | None:
        state = self.active(scenario_id)
        if state is None or not state.is_active:
            return None
        return self.version(scenario_id, state.version)

    def version(self, scenario_id: str, version: int) -> ScenarioVersion | None:
        return self.versions_stored.get((scenario_id, version))

    def versions(self, scenario_id: str) -> list[int]:
        return sorted(number for sid, number in self.versions_stored if sid == scenario_id)

    def active_summaries(self) -> list[ScenarioSummary]:
        return [self.summaries[sid] for sid in sorted(self.summaries)]

    def scenarios_in_play(self) -> list[tuple[str, int]]:
        # Active or stopped: what ScenarioStore's summaries and stopped markers list.
        return [(sid, self.pointers[sid].version) for sid in sorted(self.pointers)]

    def put_version(
        self,
        scenario: Scenario,
        document: Mapping[str, Any],
        source: ScenarioSource,
        at: datetime | None = None,
    ) -> PublishOutcome:
        at = at or clock.now()
        sequencer = padded_sequencer(source.sequencer) if source.sequencer else None
        current = self.active(scenario.id)
        if current is not None:
            if sequencer and current.sequencer and current.sequencer >= sequencer:
                return PublishOutcome(
                    "duplicate" if current.sequencer == sequencer else "superseded", current.version
                )
            if current.is_active and current.etag == source.etag:
                return PublishOutcome("unchanged", current.version)
        number = (current.latest if current else 0) + 1
        self.versions_stored[(scenario.id, number)] = ScenarioVersion(
            scenario.id, number, scenario, at, source
        )
        self.pointers[scenario.id] = ActiveState(
            scenario.id, "active", number, number, at, etag=source.etag, sequencer=sequencer
        )
        self.summaries[scenario.id] = ScenarioSummary.of(scenario, number)
        return PublishOutcome("created", number)

    def activate(self, scenario_id: str, version: int, at: datetime | None = None) -> bool:
        stored = self.version(scenario_id, version)
        current = self.active(scenario_id)
        if stored is None or current is None:
            return False
        etag = stored.source.etag if stored.source else None
        self.pointers[scenario_id] = replace(
            current, state="active", version=version, updated_at=at or clock.now(), etag=etag
        )
        self.summaries[scenario_id] = ScenarioSummary.of(stored.scenario, version)
        return True

    def stop(self, scenario_id: str, sequencer: str | None = None, at: datetime | None = None) -> bool:
        padded = padded_sequencer(sequencer) if sequencer else None
        current = self.active(scenario_id)
        if current is None or not current.is_active:
            return False
        if padded and current.sequencer and current.sequencer >= padded:
            return False
        self.pointers[scenario_id] = replace(
            current,
            state="stopped",
            updated_at=at or clock.now(),
            etag=None,
            sequencer=padded or current.sequencer,
        )
        self.summaries.pop(scenario_id, None)
        return True


class InMemoryEnrolmentStore(Generic[E]):
    """Enrolments and date schedules keyed by (customer, scenario), each with a revision.

    Like EnrolmentStore it stores any pydantic enrolment model with `customer_id`, `scenario_id`,
    `revision` and `due_at`: `InMemoryEnrolmentStore[engine.Enrolment]()` for the runner."""

    def __init__(self) -> None:
        self.enrolments: dict[tuple[str, str], E] = {}
        self.schedules: dict[tuple[str, str], DateSchedule] = {}
        self.batch_reads = 0  # get_many calls (tests check the batched path reads in batches)
        # Races are tested by threads against the fake too: each check-and-write is one step.
        self._lock = threading.Lock()

    def get(self, customer_id: str, scenario_id: str) -> E | None:
        return self.enrolments.get((customer_id, scenario_id))

    def of_customer(self, customer_id: str) -> list[E]:
        return [e for (cid, sid), e in sorted(self.enrolments.items()) if cid == customer_id]

    def get_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], E]:
        self.batch_reads += 1
        return {pair: self.enrolments[pair] for pair in pairs if pair in self.enrolments}

    def write_many(
        self, writes: Sequence[tuple[E, int | None]], at: datetime | None = None
    ) -> list[E | None]:
        """Each write as `create` (read None) or `save` on the revision read; None where refused."""
        keys = [_key_of(e) for e, _ in writes]
        if len(set(keys)) != len(keys):
            raise ValueError("a transaction cannot write one enrolment twice")
        return [
            self.create(e, at) if read is None else self.save(e.model_copy(update={"revision": read}), at)
            for e, read in writes
        ]

    def create(self, enrolment: E, at: datetime | None = None) -> E | None:
        key = _key_of(enrolment)
        stored = _stamped(enrolment, 1, at)
        with self._lock:
            if key in self.enrolments:
                return None
            self.enrolments[key] = stored
        return stored

    def save(self, enrolment: E, at: datetime | None = None) -> E | None:
        key = _key_of(enrolment)
        read: int = getattr(enrolment, "revision")  # noqa: B009
        stored = _stamped(enrolment, read + 1, at)
        with self._lock:
            current = self.enrolments.get(key)
            # DynamoDB's `revision = :read` is false for a missing item too.
            if current is None or getattr(current, "revision") != read:  # noqa: B009
                return None
            self.enrolments[key] = stored
        return stored

    def iter_due(
        self, now: datetime, page_size: int = 100, after: datetime | None = None
    ) -> Iterator[DueKey]:
        """Every enrolment and schedule due at or before `now` (and later than `after`, if given),
        earliest first. Taken as one snapshot: the runner writes what it advances while it iterates."""

        def listed(due_at: datetime) -> bool:
            return due_at <= now and (after is None or due_at > after)

        with self._lock:
            due = [
                DueKey(cid, sid, e.due_at)  # type: ignore[attr-defined]
                for (cid, sid), e in self.enrolments.items()
                if getattr(e, "due_at", None) is not None and listed(e.due_at)  # type: ignore[attr-defined]
            ]
            due += [
                DueKey(s.customer_id, s.scenario_id, s.due_at, kind="date")
                for s in self.schedules.values()
                if listed(s.due_at)
            ]
        yield from sorted(due, key=lambda k: (k.due_at, k.customer_id, k.scenario_id, k.kind))

    def schedule(self, customer_id: str, scenario_id: str) -> DateSchedule | None:
        return self.schedules.get((customer_id, scenario_id))

    def schedules_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DateSchedule]:
        return {pair: self.schedules[pair] for pair in pairs if pair in self.schedules}

    def put_schedule(
        self, customer_id: str, scenario_id: str, due_at: datetime, read: DateSchedule | None
    ) -> bool:
        key = (customer_id, scenario_id)
        with self._lock:
            current = self.schedules.get(key)
            if (read is None) != (current is None):
                return False
            if read is not None and current is not None and current.revision != read.revision:
                return False
            revision = 0 if read is None else read.revision
            self.schedules[key] = DateSchedule(customer_id, scenario_id, due_at, revision + 1)
        return True

    def delete_schedule(self, read: DateSchedule) -> bool:
        key = (read.customer_id, read.scenario_id)
        with self._lock:
            current = self.schedules.get(key)
            if current is None or current.revision != read.revision:
                return False
            del self.schedules[key]
        return True


def _key_of(enrolment: BaseModel) -> tuple[str, str]:
    return getattr(enrolment, "customer_id"), getattr(enrolment, "scenario_id")  # noqa: B009


def _stamped(enrolment: E, revision: int, at: datetime | None) -> E:
    update: dict[str, Any] = {"revision": revision}
    if "updated_at" in type(enrolment).model_fields:
        update["updated_at"] = at or clock.now()
    # A copy, as a read from DynamoDB is: the caller's object is never the stored one.
    return enrolment.model_copy(deep=True, update=update)


class InMemoryCapStore:
    """Send counters per (customer, CapCounter): a channel's (or the total's) Asia/Tokyo day or ISO
    week, as CapStore keeps them, with the keys of the sends that took each (a keyed take is counted
    once); a take with a total counts in the channel's and the total's counters, all or none."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, CapCounter], int] = {}
        self.holders: dict[tuple[str, CapCounter], set[str]] = {}
        self._lock = threading.Lock()

    def try_consume(
        self,
        customer_id: str,
        channel: Channel,
        cap: ChannelCap,
        at: datetime | None = None,
        key: str | None = None,
        total: ChannelCap | None = None,
    ) -> CapOutcome:
        moment = at or clock.now()
        day, week = counters_of(channel, moment)
        pairs = [(day, cap.per_day), (week, cap.per_week)]
        if total is not None:
            total_day, total_week = counters_of(TOTAL, moment)
            pairs += [(total_day, total.per_day), (total_week, total.per_week)]
        limits = [(counter, limit) for counter, limit in pairs if limit is not None]
        with self._lock:
            if key is not None and any(key in self.holders.get((customer_id, c), ()) for c, _ in limits):
                return CapOutcome(True, already=True)
            for counter, limit in limits:
                if self.counters.get((customer_id, counter), 0) >= limit:
                    return CapOutcome(False, counter.period, capped_scope=counter.channel)
            for counter, _ in limits:
                at_counter = (customer_id, counter)
                self.counters[at_counter] = self.counters.get(at_counter, 0) + 1
                if key is not None:
                    self.holders.setdefault(at_counter, set()).add(key)
        return CapOutcome(True)

    def release(
        self, customer_id: str, channel: Channel, at: datetime, key: str | None = None, total: bool = False
    ) -> None:
        scopes: list[CapScope] = [channel, TOTAL] if total else [channel]
        with self._lock:
            for counter in (c for scope in scopes for c in counters_of(scope, at)):
                at_counter = (customer_id, counter)
                if key is not None:
                    held = self.holders.get(at_counter, set())
                    if key not in held or self.counters.get(at_counter, 0) <= 0:
                        continue
                    held.discard(key)
                if self.counters.get(at_counter, 0) > 0:
                    self.counters[at_counter] -= 1

    def counts(self, customer_id: str, channel: CapScope, at: datetime | None = None) -> tuple[int, int]:
        day, week = counters_of(channel, at or clock.now())
        return self.counters.get((customer_id, day), 0), self.counters.get((customer_id, week), 0)

    def counts_of(
        self, customer_id: str, channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[CapCounter, int]:
        wanted = [c for channel in channels for c in counters_of(channel, at or clock.now())]
        return {counter: self.counters.get((customer_id, counter), 0) for counter in wanted}

    def counts_of_many(
        self, customer_ids: Sequence[str], channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[str, dict[CapCounter, int]]:
        return {customer_id: self.counts_of(customer_id, channels, at) for customer_id in customer_ids}

    def read_caps_many(
        self, customer_ids: Sequence[str], channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[str, CapCounts]:
        read: dict[str, CapCounts] = {}
        with self._lock:
            for customer_id in customer_ids:
                counts = self.counts_of(customer_id, channels, at)
                holders = {
                    counter: frozenset(self.holders[(customer_id, counter)])
                    for counter in counts
                    if self.holders.get((customer_id, counter))
                }
                read[customer_id] = CapCounts(counts, holders)
        return read

    def try_consume_many(
        self,
        takes: Sequence[tuple[str, Channel, ChannelCap]],
        at: datetime | None = None,
        send_keys: Sequence[str | None] | None = None,
        totals: Sequence[ChannelCap | None] | None = None,
    ) -> list[CapOutcome]:
        """Each take as `try_consume`: a refused one counts nothing, the others count."""
        if len({(c, ch) for c, ch, _ in takes}) != len(takes):
            raise ValueError("one take per customer and channel in a transaction")
        named = list(send_keys) if send_keys is not None else [None] * len(takes)
        if len(named) != len(takes):
            raise ValueError("one key per take")
        across = list(totals) if totals is not None else [None] * len(takes)
        if len(across) != len(takes):
            raise ValueError("one total per take")
        return [
            self.try_consume(customer_id, channel, cap, at, key, total)
            for (customer_id, channel, cap), key, total in zip(takes, named, across, strict=True)
        ]

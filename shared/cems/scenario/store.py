"""JourneysTable access for the scenario engine: the one place that knows its key formats.

JourneysTable (pk, sk; GSI `due-index` on due_shard + due_at, keys only; docs/scenario-engine.md):
  SCENARIOS                 / <scenario id>            an active scenario's summary (what `trigger` matches)
  SCN#<scenario id>         / V#<000001>               one stored version: document, uploaded at, source
  SCN#<scenario id>         / ACTIVE                   state (active/stopped), active version, latest number,
                                                       the S3 sequencer and etag last applied
  ENR#<customer id>         / <scenario id>            an enrolment, with `revision`; due_shard/due_at while
                                                       it waits for a time (the sparse due index)
  CAP#<customer id>         / <channel>#D#<yyyy-mm-dd> a frequency-cap counter (Asia/Tokyo day); TTL
  CAP#<customer id>         / <channel>#W#<yyyy-Www>   a frequency-cap counter (ISO week); TTL
  BCAST#<scenario id>#<run> / SEG#<n>                  broadcast progress per segment
  RPT#<scenario id>         / V#…#S#…#VAR#…#G#…      report counters per version, step, variant and
                                                       group (cems.reports.counters, which owns them)
  RPTONCE#<sha256>          / ONCE                     a fact counted already; TTL
  RPTINDEX                  / <scenario id>            scenarios that have counters

Every change is a conditional write: version numbers (two uploads never get one number), enrolment
revisions (two writers never both advance one enrolment), cap counters (never past the limit).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, Field

from cems import clock
from cems.adapters.dynamodb.items import (
    condition_failed,
    from_attribute_map,
    to_attribute_map,
    transaction_cancelled,
)
from cems.scenario.model import STRUCTURE_ONLY, ChannelCap, EventTrigger, Scenario

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

DUE_INDEX = "due-index"
DEFAULT_DUE_SHARDS = 16
SCENARIOS_PK = "SCENARIOS"
ACTIVE_SK = "ACTIVE"
CAP_ZONE = ZoneInfo("Asia/Tokyo")
# A counter outlives its day or week by this much before TTL removes it (TTL is lazy; the key holds
# the period, so an old counter is never read for a new one anyway).
CAP_TTL_MARGIN = timedelta(days=8)
# S3 sequencers are hex strings of varying length, compared after left-padding with zeros.
SEQUENCER_WIDTH = 40
# Conditional-write races are retried this many times before giving up loudly.
MAX_ATTEMPTS = 8


# ------------------------------------------------------------------------------------------------ keys


def scenario_summary_key(scenario_id: str) -> dict[str, Any]:
    return {"pk": {"S": SCENARIOS_PK}, "sk": {"S": scenario_id}}


def version_key(scenario_id: str, version: int) -> dict[str, Any]:
    return {"pk": {"S": f"SCN#{scenario_id}"}, "sk": {"S": f"V#{version:06d}"}}


def active_key(scenario_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"SCN#{scenario_id}"}, "sk": {"S": ACTIVE_SK}}


def enrolment_pk(customer_id: str) -> str:
    return f"ENR#{customer_id}"


def enrolment_key(customer_id: str, scenario_id: str) -> dict[str, Any]:
    return {"pk": {"S": enrolment_pk(customer_id)}, "sk": {"S": scenario_id}}


def schedule_pk(customer_id: str) -> str:
    return f"DATE#{customer_id}"


def schedule_key(customer_id: str, scenario_id: str) -> dict[str, Any]:
    return {"pk": {"S": schedule_pk(customer_id)}, "sk": {"S": scenario_id}}


def due_shard_name(shard: int) -> str:
    return f"DUE#{shard}"


def cap_key(customer_id: str, channel: str, period: str) -> dict[str, Any]:
    return {"pk": {"S": f"CAP#{customer_id}"}, "sk": {"S": f"{channel}#{period}"}}


def broadcast_segment_key(scenario_id: str, run: str, segment: int) -> dict[str, Any]:
    return {"pk": {"S": f"BCAST#{scenario_id}#{run}"}, "sk": {"S": f"SEG#{segment}"}}


def padded_sequencer(sequencer: str) -> str:
    return sequencer.upper().rjust(SEQUENCER_WIDTH, "0")


def _condition_failed(exc: ClientError) -> bool:
    """Refused: a conditional write, or a transaction (these stores' transactions fail only on their
    conditions)."""
    return condition_failed(exc) or transaction_cancelled(exc)


@dataclass(frozen=True)
class JourneySettings:
    table: str
    # Raise only: an enrolment keeps the shard it was written with, and tick reads shards 0..N-1.
    due_shards: int = DEFAULT_DUE_SHARDS

    @classmethod
    def from_env(cls) -> JourneySettings:
        shards = int(os.environ.get("CEMS_DUE_SHARDS", str(DEFAULT_DUE_SHARDS)))
        if shards < 1:
            raise ValueError(f"CEMS_DUE_SHARDS must be at least 1, not {shards}")
        return cls(os.environ.get("JOURNEYS_TABLE", "JourneysTable"), shards)


# -------------------------------------------------------------------------------------------- scenarios


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


class ScenarioStore:
    """Scenario versions, the ACTIVE pointer and the SCENARIOS index."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client
        # Versions never change once stored: parsed ones are kept for the life of the process.
        self._versions: dict[tuple[str, int], ScenarioVersion] = {}
        self._lock = threading.Lock()

    def active(self, scenario_id: str) -> ActiveState | None:
        """The ACTIVE pointer (None: never uploaded)."""
        item = self.client.get_item(
            TableName=self.table_name, Key=active_key(scenario_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        values = from_attribute_map(item)
        return ActiveState(
            scenario_id=scenario_id,
            state=values["state"],
            version=int(values["version"]),
            latest=int(values["latest"]),
            updated_at=datetime.fromisoformat(values["updated_at"]),
            etag=values.get("etag"),
            sequencer=values.get("sequencer"),
        )

    def active_version(self, scenario_id: str) -> ScenarioVersion | None:
        """The version new enrolments start on (None: never uploaded, or stopped)."""
        state = self.active(scenario_id)
        if state is None or not state.is_active:
            return None
        return self.version(scenario_id, state.version)

    def version(self, scenario_id: str, version: int) -> ScenarioVersion | None:
        """One stored version, parsed (cached: versions are immutable)."""
        cached = self._versions.get((scenario_id, version))
        if cached is not None:
            return cached
        item = self.client.get_item(
            TableName=self.table_name, Key=version_key(scenario_id, version), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        values = from_attribute_map(item)
        # Validated in full when stored; the structure is all that needs parsing now.
        scenario = Scenario.model_validate(json.loads(values["document"]), context={STRUCTURE_ONLY: True})
        source = values.get("source")
        loaded = ScenarioVersion(
            scenario_id=scenario_id,
            version=version,
            scenario=scenario,
            uploaded_at=datetime.fromisoformat(values["uploaded_at"]),
            source=None if source is None else ScenarioSource(**source),
        )
        with self._lock:
            self._versions[(scenario_id, version)] = loaded
        return loaded

    def active_summaries(self) -> list[ScenarioSummary]:
        """Every active scenario's summary (one paginated Query of the SCENARIOS partition)."""
        summaries: list[ScenarioSummary] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": SCENARIOS_PK}},
        ):
            for item in page["Items"]:
                values = from_attribute_map(item)
                summaries.append(
                    ScenarioSummary(
                        scenario_id=values["sk"],
                        version=int(values["version"]),
                        name=values["name"],
                        priority=int(values["priority"]),
                        trigger_type=values["trigger_type"],
                        event=values.get("event"),
                    )
                )
        return summaries

    def put_version(
        self,
        scenario: Scenario,
        document: Mapping[str, Any],
        source: ScenarioSource,
        at: datetime | None = None,
    ) -> PublishOutcome:
        """Stores `document` (already fully validated) as the next version and makes it active, in
        one transaction: the version, the ACTIVE pointer and the SCENARIOS summary land together.

        The number comes from the ACTIVE item's `latest`, written on condition that it is still the
        number read, so two concurrent uploads get two numbers. An S3 event already applied (same or
        older sequencer) and an upload of the content already active (same etag) store nothing.
        """
        at = at or clock.now()
        sequencer = padded_sequencer(source.sequencer) if source.sequencer else None
        for _ in range(MAX_ATTEMPTS):
            current = self.active(scenario.id)
            if current is not None:
                if sequencer and current.sequencer and current.sequencer >= sequencer:
                    result: PublishResult = "duplicate" if current.sequencer == sequencer else "superseded"
                    return PublishOutcome(result, current.version)
                if current.is_active and current.etag == source.etag:
                    return PublishOutcome("unchanged", current.version)
            latest = current.latest if current else 0
            number = latest + 1
            pointer: dict[str, Any] = {
                "state": "active",
                "version": number,
                "latest": number,
                "updated_at": at,
                "etag": source.etag,
                "sequencer": sequencer,
            }
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        self._pointer_put(scenario.id, pointer, latest),
                        {
                            "Put": {
                                "TableName": self.table_name,
                                "Item": self._version_item(scenario, document, number, source, at),
                                "ConditionExpression": "attribute_not_exists(pk)",
                            }
                        },
                        self._summary_put(ScenarioSummary.of(scenario, number), at),
                    ]
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    continue  # another upload took the number: read again
                raise
            with self._lock:
                self._versions[(scenario.id, number)] = ScenarioVersion(
                    scenario.id, number, scenario, at, source
                )
            return PublishOutcome("created", number)
        raise VersionRaceError(f"could not store a version of {scenario.id} after {MAX_ATTEMPTS} attempts")

    def activate(self, scenario_id: str, version: int, at: datetime | None = None) -> bool:
        """Makes an existing version the active one (a rollback); False if there is no such version."""
        at = at or clock.now()
        stored = self.version(scenario_id, version)
        if stored is None:
            return False
        for _ in range(MAX_ATTEMPTS):
            current = self.active(scenario_id)
            if current is None:
                return False
            pointer = {
                "state": "active",
                "version": version,
                "latest": current.latest,
                "updated_at": at,
                "etag": stored.source.etag if stored.source else None,
                "sequencer": current.sequencer,
            }
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        self._pointer_put(scenario_id, pointer, current.latest),
                        self._summary_put(ScenarioSummary.of(stored.scenario, version), at),
                    ]
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    continue
                raise
            return True
        raise VersionRaceError(f"could not activate {scenario_id} v{version} after {MAX_ATTEMPTS} attempts")

    def stop(self, scenario_id: str, sequencer: str | None = None, at: datetime | None = None) -> bool:
        """Stops new enrolments (the file was deleted): ACTIVE becomes `stopped` and the summary goes.
        Running enrolments are untouched. False when there is nothing to stop (never uploaded,
        already stopped, or a later S3 event was applied already)."""
        at = at or clock.now()
        padded = padded_sequencer(sequencer) if sequencer else None
        for _ in range(MAX_ATTEMPTS):
            current = self.active(scenario_id)
            if current is None or not current.is_active:
                return False
            if padded and current.sequencer and current.sequencer >= padded:
                return False
            pointer = {
                "state": "stopped",
                "version": current.version,
                "latest": current.latest,
                "updated_at": at,
                "etag": None,
                "sequencer": padded or current.sequencer,
            }
            try:
                self.client.transact_write_items(
                    TransactItems=[
                        self._pointer_put(scenario_id, pointer, current.latest),
                        {"Delete": {"TableName": self.table_name, "Key": scenario_summary_key(scenario_id)}},
                    ]
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    continue
                raise
            return True
        raise VersionRaceError(f"could not stop {scenario_id} after {MAX_ATTEMPTS} attempts")

    def versions(self, scenario_id: str) -> list[int]:
        """Every stored version number of a scenario, oldest first."""
        numbers: list[int] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :v)",
            ExpressionAttributeValues={":pk": {"S": f"SCN#{scenario_id}"}, ":v": {"S": "V#"}},
            ProjectionExpression="sk",
        ):
            numbers.extend(int(item["sk"]["S"].removeprefix("V#")) for item in page["Items"])
        return numbers

    # -- items ------------------------------------------------------------------------------------

    def _pointer_put(
        self, scenario_id: str, pointer: dict[str, Any], read_latest: int
    ) -> TransactWriteItemTypeDef:
        condition: dict[str, Any]
        if read_latest == 0:
            condition = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "latest = :read",
                "ExpressionAttributeValues": {":read": {"N": str(read_latest)}},
            }
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": {**active_key(scenario_id), **to_attribute_map(pointer)},
                **condition,  # type: ignore[typeddict-item]
            }
        }

    def _version_item(
        self,
        scenario: Scenario,
        document: Mapping[str, Any],
        number: int,
        source: ScenarioSource,
        at: datetime,
    ) -> dict[str, Any]:
        values = {
            "scenario_id": scenario.id,
            "version": number,
            "declared_version": scenario.version,
            "document": json.dumps(document, ensure_ascii=False, separators=(",", ":")),
            "uploaded_at": at,
            "source": {k: v for k, v in vars(source).items() if v is not None},
        }
        return {**version_key(scenario.id, number), **to_attribute_map(values)}

    def _summary_put(self, summary: ScenarioSummary, at: datetime) -> TransactWriteItemTypeDef:
        values = {
            "version": summary.version,
            "name": summary.name,
            "priority": summary.priority,
            "trigger_type": summary.trigger_type,
            "event": summary.event,
            "updated_at": at,
        }
        item = {**scenario_summary_key(summary.scenario_id), **to_attribute_map(values)}
        return {"Put": {"TableName": self.table_name, "Item": item}}


# ------------------------------------------------------------------------------------------- enrolments


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


E = TypeVar("E", bound=BaseModel)


class EnrolmentStore(Generic[E]):
    """Enrolments (ENR#<customer> / <scenario id>) and the sharded, sparse due index.

    Enrolments are pydantic models with at least `customer_id`, `scenario_id`, `revision` and
    `due_at`: this module's `Enrolment` by default, or the engine's (`EnrolmentStore(..., model=
    engine.Enrolment)`); they are stored field by field, and read back with `model.model_validate`."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        due_shards: int = DEFAULT_DUE_SHARDS,
        model: type[E] = Enrolment,  # type: ignore[assignment]
    ) -> None:
        if due_shards < 1:
            raise ValueError("due_shards must be at least 1")
        self.table_name = table_name
        self.client = client
        self.due_shards = due_shards
        self.model = model

    def shard_of(self, customer_id: str) -> int:
        """A stable shard for a customer (the same in every process and Python version)."""
        digest = hashlib.sha256(customer_id.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.due_shards

    def get(self, customer_id: str, scenario_id: str) -> E | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=enrolment_key(customer_id, scenario_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else _enrolment(self.model, item)

    def of_customer(self, customer_id: str) -> list[E]:
        """Every enrolment of a customer, in any scenario and state (one consistent Query)."""
        enrolments: list[E] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": enrolment_pk(customer_id)}},
            ConsistentRead=True,
        ):
            enrolments.extend(_enrolment(self.model, item) for item in page["Items"])
        return enrolments

    def create(self, enrolment: E, at: datetime | None = None) -> E | None:
        """Stores a first enrolment (revision 1); None if the customer already has one in that
        scenario (re-entry is a `save` of the existing one)."""
        stored = enrolment.model_copy(update={"revision": 1, "updated_at": at or clock.now()})
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=self._item(stored),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        return stored

    def save(self, enrolment: E, at: datetime | None = None) -> E | None:
        """Writes the whole enrolment if its stored revision is still `enrolment.revision`; the stored
        one gets revision + 1 and is returned. None: someone else wrote it since (re-read it). The due
        index attributes follow `due_at` (absent when None, so the index stays sparse)."""
        stored = enrolment.model_copy(
            update={"revision": _revision(enrolment) + 1, "updated_at": at or clock.now()}
        )
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=self._item(stored),
                ConditionExpression="revision = :read",
                ExpressionAttributeValues={":read": {"N": str(_revision(enrolment))}},
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return None
            raise
        return stored

    def set_due(self, customer_id: str, scenario_id: str, due_at: datetime, revision: int) -> bool:
        """Puts the enrolment in the due index at `due_at` (revision + 1); False on a revision conflict."""
        return self._update_due(
            customer_id,
            scenario_id,
            revision,
            "SET due_shard = :shard, due_at = :due, revision = :next, updated_at = :now",
            {
                ":shard": {"S": due_shard_name(self.shard_of(customer_id))},
                ":due": {"S": clock.iso(due_at)},
            },
        )

    def clear_due(self, customer_id: str, scenario_id: str, revision: int) -> bool:
        """Takes the enrolment out of the due index (revision + 1); False on a revision conflict."""
        return self._update_due(
            customer_id,
            scenario_id,
            revision,
            "REMOVE due_shard, due_at SET revision = :next, updated_at = :now",
            {},
        )

    def _update_due(
        self, customer_id: str, scenario_id: str, revision: int, expression: str, values: dict[str, Any]
    ) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=enrolment_key(customer_id, scenario_id),
                UpdateExpression=expression,
                ConditionExpression="revision = :read",
                ExpressionAttributeValues={
                    **values,
                    ":read": {"N": str(revision)},
                    ":next": {"N": str(revision + 1)},
                    ":now": {"S": clock.iso(clock.now())},
                },
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def query_due(
        self, shard: int, now: datetime, limit: int = 100, start: dict[str, Any] | None = None
    ) -> DuePage:
        """One page of the enrolments in `shard` due at or before `now`, earliest first. The index is
        eventually consistent: re-read each one (`get`) before deciding, as every write is conditional."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": "due_shard = :shard AND due_at <= :now",
            "ExpressionAttributeValues": {
                ":shard": {"S": due_shard_name(shard)},
                ":now": {"S": clock.iso(now)},
            },
            "Limit": limit,
        }
        if start:
            request["ExclusiveStartKey"] = start
        answer = self.client.query(**request)
        keys = [
            DueKey(
                customer_id=item["pk"]["S"].split("#", 1)[1],
                scenario_id=item["sk"]["S"],
                due_at=datetime.fromisoformat(item["due_at"]["S"]),
                kind="date" if item["pk"]["S"].startswith("DATE#") else "enrolment",
            )
            for item in answer["Items"]
        ]
        return DuePage(keys, answer.get("LastEvaluatedKey") or None)

    def iter_due(self, now: datetime, page_size: int = 100) -> Iterator[DueKey]:
        """Every due enrolment in every shard (shard by shard, each page by page)."""
        for shard in range(self.due_shards):
            cursor: dict[str, Any] | None = None
            while True:
                page = self.query_due(shard, now, page_size, cursor)
                yield from page.keys
                cursor = page.cursor
                if cursor is None:
                    break

    # -- date trigger schedules (DATE#<customer> / <scenario id>, in the same due index) --------------

    def schedule(self, customer_id: str, scenario_id: str) -> DateSchedule | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=schedule_key(customer_id, scenario_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        return DateSchedule(
            customer_id, scenario_id, datetime.fromisoformat(item["due_at"]["S"]), int(item["revision"]["N"])
        )

    def put_schedule(
        self, customer_id: str, scenario_id: str, due_at: datetime, read: DateSchedule | None
    ) -> bool:
        """Schedules (or moves) the pending entry, on condition that it is still as `read` (None: that
        there was none); False when someone else wrote it since."""
        revision = 0 if read is None else read.revision
        item = {
            **schedule_key(customer_id, scenario_id),
            "due_shard": {"S": due_shard_name(self.shard_of(customer_id))},
            "due_at": {"S": clock.iso(due_at)},
            "revision": {"N": str(revision + 1)},
            "updated_at": {"S": clock.iso(clock.now())},
        }
        if read is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "revision = :read",
                "ExpressionAttributeValues": {":read": {"N": str(revision)}},
            }
        try:
            self.client.put_item(TableName=self.table_name, Item=item, **condition)
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def delete_schedule(self, read: DateSchedule) -> bool:
        """Removes the pending entry if it is still as read; False when someone else wrote it since."""
        try:
            self.client.delete_item(
                TableName=self.table_name,
                Key=schedule_key(read.customer_id, read.scenario_id),
                ConditionExpression="revision = :read",
                ExpressionAttributeValues={":read": {"N": str(read.revision)}},
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def _item(self, enrolment: E) -> dict[str, Any]:
        values = enrolment.model_dump(exclude={"scenario_id"})
        customer_id: str = values["customer_id"]
        if values.get("due_at") is not None:
            values["due_shard"] = due_shard_name(self.shard_of(customer_id))
        key = enrolment_key(customer_id, getattr(enrolment, "scenario_id"))  # noqa: B009
        return {**key, **to_attribute_map(values)}


def _enrolment(model: type[E], item: Mapping[str, Any]) -> E:
    values = from_attribute_map(item)
    values["scenario_id"] = values.pop("sk")
    values.pop("pk")
    values.pop("due_shard", None)
    return model.model_validate(_plain_numbers(values))


def _revision(enrolment: BaseModel) -> int:
    return int(getattr(enrolment, "revision"))  # noqa: B009


def _plain_numbers(value: Any) -> Any:
    """DynamoDB numbers come back as Decimal: whole ones become int, others float."""
    from decimal import Decimal

    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_numbers(v) for v in value]
    return value


# --------------------------------------------------------------------------------------- frequency caps


@dataclass(frozen=True)
class CapOutcome:
    allowed: bool
    # When not allowed: which limit was reached ("day" or "week").
    capped_by: Literal["day", "week"] | None = None


def cap_periods(at: datetime) -> tuple[str, str, datetime, datetime]:
    """(day period, week period, day end, week end) of `at` in Asia/Tokyo: calendar days and
    Monday-start ISO weeks."""
    local = at.astimezone(CAP_ZONE)
    day = local.date()
    iso_year, iso_week, iso_weekday = day.isocalendar()
    week_start = day - timedelta(days=iso_weekday - 1)

    def end_of(last_day: date) -> datetime:
        return datetime.combine(last_day + timedelta(days=1), time(0), CAP_ZONE).astimezone(UTC)

    return (
        f"D#{day.isoformat()}",
        f"W#{iso_year:04d}-W{iso_week:02d}",
        end_of(day),
        end_of(week_start + timedelta(days=6)),
    )


class CapStore:
    """Frequency-cap counters per customer, channel, Asia/Tokyo day and ISO week."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def try_consume(
        self, customer_id: str, channel: str, cap: ChannelCap, at: datetime | None = None
    ) -> CapOutcome:
        """Counts one send if it stays within the day and week limits, both or neither (a
        transaction of conditional ADDs). Not allowed: nothing was counted."""
        at = at or clock.now()
        day, week, day_end, week_end = cap_periods(at)
        counters = [("day", day, day_end, cap.per_day), ("week", week, week_end, cap.per_week)]
        limited = [(name, period, end, limit) for name, period, end, limit in counters if limit is not None]
        if not limited:
            return CapOutcome(True)
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": cap_key(customer_id, channel, period),
                    "UpdateExpression": "ADD #count :one SET expires_at = :expires",
                    "ConditionExpression": "attribute_not_exists(#count) OR #count < :limit",
                    "ExpressionAttributeNames": {"#count": "count"},
                    "ExpressionAttributeValues": {
                        ":one": {"N": "1"},
                        ":limit": {"N": str(limit)},
                        ":expires": {"N": str(int((end + CAP_TTL_MARGIN).timestamp()))},
                    },
                }
            }
            for _, period, end, limit in limited
        ]
        try:
            self.client.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if not transaction_cancelled(exc):
                raise
            reasons = exc.response.get("CancellationReasons") or []
            for (name, *_), reason in zip(limited, reasons, strict=False):
                if reason.get("Code") == "ConditionalCheckFailed":
                    return CapOutcome(False, name)  # type: ignore[arg-type]
            raise
        return CapOutcome(True)

    def release(self, customer_id: str, channel: str, at: datetime) -> None:
        """Takes back one counted send (a send decided at `at` that was then not made)."""
        day, week, _, _ = cap_periods(at)
        for period in (day, week):
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=cap_key(customer_id, channel, period),
                    UpdateExpression="ADD #count :minus",
                    ConditionExpression="#count > :zero",
                    ExpressionAttributeNames={"#count": "count"},
                    ExpressionAttributeValues={":minus": {"N": "-1"}, ":zero": {"N": "0"}},
                )
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise

    def counts(self, customer_id: str, channel: str, at: datetime | None = None) -> tuple[int, int]:
        """(sends counted today, this week) for the channel."""
        day, week, _, _ = cap_periods(at or clock.now())
        out = []
        for period in (day, week):
            item = self.client.get_item(
                TableName=self.table_name, Key=cap_key(customer_id, channel, period), ConsistentRead=True
            ).get("Item")
            out.append(int(item["count"]["N"]) if item and "count" in item else 0)
        return out[0], out[1]


@dataclass
class JourneyStores:
    """The scenario engine's stores, built from one DynamoDB client and JourneySettings."""

    scenarios: ScenarioStore
    enrolments: EnrolmentStore[Enrolment]
    caps: CapStore

    @classmethod
    def from_client(cls, dynamodb: DynamoDBClient, settings: JourneySettings | None = None) -> JourneyStores:
        settings = settings or JourneySettings.from_env()
        return cls(
            ScenarioStore(settings.table, dynamodb),
            EnrolmentStore(settings.table, dynamodb, settings.due_shards),
            CapStore(settings.table, dynamodb),
        )

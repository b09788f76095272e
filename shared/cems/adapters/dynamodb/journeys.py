"""JourneysTable adapters for the scenario engine: scenario versions, enrolments, date schedules, caps.

Key formats are in keys.py. JourneysTable (pk, sk; GSI `due-index` on due_shard + due_at, keys only;
docs/scenario-engine.md): scenario summaries, versions and the ACTIVE pointer; enrolments (with a
revision; due_shard/due_at while waiting: the sparse due index); date-trigger schedules; frequency-cap
counters per Asia/Tokyo day and ISO week (TTL); broadcast progress; report counters."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import (
    condition_failed,
    from_attribute_map,
    to_attribute_map,
    transaction_cancelled,
)
from cems.ports import ServiceUnavailable
from cems.scenario.caps import counters_of
from cems.scenario.config import DEFAULT_DUE_SHARDS
from cems.scenario.model import STRUCTURE_ONLY, ChannelCap, Scenario
from cems.scenario.records import (
    ActiveState,
    CapOutcome,
    DateSchedule,
    DueKey,
    DuePage,
    Enrolment,
    PublishOutcome,
    PublishResult,
    ScenarioSource,
    ScenarioSummary,
    ScenarioVersion,
    VersionRaceError,
    padded_sequencer,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import KeysAndAttributesTypeDef, TransactWriteItemTypeDef

    from cems.models import Channel
    from cems.scenario.caps import CapCounter

DUE_INDEX = "due-index"
# A counter outlives its day or week by this much before TTL removes it (TTL is lazy; the key holds
# the period, so an old counter is never read for a new one anyway).
CAP_TTL_MARGIN = timedelta(days=8)
# Conditional-write races are retried this many times before giving up loudly.
MAX_ATTEMPTS = 8
# Reads of keys a BatchGetItem left unprocessed (throttling), before giving up loudly.
UNPROCESSED_ATTEMPTS = 5


def _condition_failed(exc: ClientError) -> bool:
    """Refused: a conditional write, or a transaction (these stores' transactions fail only on their
    conditions)."""
    return condition_failed(exc) or transaction_cancelled(exc)


# -------------------------------------------------------------------------------------------- scenarios


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
            TableName=self.table_name, Key=keys.active_key(scenario_id), ConsistentRead=True
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
            TableName=self.table_name, Key=keys.version_key(scenario_id, version), ConsistentRead=True
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
            ExpressionAttributeValues={":pk": {"S": keys.SCENARIOS_PK}},
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
                        {
                            "Delete": {
                                "TableName": self.table_name,
                                "Key": keys.scenario_summary_key(scenario_id),
                            }
                        },
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
            ExpressionAttributeValues={
                ":pk": {"S": keys.scenario_pk(scenario_id)},
                ":v": {"S": keys.VERSION_PREFIX},
            },
            ProjectionExpression="sk",
        ):
            numbers.extend(keys.version_from_sk(item["sk"]["S"]) for item in page["Items"])
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
                "Item": {**keys.active_key(scenario_id), **to_attribute_map(pointer)},
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
        return {**keys.version_key(scenario.id, number), **to_attribute_map(values)}

    def _summary_put(self, summary: ScenarioSummary, at: datetime) -> TransactWriteItemTypeDef:
        values = {
            "version": summary.version,
            "name": summary.name,
            "priority": summary.priority,
            "trigger_type": summary.trigger_type,
            "event": summary.event,
            "updated_at": at,
        }
        item = {**keys.scenario_summary_key(summary.scenario_id), **to_attribute_map(values)}
        return {"Put": {"TableName": self.table_name, "Item": item}}


# ------------------------------------------------------------------------------------------- enrolments


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
            TableName=self.table_name, Key=keys.enrolment_key(customer_id, scenario_id), ConsistentRead=True
        ).get("Item")
        return None if item is None else _enrolment(self.model, item)

    def of_customer(self, customer_id: str) -> list[E]:
        """Every enrolment of a customer, in any scenario and state (one consistent Query)."""
        enrolments: list[E] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.enrolment_pk(customer_id)}},
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
                ":shard": {"S": keys.due_shard_name(self.shard_of(customer_id))},
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
                Key=keys.enrolment_key(customer_id, scenario_id),
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
                ":shard": {"S": keys.due_shard_name(shard)},
                ":now": {"S": clock.iso(now)},
            },
            "Limit": limit,
        }
        if start:
            request["ExclusiveStartKey"] = start
        answer = self.client.query(**request)
        due = [
            DueKey(
                customer_id=keys.customer_of_journey_pk(item["pk"]["S"]),
                scenario_id=item["sk"]["S"],
                due_at=datetime.fromisoformat(item["due_at"]["S"]),
                kind="date" if keys.is_schedule_pk(item["pk"]["S"]) else "enrolment",
            )
            for item in answer["Items"]
        ]
        return DuePage(due, answer.get("LastEvaluatedKey") or None)

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
            TableName=self.table_name, Key=keys.schedule_key(customer_id, scenario_id), ConsistentRead=True
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
            **keys.schedule_key(customer_id, scenario_id),
            "due_shard": {"S": keys.due_shard_name(self.shard_of(customer_id))},
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
                Key=keys.schedule_key(read.customer_id, read.scenario_id),
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
            values["due_shard"] = keys.due_shard_name(self.shard_of(customer_id))
        key = keys.enrolment_key(customer_id, getattr(enrolment, "scenario_id"))  # noqa: B009
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


class CapStore:
    """Frequency-cap counters per customer, channel, Asia/Tokyo day and ISO week."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def try_consume(
        self, customer_id: str, channel: Channel, cap: ChannelCap, at: datetime | None = None
    ) -> CapOutcome:
        """Counts one send if it stays within the day and week limits, both or neither (a
        transaction of conditional ADDs). Not allowed: nothing was counted."""
        at = at or clock.now()
        day, week = counters_of(channel, at)
        limited = [
            (counter, limit)
            for counter, limit in ((day, cap.per_day), (week, cap.per_week))
            if limit is not None
        ]
        if not limited:
            return CapOutcome(True)
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Update": {
                    "TableName": self.table_name,
                    "Key": keys.cap_key(customer_id, counter),
                    "UpdateExpression": "ADD #count :one SET expires_at = :expires",
                    "ConditionExpression": "attribute_not_exists(#count) OR #count < :limit",
                    "ExpressionAttributeNames": {"#count": "count"},
                    "ExpressionAttributeValues": {
                        ":one": {"N": "1"},
                        ":limit": {"N": str(limit)},
                        ":expires": {
                            "N": str(int((counter.period.next_start(at) + CAP_TTL_MARGIN).timestamp()))
                        },
                    },
                }
            }
            for counter, limit in limited
        ]
        try:
            self.client.transact_write_items(TransactItems=actions)
        except ClientError as exc:
            if not transaction_cancelled(exc):
                raise
            reasons = exc.response.get("CancellationReasons") or []
            for (counter, _), reason in zip(limited, reasons, strict=False):
                if reason.get("Code") == "ConditionalCheckFailed":
                    return CapOutcome(False, counter.period)
            raise
        return CapOutcome(True)

    def release(self, customer_id: str, channel: Channel, at: datetime) -> None:
        """Takes back one counted send (a send decided at `at` that was then not made)."""
        for counter in counters_of(channel, at):
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=keys.cap_key(customer_id, counter),
                    UpdateExpression="ADD #count :minus",
                    ConditionExpression="#count > :zero",
                    ExpressionAttributeNames={"#count": "count"},
                    ExpressionAttributeValues={":minus": {"N": "-1"}, ":zero": {"N": "0"}},
                )
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise

    def counts(self, customer_id: str, channel: Channel, at: datetime | None = None) -> tuple[int, int]:
        """(sends counted today, this week) for the channel."""
        day, week = counters_of(channel, at or clock.now())
        counted = self.counts_of(customer_id, [channel], at)
        return counted[day], counted[week]

    def counts_of(
        self, customer_id: str, channels: Sequence[Channel], at: datetime | None = None
    ) -> dict[CapCounter, int]:
        """Every counter of `channels` at `at` (0 where nothing was counted), in one consistent
        BatchGetItem rather than a GetItem per counter: a decision reads all of a customer's caps, and
        each request is a round trip (issue 11: 4 GetItems per due enrolment before)."""
        counters = [c for channel in channels for c in counters_of(channel, at or clock.now())]
        by_key = {keys.cap_sk(counter): counter for counter in counters}
        counted = dict.fromkeys(counters, 0)
        if not counters:
            return counted  # BatchGetItem refuses an empty key list
        request: dict[str, KeysAndAttributesTypeDef] = {
            self.table_name: {
                "Keys": [keys.cap_key(customer_id, counter) for counter in counters],
                "ConsistentRead": True,
            }
        }
        # BatchGetItem may leave keys unprocessed under throttling (no exception, so botocore does not
        # retry them): they are asked again after a short backoff, a bounded number of times.
        for attempt in range(UNPROCESSED_ATTEMPTS + 1):
            if not request:
                return counted
            if attempt == UNPROCESSED_ATTEMPTS:
                break
            if attempt:
                time.sleep(0.05 * 2**attempt)
            answer = self.client.batch_get_item(RequestItems=request)
            for item in answer.get("Responses", {}).get(self.table_name, []):
                counter = by_key.get(item["sk"]["S"])
                if counter is not None and "count" in item:
                    counted[counter] = int(item["count"]["N"])
            request = {
                table: {"Keys": unprocessed["Keys"], "ConsistentRead": True}
                for table, unprocessed in (answer.get("UnprocessedKeys") or {}).items()
            }
        raise ServiceUnavailable(f"cap counters still unprocessed after {UNPROCESSED_ATTEMPTS} reads")


@dataclass
class JourneyStores:
    """The scenario engine's stores (built by cems.wiring)."""

    scenarios: ScenarioStore
    enrolments: EnrolmentStore[Enrolment]
    caps: CapStore

"""JourneysTable adapters for the scenario engine: scenario versions, enrolments, date schedules, caps.

Key formats are in keys.py. JourneysTable (pk, sk; GSI `due-index` on due_shard + due_at, keys only;
docs/scenario-engine.md): scenario summaries, versions and the ACTIVE pointer; enrolments (with a
revision; due_shard/due_at while waiting: the sparse due index); date-trigger schedules; frequency-cap
counters per Asia/Tokyo day and ISO week (TTL); broadcast progress; report counters."""

from __future__ import annotations

import hashlib
import json
import random
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
from cems.scenario.caps import TOTAL, counters_of
from cems.scenario.config import DEFAULT_DUE_SHARDS
from cems.scenario.model import STRUCTURE_ONLY, ChannelCap, Scenario
from cems.scenario.records import (
    ActiveState,
    CapCounts,
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
    from cems.scenario.caps import CapCounter, CapScope

DUE_INDEX = "due-index"
# A counter outlives its day or week by this much before TTL removes it (TTL is lazy; the key holds
# the period, so an old counter is never read for a new one anyway).
CAP_TTL_MARGIN = timedelta(days=8)
# A cap counter item's attribute: the keys of the sends that took it (a string set).
KEYS = "keys"
# Conditional-write races are retried this many times before giving up loudly.
MAX_ATTEMPTS = 8
# Reads of keys a BatchGetItem left unprocessed (throttling), before giving up loudly.
UNPROCESSED_ATTEMPTS = 5


def _condition_failed(exc: ClientError) -> bool:
    """Refused: a conditional write, or a transaction (these stores' transactions fail only on their
    conditions)."""
    return condition_failed(exc) or transaction_cancelled(exc)


# BatchGetItem reads at most this many keys a request; TransactWriteItems writes at most this many items.
MAX_BATCH_GET_KEYS = 100
MAX_TRANSACTION_ITEMS = 100


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def batch_get_consistent(
    client: DynamoDBClient, table_name: str, item_keys: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every item of `item_keys` that exists, read consistently, 100 keys a BatchGetItem. Keys the
    table left unprocessed (throttling: no exception, so botocore does not retry them) are asked
    again after a short backoff, a bounded number of times; then ServiceUnavailable (nothing is
    decided on a partial read)."""
    found: list[dict[str, Any]] = []
    for chunk in _chunks(
        list(dict.fromkeys(json.dumps(k, sort_keys=True) for k in item_keys)), MAX_BATCH_GET_KEYS
    ):
        request: dict[str, KeysAndAttributesTypeDef] = {
            table_name: {"Keys": [json.loads(k) for k in chunk], "ConsistentRead": True}
        }
        for attempt in range(UNPROCESSED_ATTEMPTS + 1):
            if not request:
                break
            if attempt == UNPROCESSED_ATTEMPTS:
                raise ServiceUnavailable(f"items still unprocessed after {UNPROCESSED_ATTEMPTS} reads")
            if attempt:
                time.sleep(0.05 * 2**attempt)
            answer = client.batch_get_item(RequestItems=request)
            found.extend(answer.get("Responses", {}).get(table_name, []))
            request = {
                table: {"Keys": unprocessed["Keys"], "ConsistentRead": True}
                for table, unprocessed in (answer.get("UnprocessedKeys") or {}).items()
            }
    return found


def _cancellation_codes(exc: ClientError) -> list[str]:
    """Each action's reason for a cancelled transaction, in the order the actions were given
    (`None` when that action was not the cause), as codes."""
    reasons = exc.response.get("CancellationReasons") or []
    return [str(reason.get("Code") or "None") for reason in reasons]


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
                if values.get("state") == "stopped":
                    continue  # a stopped scenario's marker (see stop)
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
        """Stops new enrolments (the file was deleted): ACTIVE becomes `stopped` and the summary a
        stopped marker (no longer among active_summaries; still among scenarios_in_play).
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
                        # The summary becomes a stopped marker: its journeys still run and react to
                        # events, which the trigger must still hand them (scenarios_in_play).
                        self._stopped_put(scenario_id, current.version, at),
                    ]
                )
            except ClientError as exc:
                if _condition_failed(exc):
                    continue
                raise
            return True
        raise VersionRaceError(f"could not stop {scenario_id} after {MAX_ATTEMPTS} attempts")

    def scenarios_in_play(self) -> list[tuple[str, int]]:
        """Every scenario that may have journeys, with its active (or, stopped, last active) version:
        the active summaries and the stopped markers, in one paginated Query of SCENARIOS. A scenario
        stopped before the markers existed (issue 11) is listed once `mark_stopped_before_markers`
        has run (tick runs it once per execution environment)."""
        found: list[tuple[str, int]] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.SCENARIOS_PK}},
            ProjectionExpression="sk, version",
        ):
            found.extend((item["sk"]["S"], int(item["version"]["N"])) for item in page["Items"])
        return found

    def mark_stopped_before_markers(self, at: datetime | None = None) -> int:
        """Writes the stopped marker of every scenario stopped before markers existed (issue 11), so
        that its running journeys are in play again (the trigger's relevance rule, priority on the
        batched paths). Such a scenario has report counters (it enrolled someone: RPTINDEX lists it),
        no entry in SCENARIOS, and an ACTIVE pointer that says `stopped`. Idempotent and cheap once
        done (two Queries); each marker is put only where no summary or marker is (a scenario
        uploaded meanwhile keeps its summary). Answers how many markers it wrote."""
        at = at or clock.now()
        counted = self._sort_keys(keys.REPORT_INDEX_PK)
        listed = set(self._sort_keys(keys.SCENARIOS_PK))
        written = 0
        for scenario_id in counted:
            if scenario_id in listed:
                continue
            pointer = self.active(scenario_id)
            if pointer is None or pointer.is_active:
                continue
            put = self._stopped_put(scenario_id, pointer.version, at)["Put"]
            try:
                self.client.put_item(
                    TableName=put["TableName"],
                    Item=put["Item"],
                    ConditionExpression="attribute_not_exists(pk)",
                )
            except ClientError as exc:
                if not condition_failed(exc):
                    raise
                continue
            written += 1
        return written

    def _sort_keys(self, pk: str) -> list[str]:
        found: list[str] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ProjectionExpression="sk",
        ):
            found.extend(item["sk"]["S"] for item in page["Items"])
        return found

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

    def _stopped_put(self, scenario_id: str, version: int, at: datetime) -> TransactWriteItemTypeDef:
        values = {"state": "stopped", "version": version, "updated_at": at}
        item = {**keys.scenario_summary_key(scenario_id), **to_attribute_map(values)}
        return {"Put": {"TableName": self.table_name, "Item": item}}

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

    def get_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], E]:
        """The enrolments of these (customer, scenario) pairs that exist, read consistently in
        BatchGetItems of 100 keys (what `get` reads for one, for a tick's or a broadcast page's
        decisions at once)."""
        items = batch_get_consistent(
            self.client, self.table_name, [keys.enrolment_key(c, s) for c, s in pairs]
        )
        found = (_enrolment(self.model, item) for item in items)
        return {_pair_of(e): e for e in found}

    def write_many(
        self, writes: Sequence[tuple[E, int | None]], at: datetime | None = None
    ) -> list[E | None]:
        """Writes each enrolment as `create` (read None: on condition that there is none) or `save`
        (on condition that its revision is still the one read) would, in TransactWriteItems of up to
        100: one request for a broadcast page's new journeys instead of one each. One answer per
        write, in order: the stored enrolment, or None where its condition failed (someone else
        wrote it since: re-read and decide again).

        Why a transaction: BatchWriteItem takes no conditions, and every enrolment write must be
        conditional (that is what keeps a journey's sends once under races). A cancelled transaction
        wrote nothing; its reasons say, per item, whether that item's condition failed: those answer
        None and the rest are written again without them. A cancellation for another cause (a
        conflict with a concurrent transaction on one of the items) is retried as a whole, and after
        MAX_ATTEMPTS the rest go one by one."""
        at = at or clock.now()
        answers: list[E | None] = [None] * len(writes)
        targets = {_pair_of(e) for e, _ in writes}
        if len(targets) != len(writes):
            raise ValueError("a transaction cannot write one enrolment twice")
        for chunk in _chunks(list(range(len(writes))), MAX_TRANSACTION_ITEMS):
            pending = list(chunk)
            for _ in range(MAX_ATTEMPTS):
                if not pending:
                    break
                stored = {i: self._stored(writes[i], at) for i in pending}
                actions = [self._conditional_put(stored[i], writes[i][1]) for i in pending]
                try:
                    self.client.transact_write_items(TransactItems=actions)
                except ClientError as exc:
                    if not transaction_cancelled(exc):
                        raise
                    codes = _cancellation_codes(exc)
                    refused = {
                        i for i, code in zip(pending, codes, strict=False) if code == "ConditionalCheckFailed"
                    }
                    pending = [i for i in pending if i not in refused]
                    continue
                for i in pending:
                    answers[i] = stored[i]
                pending = []
            for i in pending:  # still colliding with other transactions: one by one
                enrolment, read = writes[i]
                answers[i] = (
                    self.create(enrolment, at)
                    if read is None
                    else self.save(enrolment.model_copy(update={"revision": read}), at)
                )
        return answers

    def _stored(self, write: tuple[E, int | None], at: datetime) -> E:
        enrolment, read = write
        revision = 1 if read is None else read + 1
        return enrolment.model_copy(update={"revision": revision, "updated_at": at})

    def _conditional_put(self, stored: E, read: int | None) -> TransactWriteItemTypeDef:
        if read is None:
            condition: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        else:
            condition = {
                "ConditionExpression": "revision = :read",
                "ExpressionAttributeValues": {":read": {"N": str(read)}},
            }
        return {"Put": {"TableName": self.table_name, "Item": self._item(stored), **condition}}  # type: ignore[typeddict-item]

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
        self,
        shard: int,
        now: datetime,
        limit: int = 100,
        start: dict[str, Any] | None = None,
        after: datetime | None = None,
    ) -> DuePage:
        """One page of the enrolments in `shard` due at or before `now` (and, with `after`, later than
        `after`: the tick's look-ahead for timers), earliest first. The index is eventually
        consistent: re-read each one (`get`) before deciding, as every write is conditional."""
        condition = "due_shard = :shard AND due_at <= :now"
        values = {":shard": {"S": keys.due_shard_name(shard)}, ":now": {"S": clock.iso(now)}}
        if after is not None:
            # BETWEEN is inclusive and the index keeps milliseconds: the first millisecond after `after`.
            condition = "due_shard = :shard AND due_at BETWEEN :after AND :now"
            values[":after"] = {"S": clock.iso(after + timedelta(milliseconds=1))}
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": DUE_INDEX,
            "KeyConditionExpression": condition,
            "ExpressionAttributeValues": values,
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

    def iter_due(
        self, now: datetime, page_size: int = 100, after: datetime | None = None
    ) -> Iterator[DueKey]:
        """Every due enrolment in every shard (shard by shard, each page by page); with `after`, only
        those due later than `after`."""
        for shard in range(self.due_shards):
            cursor: dict[str, Any] | None = None
            while True:
                page = self.query_due(shard, now, page_size, cursor, after)
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

    def schedules_many(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], DateSchedule]:
        """The pending date entries of these (customer, scenario) pairs that exist, read
        consistently in BatchGetItems of 100 keys (a tick's due date entries at once)."""
        items = batch_get_consistent(
            self.client, self.table_name, [keys.schedule_key(c, s) for c, s in pairs]
        )
        found: dict[tuple[str, str], DateSchedule] = {}
        for item in items:
            customer_id, scenario_id = keys.customer_of_journey_pk(item["pk"]["S"]), item["sk"]["S"]
            found[(customer_id, scenario_id)] = DateSchedule(
                customer_id,
                scenario_id,
                datetime.fromisoformat(item["due_at"]["S"]),
                int(item["revision"]["N"]),
            )
        return found

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


def _pair_of(enrolment: BaseModel) -> tuple[str, str]:
    return getattr(enrolment, "customer_id"), getattr(enrolment, "scenario_id")  # noqa: B009


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
    """Frequency-cap counters per customer, channel, Asia/Tokyo day and ISO week.

    Each counter item holds `count` (the sends counted) and `keys`, a string set of the keys of the
    sends that took it (a keyed take: `try_consume(..., key=)`). Only a take that counted adds its
    key, so the set holds at most the limit's number of keys; an item stored before takes were keyed
    has no set and counts on as before. Why keyed: a worker that took the caps of a send, enqueued
    it and died before writing the journey is redone with the same dispatch keys, and its own
    earlier take must not count the send a second time (nor refuse it: the message went out)."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def try_consume(
        self,
        customer_id: str,
        channel: Channel,
        cap: ChannelCap,
        at: datetime | None = None,
        key: str | None = None,
        total: ChannelCap | None = None,
    ) -> CapOutcome:
        """Counts one send if it stays within the day and week limits, both or neither (a
        transaction of conditional ADDs). Not allowed: nothing was counted. `key`: the send's key;
        a counter that key took already answers allowed, `already`, and nothing more is counted.
        `total`: the limits across channels; the send counts in the total's counters in the same
        transaction (all or nothing).

        A transaction cancelled with no condition failed collided with another on one of the
        counters (two sends of one customer on two channels share the total's): it is tried again."""
        at = at or clock.now()
        limited = self._take_actions(customer_id, channel, cap, at, key, total)
        if not limited:
            return CapOutcome(True)
        for attempt in range(MAX_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=[action for _, action in limited])
            except ClientError as exc:
                if not transaction_cancelled(exc):
                    raise
                reasons = exc.response.get("CancellationReasons") or []
                counters = [counter for counter, _ in limited]
                outcome = self._refusal(customer_id, counters, list(reasons), key, at)
                if outcome is not None:
                    return outcome
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2**attempt))  # noqa: S311  # jitter, not secrecy
                continue
            return CapOutcome(True)
        raise AssertionError("unreachable")  # pragma: no cover

    def release(
        self, customer_id: str, channel: Channel, at: datetime, key: str | None = None, total: bool = False
    ) -> None:
        """Takes back one counted send (a send decided at `at` that was then not made). With `key`,
        only from the counters that key took, and the key with it (atomically: the condition and
        the update are one request, so a release never takes back another send's count). `total`:
        the take counted in the total's counters too, which give it back the same way."""
        scopes: list[CapScope] = [channel, TOTAL] if total else [channel]
        for counter in (c for scope in scopes for c in counters_of(scope, at)):
            names = {"#count": "count"}
            values: dict[str, Any] = {":minus": {"N": "-1"}, ":zero": {"N": "0"}}
            update, condition = "ADD #count :minus", "#count > :zero"
            if key is not None:
                names["#keys"] = KEYS
                values |= {":key": {"SS": [key]}, ":k": {"S": key}}
                update, condition = (
                    "ADD #count :minus DELETE #keys :key",
                    "contains(#keys, :k) AND #count > :zero",
                )
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=keys.cap_key(customer_id, counter),
                    UpdateExpression=update,
                    ConditionExpression=condition,
                    ExpressionAttributeNames=names,
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if not _condition_failed(exc):
                    raise

    def counts(self, customer_id: str, channel: CapScope, at: datetime | None = None) -> tuple[int, int]:
        """(sends counted today, this week) for the channel (TOTAL: on every channel together)."""
        day, week = counters_of(channel, at or clock.now())
        counted = self.counts_of(customer_id, [channel], at)
        return counted[day], counted[week]

    def counts_of(
        self, customer_id: str, channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[CapCounter, int]:
        """Every counter of `channels` at `at` (0 where nothing was counted), in one consistent
        BatchGetItem rather than a GetItem per counter: a decision reads all of a customer's caps, and
        each request is a round trip (issue 11: 4 GetItems per due enrolment before). TOTAL among
        `channels` reads the total's counters in the same request (they share the partition)."""
        return self.counts_of_many([customer_id], channels, at)[customer_id]

    def counts_of_many(
        self, customer_ids: Sequence[str], channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[str, dict[CapCounter, int]]:
        """`counts_of` for many customers at once: every counter of every customer in consistent
        BatchGetItems of 100 keys (a tick's or a broadcast page's decisions read their caps together)."""
        return {c: read.counts for c, read in self.read_caps_many(customer_ids, channels, at).items()}

    def read_caps_many(
        self, customer_ids: Sequence[str], channels: Sequence[CapScope], at: datetime | None = None
    ) -> dict[str, CapCounts]:
        """`counts_of_many` with the keys of the sends that took each counter (same requests)."""
        counters = [c for channel in channels for c in counters_of(channel, at or clock.now())]
        counted = {customer_id: dict.fromkeys(counters, 0) for customer_id in customer_ids}
        holders: dict[str, dict[CapCounter, frozenset[str]]] = {customer_id: {} for customer_id in counted}
        by_sk = {keys.cap_sk(counter): counter for counter in counters}
        by_pk = {keys.cap_pk(customer_id): customer_id for customer_id in counted}
        item_keys = [keys.cap_key(customer_id, counter) for customer_id in counted for counter in counters]
        for item in batch_get_consistent(self.client, self.table_name, item_keys):
            customer = by_pk.get(item["pk"]["S"])
            counter = by_sk.get(item["sk"]["S"])
            if customer is None or counter is None:
                continue
            if "count" in item:
                counted[customer][counter] = int(item["count"]["N"])
            held = _held(item)
            if held:
                holders[customer][counter] = held
        return {customer_id: CapCounts(counted[customer_id], holders[customer_id]) for customer_id in counted}

    def try_consume_many(
        self,
        takes: Sequence[tuple[str, Channel, ChannelCap]],
        at: datetime | None = None,
        send_keys: Sequence[str | None] | None = None,
        totals: Sequence[ChannelCap | None] | None = None,
    ) -> list[CapOutcome]:
        """`try_consume` for many customers' sends, one (customer, channel) each, in TransactWriteItems
        of up to 100 counter updates: one answer per take, in order; a refused one counted nothing.
        `send_keys`: each take's send key, as `try_consume`'s (a take its key made already: `already`).
        `totals`: each take's limits across channels, as `try_consume`'s `total`.

        Why a transaction: each take is a pair of conditional ADDs (day and week, both or neither; two
        more for the total's), and only a transaction writes conditionally to several items at once.
        DynamoDB refuses a transaction that touches one item twice, so two takes that share a counter
        (one customer's sends on two channels: the total's) go in different transactions, each whole
        take in the first that holds none of its counters. A cancelled transaction
        counted nothing; its reasons say which updates' conditions failed, with the item as it was
        (ALL_OLD): a take whose key the item holds was made already (allowed, counted once); the
        other takes they belong to are refused (another send took that customer's last one first:
        decide again with fresh counts); the rest are sent again without them. A cancellation for
        another cause (a concurrent transaction on one of the counters) is retried, then the rest go
        one by one."""
        at = at or clock.now()
        named = list(send_keys) if send_keys is not None else [None] * len(takes)
        if len(named) != len(takes):
            raise ValueError("one key per take")
        across = list(totals) if totals is not None else [None] * len(takes)
        if len(across) != len(takes):
            raise ValueError("one total per take")
        answers: list[CapOutcome | None] = [None] * len(takes)
        if len({(c, ch) for c, ch, _ in takes}) != len(takes):
            raise ValueError("one take per customer and channel in a transaction")
        actions: dict[int, list[tuple[CapCounter, TransactWriteItemTypeDef]]] = {}
        for i, (customer_id, channel, cap) in enumerate(takes):
            actions[i] = self._take_actions(customer_id, channel, cap, at, named[i], across[i])
            if not actions[i]:
                answers[i] = CapOutcome(True)
        chunks = _transactions(
            [
                (i, [(takes[i][0], counter) for counter, _ in actions[i]])
                for i in range(len(takes))
                if answers[i] is None
            ]
        )
        for pending in chunks:
            for _ in range(MAX_ATTEMPTS):
                if not pending:
                    break
                flat = [(i, counter, action) for i in pending for counter, action in actions[i]]
                try:
                    self.client.transact_write_items(TransactItems=[action for _, _, action in flat])
                except ClientError as exc:
                    if not transaction_cancelled(exc):
                        raise
                    reasons = list(exc.response.get("CancellationReasons") or [])
                    reasons += [{}] * (len(flat) - len(reasons))
                    for i in pending:
                        mine = [(counter, reasons[n]) for n, (j, counter, _) in enumerate(flat) if j == i]
                        if any(reason.get("Code") == "ConditionalCheckFailed" for _, reason in mine):
                            customer_id = takes[i][0]
                            counters = [counter for counter, _ in mine]
                            answers[i] = self._refusal(
                                customer_id, counters, [r for _, r in mine], named[i], at
                            )
                    pending = [i for i in pending if answers[i] is None]
                    continue
                for i in pending:
                    answers[i] = CapOutcome(True)
                pending = []
            for i in pending:  # still colliding with other transactions: one by one
                customer_id, channel, cap = takes[i]
                answers[i] = self.try_consume(customer_id, channel, cap, at, named[i], across[i])
        return [answer if answer is not None else CapOutcome(True) for answer in answers]

    def _refusal(
        self,
        customer_id: str,
        counters: Sequence[CapCounter],
        reasons: Sequence[Any],
        key: str | None,
        at: datetime,
    ) -> CapOutcome | None:
        """What a cancelled take means, from its updates' cancellation reasons (in the order of
        `counters`): made already (a counter holds `key`: allowed, `already`), refused (the first
        full counter), or None (no condition failed: a collision, not an answer)."""
        failed = [
            (counter, reason)
            for counter, reason in zip(counters, reasons, strict=False)
            if reason.get("Code") == "ConditionalCheckFailed"
        ]
        if not failed:
            return None
        if key is not None:
            if any(key in _held(reason.get("Item") or {}) for _, reason in failed):
                return CapOutcome(True, already=True)
            if len(failed) < len(counters):
                # A counter whose condition was not reported on may hold the key: read it (once per
                # refusal, consistently) rather than refuse a send its own earlier take allowed.
                scopes = list(dict.fromkeys(counter.channel for counter in counters))
                read = self.read_caps_many([customer_id], scopes, at)
                if any(key in read[customer_id].holders.get(counter, ()) for counter in counters):
                    return CapOutcome(True, already=True)
        full = failed[0][0]
        return CapOutcome(False, full.period, capped_scope=full.channel)

    def _take_actions(
        self,
        customer_id: str,
        channel: Channel,
        cap: ChannelCap,
        at: datetime,
        key: str | None = None,
        total: ChannelCap | None = None,
    ) -> list[tuple[CapCounter, TransactWriteItemTypeDef]]:
        """The conditional ADDs that count one send (none when the channel has no limit and no total
        is given). With `key`: the key joins the counter's set in the same update, and the condition
        refuses a counter that holds it already (one atomic check: room left AND not taken by this
        send). `total`: the total's counters too, under the same rules (a total set and channel
        caps left unlimited still counts the send in the total)."""
        day, week = counters_of(channel, at)
        limits = [(day, cap.per_day), (week, cap.per_week)]
        if total is not None:
            total_day, total_week = counters_of(TOTAL, at)
            limits += [(total_day, total.per_day), (total_week, total.per_week)]
        taken: list[tuple[CapCounter, TransactWriteItemTypeDef]] = []
        for counter, limit in limits:
            if limit is None:
                continue
            names = {"#count": "count"}
            values: dict[str, Any] = {
                ":one": {"N": "1"},
                ":limit": {"N": str(limit)},
                ":expires": {"N": str(int((counter.period.next_start(at) + CAP_TTL_MARGIN).timestamp()))},
            }
            update = "ADD #count :one SET expires_at = :expires"
            condition = "(attribute_not_exists(#count) OR #count < :limit)"
            if key is not None:
                names["#keys"] = KEYS
                values |= {":key": {"SS": [key]}, ":k": {"S": key}}
                update = "ADD #count :one, #keys :key SET expires_at = :expires"
                condition += " AND NOT contains(#keys, :k)"
            taken.append(
                (
                    counter,
                    {
                        "Update": {
                            "TableName": self.table_name,
                            "Key": keys.cap_key(customer_id, counter),
                            "UpdateExpression": update,
                            "ConditionExpression": condition,
                            "ExpressionAttributeNames": names,
                            "ExpressionAttributeValues": values,
                            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                        }
                    },
                )
            )
        return taken


def _transactions(takes: Sequence[tuple[int, list[tuple[str, CapCounter]]]]) -> list[list[int]]:
    """The takes (index, the items they update) grouped into transactions: whole takes, at most
    MAX_TRANSACTION_ITEMS updates each, and no item twice in one (DynamoDB refuses that: one
    customer's takes on two channels both update the total's counters). Each take goes in the first
    transaction with room that touches none of its items, so a page's takes stay in as few as before."""
    groups: list[tuple[list[int], set[tuple[str, CapCounter]]]] = []
    for i, items in takes:
        for members, touched in groups:
            if len(touched) + len(items) <= MAX_TRANSACTION_ITEMS and touched.isdisjoint(items):
                members.append(i)
                touched.update(items)
                break
        else:
            groups.append(([i], set(items)))
    return [members for members, _ in groups]


def _held(item: Mapping[str, Any]) -> frozenset[str]:
    """The send keys a stored cap counter item holds (none for one stored before takes were keyed)."""
    return frozenset(item.get(KEYS, {}).get("SS", ()))


@dataclass
class JourneyStores:
    """The scenario engine's stores (built by cems.wiring)."""

    scenarios: ScenarioStore
    enrolments: EnrolmentStore[Enrolment]
    caps: CapStore

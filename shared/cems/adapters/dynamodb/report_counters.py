"""Report counters in JourneysTable: what reports read, ADDed as things happen (never a Scan of the
Events table). Key formats: keys.py.

JourneysTable (pk, sk):
  RPT#<scenario id>#<shard> / V#<000001>#S#<step or ->#VAR#<-|=name>#G#<t|h>#C#<channel or ->#D#<day>
                      one shard of a report cell (shard 0..REPORT_SHARDS-1): a number per metric
                      (ADD), `revenue` (ADD), and the cell's fields as attributes; a cell's counts
                      are the sum of its shards. The day is the Tokyo day the count was written
                      (issue 12); cells counted before have no `#C#...#D#...` and no day
  RPT#<scenario id> / (the same sk)   a cell as counted before issue 11 (one item per cell): no
                      longer written, still read and added to the shards' counts
  RPTONCE#<sha256>  / ONCE            a fact counted already (`once`, or one part of a count split
                                      over several transactions); TTL expires_at
  RPTINDEX          / <scenario id>   a scenario that has counters (GET /admin/scenarios lists
                                      stopped scenarios from it too)

A cell's key is read back from its attributes, not parsed: variant names are free text (they may
hold `#`). A named variant is written `=name` so that no name can collide with "no variant" (`-`).

Why shards under their own partition keys: DynamoDB serves one partition with about 1,000 write
units a second and one item with no more than that, whatever the table's capacity, and a transaction
costs two units per item. With every count of a scenario on one item (as before issue 11) a
million counts took at least 33 minutes, and racing writers cancelled each other's transactions.
Cells spread over REPORT_SHARDS partition keys hash to different partitions (a shard suffix on the
sort key would leave them in one partition and one item collection), so the limit is
REPORT_SHARDS times higher and two writers rarely touch the same item; a reader pays one Query per
shard, which a report (read by people, not per event) can afford.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import (
    condition_failed,
    error_code,
    from_attribute_map,
    transaction_cancelled,
)
from cems.ports import CountDelta, ServiceUnavailable
from cems.reports.counters import REVENUE, Metric, ReportCell, dated

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

# A fact counted once (an open, a click per dispatch) is remembered for longer than anything can
# repeat it: tracking links live as long as the mail is kept, which is not forever; a year and
# a month covers repeats from a mailbox opened again a year later.
ONCE_TTL = timedelta(days=400)
# DynamoDB's limit of actions in one TransactWriteItems; one of them is the marker.
MAX_TRANSACTION_ITEMS = 100
CELLS_PER_TRANSACTION = MAX_TRANSACTION_ITEMS - 1
# A write that collided with another (TransactionConflict) or was throttled is tried again, on
# another shard, after a jittered backoff (full jitter: a random wait up to BACKOFF_BASE * 2^attempt,
# at most BACKOFF_CAP). The `once` marker makes a retry safe. If every attempt collides the waits add
# up to about 3 s on average (6 s at most): a collision on each of twelve attempts spread over 16
# shards is an outage, not a race.
MAX_ATTEMPTS = 12
BACKOFF_BASE = 0.02
BACKOFF_CAP = 1.0
# Cancellation reasons that say "try again": nothing of the transaction was wrong, it lost a race
# or met throttling ("None" is the reason of an action that was fine in a cancelled transaction).
_TRANSIENT_REASONS = frozenset(
    {"None", "TransactionConflict", "ProvisionedThroughputExceeded", "ThrottlingError"}
)
# The same for a single UpdateItem (a count without a marker).
_TRANSIENT_ERRORS = frozenset(
    {"TransactionConflictException", "ProvisionedThroughputExceededException", "ThrottlingException"}
)

Counts = dict[str, int | Decimal]


def _variant_key(cell: ReportCell) -> str:
    return "-" if cell.variant is None else f"={cell.variant}"


def cell_sk(cell: ReportCell) -> str:
    return keys.report_cell_sk(
        cell.version,
        cell.step_id or "-",
        _variant_key(cell),
        "h" if cell.holdout else "t",
        cell.channel,
        cell.day,
    )


def cell_key(cell: ReportCell, shard: int) -> dict[str, Any]:
    """The item of one shard of a cell."""
    return {"pk": {"S": keys.report_shard_pk(cell.scenario_id, shard)}, "sk": {"S": cell_sk(cell)}}


def once_key(scenario_id: str, once: str, part: int | None = None) -> dict[str, Any]:
    return keys.report_once_key(scenario_id, once, part)


class _CellTotal:
    """What one transaction adds to one cell: every metric of the cell in one UpdateExpression."""

    def __init__(self, cell: ReportCell) -> None:
        self.cell = cell
        self.metrics: dict[str, int] = {}
        self.revenue: Decimal | None = None

    def add(self, metric: Metric, n: int, revenue: Decimal | None) -> None:
        self.metrics[metric.value] = self.metrics.get(metric.value, 0) + n
        if revenue is not None:
            self.revenue = (self.revenue or Decimal(0)) + revenue


class ReportCounters:
    """Adds to report cells (spread over shards); reads a scenario's cells back for a report."""

    def __init__(
        self,
        table_name: str,
        client: DynamoDBClient,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.table_name = table_name
        self.client = client
        self._sleep = sleep
        self._random = random.Random()  # noqa: S311 - spreads writes and jitters waits; no secret
        # Scenarios this process has put in RPTINDEX already: one PutItem per scenario per
        # execution environment, not one per count.
        self._indexed: set[str] = set()
        self._lock = threading.Lock()

    # ---------------------------------------------------------------------------------- writing

    def add(
        self,
        cell: ReportCell,
        metric: Metric,
        *,
        once: str | None = None,
        revenue: Decimal | None = None,
        at: datetime | None = None,
    ) -> bool:
        """ADD 1 to `metric` in `cell` (and `revenue` when given). With `once` (e.g.
        f"opened#{dispatch_key}") a marker is written in the same transaction on condition that it
        is new: a fact counted already counts nothing and answers False. ServiceUnavailable: not
        counted (DynamoDB refused or could not be reached, or collisions outlasted every retry)."""
        when = at or clock.now()
        total = _CellTotal(dated(cell, when))
        total.add(metric, 1, revenue)
        try:
            self._index(cell.scenario_id, when)
            if once is None:
                self._update_unmarked(total, when)
                return True
            return self._transact([total], once_key(cell.scenario_id, once), when)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"report counter not added: {_why(exc)}") from exc

    def add_many(self, deltas: Sequence[CountDelta], *, once: str) -> bool:
        """Every delta, summed per cell (all metrics of a cell in one update), under the marker
        `once`, in one TransactWriteItems: False when the marker was there (counted before; nothing
        counted now). More cells than one transaction holds are split, in key order so that a redo
        splits the same way, into transactions each under a marker of its own: the first part under
        `once` itself and written last, the others under markers derived from `once` before it. So
        `once` is there only when every part is (a single `add` of the same fact is refused after
        it, as after a count that fit in one transaction), a redo after a failure counts only the
        parts not counted yet, and of racing redeliveries exactly one answers True.
        ValueError (nothing written): deltas of more than one scenario, or a negative count.
        ServiceUnavailable: not every part counted (those that were stay counted, under their
        markers; asking again counts the rest)."""
        at = clock.now()
        # Every delta is dated with the same day, so a day dimension adds no cell to a transaction.
        totals = _totals(deltas, at)
        if not totals:
            return True
        scenario_id = totals[0].cell.scenario_id
        parts = [totals[i : i + CELLS_PER_TRANSACTION] for i in range(0, len(totals), CELLS_PER_TRANSACTION)]
        try:
            self._index(scenario_id, at)
            for number, part in enumerate(parts[1:], start=2):
                self._transact(part, once_key(scenario_id, once, number), at)
            return self._transact(parts[0], once_key(scenario_id, once), at)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"report counters not added: {_why(exc)}") from exc

    def _transact(self, totals: list[_CellTotal], marker_key: dict[str, Any], at: datetime) -> bool:
        """One transaction: the marker (action 0, on condition that it is new) and an update of
        each cell's shard. Tried again on a collision, on another shard."""
        marker: TransactWriteItemTypeDef = {
            "Put": {
                "TableName": self.table_name,
                "Item": {**marker_key, "expires_at": {"N": str(int((at + ONCE_TTL).timestamp()))}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        # The first shard follows from the marker (a hash): writes spread evenly over the shards,
        # and where a count went is the same on every run (what the bench and the tests measure).
        shard = int(marker_key["pk"]["S"][-8:], 16) % keys.REPORT_SHARDS
        for attempt in range(MAX_ATTEMPTS):
            updates = [{"Update": self._update(total, at, shard)} for total in totals]
            try:
                self.client.transact_write_items(TransactItems=[marker, *updates])  # type: ignore[list-item]
            except ClientError as exc:
                if not transaction_cancelled(exc):
                    raise
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False  # the marker is there: counted already
                if not set(reasons) <= _TRANSIENT_REASONS or attempt == MAX_ATTEMPTS - 1:
                    raise
                self._back_off(attempt)
                shard = self._other_shard(shard)
                continue
            return True
        raise AssertionError("unreachable")

    def _update_unmarked(self, total: _CellTotal, at: datetime) -> None:
        """A count without a marker: one UpdateItem on a random shard, tried again elsewhere when it
        collides with a transaction on the same item."""
        shard = self._random.randrange(keys.REPORT_SHARDS)
        for attempt in range(MAX_ATTEMPTS):
            try:
                self.client.update_item(**self._update(total, at, shard))
            except ClientError as exc:
                if error_code(exc) not in _TRANSIENT_ERRORS or attempt == MAX_ATTEMPTS - 1:
                    raise
                self._back_off(attempt)
                shard = self._other_shard(shard)
                continue
            return

    def _back_off(self, attempt: int) -> None:
        self._sleep(self._random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))

    def _other_shard(self, shard: int) -> int:
        return (shard + 1 + self._random.randrange(keys.REPORT_SHARDS - 1)) % keys.REPORT_SHARDS

    def _update(self, total: _CellTotal, at: datetime, shard: int) -> dict[str, Any]:
        cell = total.cell
        names = {
            "#scn": "scenario_id",
            "#ver": "version",
            "#step": "step_id",
            "#var": "variant",
            "#hold": "holdout",
            "#chn": "channel",
            "#day": "day",
            "#at": "updated_at",
        }
        values: dict[str, Any] = {
            ":scn": {"S": cell.scenario_id},
            ":ver": {"N": str(cell.version)},
            ":step": {"NULL": True} if cell.step_id is None else {"S": cell.step_id},
            ":var": {"NULL": True} if cell.variant is None else {"S": cell.variant},
            ":hold": {"BOOL": cell.holdout},
            ":chn": {"NULL": True} if cell.channel is None else {"S": cell.channel},
            ":day": {"NULL": True} if cell.day is None else {"S": cell.day},
            ":at": {"S": clock.iso(at)},
        }
        adds: list[str] = []
        for i, (metric, n) in enumerate(sorted(total.metrics.items())):
            names[f"#m{i}"] = metric
            values[f":n{i}"] = {"N": str(n)}
            adds.append(f"#m{i} :n{i}")
        if total.revenue is not None:
            names["#rev"] = REVENUE
            values[":rev"] = {"N": str(total.revenue)}
            adds.append("#rev :rev")
        return {
            "TableName": self.table_name,
            "Key": cell_key(cell, shard),
            "UpdateExpression": (
                "SET #scn = :scn, #ver = :ver, #step = :step, #var = :var, #hold = :hold,"
                " #chn = :chn, #day = :day, #at = :at"
                f" ADD {', '.join(adds)}"
            ),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
        }

    def _index(self, scenario_id: str, at: datetime) -> None:
        with self._lock:
            if scenario_id in self._indexed:
                return
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    "pk": {"S": keys.REPORT_INDEX_PK},
                    "sk": {"S": scenario_id},
                    "first_counted_at": {"S": clock.iso(at)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
        with self._lock:
            self._indexed.add(scenario_id)

    # ---------------------------------------------------------------------------------- reading

    def cells(self, scenario_id: str) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
        """Every cell of a scenario with its counts (metrics as int, `revenue` as Decimal), in key
        order (version, step, variant, group, channel, day): the sum of its shards and of its item
        in the layout before sharding. A cell counted before issue 12 comes back without channel
        or day, beside the same cell's dated ones (different items). One consistent Query per
        partition."""
        partitions = [keys.report_pk(scenario_id)]
        partitions += [keys.report_shard_pk(scenario_id, shard) for shard in range(keys.REPORT_SHARDS)]
        found: dict[str, tuple[ReportCell, Counts]] = {}
        for pk in partitions:
            for page in self.client.get_paginator("query").paginate(
                TableName=self.table_name,
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": pk}},
                ConsistentRead=True,
            ):
                for item in page["Items"]:
                    values = from_attribute_map(item)
                    if values.get("scenario_id") != scenario_id:
                        continue
                    sk = item["sk"]["S"]
                    if sk not in found:
                        found[sk] = (_cell_of(values), {})
                    _add_counts(found[sk][1], values)
        return [found[sk] for sk in sorted(found)]

    def scenario_ids(self) -> list[str]:
        """Every scenario that has counted something (the RPTINDEX partition), sorted."""
        ids: list[str] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.REPORT_INDEX_PK}},
            ProjectionExpression="sk",
        ):
            ids.extend(item["sk"]["S"] for item in page["Items"])
        return sorted(ids)


def _why(exc: BotoCoreError | ClientError) -> str:
    """What refused a count, for the log: DynamoDB's error code, or the SDK's error class."""
    return (error_code(exc) if isinstance(exc, ClientError) else None) or type(exc).__name__


def _totals(deltas: Sequence[CountDelta], at: datetime) -> list[_CellTotal]:
    """The deltas summed per cell (dated `at`), in key order; ValueError for what cannot be counted."""
    if len({d.cell.scenario_id for d in deltas}) > 1:
        raise ValueError("add_many counts for one scenario at a time (its marker is kept per scenario)")
    totals: dict[str, _CellTotal] = {}
    for delta in deltas:
        if delta.n < 0:
            raise ValueError(f"a count cannot go down ({delta.metric.value} {delta.n})")
        cell = dated(delta.cell, at)
        totals.setdefault(cell_sk(cell), _CellTotal(cell)).add(delta.metric, delta.n, delta.revenue)
    return [totals[sk] for sk in sorted(totals)]


def _cell_of(values: dict[str, Any]) -> ReportCell:
    return ReportCell(
        scenario_id=values["scenario_id"],
        version=int(values["version"]),
        step_id=values.get("step_id"),
        variant=values.get("variant"),
        holdout=bool(values.get("holdout", False)),
        channel=values.get("channel"),
        day=values.get("day"),
    )


def _add_counts(counts: Counts, values: dict[str, Any]) -> None:
    for metric in Metric:
        if metric.value in values:
            counts[metric.value] = int(counts.get(metric.value, 0)) + int(values[metric.value])
    if REVENUE in values:
        counts[REVENUE] = Decimal(counts.get(REVENUE, 0)) + Decimal(values[REVENUE])

"""Report counters in JourneysTable: what reports read, ADDed as things happen (never a Scan of the
Events table). Key formats: keys.py.

JourneysTable (pk, sk):
  RPT#<scenario id> / V#<000001>#S#<step or ->#VAR#<-|=name>#G#<t|h>   one report cell: a number per
                      metric (ADD), `revenue` (ADD), and the cell's fields as attributes
  RPTONCE#<sha256>  / ONCE            a fact counted already (`once`); TTL expires_at
  RPTINDEX          / <scenario id>   a scenario that has counters (GET /admin/scenarios lists
                                      stopped scenarios from it too)

A cell's key is read back from its attributes, not parsed: variant names are free text (they may
hold `#`). A named variant is written `=name` so that no name can collide with "no variant" (`-`).
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, transaction_cancelled
from cems.ports import ServiceUnavailable
from cems.reports.counters import REVENUE, Metric, ReportCell

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

# A fact counted once (an open, a click per dispatch) is remembered for longer than anything can
# repeat it: tracking links live as long as the mail is kept, which is not forever; a year and
# a month covers repeats from a mailbox opened again a year later.
ONCE_TTL = timedelta(days=400)
# A transaction that collides with another (TransactionConflict) is tried again this many times.
MAX_ATTEMPTS = 5


def cell_key(cell: ReportCell) -> dict[str, Any]:
    step = cell.step_id or "-"
    variant = "-" if cell.variant is None else f"={cell.variant}"
    group = "h" if cell.holdout else "t"
    return {
        "pk": {"S": keys.report_pk(cell.scenario_id)},
        "sk": {"S": keys.report_cell_sk(cell.version, step, variant, group)},
    }


def once_key(scenario_id: str, once: str) -> dict[str, Any]:
    return keys.report_once_key(scenario_id, once)


class ReportCounters:
    """Adds to report cells; reads a scenario's cells back for a report."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client
        # Scenarios this process has put in RPTINDEX already: one PutItem per scenario per
        # execution environment, not one per count.
        self._indexed: set[str] = set()
        self._lock = threading.Lock()

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
        counted (DynamoDB refused or could not be reached)."""
        try:
            return self._add(cell, metric, once, revenue, at or clock.now())
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"report counter not added: {type(exc).__name__}") from exc

    def _add(
        self, cell: ReportCell, metric: Metric, once: str | None, revenue: Decimal | None, at: datetime
    ) -> bool:
        update = self._update(cell, metric, revenue, at)
        self._index(cell.scenario_id, at)
        if once is None:
            self.client.update_item(**update)
            return True
        marker: TransactWriteItemTypeDef = {
            "Put": {
                "TableName": self.table_name,
                "Item": {
                    **once_key(cell.scenario_id, once),
                    "expires_at": {"N": str(int((at + ONCE_TTL).timestamp()))},
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
        for attempt in range(MAX_ATTEMPTS):
            try:
                self.client.transact_write_items(TransactItems=[{"Update": update}, marker])  # type: ignore[typeddict-item]
            except ClientError as exc:
                if not transaction_cancelled(exc):
                    raise
                reasons = exc.response.get("CancellationReasons", [])
                # The marker is action 1; its condition failing means "counted already".
                if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                    return False
                if attempt == MAX_ATTEMPTS - 1:
                    raise
                continue  # a conflict with a concurrent transaction on the same cell: try again
            return True
        raise AssertionError("unreachable")

    def _update(
        self, cell: ReportCell, metric: Metric, revenue: Decimal | None, at: datetime
    ) -> dict[str, Any]:
        names = {
            "#m": metric.value,
            "#scn": "scenario_id",
            "#ver": "version",
            "#step": "step_id",
            "#var": "variant",
            "#hold": "holdout",
            "#at": "updated_at",
        }
        values: dict[str, Any] = {
            ":one": {"N": "1"},
            ":scn": {"S": cell.scenario_id},
            ":ver": {"N": str(cell.version)},
            ":step": {"NULL": True} if cell.step_id is None else {"S": cell.step_id},
            ":var": {"NULL": True} if cell.variant is None else {"S": cell.variant},
            ":hold": {"BOOL": cell.holdout},
            ":at": {"S": clock.iso(at)},
        }
        adds = "#m :one"
        if revenue is not None:
            names["#rev"] = REVENUE
            values[":rev"] = {"N": str(revenue)}
            adds += ", #rev :rev"
        return {
            "TableName": self.table_name,
            "Key": cell_key(cell),
            "UpdateExpression": (
                "SET #scn = :scn, #ver = :ver, #step = :step, #var = :var, #hold = :hold, #at = :at"
                f" ADD {adds}"
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

    def cells(self, scenario_id: str) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
        """Every cell of a scenario with its counts (metrics as int, `revenue` as Decimal), in key
        order (version, step, variant, group)."""
        found: list[tuple[ReportCell, dict[str, int | Decimal]]] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.report_pk(scenario_id)}},
            ConsistentRead=True,
        ):
            for item in page["Items"]:
                values = from_attribute_map(item)
                cell = ReportCell(
                    scenario_id=values["scenario_id"],
                    version=int(values["version"]),
                    step_id=values.get("step_id"),
                    variant=values.get("variant"),
                    holdout=bool(values.get("holdout", False)),
                )
                counts: dict[str, int | Decimal] = {
                    m.value: int(values[m.value]) for m in Metric if m.value in values
                }
                if REVENUE in values:
                    counts[REVENUE] = Decimal(values[REVENUE])
                found.append((cell, counts))
        return found

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

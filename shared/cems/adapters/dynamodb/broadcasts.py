"""Broadcast and backfill runs in JourneysTable: a run's start (once), and each segment's progress."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, to_attribute_map
from cems.ports import ServiceUnavailable
from cems.scenario.broadcast import RESTART_AFTER, RunKind, SegmentProgress

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class BroadcastStore:
    """Runs and segment progress in JourneysTable."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    @staticmethod
    def run_key(scenario_id: str, run: str) -> dict[str, Any]:
        return keys.broadcast_run_key(scenario_id, run)

    def start_run(
        self,
        scenario_id: str,
        run: str,
        version: int,
        segments: int,
        now: datetime,
        kind: RunKind = "broadcast",
    ) -> bool:
        """Records the run as started (not yet enqueued); False if it was started already."""
        item = {
            **self.run_key(scenario_id, run),
            **to_attribute_map(
                {"version": version, "segments": segments, "started_at": now, "enqueued": False, "kind": kind}
            ),
        }
        try:
            self.client.put_item(
                TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def claim_stalled(self, scenario_id: str, run: str, now: datetime) -> dict[str, Any] | None:
        """A started run whose messages were not all enqueued RESTART_AFTER ago, claimed for enqueuing
        again (its started_at moved to now); None if there is none or another tick claimed it."""
        item = self.client.get_item(
            TableName=self.table_name, Key=self.run_key(scenario_id, run), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        values = from_attribute_map(item)
        if values.get("enqueued") or datetime.fromisoformat(values["started_at"]) > now - RESTART_AFTER:
            return None
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self.run_key(scenario_id, run),
                UpdateExpression="SET started_at = :now",
                ConditionExpression="started_at = :read AND enqueued = :no",
                ExpressionAttributeValues={
                    ":now": {"S": clock.iso(now)},
                    ":read": item["started_at"],
                    ":no": {"BOOL": False},
                },
            )
        except ClientError as exc:
            if condition_failed(exc):
                return None
            raise
        return values

    def mark_enqueued(self, scenario_id: str, run: str) -> None:
        """ServiceUnavailable when the mark could not be written: the starter then leaves the run to be
        enqueued again (the loader must not fail over a version that is live already)."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self.run_key(scenario_id, run),
                UpdateExpression="SET enqueued = :yes",
                ExpressionAttributeValues={":yes": {"BOOL": True}},
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"run not marked enqueued: {type(exc).__name__}") from exc

    def progress(self, scenario_id: str, run: str, segment: int) -> SegmentProgress | None:
        item = self.client.get_item(
            TableName=self.table_name,
            Key=keys.broadcast_segment_key(scenario_id, run, segment),
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        values = from_attribute_map(item)
        for name in _KEYS:
            if values.get(name) is not None:
                values[name] = json.loads(values[name])
        if values.get("page_customers") is not None:
            binary = values["page_customers"]
            values["page_customers"] = bytes(getattr(binary, "value", binary))  # boto3's Binary
        return SegmentProgress.model_validate(
            {k: v for k, v in values.items() if k in SegmentProgress.model_fields}
        )

    def save_progress(self, progress: SegmentProgress, read_pages: int | None) -> bool:
        """Writes the progress on condition that the stored one still has `read_pages` pages (None:
        that there is none). False: another worker recorded this segment since. (A page recorded
        done may carry the next page opened: the worker's one write a page.)"""
        if read_pages is None:
            return self._put(progress, "attribute_not_exists(pk)", {})
        return self._put(progress, "pages = :read", {":read": {"N": str(read_pages)}})

    def open_page(self, progress: SegmentProgress, read_pages: int | None) -> bool:
        """Writes the progress with a page opened (its range and customers) on condition that the
        stored one still has `read_pages` pages (None: that there is none) and no page open (items
        from before pages were opened have no `page_open`). False: another worker recorded this
        segment, or opened this page, since. One PutItem of about 2.3 KB for a page of 500 (the
        customers' digests), 3 write units."""
        if read_pages is None:
            return self._put(progress, "attribute_not_exists(pk)", {})
        return self._put(
            progress,
            "pages = :read AND (attribute_not_exists(page_open) OR page_open = :no)",
            {":read": {"N": str(read_pages)}, ":no": {"BOOL": False}},
        )

    def _put(self, progress: SegmentProgress, condition: str, values: dict[str, Any]) -> bool:
        fields = progress.model_dump(exclude={*_KEYS, "page_customers"})
        for name in _KEYS:
            key = getattr(progress, name)
            fields[name] = None if key is None else json.dumps(key)
        item = {
            **keys.broadcast_segment_key(progress.scenario_id, progress.run, progress.segment),
            **to_attribute_map(fields),
        }
        if progress.page_customers:
            item["page_customers"] = {"B": progress.page_customers}
        request: dict[str, Any] = {"ConditionExpression": condition}
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self.client.put_item(TableName=self.table_name, Item=item, **request)
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True


# Scan keys in the progress item, stored as JSON (a key's attribute values as DynamoDB gives them).
_KEYS = ("last_key", "page_end")

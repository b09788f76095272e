"""The audit log in the Audit table (ports: cems.audit.AuditStore): append-only, read by key, never scanned.

Layout: pk `AUDIT#<yyyy-mm-dd>` (the entry's UTC day), sk `<ISO time>#<audit id>`. A time range is one
Query per day it spans, newest day first, each newest first (ScanIndexForward=False), stopping as soon as
a page is full; nothing ever Scans the table. Actor and action are filtered on what the day partitions'
Queries return (by cems.audit.page_of, as the in-memory fake is) rather than through a GSI: operators are
a handful and their actions a few hundred a day, so a day partition is small, the day range has to be
read anyway, and an index would double every write (and keep a second copy of the log). A day's writes
all land on one partition: operator actions come a few a second at most, far below a partition's 1,000
writes a second.

Writes are conditional on the item being new, so a retried request that records the same id writes
nothing more. Entries expire `retention` after their time (TTL attribute `expires_at`, the template's
AuditRetentionDays): DynamoDB deletes them itself, which no operator's permission is needed for.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, error_code, from_attribute_map, to_attribute_map
from cems.audit import AuditAction, AuditEntry, AuditPage, page_of, parse_key
from cems.ports import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DEFAULT_RETENTION = timedelta(days=400)
# Items a Query reads per request when an actor or action is asked for: page_of filters what comes back,
# so a page sized to `limit` would take many requests to find one operator's entries in a busy day. No
# FilterExpression: it would be a second copy of page_of's filter, and it saves only bytes sent back
# (DynamoDB charges for the items read before a filter).
_FILTERED_PAGE = 200
_FIELDS = ("id", "at", "actor", "role", "action", "target", "source_ip", "outcome", "detail")


class DynamoAuditStore:
    def __init__(
        self, table_name: str, client: DynamoDBClient, retention: timedelta = DEFAULT_RETENTION
    ) -> None:
        self.table_name = table_name
        self.client = client
        self.retention = retention

    def append(self, entry: AuditEntry) -> bool:
        """One conditional PutItem: False when the id is there already (a retry). ServiceUnavailable:
        not written (the caller's action should fail rather than go unrecorded)."""
        item = {
            "pk": keys.audit_day_pk(entry.at.date()),
            "sk": entry.key,
            **entry.model_dump(mode="json", exclude_none=True),
            "at": clock.iso(entry.at),
            "expires_at": int((entry.at + self.retention).timestamp()),
        }
        if not entry.detail:
            item.pop("detail", None)  # DynamoDB keeps an empty map; leaving it out reads back the same
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_attribute_map(item),
                # Append-only: an id is written once; nothing in CEMS updates or deletes an entry.
                ConditionExpression="attribute_not_exists(pk)",
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise ServiceUnavailable(f"audit entry not written: {error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"audit entry not written: {type(exc).__name__}") from exc
        return True

    def query(
        self,
        since: datetime,
        until: datetime,
        actor: str | None = None,
        action: AuditAction | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        """Entries with since <= at < until (to the millisecond), newest first, picked by
        cems.audit.page_of from a Query per UTC day from the newest, read only until it has `limit` + 1
        (the one more says there is a next page)."""
        filtered = actor is not None or action is not None
        entries = self._newest_first(since, until, cursor, filtered, limit + 1)
        return page_of(entries, since, until, actor, action, limit, cursor)

    def _newest_first(
        self, since: datetime, until: datetime, cursor: str | None, filtered: bool, wanted: int
    ) -> Iterator[AuditEntry]:
        """The entries from `until` (or the cursor's own entry) back to `since`, newest first, one Query
        page at a time as they are taken. Unfiltered, page_of takes every entry but the cursor's, so
        `wanted` counts down to what it still needs and no request reads more."""
        low, high = clock.iso(since), clock.iso(until)
        newest = until
        if cursor is not None:
            cursor_at, _ = parse_key(cursor)
            # BETWEEN is inclusive: the cursor's own entry comes back too, and page_of passes over it.
            high, newest = min(high, cursor), min(until, cursor_at)
            wanted += 1
        if low > high:
            return
        day = newest.astimezone(UTC).date()
        while day >= since.astimezone(UTC).date():
            start: dict[str, Any] | None = None
            while True:
                request: dict[str, Any] = {
                    "TableName": self.table_name,
                    "KeyConditionExpression": "pk = :pk AND sk BETWEEN :low AND :high",
                    "ExpressionAttributeValues": {
                        ":pk": {"S": keys.audit_day_pk(day)},
                        ":low": {"S": low},
                        ":high": {"S": high},
                    },
                    "ScanIndexForward": False,
                    "Limit": _FILTERED_PAGE if filtered else wanted,
                }
                if start is not None:
                    request["ExclusiveStartKey"] = start
                answer = self._query(request)
                for item in answer.get("Items", []):
                    wanted -= 1
                    yield _entry(item)
                start = answer.get("LastEvaluatedKey")
                if start is None:
                    break
            day -= timedelta(days=1)

    def _query(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            return dict(self.client.query(**request))
        except BotoClientError as exc:
            raise ServiceUnavailable(f"audit log not read: {error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"audit log not read: {type(exc).__name__}") from exc


def _entry(item: dict[str, Any]) -> AuditEntry:
    values = from_attribute_map(item)
    document = {name: values[name] for name in _FIELDS if name in values}
    document["detail"] = {
        key: int(value) if isinstance(value, Decimal) else value
        for key, value in dict(values.get("detail") or {}).items()
    }
    return AuditEntry.model_validate(document)

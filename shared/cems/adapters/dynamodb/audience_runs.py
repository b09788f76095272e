"""Fanned-out audience counts in JourneysTable (cems.console.audience_runs.AudienceRunStore): the run,
written once, and each segment's tally, written on condition of the pages it was read with."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed
from cems.console.audience import AudienceTally
from cems.console.audience_runs import AudienceRun, AudienceSegment
from cems.ports import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoAudienceRunStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def start(self, run: AudienceRun, expires_at: datetime) -> None:
        """ServiceUnavailable when it could not be written (the API answers 503)."""
        item = {
            **keys.audience_run_key(run.run),
            # The document as its own attribute, not escaped again inside the run's JSON: a document
            # within the loader's 300,000 bytes always fits the 400 KB item.
            "run": {"S": run.model_dump_json(exclude={"document"})},
            "document": {"S": run.document},
            "expires_at": {"N": str(int(expires_at.timestamp()))},
        }
        try:
            self.client.put_item(
                TableName=self.table_name, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(f"audience run not started: {type(exc).__name__}") from exc

    def run(self, run_id: str) -> AudienceRun | None:
        # Consistent: a run is asked for right after it is started.
        item = self.client.get_item(
            TableName=self.table_name, Key=keys.audience_run_key(run_id), ConsistentRead=True
        ).get("Item")
        if item is None or _expired(item):
            return None
        run = json.loads(item["run"]["S"])
        if "document" in item:  # runs started before the document had its own attribute hold it inside
            run["document"] = item["document"]["S"]
        return AudienceRun.model_validate(run)

    def segment(self, run_id: str, segment: int) -> AudienceSegment | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=keys.audience_segment_key(run_id, segment), ConsistentRead=True
        ).get("Item")
        return None if item is None else _segment(run_id, item)

    def save_segment(self, segment: AudienceSegment, read_pages: int | None, expires_at: datetime) -> bool:
        item = {
            **keys.audience_segment_key(segment.run, segment.segment),
            "segment": {"N": str(segment.segment)},
            "pages": {"N": str(segment.pages)},
            "done": {"BOOL": segment.done},
            # Scan keys and the tally as JSON: the cursor is a key as DynamoDB gives it, opaque here.
            "cursor": {"S": json.dumps(segment.cursor)},
            "tally": {"S": segment.tally.model_dump_json()},
            "updated_at": {"S": clock.iso(segment.updated_at or clock.now())},
            "expires_at": {"N": str(int(expires_at.timestamp()))},
        }
        request: dict[str, Any] = {"ConditionExpression": "attribute_not_exists(pk)"}
        if read_pages is not None:
            request = {
                "ConditionExpression": "pages = :read",
                "ExpressionAttributeValues": {":read": {"N": str(read_pages)}},
            }
        try:
            self.client.put_item(TableName=self.table_name, Item=item, **request)
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def segments(self, run_id: str) -> list[AudienceSegment]:
        """One Query of the run's partition (eventually consistent: a progress report), in pages of
        1 MB: a segment's item is about 1-6 KB (its sample is most of it)."""
        found: list[AudienceSegment] = []
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :seg)",
            "ExpressionAttributeValues": {
                ":pk": {"S": keys.audience_run_pk(run_id)},
                ":seg": {"S": keys.audience_segment_sk_prefix()},
            },
        }
        while True:
            answer = self.client.query(**request)
            found += [_segment(run_id, item) for item in answer.get("Items", [])]
            if "LastEvaluatedKey" not in answer:
                return found
            request["ExclusiveStartKey"] = answer["LastEvaluatedKey"]


def _segment(run_id: str, item: dict[str, Any]) -> AudienceSegment:
    return AudienceSegment(
        run=run_id,
        segment=int(item["segment"]["N"]),
        pages=int(item["pages"]["N"]),
        done=bool(item["done"]["BOOL"]),
        cursor=json.loads(item["cursor"]["S"]),
        tally=AudienceTally.model_validate_json(item["tally"]["S"]),
        updated_at=datetime.fromisoformat(item["updated_at"]["S"]),
    )


def _expired(item: dict[str, Any]) -> bool:
    """DynamoDB deletes an expired item within days, not at once: until then it is not there."""
    return int(item["expires_at"]["N"]) <= int(clock.now().timestamp())

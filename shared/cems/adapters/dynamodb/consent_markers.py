"""Double opt-in markers in the Customers table: one confirmation mail per address per interval.

The marker is taken with a conditional write, so nobody can turn the shop into a mail cannon aimed at
someone else's inbox; it remembers which stored event took it, so the same event seen again (the
stream retries a batch) may queue its mail again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError as BotoClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass
class ConfirmationMarkers:
    """The last confirmation mail per address (hashed): ports.ConfirmationMarkerPort."""

    table_name: str
    client: DynamoDBClient

    def take(self, hashed_address: str, event_id: str, at: datetime, interval: timedelta) -> bool:
        """True when this event may ask: no confirmation within `interval`, or it was this event's."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=keys.optin_key(hashed_address),
                UpdateExpression="SET event_id = :e, asked_at = :at, expires_at = :x",
                ConditionExpression="attribute_not_exists(pk) OR expires_at <= :now OR event_id = :e",
                ExpressionAttributeValues={
                    ":e": {"S": event_id},
                    ":at": {"S": clock.iso(at)},
                    ":x": {"N": str(int((at + interval).timestamp()))},
                    ":now": {"N": str(int(at.timestamp()))},
                },
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

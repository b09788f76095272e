"""The suppression list in DynamoDB: addresses CEMS must never mail again (hard bounces, complaints).

Kept by address (hashed), not by customer: a bounced address given again by another customer, or
by the same customer after an erasure, stays suppressed. Unsubscribing is not suppression: it sets
the customer's email consent to false (cems.ingest), and a new opt-in can lift it.

Customers table:
  SUPPRESS#<address hash> / SUPPRESS   reason (bounce | complaint), at; no address is stored
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from botocore.exceptions import ClientError as BotoClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, to_attribute_map
from cems.models import address_hash

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

SuppressionReason = Literal["bounce", "complaint"]


def suppression_key(address: str) -> dict[str, dict[str, str]]:
    return keys.suppression_key(address_hash(address))


class SuppressionStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def reason(self, address: str) -> str | None:
        """Why `address` may not be mailed (`bounce`, `complaint`), or None if it may."""
        item = self.client.get_item(
            TableName=self.table_name,
            Key=suppression_key(address),
            ProjectionExpression="reason",
            # A bounce recorded a moment ago must stop the very next send.
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        return item.get("reason", {}).get("S") or "suppressed"

    def suppress(self, address: str, reason: SuppressionReason, at: datetime | None = None) -> bool:
        """Suppress `address`; True if it was not suppressed before (a repeated bounce changes nothing,
        so the first reason and time are kept)."""
        key = suppression_key(address)
        item = {
            "pk": key["pk"]["S"],
            "sk": keys.SUPPRESSION_SK,
            "reason": reason,
            "at": at or clock.now(),
        }
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_attribute_map(item),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

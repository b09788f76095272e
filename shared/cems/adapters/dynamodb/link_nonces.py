"""LINE account-link nonces in the Customers table: single use, bound to the proven user, with a TTL."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError as BotoClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map
from cems.line.linking import NONCE_TTL, LinkNonce, new_nonce, plausible_nonce

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class NonceStore:
    """Account-link nonces in the Customers table, stored under the nonce's SHA-256 (ports: NoncePort)."""

    def __init__(self, table_name: str, client: DynamoDBClient, ttl: timedelta = NONCE_TTL) -> None:
        self.table_name = table_name
        self.client = client
        self.ttl = ttl

    def issue(self, anonymous_id: str, site_id: str, user_id: str) -> str:
        """A fresh nonce bound to this proven customer, their browser and the site."""
        nonce = new_nonce()
        now = clock.now()
        self.client.put_item(
            TableName=self.table_name,
            Item={
                **keys.nonce_key(nonce),
                "anonymous_id": {"S": anonymous_id},
                "site_id": {"S": site_id},
                "user_id": {"S": user_id},
                "created_at": {"S": clock.iso(now)},
                "expires_at": {"N": str(int((now + self.ttl).timestamp()))},
            },
            # 256 random bits never collide; the condition only makes sure a row is never overwritten.
            ConditionExpression="attribute_not_exists(pk)",
        )
        return nonce

    def consume(self, nonce: str, webhook_event_id: str) -> LinkNonce | None:
        """The visitor a nonce was issued for, once: None when unknown, expired or used by another event.

        The nonce is marked with the webhook event that used it rather than deleted, so LINE
        redelivering that same event (after a failure half-way) can still finish the link, while a
        replay under any other event links nothing.
        """
        if not plausible_nonce(nonce):
            return None
        now = clock.now()
        try:
            answer = self.client.update_item(
                TableName=self.table_name,
                Key=keys.nonce_key(nonce),
                UpdateExpression="SET consumed_by = :event, consumed_at = if_not_exists(consumed_at, :at)",
                ConditionExpression=(
                    "attribute_exists(pk) AND expires_at > :now"
                    " AND (attribute_not_exists(consumed_by) OR consumed_by = :event)"
                ),
                ExpressionAttributeValues={
                    ":event": {"S": webhook_event_id},
                    ":at": {"S": clock.iso(now)},
                    ":now": {"N": str(int(now.timestamp()))},
                },
                ReturnValues="ALL_NEW",
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return None
            raise
        item = from_attribute_map(answer["Attributes"])
        return LinkNonce(
            anonymous_id=str(item["anonymous_id"]),
            site_id=str(item["site_id"]),
            user_id=str(item["user_id"]) if item.get("user_id") else None,
            created_at=datetime.fromisoformat(str(item["created_at"]).replace("Z", "+00:00")),
            expires_at=int(item["expires_at"]),
        )

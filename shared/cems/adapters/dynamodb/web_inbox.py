"""On-site inboxes in the Customers table (cems.ports.WebInbox): one item per owner and dispatch,
deleted by the table's TTL (`expires_at`, epoch seconds) after the message expires.

A customer's inbox is one partition (`WEB#<customer>`), so the tag's fetch reads it with one Query;
the item holds the rendered message (never an address: a web message is shown to whoever holds the
browser's anonymous id). Key formats: keys.web_message_key.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import ClientError

from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, to_attribute_map
from cems.identity import IdentityKind
from cems.web.inbox import InboxItem, InboxOwner

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# Attributes of an item that are not the InboxItem's own fields.
_KEY_ATTRIBUTES = ("pk", "sk", "expires_at", "expires", "owner_id", "preview")


class WebInboxStore:
    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def put(self, item: InboxItem) -> bool:
        fields = item.model_dump(exclude={"owner", "expires_at"}, exclude_none=True)
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    **keys.web_message_key(item.owner.id, item.owner.preview, item.dispatch_key),
                    **to_attribute_map(fields),
                    "owner_id": {"S": item.owner.id},
                    "preview": {"BOOL": item.owner.preview},
                    # The TTL attribute is a number (epoch seconds); the exact instant is kept too,
                    # since expiry is decided here, not by the TTL.
                    "expires_at": {"N": str(int(item.expires_at.timestamp()))},
                    "expires": {"S": item.expires_at.isoformat()},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def owner_of_browser(self, anonymous_id: str) -> str | None:
        """cems.ports.BrowserOwners: the anonymous id's identity item, read eventually consistent
        (half the cost; an id claimed a moment ago can wait for the next page view), only its
        customer id. A merge re-points the item, so it names the surviving customer."""
        item = self.client.get_item(
            TableName=self.table_name,
            Key=keys.identity_key(IdentityKind.ANONYMOUS.value, anonymous_id),
            ProjectionExpression="customer_id",
        ).get("Item")
        if item is None or "S" not in item.get("customer_id", {}):
            return None
        return item["customer_id"]["S"]

    def items(self, owner: InboxOwner, limit: int) -> list[InboxItem]:
        answer = self.client.query(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :msg)",
            ExpressionAttributeValues={
                ":pk": {"S": keys.web_inbox_pk(owner.id, owner.preview)},
                ":msg": {"S": keys.web_message_sk_prefix()},
            },
            Limit=limit,
        )
        return [_item(owner, from_attribute_map(raw)) for raw in answer.get("Items", [])]

    def mark(
        self,
        owner: InboxOwner,
        dispatch_key: str,
        field: Literal["shown_at", "dismissed_at"],
        at: datetime,
    ) -> bool:
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=keys.web_message_key(owner.id, owner.preview, dispatch_key),
                UpdateExpression="SET #f = :at",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#f)",
                ExpressionAttributeNames={"#f": field},
                ExpressionAttributeValues=to_attribute_map({":at": at}),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True


def _item(owner: InboxOwner, stored: dict[str, Any]) -> InboxItem:
    expires = stored.get("expires")
    expires_at = (
        datetime.fromisoformat(expires)
        if isinstance(expires, str)
        else datetime.fromtimestamp(int(stored.get("expires_at", 0)), UTC)
    )
    fields = {k: v for k, v in stored.items() if k not in _KEY_ATTRIBUTES}
    return InboxItem.model_validate({**fields, "owner": owner, "expires_at": expires_at})

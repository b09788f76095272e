"""Short links of LINE texts in the Deliveries table: `LINK#<code>` / `LINK`, the signed click token.

The LINE sender writes each before it calls LINE (ports.ShortLinkWriter), the click tracker reads
one per tap (ports.ShortLinkReader). The item lives as long as its token counts clicks (`expires_at`,
the token's own expiry, is the table's TTL attribute); after that the code answers 404. It sits with
the dispatch records it belongs to, in a table send_line already writes, with TTL on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError

from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, error_code
from cems.ports import ServiceUnavailable

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class ShortLinkStore:
    """ports.ShortLinkWriter and ports.ShortLinkReader on DynamoDB."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def put(self, code: str, token: str, expires_at: int) -> bool:
        """One conditional PutItem. The code is derived from the link (dispatch, customer, URL), so
        an item already there is this link's, from an earlier attempt: kept as it is (its token may
        differ only in its expiry, by the seconds between two attempts), so a redo changes nothing."""
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item={
                    **keys.short_link_key(code),
                    "token": {"S": token},
                    "expires_at": {"N": str(expires_at)},
                },
                ConditionExpression="attribute_not_exists(pk)",
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise ServiceUnavailable(f"short link not stored: {error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"short link not stored: {type(exc).__name__}") from exc
        return True

    def token(self, code: str) -> str | None:
        """One GetItem, strongly consistent: a tap can follow the message within a second of the
        write, and an eventually consistent read could then miss it (404 for a good link)."""
        try:
            answer = self.client.get_item(
                TableName=self.table_name,
                Key=keys.short_link_key(code),
                ProjectionExpression="#t",
                ExpressionAttributeNames={"#t": "token"},
                ConsistentRead=True,
            )
        except BotoClientError as exc:
            raise ServiceUnavailable(f"short link not read: {error_code(exc)}") from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(f"short link not read: {type(exc).__name__}") from exc
        value = answer.get("Item", {}).get("token", {}).get("S")
        return value or None

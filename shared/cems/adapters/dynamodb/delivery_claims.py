"""The one delivery-claim store of every channel's sender, in the Deliveries table (DeliveryClaims).

A claim is taken with a conditional write before the provider is called (the LINE API, SES) and
finished with one after it, conditioned on the claim token, so however often SQS delivers a dispatch
its unit is sent at most once and its outcome is written by the worker that held it. Key formats:
keys.claim_key (LINE's and email's items keep the sort keys they had before the store was shared).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, to_attribute_map
from cems.models import Channel
from cems.ports import ClaimAnswer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DeliveryClaimStore:
    """DeliveryClaims on DynamoDB: one item per (channel, dispatch, unit), kept `retention` (TTL)."""

    def __init__(self, table_name: str, client: DynamoDBClient, retention: timedelta) -> None:
        self.table_name = table_name
        self.client = client
        self.retention = retention

    def read(self, channel: Channel, idempotency_key: str, unit: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table_name,
            Key=keys.claim_key(channel, idempotency_key, unit),
            ConsistentRead=True,
        ).get("Item")
        return from_attribute_map(item) if item else None

    def claim(
        self,
        channel: Channel,
        idempotency_key: str,
        unit: str,
        status: str,
        *,
        fields: Mapping[str, Any],
        lease: timedelta | None = None,
        retake: Iterable[str] = (),
        retake_expired_lease_of: str | None = None,
    ) -> ClaimAnswer:
        now = clock.now()
        token = uuid.uuid4().hex
        values: dict[str, Any] = {
            ":status": status,
            ":token": token,
            ":exp": int((now + self.retention).timestamp()),
            ":one": 1,
        }
        sets = ["#s = :status", "claim = :token", "expires_at = :exp"]
        if lease is not None:
            values[":lease"] = now + lease
            sets.append("lease_until = :lease")
        names = {"#s": "status"}
        for i, (name, value) in enumerate(fields.items()):
            if value is not None:
                names[f"#f{i}"] = name
                values[f":f{i}"] = value
                sets.append(f"#f{i} = :f{i}")
        allowed = ["attribute_not_exists(pk)"]
        retaken = list(dict.fromkeys(retake))
        if retaken:
            placeholders = [f":r{i}" for i in range(len(retaken))]
            values.update(zip(placeholders, retaken, strict=True))
            allowed.append(f"#s IN ({', '.join(placeholders)})")
        if retake_expired_lease_of is not None:
            values[":expired"], values[":now"] = retake_expired_lease_of, now
            allowed.append("(#s = :expired AND lease_until < :now)")
        try:
            answer = self.client.update_item(
                TableName=self.table_name,
                Key=keys.claim_key(channel, idempotency_key, unit),
                UpdateExpression=f"SET {', '.join(sets)} ADD attempts :one",
                ConditionExpression=" OR ".join(allowed),
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_attribute_map(values),
                ReturnValues="ALL_NEW",
                # The claim in the way comes back with the refusal: no second read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            # Sent back by ReturnValuesOnConditionCheckFailure (the stubs do not name it).
            item: Any = dict(exc.response).get("Item")
            return ClaimAnswer(None, from_attribute_map(item) if item else None)
        return ClaimAnswer(token, from_attribute_map(answer["Attributes"]))

    def finish(
        self,
        channel: Channel,
        idempotency_key: str,
        unit: str,
        token: str,
        status: str,
        fields: Mapping[str, Any],
        *,
        release: bool = False,
        only_from: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {":status": status, ":at": clock.now(), ":token": token}
        names = {"#s": "status", "#at": "at"}
        sets = ["#s = :status", "#at = :at"]
        removes = ["lease_until"]
        for i, (name, value) in enumerate(fields.items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                values[f":f{i}"] = value
                sets.append(f"#f{i} = :f{i}")
        if release:
            removes.append("claim")
        condition = "claim = :token"
        if only_from is not None:
            values[":from"] = only_from
            condition = "#s = :from AND claim = :token"
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=keys.claim_key(channel, idempotency_key, unit),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=to_attribute_map(values),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

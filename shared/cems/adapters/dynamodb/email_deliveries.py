"""Email delivery records in the Deliveries table: the claim and outcome of one email dispatch, so a
mail is sent at most once (SES has no idempotency key). Key formats: keys.py."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, to_attribute_map
from cems.email.dispatch import EmailDispatch
from cems.email.sender import CLAIM_LEASE, Status

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DeliveryRecords:
    """`DISPATCH#<key>` / `EMAIL` in the Deliveries table: the claim and outcome of one dispatch."""

    def __init__(self, table_name: str, client: DynamoDBClient, retention: timedelta) -> None:
        self.table_name = table_name
        self.client = client
        self.retention = retention

    def _key(self, idempotency_key: str) -> dict[str, Any]:
        return keys.email_dispatch_key(idempotency_key)

    def get(self, idempotency_key: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(idempotency_key), ConsistentRead=True
        ).get("Item")
        return from_attribute_map(item) if item else None

    def claim(
        self, dispatch: EmailDispatch, status: Status, reason: str | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Write `status` (SENDING to claim; SKIPPED to record a final skip) unless the dispatch has an
        outcome already. Returns (claim token, None) when written, or (None, the existing item)."""
        now = clock.now()
        token = uuid.uuid4().hex
        values: dict[str, Any] = {
            ":status": status.value,
            ":retry": Status.RETRY.value,
            ":token": token,
            ":lease": now + CLAIM_LEASE,
            ":at": now,
            ":customer": dispatch.customer_id,
            ":test": dispatch.test,
            ":exp": int((now + self.retention).timestamp()),
            ":one": 1,
            ":reason": reason,
        }
        sets = [
            "#s = :status",
            "claim = :token",
            "#at = :at",
            "customer_id = :customer",
            "test = :test",
            "expires_at = :exp",
        ]
        if status is Status.SENDING:
            sets.append("lease_until = :lease")
        else:
            del values[":lease"]
        if reason is not None:
            sets.append("reason = :reason")
        else:
            del values[":reason"]
        for name in ("scenario_id", "version", "step_id", "variant"):
            value = getattr(dispatch, name)
            if value is not None:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(dispatch.idempotency_key),
                UpdateExpression=f"SET {', '.join(sets)} ADD attempts :one",
                ConditionExpression="attribute_not_exists(pk) OR #s = :retry",
                ExpressionAttributeNames={"#s": "status", "#at": "at"},
                ExpressionAttributeValues=to_attribute_map(values),
                # The existing item comes back with the refusal: no second read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            # Sent back by ReturnValuesOnConditionCheckFailure (the stubs do not name it).
            item: Any = dict(exc.response).get("Item")
            return None, from_attribute_map(item) if item else {}
        return token, None

    def finish(
        self,
        idempotency_key: str,
        token: str,
        status: Status,
        *,
        message_id: str | None = None,
        error_code: str | None = None,
        reason: str | None = None,
    ) -> bool:
        """Record the outcome of our claim; False if the claim is not ours any more."""
        values: dict[str, Any] = {":status": status.value, ":at": clock.now(), ":token": token}
        sets = ["#s = :status", "#at = :at"]
        removes = ["lease_until"]
        for name, value in (("ses_message_id", message_id), ("error_code", error_code), ("reason", reason)):
            if value is None:
                removes.append(name)
            else:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
        if status is Status.RETRY:
            removes.append("claim")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(idempotency_key),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression="claim = :token",
                ExpressionAttributeNames={"#s": "status", "#at": "at"},
                ExpressionAttributeValues=to_attribute_map(values),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def abandon(self, idempotency_key: str, token: str) -> bool:
        """A claim left `sending` past its lease (its worker died during the SES call): `unknown`.
        The stale claim token stays, so that worker, if it lives after all, can still record `sent`."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(idempotency_key),
                UpdateExpression="SET #s = :unknown, #at = :at, reason = :reason REMOVE lease_until",
                ConditionExpression="#s = :sending AND claim = :token",
                ExpressionAttributeNames={"#s": "status", "#at": "at"},
                ExpressionAttributeValues=to_attribute_map(
                    {
                        ":unknown": Status.UNKNOWN.value,
                        ":sending": Status.SENDING.value,
                        ":token": token,
                        ":at": clock.now(),
                        ":reason": "the sender stopped during the SES call; not sent again",
                    }
                ),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

"""LINE deliveries in the Deliveries table: each dispatch's plan, a claim per LINE call, an outcome
per recipient (key formats: keys.py).

A unit is claimed with a conditional write before LINE is called and finished with one after, so a
unit that is `sent` (or `failed`) is never called again, however often SQS delivers the dispatch; a
second worker finds the claim and backs off. A worker that dies mid-call leaves a claim whose lease
runs out; the next attempt calls LINE again under the same retry key, and LINE answers 409 if the
first call got through.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError as BotoClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.delivery_claims import DeliveryClaimStore
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, to_attribute_map
from cems.line.deliveries import (
    FINAL_UNIT_STATUSES,
    Claim,
    ClaimResult,
    DispatchPlan,
    DispatchState,
    PlanExtension,
    PlanUnit,
    RecipientRecord,
    RecipientStatus,
    Skip,
    UnitKind,
    UnitState,
    UnitStatus,
    retry_key,
)
from cems.models import Channel

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# BatchWriteItem takes at most 25 items a call.
MAX_BATCH_WRITE = 25


class DeliveryStore:
    """A LINE dispatch's plan and recipient outcomes; its unit claims are in the delivery-claim
    store shared by every channel (`claims`)."""

    def __init__(self, table_name: str, client: DynamoDBClient, retention: timedelta) -> None:
        self.table_name = table_name
        self.client = client
        self.retention = retention
        self.claims = DeliveryClaimStore(table_name, client, retention)

    def _expires_at(self, at: datetime) -> int:
        return int((at + self.retention).timestamp())

    # Reading ------------------------------------------------------------------------------------

    def _items(self, idempotency_key: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("query")
        for page in paginator.paginate(
            TableName=self.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.dispatch_pk(idempotency_key)}},
            ConsistentRead=True,
        ):
            for item in page["Items"]:
                yield from_attribute_map(item)

    def state(self, idempotency_key: str) -> DispatchState:
        """The plan, every unit and every recipient record of a dispatch (one Query)."""
        plan: DispatchPlan | None = None
        units: dict[str, UnitState] = {}
        recipients: dict[str, RecipientRecord] = {}
        for item in self._items(idempotency_key):
            sk = item["sk"]
            if sk == keys.PLAN_SK:
                plan = _plan_from_item(idempotency_key, item)
            elif sk.startswith(keys.UNIT_PREFIX):
                unit = _unit_from_item(item)
                units[unit.unit_id] = unit
            elif sk.startswith(keys.RECIPIENT_PREFIX):
                record = _recipient_from_item(item)
                recipients[record.customer_id] = record
        return DispatchState(plan, units, recipients)

    def recipients(self, idempotency_key: str) -> dict[str, RecipientRecord]:
        return self.state(idempotency_key).recipients

    # Writing ------------------------------------------------------------------------------------

    def create_plan(self, plan: DispatchPlan) -> bool:
        """Store the plan unless one exists; False when another attempt stored its plan first."""
        values = {
            "pk": keys.dispatch_pk(plan.idempotency_key),
            "sk": keys.PLAN_SK,
            "fingerprint": plan.fingerprint,
            "created_at": plan.created_at,
            "units": _units_value(plan.units),
            "skipped": _skipped_value(plan.skipped),
            "metadata": {k: v for k, v in plan.metadata.items() if v is not None},
            # Only when true: plans stored before extensions existed read as not extendable.
            "extendable": True if plan.extendable else None,
            "expires_at": self._expires_at(plan.created_at),
        }
        try:
            self.client.put_item(
                TableName=self.table_name,
                Item=to_attribute_map(values),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def extend_plan(self, plan: DispatchPlan) -> bool:
        """The stored plan's units and extensions replaced by `plan`'s (one extension more), in one
        UpdateItem conditional on the stored plan's number of extensions; False when another attempt
        extended it first (the caller reads it again). Nothing else of the plan item changes."""
        known = len(plan.extensions) - 1
        if known < 0:
            raise ValueError("an extended plan has at least one extension")
        values: dict[str, Any] = {
            ":units": _units_value(plan.units),
            ":extensions": [_skipped_value(e.skipped) for e in plan.extensions],
        }
        if known == 0:
            condition = "attribute_exists(pk) AND attribute_not_exists(#extensions)"
        else:
            condition = "size(#extensions) = :known"
            values[":known"] = known
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=to_attribute_map({"pk": keys.dispatch_pk(plan.idempotency_key), "sk": keys.PLAN_SK}),
                UpdateExpression="SET #units = :units, #extensions = :extensions",
                ConditionExpression=condition,
                ExpressionAttributeNames={"#units": "units", "#extensions": "extensions"},
                ExpressionAttributeValues=to_attribute_map(values),
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def claim(
        self,
        idempotency_key: str,
        unit: PlanUnit,
        lease: timedelta,
        skipped: Mapping[str, Skip] | None = None,
    ) -> Claim:
        """Take a unit for one LINE call, unless it is final or someone else holds it (a claim
        whose lease ran out is taken again: LINE's retry key makes the call at most once). The
        sender gives `skipped` (the unit's audience) when it decides it; without it the stored one
        stays."""
        answer = self.claims.claim(
            Channel.LINE,
            idempotency_key,
            unit.unit_id,
            UnitStatus.SENDING.value,
            fields={
                "kind": unit.kind.value,
                "retry_key": retry_key(idempotency_key, unit.unit_id),
                "recipients": len(unit.customer_ids),
                # None is left out, so an audience stored by the first claim stays.
                "skipped": None
                if skipped is None
                else {c: {"status": k.status.value, "reason": k.reason} for c, k in skipped.items()},
            },
            lease=lease,
            retake=(UnitStatus.RETRY.value, UnitStatus.DEFERRED.value),
            retake_expired_lease_of=UnitStatus.SENDING.value,
        )
        if answer.token is None:
            state = _unit_from_item(answer.item) if answer.item else None
            if state is not None and state.status in FINAL_UNIT_STATUSES:
                return Claim(ClaimResult.FINAL, state=state)
            return Claim(ClaimResult.BUSY, state=state)
        assert answer.item is not None
        claimed = _unit_from_item(answer.item)
        return Claim(ClaimResult.CLAIMED, token=answer.token, attempt=claimed.attempts, state=claimed)

    def finish(
        self,
        idempotency_key: str,
        unit: PlanUnit,
        token: str,
        status: UnitStatus,
        *,
        reason: str | None = None,
        http_status: int | None = None,
        line_request_id: str | None = None,
    ) -> bool:
        """Record a claimed unit's outcome; False if the claim was lost (its lease ran out and
        another attempt took the unit), in which case that attempt records it."""
        return self.claims.finish(
            Channel.LINE,
            idempotency_key,
            unit.unit_id,
            token,
            status.value,
            {"reason": reason, "http_status": http_status, "line_request_id": line_request_id},
        )

    def record(
        self, idempotency_key: str, records: Iterable[RecipientRecord], metadata: Mapping[str, Any]
    ) -> None:
        """Write recipient outcomes (BatchWriteItem, 25 a call). Only the worker holding a unit's claim
        writes its recipients, and never after the unit is final, so `sent` is never overwritten."""
        now = clock.now()
        items = [
            to_attribute_map(
                {
                    "pk": keys.dispatch_pk(idempotency_key),
                    "sk": keys.recipient_sk(r.customer_id),
                    "customer_id": r.customer_id,
                    "status": r.status.value,
                    "reason": r.reason,
                    "unit": r.unit_id,
                    "line_request_id": r.line_request_id,
                    "at": r.at or now,
                    "attempt": r.attempt,
                    **{k: v for k, v in metadata.items() if v is not None},
                    "expires_at": self._expires_at(now),
                }
            )
            for r in records
        ]
        for chunk in _chunks(items, MAX_BATCH_WRITE):
            request: Any = {self.table_name: [{"PutRequest": {"Item": i}} for i in chunk]}
            while request:
                answer = self.client.batch_write_item(RequestItems=request)
                request = answer.get("UnprocessedItems") or None


def _units_value(units: Iterable[PlanUnit]) -> list[dict[str, Any]]:
    return [{"id": u.unit_id, "kind": u.kind.value, "customers": list(u.customer_ids)} for u in units]


def _skipped_value(skipped: Mapping[str, Skip]) -> dict[str, Any]:
    return {c: {"status": s.status.value, "reason": s.reason} for c, s in skipped.items()}


def _plan_from_item(idempotency_key: str, item: Mapping[str, Any]) -> DispatchPlan:
    return DispatchPlan(
        idempotency_key=idempotency_key,
        fingerprint=str(item.get("fingerprint", "")),
        units=tuple(
            PlanUnit(str(u["id"]), UnitKind(u["kind"]), tuple(str(c) for c in u["customers"]))
            for u in item.get("units", [])
        ),
        skipped=_skips(item.get("skipped", {})),
        created_at=datetime.fromisoformat(item["created_at"]),
        metadata=dict(item.get("metadata", {})),
        extendable=bool(item.get("extendable", False)),
        extensions=tuple(PlanExtension(_skips(e)) for e in item.get("extensions", [])),
    )


def _unit_from_item(item: Mapping[str, Any]) -> UnitState:
    lease = item.get("lease_until")
    at = item.get("at")
    http_status = item.get("http_status")
    return UnitState(
        unit_id=str(item["sk"]).removeprefix(keys.UNIT_PREFIX),
        status=UnitStatus(item["status"]),
        attempts=int(item.get("attempts", 0)),
        lease_until=datetime.fromisoformat(lease) if lease else None,
        claim=item.get("claim"),
        reason=item.get("reason"),
        http_status=int(http_status) if http_status is not None else None,
        line_request_id=item.get("line_request_id"),
        at=datetime.fromisoformat(at) if at else None,
        skipped=_skips(item["skipped"]) if "skipped" in item else None,
    )


def _skips(value: Mapping[str, Any]) -> dict[str, Skip]:
    return {str(c): Skip(RecipientStatus(s["status"]), str(s["reason"])) for c, s in value.items()}


def _recipient_from_item(item: Mapping[str, Any]) -> RecipientRecord:
    at = item.get("at")
    return RecipientRecord(
        customer_id=str(item["customer_id"]),
        status=RecipientStatus(item["status"]),
        reason=item.get("reason"),
        unit_id=item.get("unit"),
        line_request_id=item.get("line_request_id"),
        at=datetime.fromisoformat(at) if at else None,
        attempt=int(item.get("attempt", 0)),
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]

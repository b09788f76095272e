"""DynamoDB items to Python values and back, and DynamoDB's refusal codes read off botocore's errors."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from boto3.dynamodb.types import DYNAMODB_CONTEXT as DYNAMODB_CONTEXT  # cems.jsonbody checks input with it
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError as BotoClientError

from cems import clock

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


def error_code(exc: BotoClientError) -> str | None:
    code: str | None = exc.response.get("Error", {}).get("Code")
    return code


def condition_failed(exc: BotoClientError) -> bool:
    """A conditional write was refused: the item is not as the writer read it."""
    return error_code(exc) == "ConditionalCheckFailedException"


def transaction_cancelled(exc: BotoClientError) -> bool:
    """A transaction was refused as a whole (a condition failed, or it collided with another)."""
    return error_code(exc) == "TransactionCanceledException"


def to_attribute_map(values: Mapping[str, Any]) -> dict[str, Any]:
    """Python values to DynamoDB attributes: datetimes as ISO strings, empty sets left out."""
    return {
        name: _serializer.serialize(_storable(value))
        for name, value in values.items()
        if value is not None and not (isinstance(value, set | frozenset) and not value)
    }


def to_attribute_value(value: Any) -> Any:
    """One Python value as a DynamoDB attribute value, stored as to_attribute_map stores it."""
    return _serializer.serialize(_storable(value))


def from_attribute_map(item: Mapping[str, Any]) -> dict[str, Any]:
    return {name: _deserializer.deserialize(value) for name, value in item.items()}


def _storable(value: Any) -> Any:
    if isinstance(value, datetime):
        return clock.iso(value)
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, dict):
        return {str(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    if isinstance(value, set | frozenset):
        return {_storable(v) for v in value}
    if hasattr(value, "model_dump"):
        return _storable(value.model_dump())
    return value

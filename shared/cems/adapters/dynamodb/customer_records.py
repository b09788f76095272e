"""The operator console's reads of a person in DynamoDB (ports.CustomerRecords): contact lookups,
identity items, profiles, events, journeys, on-site inboxes and suppression entries, each a GetItem
or a Query of one partition, never a Scan. Consistent reads: an operator answering a customer sees
what was just written (they cost twice as much, on a handful of items)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.customers import CustomerStore, EventStore, identity_key
from cems.adapters.dynamodb.erasure import CustomerEraser
from cems.adapters.dynamodb.items import from_attribute_map
from cems.identity import IdentityKey
from cems.lookups import ContactKind
from cems.models import Profile, StoredEvent

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# What each Journeys partition's sort key names, as the record's field.
_SORT_KEY_NAMES = {"enrolments": "scenario_id", "schedules": "scenario_id", "caps": "counter"}


class CustomerRecordsStore:
    def __init__(self, customers: CustomerStore, events: EventStore, journeys_table: str) -> None:
        self.customers = customers
        self.events = events
        self.journeys_table = journeys_table
        self.client: DynamoDBClient = customers.client
        # Who the person is, exactly as erasure finds them: the export holds what erasure removes.
        self._people = CustomerEraser(customers.table_name, events.table_name, journeys_table, self.client)

    def customers_with_contact(self, kind: ContactKind, hashed_value: str) -> list[str]:
        return self.customers.customers_with_contact(kind, hashed_value)

    def identity_owner(self, key: IdentityKey) -> str | None:
        item = self.client.get_item(
            TableName=self.customers.table_name,
            Key=identity_key(key),
            ProjectionExpression="customer_id",
            ConsistentRead=True,
        ).get("Item")
        return None if item is None else item["customer_id"]["S"]

    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None:
        return self.customers.profile(customer_id, follow_merges=follow_merges)

    def person(self, customer_id: str) -> list[Profile]:
        return self._people.person(customer_id)

    def events_of(self, customer_id: str, limit: int | None = None) -> list[StoredEvent]:
        return self.events.events_of(customer_id, limit)

    def enrolments(self, customer_id: str) -> list[dict[str, Any]]:
        return self._partition(keys.enrolment_pk(customer_id), "enrolments")

    def journey_records(self, customer_id: str) -> dict[str, list[dict[str, Any]]]:
        return {name: self._partition(pk, name) for name, pk in keys.journey_partitions(customer_id).items()}

    def web_messages(self, customer_id: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.customers.table_name,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": keys.web_inbox_pk(customer_id, False)}},
            ConsistentRead=True,
        ):
            for item in page["Items"]:
                values = from_attribute_map(item)
                for name in ("pk", "sk", "owner_id", "preview", "expires_at"):
                    values.pop(name, None)
                records.append({name: _plain(value) for name, value in values.items()})
        return records

    def suppression_entry(self, hashed_address: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.customers.table_name,
            Key=keys.suppression_key(hashed_address),
            ConsistentRead=True,
        ).get("Item")
        if item is None:
            return None
        values = from_attribute_map(item)
        return {name: _plain(values[name]) for name in ("reason", "at") if name in values}

    def _partition(self, pk: str, what: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        for page in self.client.get_paginator("query").paginate(
            TableName=self.journeys_table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": pk}},
            ConsistentRead=True,
        ):
            for item in page["Items"]:
                values = from_attribute_map(item)
                values.pop("pk", None)
                values[_SORT_KEY_NAMES[what]] = values.pop("sk")
                records.append({name: _plain(value) for name, value in values.items()})
        return records


def _plain(value: Any) -> Any:
    """A DynamoDB value as plain JSON: whole numbers as ints, others as exact decimal text, sets as
    sorted lists, binary left out (none of these items holds any)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):
        return sorted(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return None
    return value

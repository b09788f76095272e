"""Erasing a customer in DynamoDB (Japan's APPI, GDPR): the profile, its identities, its contact
lookups, its events, enrolments, date schedules, frequency-cap counters and on-site inbox (`WEB#`,
messages waiting for the visitor, with their dismissals). docs/reports.md says
what is kept and why.

A person may be several customer ids (a visitor merged into a known user): the id given is followed
to the profile it was merged into, and every id merged into that profile is erased with it.

Order matters for a retry: everything under a customer id goes first and the profiles last, so an
erasure cut short (a time-out, a throttle) is finished by asking again; once the profiles are gone
the answer is "no such customer" and nothing is left to find. Senders skip a customer without a
profile, so nothing is sent afterwards; an enrolment written by a journey racing the erasure has no
profile to send to either.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.customers import CustomerStore, identity_key, profile_key
from cems.adapters.dynamodb.items import condition_failed
from cems.identity import identities_of
from cems.lookups import contact_hashes
from cems.models import Profile

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

    from cems.ports import CounterPort

# BatchWriteItem takes at most 25 requests a call.
MAX_BATCH_WRITE = 25
# Unprocessed items (throttling) are sent again after a growing pause, this many times at most.
MAX_BATCH_ATTEMPTS = 8


@dataclass(frozen=True)
class Erasure:
    """What was removed, as counts (no personal data: this is logged and answered)."""

    customer_id: str  # the id asked for
    customer_ids: tuple[str, ...]  # every id of the person that was erased
    profiles: int
    identities: int
    events: int
    enrolments: int
    schedules: int
    caps: int
    lookups: int = 0
    web_messages: int = 0

    def counts(self) -> dict[str, int]:
        return {
            "profiles": self.profiles,
            "identities": self.identities,
            "lookups": self.lookups,
            "events": self.events,
            "enrolments": self.enrolments,
            "schedules": self.schedules,
            "caps": self.caps,
            "web_messages": self.web_messages,
        }


class UnprocessedItemsError(RuntimeError):
    """DynamoDB kept returning unprocessed deletes (sustained throttling): ask again later."""


class CustomerEraser:
    def __init__(
        self,
        customers_table: str,
        events_table: str,
        journeys_table: str,
        client: DynamoDBClient,
        *,
        counters: CounterPort | None = None,
        sleep: Any = time.sleep,
    ) -> None:
        self.customers = CustomerStore(customers_table, client)
        self.events_table = events_table
        self.journeys_table = journeys_table
        self.client = client
        # The report's "waiting now" per step: a journey erased while waiting leaves its step.
        self.counters = counters
        self._sleep = sleep

    def person(self, customer_id: str) -> list[Profile]:
        """The profiles of the person `customer_id` belongs to: the one it was merged into (if any)
        first, then every profile merged into that one that still exists. Empty: no such customer."""
        canonical = self.customers.canonical_id(customer_id)
        target = self.customers.profile(canonical, follow_merges=False)
        if target is None:
            asked = self.customers.profile(customer_id, follow_merges=False)
            return [asked] if asked is not None else []
        # A merge hands the source's merged_ids on to the target, so one round normally finds all;
        # following merged_ids further costs nothing when there is nothing more to find.
        found: dict[str, Profile] = {target.customer_id: target}
        wanted = (target.merged_ids | {customer_id}) - found.keys()
        while wanted:
            more = self.customers.profiles(sorted(wanted))
            found.update(more)
            wanted = {m for p in more.values() for m in p.merged_ids} - found.keys() - wanted
        return [target, *(found[c] for c in sorted(found) if c != target.customer_id)]

    def erase(self, customer_id: str) -> Erasure | None:
        """Erase the person; None when there is no such customer (never was, or erased already)."""
        profiles = self.person(customer_id)
        if not profiles:
            return None
        ids = sorted({customer_id} | {i for p in profiles for i in p.all_customer_ids()})
        events = sum(self._delete_events(i) for i in ids)
        journeys: dict[str, int] = {}
        for i in ids:
            self._count_waits_ended(i)
            for name, partition in keys.journey_partitions(i).items():
                journeys[name] = journeys.get(name, 0) + self._delete_partition(
                    self.journeys_table, partition
                )
        # The on-site inboxes: rendered messages that may hold the customer's name (cems.web.inbox).
        web_messages = sum(
            self._delete_partition(self.customers.table_name, keys.web_inbox_pk(i, False)) for i in ids
        )
        identities = sum(self._delete_identities(p, ids) for p in profiles)
        lookups = self._delete_lookups(profiles, ids)
        # Merged sources before the profile they point to, so a retry still finds the person.
        removed = 0
        for profile in reversed(profiles):
            removed += self._delete(self.customers.table_name, profile_key(profile.customer_id))
        return Erasure(
            customer_id=customer_id,
            customer_ids=tuple(ids),
            profiles=removed,
            identities=identities,
            events=events,
            lookups=lookups,
            web_messages=web_messages,
            **journeys,
        )

    def _count_waits_ended(self, customer_id: str) -> None:
        """Count every journey of the customer that waits at a step as having left it, before the
        journeys are deleted (each under its `once` name, so an erasure asked again counts none
        twice). Read with the engine's model, imported here: only an erasure needs it."""
        if self.counters is None:
            return
        from pydantic import ValidationError

        from cems.adapters.dynamodb.journeys import EnrolmentStore
        from cems.scenario.engine import Enrolment
        from cems.scenario.runner import erased_journey_counts

        store = EnrolmentStore(self.journeys_table, self.client, model=Enrolment)
        try:
            enrolments = store.of_customer(customer_id)
        except ValidationError:  # an item the engine cannot read is erased all the same, uncounted
            return
        for enrolment in enrolments:
            marker, deltas = erased_journey_counts(enrolment)
            if deltas:
                self.counters.add_many(deltas, once=marker)

    # -- deletes ------------------------------------------------------------------------------------

    def _delete_identities(self, profile: Profile, ids: Sequence[str]) -> int:
        """Identity items the profile names, deleted only while they still point at this person: an
        anonymous id moved on to another customer (a shared browser) belongs to that customer now."""
        removed = 0
        placeholders = {f":c{n}": {"S": cid} for n, cid in enumerate(ids)}
        for key in identities_of(profile):
            try:
                self.client.delete_item(
                    TableName=self.customers.table_name,
                    Key=identity_key(key),
                    ConditionExpression=f"customer_id IN ({', '.join(placeholders)})",
                    ExpressionAttributeValues=placeholders,
                )
            except ClientError as exc:
                if condition_failed(exc):
                    continue  # gone already, or someone else's now
                raise
            removed += 1
        return removed

    def _delete_lookups(self, profiles: Sequence[Profile], ids: Sequence[str]) -> int:
        """The contact lookup items (cems.lookups) of every address and phone the person's profiles
        hold that name one of the person's ids: a merge moved the merged-away profile's items to the
        surviving id, and another customer giving the same address keeps theirs. Read from the
        profiles, so they go before the profiles do."""
        wanted = {(kind, hashed) for p in profiles for kind, hashed in contact_hashes(p.traits).items()}
        ours = {keys.lookup_sk(cid) for cid in ids}
        found = (
            key
            for kind, hashed in sorted(wanted)
            for key in self._keys(
                self.customers.table_name, "pk", keys.lookup_pk(kind.value, hashed), ("pk", "sk")
            )
            if key["sk"]["S"] in ours
        )
        return self._batch_delete(self.customers.table_name, found)

    def _delete(self, table: str, key: dict[str, Any]) -> int:
        answer = self.client.delete_item(TableName=table, Key=key, ReturnValues="ALL_OLD")
        return 1 if answer.get("Attributes") else 0

    def _delete_events(self, customer_id: str) -> int:
        keys = self._keys(self.events_table, "customer_id", customer_id, ("customer_id", "sk"))
        return self._batch_delete(self.events_table, keys)

    def _delete_partition(self, table: str, pk: str) -> int:
        return self._batch_delete(table, self._keys(table, "pk", pk, ("pk", "sk")))

    def _keys(
        self, table: str, hash_name: str, value: str, names: tuple[str, str]
    ) -> Iterator[dict[str, Any]]:
        for page in self.client.get_paginator("query").paginate(
            TableName=table,
            KeyConditionExpression="#h = :v",
            ExpressionAttributeNames={"#h": hash_name, "#a": names[0], "#b": names[1]},
            ExpressionAttributeValues={":v": {"S": value}},
            ProjectionExpression="#a, #b",
            ConsistentRead=True,
        ):
            yield from page["Items"]

    def _batch_delete(self, table: str, keys: Iterator[dict[str, Any]]) -> int:
        count = 0
        chunk: list[dict[str, Any]] = []
        for key in keys:
            chunk.append(key)
            if len(chunk) == MAX_BATCH_WRITE:
                self._write_deletes(table, chunk)
                count += len(chunk)
                chunk = []
        if chunk:
            self._write_deletes(table, chunk)
            count += len(chunk)
        return count

    def _write_deletes(self, table: str, keys: list[dict[str, Any]]) -> None:
        request: Any = {table: [{"DeleteRequest": {"Key": k}} for k in keys]}
        for attempt in range(MAX_BATCH_ATTEMPTS):
            answer = self.client.batch_write_item(RequestItems=request)
            # Only tables with requests left (an empty list is not a request DynamoDB accepts).
            request = {t: items for t, items in (answer.get("UnprocessedItems") or {}).items() if items}
            if not request:
                return
            self._sleep(min(2.0, 0.05 * 2**attempt))
        raise UnprocessedItemsError(f"{table}: deletes still unprocessed after {MAX_BATCH_ATTEMPTS} attempts")

"""DynamoDB adapters for customers, identities, events and de-duplication (key formats: keys.py).

Customers table: identities and profiles. Events table: one item per event; its stream feeds the
scenario engine. Idempotency table: a marker per stored message, so a re-sent message is stored once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from botocore.exceptions import BotoCoreError
from botocore.exceptions import ClientError as BotoClientError

from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.items import (
    condition_failed,
    error_code,
    from_attribute_map,
    to_attribute_map,
    to_attribute_value,
    transaction_cancelled,
)
from cems.config import MAX_TRANSACTION_ACTIONS
from cems.identity import IdentityKey, IdentityKind, identities_of
from cems.lookups import LOOKUP_TRAITS, ContactKind, contact_hashes, lookup_changes
from cems.models import Profile, StoredEvent
from cems.ports import ProfilePage, ServiceUnavailable
from cems.profiles import BOUGHT_SETS, LIMITS
from cems.writes import CommitOutcome, ProfileChange, WriteBatch

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

T = TypeVar("T")
# The collections a profile write may grow, with their maxima (cems.profiles).
_COLLECTION_LIMITS = {
    "traits": LIMITS.traits,
    "anonymous_ids": LIMITS.anonymous_ids,
    "orders": LIMITS.orders,
    **{name: LIMITS.bought for name in BOUGHT_SETS},
}
# The events the scenario engine reads of one customer, newest first: its conditions look back at most
# 395 days, and a customer flooded with events must not make each later event dearer without bound.
MAX_HISTORY_EVENTS = 1000
# BatchGetItem reads at most 100 keys a call.
MAX_BATCH_GET_KEYS = 100
# Items a Scan of scan_profile_range reads at most (a page read again: its 500 profiles and the
# identities among them, in a few Scans).
RANGE_SCAN_LIMIT = 1000


class CustomerStore:
    """Profiles and identities in the Customers table."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def resolve_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, str]:
        """Which customer each identity belongs to (BatchGetItem, 100 keys a call)."""
        unique = sorted(set(keys))
        found: dict[IdentityKey, str] = {}
        for item in self._batch_get([identity_key(k) for k in unique]):
            found[_identity_from_pk(item["pk"]["S"])] = item["customer_id"]["S"]
        return found

    def customer_for(self, key: IdentityKey) -> str | None:
        item = self.client.get_item(TableName=self.table_name, Key=identity_key(key)).get("Item")
        if item is None:
            return None
        return self.canonical_id(item["customer_id"]["S"])

    def customer_for_anonymous_id(self, anonymous_id: str) -> str | None:
        return self.customer_for(IdentityKey(IdentityKind.ANONYMOUS, anonymous_id))

    def customer_for_user_id(self, user_id: str) -> str | None:
        return self.customer_for(IdentityKey(IdentityKind.USER, user_id))

    def customers_with_contact(self, kind: ContactKind, hashed_value: str) -> list[str]:
        """The customer ids whose lookup items name this hashed email or phone (one Query of its
        partition, cems.lookups), as written: a merged-away id is not followed here."""
        found: list[str] = []
        start: dict[str, Any] | None = None
        while True:
            request: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "pk = :pk",
                "ExpressionAttributeValues": {":pk": {"S": keys.lookup_pk(kind.value, hashed_value)}},
                "ProjectionExpression": "sk",
                "ConsistentRead": True,
            }
            if start:
                request["ExclusiveStartKey"] = start
            page = self.client.query(**request)
            found.extend(keys.customer_of_lookup_sk(item["sk"]["S"]) for item in page["Items"])
            start = page.get("LastEvaluatedKey")
            if not start:
                return found

    def canonical_id(self, customer_id: str) -> str:
        """Follow merge links (identities are re-pointed on merge; this covers a read in between)."""
        seen = {customer_id}
        profile = self.profile(customer_id, follow_merges=False)
        while profile is not None and profile.merged_into and profile.merged_into not in seen:
            seen.add(profile.merged_into)
            customer_id = profile.merged_into
            profile = self.profile(customer_id, follow_merges=False)
        return customer_id

    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=profile_key(customer_id), ConsistentRead=True
        ).get("Item")
        if item is None:
            return None
        profile = profile_of(item)
        if follow_merges and profile.merged_into:
            return self.profile(self.canonical_id(customer_id), follow_merges=False)
        return profile

    def profiles(self, customer_ids: Sequence[str]) -> dict[str, Profile]:
        items = self._batch_get([profile_key(c) for c in dict.fromkeys(customer_ids)], consistent=True)
        profiles = (profile_of(i) for i in items)
        return {p.customer_id: p for p in profiles}

    def scan_profiles(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, limit: int
    ) -> ProfilePage:
        """One page of a parallel Scan's segment: the live profiles (not merged away) among `limit`
        items read (ports.ProfileScanner)."""
        page = self.client.scan(**self._profile_scan(segment, total_segments, start, limit))
        return ProfilePage(
            profiles=[profile_of(item) for item in page.get("Items", [])],
            scanned=int(page.get("ScannedCount", 0)),
            next_start=page.get("LastEvaluatedKey") or None,
        )

    def _profile_scan(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, limit: int
    ) -> dict[str, Any]:
        """A Scan request of a segment's live profiles (not merged away), `limit` items read."""
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Segment": segment,
            "TotalSegments": total_segments,
            "Limit": limit,
            "FilterExpression": "sk = :profile AND attribute_not_exists(merged_into)",
            "ExpressionAttributeValues": {":profile": {"S": keys.PROFILE_SK}},
        }
        if start:
            request["ExclusiveStartKey"] = start
        return request

    def scan_profile_page(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, profiles: int
    ) -> ProfilePage:
        """A page of up to `profiles` live profiles of a parallel Scan's segment (ports.ProfileScanner):
        Scans of `profiles` items each until that many profiles came back or the segment ended. The
        table holds identities and other items beside profiles, so one Scan's page of N items holds
        fewer than N profiles; a broadcast page is sized in recipients (a LINE multicast takes 500).
        When a Scan returns more profiles than the page still takes, the page ends at the last one
        kept: the next page starts after that profile's key (a Scan resumes after any key of its
        segment, as after its own LastEvaluatedKey). `scanned` counts the items the Scans read."""
        if profiles < 1:
            raise ValueError("a page holds at least one profile")
        found: list[Profile] = []
        scanned = 0
        cursor = start
        while True:
            answer = self.client.scan(**self._profile_scan(segment, total_segments, cursor, profiles))
            scanned += int(answer.get("ScannedCount", 0))
            items = answer.get("Items", [])
            room = profiles - len(found)
            found.extend(profile_of(item) for item in items[:room])
            if len(items) > room:  # end the page at the last profile kept
                last = items[room - 1]
                return ProfilePage(found, scanned, {"pk": last["pk"], "sk": last["sk"]})
            cursor = answer.get("LastEvaluatedKey") or None
            if cursor is None or len(found) == profiles:
                return ProfilePage(found, scanned, cursor)

    def scan_profile_range(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, end: dict[str, Any] | None
    ) -> ProfilePage:
        """Every live profile of a parallel Scan's segment after `start` through `end` (a key a page
        of scan_profile_page ended at; None: the segment's end), however many (ports.ProfileScanner):
        a broadcast page read again as far as it first went. The Scans are unfiltered (the same read
        units: a Scan pays for every item it reads, filtered or not), so the item at `end` is seen
        whatever it is, and the profiles are picked out here. In case that item is gone since (a
        customer erased, an identity moved), the item right after `end` is read first (a Scan of one
        item resuming after `end`, which DynamoDB does for a key that no longer exists too) and
        ends the range as well. `next_start` is `end`; `scanned` counts every item read."""
        after_end: dict[str, Any] | None = None
        scanned = 0
        base: dict[str, Any] = {
            "TableName": self.table_name,
            "Segment": segment,
            "TotalSegments": total_segments,
        }
        if end is not None:
            probe = self.client.scan(**base, Limit=1, ExclusiveStartKey=end)
            scanned += int(probe.get("ScannedCount", 0))
            following = probe.get("Items", [])
            after_end = _scan_key(following[0]) if following else None
        found: list[Profile] = []
        cursor = start
        while True:
            request = dict(base, Limit=RANGE_SCAN_LIMIT)
            if cursor:
                request["ExclusiveStartKey"] = cursor
            answer = self.client.scan(**request)
            scanned += int(answer.get("ScannedCount", 0))
            for item in answer.get("Items", []):
                key = _scan_key(item)
                if key == after_end:
                    return ProfilePage(found, scanned, end)
                if item["sk"] == {"S": keys.PROFILE_SK} and "merged_into" not in item:
                    found.append(profile_of(item))
                if key == end:
                    return ProfilePage(found, scanned, end)
            cursor = answer.get("LastEvaluatedKey") or None
            if cursor is None:
                return ProfilePage(found, scanned, end)

    def _batch_get(self, keys: list[dict[str, Any]], *, consistent: bool = False) -> Iterator[dict[str, Any]]:
        """Every item of `keys` that exists: 100 keys a call, unprocessed keys asked again."""
        for chunk in _chunks(keys, MAX_BATCH_GET_KEYS):
            request: Any = {self.table_name: {"Keys": list(chunk), "ConsistentRead": consistent}}
            while request:
                response = self.client.batch_get_item(RequestItems=request)
                yield from response["Responses"].get(self.table_name, [])
                request = response.get("UnprocessedKeys") or None

    # Writing -------------------------------------------------------------------------------------

    def claim_action(self, key: IdentityKey, customer_id: str, at: datetime) -> TransactWriteItemTypeDef:
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": {
                    **identity_key(key),
                    **to_attribute_map(
                        {"customer_id": customer_id, "kind": key.kind.value, "created_at": at}
                    ),
                },
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def repoint_action(self, key: IdentityKey, customer_id: str, at: datetime) -> TransactWriteItemTypeDef:
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": {
                    **identity_key(key),
                    **to_attribute_map(
                        {"customer_id": customer_id, "kind": key.kind.value, "created_at": at}
                    ),
                },
            }
        }

    def backfill_lookups(
        self, segment: int, total_segments: int, page_items: int = 500
    ) -> tuple[int, int, int]:
        """The contact lookup items of every live profile in one parallel Scan segment, for profiles
        whose traits were written before lookups existed: (profiles read, profiles given their items,
        profiles whose traits changed meanwhile). Each profile's items are put in one transaction
        with a check that its contact traits are still the values read, so a trait changed since
        (whose write put its own lookup and removed the old one) never gets a stale item back. Put
        again, an item changes nothing, so a backfill can run twice or be stopped and rerun."""
        read = written = changed = 0
        start: dict[str, Any] | None = None
        while True:
            page = self.scan_profiles(segment, total_segments, start, page_items)
            for profile in page.profiles:
                read += 1
                hashes = contact_hashes(profile.traits)
                if not hashes:
                    continue
                traits = {t: profile.traits[t] for t in LOOKUP_TRAITS if t in profile.traits}
                names = {f"#t{i}": trait for i, trait in enumerate(traits)}
                values = {f":v{i}": to_attribute_value(value) for i, value in enumerate(traits.values())}
                check: TransactWriteItemTypeDef = {
                    "ConditionCheck": {
                        "TableName": self.table_name,
                        "Key": profile_key(profile.customer_id),
                        "ConditionExpression": " AND ".join(
                            f"traits.#t{i} = :v{i}" for i in range(len(traits))
                        ),
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
                puts = [
                    self.lookup_put_action(k, h, profile.customer_id, clock.now()) for k, h in hashes.items()
                ]
                for attempt in range(3):  # a collision with another transaction is tried again
                    try:
                        self.client.transact_write_items(TransactItems=[check, *puts])
                        written += 1
                        break
                    except BotoClientError as error:
                        if not transaction_cancelled(error):
                            raise
                        reasons = error.response.get("CancellationReasons") or [{}]
                        if reasons[0].get("Code") == "ConditionalCheckFailed":
                            changed += 1  # the traits changed since they were read
                            break
                        if attempt == 2:
                            raise
            start = page.next_start
            if start is None:
                return read, written, changed

    def lookup_put_action(
        self, kind: ContactKind, hashed_value: str, customer_id: str, at: datetime
    ) -> TransactWriteItemTypeDef:
        """A contact lookup item (cems.lookups); put again, it changes nothing that matters."""
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": {
                    **keys.lookup_key(kind.value, hashed_value, customer_id),
                    **to_attribute_map({"customer_id": customer_id, "kind": kind.value, "created_at": at}),
                },
            }
        }

    def lookup_delete_action(
        self, kind: ContactKind, hashed_value: str, customer_id: str
    ) -> TransactWriteItemTypeDef:
        return {
            "Delete": {
                "TableName": self.table_name,
                "Key": keys.lookup_key(kind.value, hashed_value, customer_id),
            }
        }

    def lookup_actions(self, change: ProfileChange, at: datetime) -> list[TransactWriteItemTypeDef]:
        """The lookup writes that go with a profile change's contact traits, in its transaction:
        the old values' items removed when the profile was read (`contact_before`), the new ones
        put. Unread, the profile write's condition (profile_action) ensures there is no old value
        other than the new one."""
        removed, put = lookup_changes(change.traits, change.contact_before or {})
        return [
            *(self.lookup_delete_action(k, h, change.customer_id) for k, h in removed.items()),
            *(self.lookup_put_action(k, h, change.customer_id, at) for k, h in put.items()),
        ]

    def profile_action(self, change: ProfileChange, at: datetime) -> TransactWriteItemTypeDef:
        if change.growth is None:
            change.fit_to(None)
        if change.is_new:
            profile = Profile(
                customer_id=change.customer_id,
                user_id=change.user_id,
                anonymous_ids=change.anonymous_ids,
                traits=change.traits,
                orders=change.orders,
                order_rollup=change.order_rollup,
                products_bought=change.products_bought,
                skus_bought=change.skus_bought,
                categories_bought=change.categories_bought,
                line_user_id=change.line_user_id,
                channels=change.channels,
                topics=change.topics,
                engagement=change.engagement_after or {},
                first_seen_at=change.first_seen_at,
                updated_at=at,
                version=1,
            )
            return {
                "Put": {
                    "TableName": self.table_name,
                    "Item": self.profile_item(profile),
                    "ConditionExpression": "attribute_not_exists(pk)",
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            }
        update = _UpdateExpression()
        update.set("updated_at", at)
        update.add("version", 1)
        if change.user_id:
            update.set_if_absent("user_id", change.user_id)
        if change.line_user_id:
            update.set_if_absent("line_user_id", change.line_user_id)
        for channel, state in change.channels.items():
            update.set_in("channels", channel.value, state)
        for topic, choice in change.topics.items():
            update.set(keys.topic_attribute(topic), choice)
        for name, value in change.traits.items():
            update.set_in("traits", name, value)
        for order_id, order in change.orders.items():
            update.set_in("orders", order_id, order)
        for order_id in change.folded_orders:
            update.remove_in("orders", order_id)
        if change.order_rollup is not None:
            update.set("order_rollup", change.order_rollup)
        if change.engagement_after is not None:
            # Written whole (cems.activity folds and trims it): conditional on the version it was
            # folded from, or, folded from nothing, on the profile having none yet.
            update.set("engagement", change.engagement_after)
        for attribute in ("anonymous_ids", *BOUGHT_SETS):
            values = getattr(change, attribute)
            if values:
                update.add(attribute, set(values))
        # A profile merged away since we resolved it must not take new facts: retry instead.
        conditions = ["attribute_exists(pk) AND attribute_not_exists(merged_into)"]
        # Each collection it adds to must still have room (cems.profiles), checked by DynamoDB so
        # that concurrent writers cannot pass a maximum together.
        for attribute, limit in _COLLECTION_LIMITS.items():
            gained = (change.growth or {}).get(attribute, 0)
            if gained > 0:
                name = update.name(attribute)
                conditions.append(
                    f"(attribute_not_exists({name}) OR size({name}) <= {update.value(limit - gained)})"
                )
        if change.engagement_after is not None and not change.engagement_read:
            conditions.append(f"attribute_not_exists({update.name('engagement')})")
        if change.expected_version is not None:
            conditions.append(f"{update.name('version')} = {update.value(change.expected_version)}")
        if change.user_id and change.user_id_joins_only_new:
            # A user id joins only a customer without one (or with this one): a browser last used by
            # another signed-in customer must not make the new user part of them (cems.ingest).
            name = update.name("user_id")
            conditions.append(f"(attribute_not_exists({name}) OR {name} = {update.value(change.user_id)})")
        conditions += _contact_conditions(update, change.traits, change.contact_before)
        return {
            "Update": {
                "TableName": self.table_name,
                "Key": profile_key(change.customer_id),
                **update.render(),  # type: ignore[typeddict-item]
                "ConditionExpression": " AND ".join(conditions),
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
            }
        }

    def set_traits(self, customer_id: str, traits: Mapping[str, Any], at: datetime | None = None) -> bool:
        """Sets `traits` on the profile (UpdateItem: `SET traits.#k = :v`, `version ADD 1`), following
        a merge that happened since the profile was read. Setting a value it already has changes
        nothing but `version` and `updated_at`: a repeated call is harmless. False: no such profile."""
        try:
            return self._set_traits(customer_id, traits, at)
        except (BotoCoreError, BotoClientError) as exc:
            raise ServiceUnavailable(f"traits not set: {type(exc).__name__}") from exc

    def _set_traits(self, customer_id: str, traits: Mapping[str, Any], at: datetime | None) -> bool:
        if not traits:
            return True
        at = at or clock.now()
        if any(name in LOOKUP_TRAITS for name in traits):
            return self._set_contact_traits(customer_id, traits, at)
        for _ in range(3):  # a profile merged away in between: once more on the merged one
            update = _UpdateExpression()
            update.set("updated_at", at)
            update.add("version", 1)
            for name, value in traits.items():
                update.set_in("traits", name, value)
            try:
                self.client.update_item(
                    TableName=self.table_name,
                    Key=profile_key(customer_id),
                    **update.render(),
                    ConditionExpression="attribute_exists(pk) AND attribute_not_exists(merged_into)",
                )
                return True
            except BotoClientError as exc:
                if error_code(exc) == "ValidationException" and self._add_traits_map(customer_id):
                    continue  # an item without a traits map: give it one, then set the traits
                if not condition_failed(exc):
                    raise
            canonical = self.canonical_id(customer_id)
            if canonical == customer_id:
                return False
            customer_id = canonical
        return False

    def _set_contact_traits(self, customer_id: str, traits: Mapping[str, Any], at: datetime) -> bool:
        """set_traits of traits with contact lookups (a scenario's set_trait of `email`): the profile
        read first, so the old value's lookup is removed in the same transaction as the traits and
        the new one's put; the write is conditional on the version read (a change between: again)."""
        for _ in range(3):
            profile = self.profile(customer_id)
            if profile is None:
                return False
            update = _UpdateExpression()
            update.set("updated_at", at)
            update.add("version", 1)
            for name, value in traits.items():
                update.set_in("traits", name, value)
            version = update.name("version")
            condition = (
                f"attribute_exists(pk) AND attribute_not_exists(merged_into) AND "
                f"{version} = {update.value(profile.version)}"
            )
            removed, put = lookup_changes(traits, profile.traits)
            actions: list[TransactWriteItemTypeDef] = [
                {
                    "Update": {
                        "TableName": self.table_name,
                        "Key": profile_key(profile.customer_id),
                        **update.render(),  # type: ignore[typeddict-item]
                        "ConditionExpression": condition,
                    }
                },
                *(self.lookup_delete_action(k, h, profile.customer_id) for k, h in removed.items()),
                *(self.lookup_put_action(k, h, profile.customer_id, at) for k, h in put.items()),
            ]
            try:
                self.client.transact_write_items(TransactItems=actions)
            except BotoClientError as exc:
                if not transaction_cancelled(exc):
                    raise
                continue
            return True
        return False

    def _add_traits_map(self, customer_id: str) -> bool:
        """Adds an empty `traits` map to a profile that has none; False if it had one already."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=profile_key(customer_id),
                UpdateExpression="SET #t = :empty",
                ConditionExpression="attribute_exists(pk) AND attribute_not_exists(#t)",
                ExpressionAttributeNames={"#t": "traits"},
                ExpressionAttributeValues={":empty": {"M": {}}},
            )
        except BotoClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def profile_item(self, profile: Profile) -> dict[str, Any]:
        values = profile.model_dump(
            exclude={"purchase_count", "monetary_total", "first_purchase_at", "last_purchase_at", "topics"}
        )
        # One attribute per topic (keys.topic_attribute), as profile_action sets them.
        topics = profile.model_dump(include={"topics"})["topics"]
        values.update({keys.topic_attribute(topic): choice for topic, choice in topics.items()})
        return {**profile_key(profile.customer_id), **to_attribute_map(values)}


def profile_of(item: Mapping[str, Any]) -> Profile:
    """The profile a stored item holds, its topic attributes gathered into `topics`."""
    values = from_attribute_map(item)
    values["topics"] = {
        topic: values.pop(name) for name in list(values) if (topic := keys.topic_of_attribute(name))
    }
    return Profile.model_validate(values)


class _UpdateExpression:
    """Builds a DynamoDB UpdateExpression with placeholder names and values."""

    def __init__(self) -> None:
        self._sets: list[str] = []
        self._adds: list[str] = []
        self._removes: list[str] = []
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        # One placeholder per name, so a condition can name an attribute the update also sets.
        self._placeholders: dict[str, str] = {}

    def _name(self, name: str) -> str:
        if name not in self._placeholders:
            self._placeholders[name] = f"#n{len(self.names)}"
            self.names[self._placeholders[name]] = name
        return self._placeholders[name]

    def name(self, name: str) -> str:
        """A placeholder for `name`, for a condition written beside this update."""
        return self._name(name)

    def value(self, value: Any) -> str:
        return self._value(value)

    def _value(self, value: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = to_attribute_value(value)
        return placeholder

    def set(self, attribute: str, value: Any) -> None:
        self._sets.append(f"{self._name(attribute)} = {self._value(value)}")

    def set_if_absent(self, attribute: str, value: Any) -> None:
        name = self._name(attribute)
        self._sets.append(f"{name} = if_not_exists({name}, {self._value(value)})")

    def set_in(self, map_attribute: str, key: str, value: Any) -> None:
        self._sets.append(f"{self._name(map_attribute)}.{self._name(key)} = {self._value(value)}")

    def add(self, attribute: str, value: Any) -> None:
        self._adds.append(f"{self._name(attribute)} {self._value(value)}")

    def remove_in(self, map_attribute: str, key: str) -> None:
        self._removes.append(f"{self._name(map_attribute)}.{self._name(key)}")

    def render(self) -> dict[str, Any]:
        clauses = []
        if self._sets:
            clauses.append("SET " + ", ".join(self._sets))
        if self._adds:
            clauses.append("ADD " + ", ".join(self._adds))
        if self._removes:
            clauses.append("REMOVE " + ", ".join(self._removes))
        return {
            "UpdateExpression": " ".join(clauses),
            "ExpressionAttributeNames": self.names,
            "ExpressionAttributeValues": self.values,
        }


class EventStore:
    """Events in the Events table, keyed by customer and time."""

    def __init__(self, table_name: str, client: DynamoDBClient, retention: timedelta) -> None:
        self.table_name = table_name
        self.client = client
        self.retention = retention

    def event_action(self, event: StoredEvent) -> TransactWriteItemTypeDef:
        values = event.model_dump()
        values["sk"] = keys.event_sk(clock.iso(event.timestamp), event.message_id)
        values["expires_at"] = int((event.received_at + self.retention).timestamp())
        return {"Put": {"TableName": self.table_name, "Item": to_attribute_map(values)}}

    def events_of(self, customer_id: str, limit: int | None = None) -> list[StoredEvent]:
        """A customer id's events, oldest first; with `limit`, only the latest `limit` of them."""
        events: list[StoredEvent] = []
        start: dict[str, Any] | None = None
        while limit is None or len(events) < limit:
            request: dict[str, Any] = {
                "TableName": self.table_name,
                "KeyConditionExpression": "customer_id = :c",
                "ExpressionAttributeValues": {":c": {"S": customer_id}},
                "ConsistentRead": True,
                # The latest first when only some are wanted.
                "ScanIndexForward": limit is None,
            }
            if limit is not None:
                request["Limit"] = limit - len(events)
            if start:
                request["ExclusiveStartKey"] = start
            page = self.client.query(**request)
            events.extend(StoredEvent.model_validate(from_attribute_map(i)) for i in page["Items"])
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        return events if limit is None else events[::-1]

    def history(self, profile: Profile, limit: int | None = MAX_HISTORY_EVENTS) -> list[StoredEvent]:
        """A profile's latest events (at most `limit` per customer id, so a customer flooded with
        events costs a bounded read), including those stored under ids merged into it, oldest first."""
        events = [e for cid in sorted(profile.all_customer_ids()) for e in self.events_of(cid, limit)]
        return sorted(events, key=lambda e: (e.timestamp, e.message_id))


def stored_event_from_image(image: Mapping[str, Any]) -> StoredEvent:
    """An Events table item as a stream's NewImage carries it (DynamoDB JSON) back to the event;
    the table's own attributes (sk, expires_at) are dropped."""
    values = from_attribute_map(image)
    values.pop("sk", None)
    values.pop("expires_at", None)
    return StoredEvent.model_validate(values)


class MessageLedger:
    """Remembers which messageIds have been stored, so a re-sent message is stored (and triggers) once."""

    def __init__(self, table_name: str, ttl: timedelta) -> None:
        self.table_name = table_name
        self.ttl = ttl

    def marker_action(self, site_id: str, message_id: str, at: datetime) -> TransactWriteItemTypeDef:
        return {
            "Put": {
                "TableName": self.table_name,
                "Item": {
                    "id": {"S": keys.message_marker_id(site_id, message_id)},
                    "expiration": {"N": str(int((at + self.ttl).timestamp()))},
                },
                "ConditionExpression": "attribute_not_exists(id)",
            }
        }


class IngestStore:
    """Commits a WriteBatch atomically and says why it did not, when it did not."""

    def __init__(self, customers: CustomerStore, events: EventStore, ledger: MessageLedger) -> None:
        self.customers = customers
        self.events = events
        self.ledger = ledger
        self.client = customers.client

    def resolve_identities(self, keys: Iterable[IdentityKey]) -> dict[IdentityKey, str]:
        return self.customers.resolve_identities(keys)

    def profiles(self, customer_ids: Sequence[str]) -> dict[str, Profile]:
        return self.customers.profiles(customer_ids)

    def commit(self, batch: WriteBatch, at: datetime) -> CommitOutcome:
        actions: list[TransactWriteItemTypeDef] = []
        # What each action is, to read TransactionCanceledException's per-action reasons.
        roles: list[tuple[str, str]] = []
        for event in batch.events:
            actions.append(self.events.event_action(event))
            roles.append(("event", event.message_id))
            actions.append(self.ledger.marker_action(event.site_id, event.message_id, at))
            roles.append(("marker", event.message_id))
        for key, customer_id in batch.claims.items():
            actions.append(self.customers.claim_action(key, customer_id, at))
            roles.append(("claim", key.value))
        for change in batch.profiles.values():
            if not change.is_empty():
                actions.append(self.customers.profile_action(change, at))
                roles.append(("profile", change.customer_id))
                lookups = self.customers.lookup_actions(change, at)
                actions += lookups
                roles += [("lookup", change.customer_id)] * len(lookups)
        if not actions:
            return CommitOutcome(committed=True)
        assert len(actions) <= MAX_TRANSACTION_ACTIONS, "the planner keeps batches within one transaction"
        try:
            self.client.transact_write_items(TransactItems=actions)
        except BotoClientError as exc:
            if not transaction_cancelled(exc):
                raise
            reasons = exc.response.get("CancellationReasons", [])
            failed = [roles[i] for i, r in enumerate(reasons) if r.get("Code") == "ConditionalCheckFailed"]
            if not failed:
                raise
            refused = tuple(
                profile_of(r["Item"])
                for i, r in enumerate(reasons)
                if r.get("Code") == "ConditionalCheckFailed" and roles[i][0] == "profile" and r.get("Item")
            )
            return CommitOutcome(
                committed=False,
                duplicate_message_ids=frozenset(ref for role, ref in failed if role == "marker"),
                refused_profiles=refused,
            )
        return CommitOutcome(committed=True)

    def merge(self, merged: Profile, source: Profile, at: datetime) -> bool:
        """Write a merge: the target takes everything, the source points at it, identities move.

        Both profiles are conditioned on the versions read, so a concurrent change retries the merge.
        """
        actions: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self.customers.table_name,
                    "Item": self.customers.profile_item(
                        merged.model_copy(update={"version": merged.version + 1})
                    ),
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {":v": {"N": str(merged.version)}},
                }
            },
            {
                "Update": {
                    "TableName": self.customers.table_name,
                    "Key": profile_key(source.customer_id),
                    "UpdateExpression": "SET merged_into = :t, updated_at = :at, #v = :next",
                    "ConditionExpression": "#v = :v",
                    "ExpressionAttributeNames": {"#v": "version"},
                    "ExpressionAttributeValues": {
                        ":t": {"S": merged.customer_id},
                        ":at": {"S": clock.iso(at)},
                        ":v": {"N": str(source.version)},
                        ":next": {"N": str(source.version + 1)},
                    },
                }
            },
        ]
        actions += self._merged_lookups(merged, source, at)
        moving = identities_of(source)
        # Identities beyond one transaction are re-pointed after it; merged_into covers reads between.
        in_transaction = MAX_TRANSACTION_ACTIONS - len(actions)
        actions += [self.customers.repoint_action(k, merged.customer_id, at) for k in moving[:in_transaction]]
        try:
            self.client.transact_write_items(TransactItems=actions)
        except BotoClientError as exc:
            if transaction_cancelled(exc):
                return False
            raise
        for key in moving[in_transaction:]:
            self.client.put_item(**self.customers.repoint_action(key, merged.customer_id, at)["Put"])
        return True

    def _merged_lookups(
        self, merged: Profile, source: Profile, at: datetime
    ) -> list[TransactWriteItemTypeDef]:
        """A merge's lookup writes: the merged-away customer's items moved to the surviving one (its
        address still finds the person, whose merged-away profile still holds it; erasure removes
        them), and the merged profile's own put again (idempotent; it may hold the source's)."""
        source_lookups = contact_hashes(source.traits)
        actions = [
            self.customers.lookup_delete_action(k, h, source.customer_id) for k, h in source_lookups.items()
        ]
        puts = {(k, h) for k, h in source_lookups.items()} | set(contact_hashes(merged.traits).items())
        actions += [self.customers.lookup_put_action(k, h, merged.customer_id, at) for k, h in sorted(puts)]
        return actions

    def move_identity(self, key: IdentityKey, source_id: str, target_id: str, at: datetime) -> bool:
        """Re-point one anonymous id from one customer to another without merging them."""
        name = "anonymous_ids"
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            **self.customers.repoint_action(key, target_id, at)["Put"],
                            "ConditionExpression": "customer_id = :s",
                            "ExpressionAttributeValues": {":s": {"S": source_id}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.customers.table_name,
                            "Key": profile_key(source_id),
                            "UpdateExpression": "DELETE #a :id ADD #v :one",
                            "ExpressionAttributeNames": {"#a": name, "#v": "version"},
                            "ExpressionAttributeValues": {":id": {"SS": [key.value]}, ":one": {"N": "1"}},
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.customers.table_name,
                            "Key": profile_key(target_id),
                            "UpdateExpression": "ADD #a :id, #v :one",
                            # The target keeps at most LIMITS.anonymous_ids (cems.profiles).
                            "ConditionExpression": "attribute_not_exists(#a) OR size(#a) < :cap",
                            "ExpressionAttributeNames": {"#a": name, "#v": "version"},
                            "ExpressionAttributeValues": {
                                ":id": {"SS": [key.value]},
                                ":one": {"N": "1"},
                                ":cap": {"N": str(LIMITS.anonymous_ids)},
                            },
                        }
                    },
                ]
            )
        except BotoClientError as exc:
            if transaction_cancelled(exc):
                return False
            raise
        return True


@dataclass
class Stores:
    """Every store of customers and events (built by cems.wiring)."""

    customers: CustomerStore
    events: EventStore
    ledger: MessageLedger
    ingest: IngestStore


def _contact_conditions(
    update: _UpdateExpression, traits: Mapping[str, Any], before: Mapping[str, Any] | None
) -> list[str]:
    """Conditions that keep a profile's contact lookups true to its traits (cems.lookups). Read
    before (`before`): each lookup trait the write sets is still as read (the lookup writes remove
    that value's item). Not read: each is absent or already the value set (nothing to remove); when
    the customer had another value, the write is refused and the profile returned (ALL_OLD), and
    the next attempt reads it as `before`."""
    conditions: list[str] = []
    for trait in LOOKUP_TRAITS:
        if trait not in traits:
            continue
        path = f"{update.name('traits')}.{update.name(trait)}"
        if before is None:
            conditions.append(f"(attribute_not_exists({path}) OR {path} = {update.value(traits[trait])})")
        elif trait in before:
            conditions.append(f"{path} = {update.value(before[trait])}")
        else:
            conditions.append(f"attribute_not_exists({path})")
    return conditions


def _scan_key(item: dict[str, Any]) -> dict[str, Any]:
    """An item's key, as a Scan's LastEvaluatedKey names it."""
    return {"pk": item["pk"], "sk": item["sk"]}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def profile_key(customer_id: str) -> dict[str, Any]:
    return keys.profile_key(customer_id)


def identity_key(key: IdentityKey) -> dict[str, Any]:
    return keys.identity_key(key.kind.value, key.value)


def _identity_from_pk(pk: str) -> IdentityKey:
    kind, value = keys.identity_from_pk(pk)
    return IdentityKey(IdentityKind(kind), value)

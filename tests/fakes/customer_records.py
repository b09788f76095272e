"""An in-memory ports.CustomerRecords over the in-memory customers (tests/fakes/customers.py): lookups,
identity items, profiles and events as ingest left them, with journeys and suppression entries a
test arranges. Every read counts in `reads`, by kind, so a test can say what a lookup cost."""

from __future__ import annotations

from collections import Counter
from typing import Any

from cems.identity import IdentityKey
from cems.lookups import ContactKind
from cems.models import Profile, StoredEvent

from tests.fakes.customers import InMemoryCustomers


class InMemoryCustomerRecords:
    def __init__(self, customers: InMemoryCustomers | None = None) -> None:
        self.customers = customers or InMemoryCustomers()
        # customer id -> partition name (enrolments, schedules, caps) -> records.
        self.journeys: dict[str, dict[str, list[dict[str, Any]]]] = {}
        self.suppressed: dict[str, dict[str, Any]] = {}
        # customer id -> on-site inbox records.
        self.inbox: dict[str, list[dict[str, Any]]] = {}
        self.reads: Counter[str] = Counter()

    def customers_with_contact(self, kind: ContactKind, hashed_value: str) -> list[str]:
        self.reads["lookup"] += 1
        return self.customers.customers_with_contact(kind, hashed_value)

    def identity_owner(self, key: IdentityKey) -> str | None:
        self.reads["identity"] += 1
        return self.customers.identities.get(key)

    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None:
        self.reads["profile"] += 1
        return self.customers.profile(customer_id, follow_merges=follow_merges)

    def person(self, customer_id: str) -> list[Profile]:
        """As CustomerEraser.person: the surviving profile first, then every profile merged into it."""
        self.reads["person"] += 1
        target = self.customers.profile(customer_id)
        if target is None:
            return []
        merged = [
            self.customers.stored_profiles[c]
            for c in sorted(target.merged_ids)
            if c in self.customers.stored_profiles
        ]
        return [target, *(p.model_copy(deep=True) for p in merged)]

    def events_of(self, customer_id: str, limit: int | None = None) -> list[StoredEvent]:
        self.reads["events"] += 1
        events = self.customers.events_of(customer_id)
        return events if limit is None else events[-limit:] if limit else []

    def enrolments(self, customer_id: str) -> list[dict[str, Any]]:
        self.reads["journeys"] += 1
        return [dict(r) for r in self.journeys.get(customer_id, {}).get("enrolments", [])]

    def journey_records(self, customer_id: str) -> dict[str, list[dict[str, Any]]]:
        self.reads["journeys"] += 3
        held = self.journeys.get(customer_id, {})
        return {name: [dict(r) for r in held.get(name, [])] for name in ("enrolments", "schedules", "caps")}

    def web_messages(self, customer_id: str) -> list[dict[str, Any]]:
        self.reads["web"] += 1
        return [dict(r) for r in self.inbox.get(customer_id, [])]

    def suppression_entry(self, hashed_address: str) -> dict[str, Any] | None:
        self.reads["suppression"] += 1
        entry = self.suppressed.get(hashed_address)
        return None if entry is None else dict(entry)

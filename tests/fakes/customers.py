"""In-memory customers for the runner, the senders and broadcasts: the ingest fake's profiles and
events, read as CustomerStore and EventStore read them (merges followed, histories merged), with the
runner's trait writes and a broadcast's segmented scan."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cems import clock
from cems.adapters.dynamodb.customers import MAX_HISTORY_EVENTS
from cems.identity import IdentityKey, IdentityKind, identities_of
from cems.lookups import contact_hashes, lookup_changes
from cems.models import Profile, StoredEvent
from cems.ports import ProfilePage

from tests.fakes.ingest_store import InMemoryIngestStore


class InMemoryCustomers(InMemoryIngestStore):
    """Profiles, identities and events in dictionaries (one world for ingest and what reads it)."""

    def put_profile(self, profile: Profile) -> Profile:
        """Stores a profile as a test arranges it (no ingest rules), with its identities."""
        self.stored_profiles[profile.customer_id] = profile.model_copy(deep=True)
        for key in identities_of(profile):
            self.identities.setdefault(key, profile.customer_id)
        self._relookup(profile.customer_id, {}, contact_hashes(profile.traits))
        return profile

    def put_event(self, event: StoredEvent) -> StoredEvent:
        self.events[(event.customer_id, f"{event.timestamp.isoformat()}#{event.message_id}")] = event
        return event

    # -- CustomerReader, CustomerProfiles, CustomerDirectory, ProfileWriter --------------------------

    def profile(self, customer_id: str, *, follow_merges: bool = True) -> Profile | None:
        if follow_merges:
            return super().profile(customer_id)
        stored = self.stored_profiles.get(customer_id)
        return None if stored is None else stored.model_copy(deep=True)

    def customer_for(self, key: IdentityKey) -> str | None:
        customer_id = self.identities.get(key)
        if customer_id is None:
            return None
        profile = self.profile(customer_id)
        return customer_id if profile is None else profile.customer_id

    def customer_for_anonymous_id(self, anonymous_id: str) -> str | None:
        return self.customer_for(IdentityKey(IdentityKind.ANONYMOUS, anonymous_id))

    def customer_for_user_id(self, user_id: str) -> str | None:
        return self.customer_for(IdentityKey(IdentityKind.USER, user_id))

    def set_traits(self, customer_id: str, traits: Mapping[str, Any], at: datetime | None = None) -> bool:
        """Sets the traits on the profile a merge left (False: no such profile), as the store's
        conditional UpdateItem does; the same value again changes only `version` and `updated_at`."""
        if not traits:
            return True
        profile = self.profile(customer_id)
        if profile is None:
            return False
        removed, put = lookup_changes(traits, profile.traits)
        self._relookup(profile.customer_id, removed, put)
        self.stored_profiles[profile.customer_id] = profile.model_copy(
            update={
                "traits": {**profile.traits, **traits},
                "version": profile.version + 1,
                "updated_at": at or clock.now(),
            }
        )
        return True

    # -- EventHistory --------------------------------------------------------------------------------

    def history(self, profile: Profile, limit: int | None = MAX_HISTORY_EVENTS) -> list[StoredEvent]:
        """The latest `limit` events of each id merged into the profile, oldest first."""
        events: list[StoredEvent] = []
        for customer_id in sorted(profile.all_customer_ids()):
            own = self.events_of(customer_id)
            events += own if limit is None else own[-limit:]
        return sorted(events, key=lambda e: (e.timestamp, e.message_id))

    # -- ProfileScanner ------------------------------------------------------------------------------

    def scan_profiles(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, limit: int
    ) -> ProfilePage:
        """One page of a segment: every profile belongs to one segment, and a page reads at most
        `limit` of them, live or merged away (only live ones are returned, as the Scan's filter does)."""
        ids = sorted(cid for cid in self.stored_profiles if _segment(cid, total_segments) == segment)
        after = None if start is None else start["after"]
        remaining = [cid for cid in ids if after is None or cid > after]
        read = remaining[:limit]
        live = [self.stored_profiles[c] for c in read if not self.stored_profiles[c].merged_into]
        more = len(remaining) > limit
        return ProfilePage(
            profiles=[p.model_copy(deep=True) for p in live],
            scanned=len(read),
            next_start={"after": read[-1]} if more else None,
        )

    def scan_profile_page(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, profiles: int
    ) -> ProfilePage:
        """Up to `profiles` live profiles of a segment, as CustomerStore.scan_profile_page reads them."""
        if profiles < 1:
            raise ValueError("a page holds at least one profile")
        ids = sorted(cid for cid in self.stored_profiles if _segment(cid, total_segments) == segment)
        after = None if start is None else start["after"]
        remaining = [cid for cid in ids if after is None or cid > after]
        live = [cid for cid in remaining if not self.stored_profiles[cid].merged_into]
        page = live[:profiles]
        more = len(live) > profiles
        read = remaining[: remaining.index(page[-1]) + 1] if more and page else remaining
        return ProfilePage(
            profiles=[self.stored_profiles[c].model_copy(deep=True) for c in page],
            scanned=len(read),
            next_start={"after": page[-1]} if more else None,
        )

    def scan_profile_range(
        self, segment: int, total_segments: int, start: dict[str, Any] | None, end: dict[str, Any] | None
    ) -> ProfilePage:
        """Every live profile of a segment after `start` through `end`, as CustomerStore
        .scan_profile_range reads them (the fake's keys are ordered by customer id, so a key whose
        profile is gone still marks its place)."""
        ids = sorted(cid for cid in self.stored_profiles if _segment(cid, total_segments) == segment)
        after = None if start is None else start["after"]
        through = None if end is None else end["after"]
        read = [cid for cid in ids if (after is None or cid > after) and (through is None or cid <= through)]
        live = [cid for cid in read if not self.stored_profiles[cid].merged_into]
        return ProfilePage(
            profiles=[self.stored_profiles[c].model_copy(deep=True) for c in live],
            scanned=len(read),
            next_start=end,
        )


def _segment(customer_id: str, total_segments: int) -> int:
    digest = hashlib.sha256(customer_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % total_segments

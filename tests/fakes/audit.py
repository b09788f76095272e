"""An in-memory AuditStore with the DynamoDB adapter's rules: an id is written once, a time range is
read newest first in pages, and a cursor is the last entry's key (tests/integration/test_audit_store.py
runs the same assertions on the adapter)."""

from __future__ import annotations

import threading
from datetime import datetime

from cems import clock
from cems.audit import AuditAction, AuditEntry, AuditPage, parse_key


class InMemoryAuditStore:
    def __init__(self) -> None:
        self.entries: dict[str, AuditEntry] = {}
        self.appends = 0
        self._lock = threading.Lock()

    def append(self, entry: AuditEntry) -> bool:
        with self._lock:
            self.appends += 1
            if entry.id in self.entries:
                return False
            self.entries[entry.id] = entry
            return True

    def query(
        self,
        since: datetime,
        until: datetime,
        actor: str | None = None,
        action: AuditAction | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> AuditPage:
        if cursor is not None:
            parse_key(cursor)
        with self._lock:
            newest_first = sorted(self.entries.values(), key=lambda e: e.key, reverse=True)
        # Compared as the adapter's key condition compares: ISO times, to the millisecond.
        low, high = clock.iso(since), clock.iso(until)
        matching = [
            e
            for e in newest_first
            if low <= e.key < high
            and (cursor is None or e.key < cursor)
            and (actor is None or e.actor == actor)
            and (action is None or e.action == action)
        ]
        page = matching[:limit]
        more = len(matching) > limit
        return AuditPage(page, page[-1].key if more else None)

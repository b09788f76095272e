"""An in-memory AuditStore with the DynamoDB adapter's rules: an id is written once, and a time range is
read newest first in pages through cems.audit.page_of, the rule the adapter reads by too
(tests/integration/test_audit_store.py runs the same assertions on both)."""

from __future__ import annotations

import threading
from datetime import datetime

from cems.audit import AuditAction, AuditEntry, AuditPage, page_of


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
        with self._lock:
            newest_first = sorted(self.entries.values(), key=lambda e: e.key, reverse=True)
        return page_of(newest_first, since, until, actor, action, limit, cursor)

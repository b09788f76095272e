"""An in-memory WebInbox and BrowserOwners (cems.ports): on-site inboxes in a dictionary, with the
DynamoDB adapter's rules (tests/integration/test_web_inbox_contract.py runs the same assertions on
both), and which customer each browser's anonymous id names."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Literal

from cems.web.inbox import InboxItem, InboxOwner


class InMemoryWebInbox:
    def __init__(self) -> None:
        self.stored: dict[tuple[InboxOwner, str], InboxItem] = {}
        self.puts = 0
        # Makes the next N puts raise, as a DynamoDB outage would.
        self.fail_puts = 0
        self._lock = threading.Lock()
        # BrowserOwners: anonymous id -> the customer its identity item names.
        self.browsers: dict[str, str] = {}
        self.owner_reads = 0
        self.item_reads = 0

    def owner_of_browser(self, anonymous_id: str) -> str | None:
        self.owner_reads += 1
        return self.browsers.get(anonymous_id)

    def put(self, item: InboxItem) -> bool:
        with self._lock:
            self.puts += 1
            if self.fail_puts:
                self.fail_puts -= 1
                raise ConnectionError("the inbox is unavailable")
            key = (item.owner, item.dispatch_key)
            if key in self.stored:
                return False
            self.stored[key] = item
            return True

    def items(self, owner: InboxOwner, limit: int) -> list[InboxItem]:
        self.item_reads += 1
        mine = [item for (o, _), item in sorted(self.stored.items(), key=lambda kv: kv[0][1]) if o == owner]
        return mine[:limit]

    def mark(
        self, owner: InboxOwner, dispatch_key: str, field: Literal["shown_at", "dismissed_at"], at: datetime
    ) -> bool:
        with self._lock:
            item = self.stored.get((owner, dispatch_key))
            if item is None or getattr(item, field) is not None:
                return False
            self.stored[(owner, dispatch_key)] = item.model_copy(update={field: at})
            return True

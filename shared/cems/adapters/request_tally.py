"""Counting the HTTP requests boto3 clients send (ports.RequestTally).

botocore fires `before-send` for every HTTP send, a retry included: each is a request AWS receives
and bills. The audience count reports its cost in requests with this (cems.console.audience).
"""

from __future__ import annotations

import threading
from typing import Any


class ClientRequestTally:
    """Every request the given clients send from now on, whichever thread sends it."""

    def __init__(self, *clients: Any) -> None:
        self._sent = 0
        self._lock = threading.Lock()
        for client in clients:
            client.meta.events.register("before-send", self._on_send)

    def _on_send(self, **_: Any) -> None:
        with self._lock:
            self._sent += 1

    def sent(self) -> int:
        with self._lock:
            return self._sent

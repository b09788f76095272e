"""An in-memory DeliveryClaims: every channel's delivery claims in one dictionary, keyed by channel,
dispatch and unit, with the Deliveries table's rules (tests/integration/test_delivery_claims.py runs
the same assertions on it and on the DynamoDB adapter). Claims are dictionaries shaped as the adapter
reads them back (times as ISO strings)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from cems import clock
from cems.models import Channel
from cems.ports import ClaimAnswer


def _stored(value: Any) -> Any:
    return clock.iso(value) if isinstance(value, datetime) else value


class InMemoryDeliveryClaims:
    def __init__(self) -> None:
        self.claims: dict[tuple[Channel, str, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def read(self, channel: Channel, idempotency_key: str, unit: str) -> dict[str, Any] | None:
        claim = self.claims.get((channel, idempotency_key, unit))
        return None if claim is None else dict(claim)

    def claim(
        self,
        channel: Channel,
        idempotency_key: str,
        unit: str,
        status: str,
        *,
        fields: Mapping[str, Any],
        lease: timedelta | None = None,
        retake: Iterable[str] = (),
        retake_expired_lease_of: str | None = None,
    ) -> ClaimAnswer:
        now = clock.now()
        with self._lock:
            current = self.claims.get((channel, idempotency_key, unit))
            if current is not None:
                expired = (
                    current.get("status") == retake_expired_lease_of
                    and current.get("lease_until") is not None
                    and datetime.fromisoformat(current["lease_until"]) < now
                )
                if current.get("status") not in set(retake) and not expired:
                    return ClaimAnswer(None, dict(current))
            token = uuid.uuid4().hex
            claim = dict(current or {})
            claim.update({name: _stored(value) for name, value in fields.items() if value is not None})
            claim.update(status=status, claim=token, attempts=int(claim.get("attempts", 0)) + 1)
            if lease is not None:
                claim["lease_until"] = clock.iso(now + lease)
            self.claims[(channel, idempotency_key, unit)] = claim
            return ClaimAnswer(token, dict(claim))

    def finish(
        self,
        channel: Channel,
        idempotency_key: str,
        unit: str,
        token: str,
        status: str,
        fields: Mapping[str, Any],
        *,
        release: bool = False,
        only_from: str | None = None,
    ) -> bool:
        with self._lock:
            claim = self.claims.get((channel, idempotency_key, unit))
            if claim is None or claim.get("claim") != token:
                return False
            if only_from is not None and claim.get("status") != only_from:
                return False
            claim.update(status=status, at=clock.iso(clock.now()))
            claim.pop("lease_until", None)
            for name, value in fields.items():
                if value is None:
                    claim.pop(name, None)
                else:
                    claim[name] = _stored(value)
            if release:
                claim.pop("claim", None)
            return True

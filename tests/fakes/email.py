"""In-memory email delivery records, suppression list and SES, for the email sender's behaviour tests.

The records keep the Deliveries table's rules: a claim (`sending`, or a final `skipped`) is written
only where there is no record or the last attempt was `retry`, and a refused claim returns the record
as it is (ReturnValuesOnConditionCheckFailure); only the claim's token finishes it; a claim left
`sending` is abandoned as `unknown` only by that claim's token. Records are dictionaries shaped as the
adapter reads them back (statuses as strings, times as ISO strings).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from typing import Any

from cems import clock
from cems.email.dispatch import EmailDispatch
from cems.email.sender import CLAIM_LEASE, SesResult, Status
from cems.models import address_hash
from cems.ports import MessageTag, SuppressionReason


class InMemoryEmailDeliveries:
    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def get(self, idempotency_key: str) -> dict[str, Any] | None:
        record = self.records.get(idempotency_key)
        return None if record is None else dict(record)

    def claim(
        self, dispatch: EmailDispatch, status: Status, reason: str | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        now = clock.now()
        with self._lock:
            current = self.records.get(dispatch.idempotency_key)
            if current is not None and current.get("status") != Status.RETRY.value:
                return None, dict(current)
            token = uuid.uuid4().hex
            record = dict(current or {})
            record.update(
                status=status.value,
                claim=token,
                at=clock.iso(now),
                customer_id=dispatch.customer_id,
                test=dispatch.test,
                attempts=int(record.get("attempts", 0)) + 1,
            )
            if status is Status.SENDING:
                record["lease_until"] = clock.iso(now + CLAIM_LEASE)
            if reason is not None:
                record["reason"] = reason
            for name in ("scenario_id", "version", "step_id", "variant"):
                if getattr(dispatch, name) is not None:
                    record[name] = getattr(dispatch, name)
            self.records[dispatch.idempotency_key] = record
        return token, None

    def finish(
        self,
        idempotency_key: str,
        token: str,
        status: Status,
        *,
        message_id: str | None = None,
        error_code: str | None = None,
        reason: str | None = None,
    ) -> bool:
        with self._lock:
            current = self.records.get(idempotency_key)
            if current is None or current.get("claim") != token:
                return False
            record = {k: v for k, v in current.items() if k != "lease_until"}
            record.update(status=status.value, at=clock.iso(clock.now()))
            for name, value in (
                ("ses_message_id", message_id),
                ("error_code", error_code),
                ("reason", reason),
            ):
                if value is None:
                    record.pop(name, None)
                else:
                    record[name] = value
            if status is Status.RETRY:
                record.pop("claim", None)
            self.records[idempotency_key] = record
        return True

    def abandon(self, idempotency_key: str, token: str) -> bool:
        with self._lock:
            current = self.records.get(idempotency_key)
            if (
                current is None
                or current.get("status") != Status.SENDING.value
                or current.get("claim") != token
            ):
                return False
            record = {k: v for k, v in current.items() if k != "lease_until"}
            record.update(
                status=Status.UNKNOWN.value,
                at=clock.iso(clock.now()),
                reason="the sender stopped during the SES call; not sent again",
            )
            self.records[idempotency_key] = record
        return True

    def status(self, idempotency_key: str) -> str | None:
        record = self.records.get(idempotency_key)
        return None if record is None else str(record["status"])


class InMemorySuppressions:
    """Suppressed addresses by hash, with the first reason and time kept."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[str, datetime]] = {}

    def reason(self, address: str) -> str | None:
        entry = self.entries.get(address_hash(address))
        return None if entry is None else entry[0]

    def suppress(self, address: str, reason: SuppressionReason, at: datetime | None = None) -> bool:
        key = address_hash(address)
        if key in self.entries:
            return False
        self.entries[key] = (reason, at or clock.now())
        return True


@dataclass(frozen=True)
class SentMail:
    from_address: str
    to_address: str
    raw: bytes
    configuration_set: str | None
    tags: tuple[MessageTag, ...]

    @property
    def message(self) -> EmailMessage:
        """The mail as a recipient's client reads it."""
        message = message_from_bytes(self.raw, policy=default)
        assert isinstance(message, EmailMessage)
        return message


@dataclass
class InMemoryMailGateway:
    """SES as the sender sees it through cems.adapters.ses.SesGateway: each call is answered with the
    next scripted result (then `sent` with a fresh message id); only a `sent` answer delivers."""

    sent: list[SentMail] = field(default_factory=list)
    calls: int = 0
    results: list[SesResult] = field(default_factory=list)

    def answer_next(self, *results: SesResult) -> None:
        self.results.extend(results)

    def send(
        self,
        from_address: str,
        to_address: str,
        raw: bytes,
        configuration_set: str | None,
        tags: Sequence[MessageTag],
    ) -> SesResult:
        self.calls += 1
        result = (
            self.results.pop(0) if self.results else SesResult(Status.SENT, message_id=f"ses-{self.calls}")
        )
        if result.status is Status.SENT:
            self.sent.append(SentMail(from_address, to_address, raw, configuration_set, tuple(tags)))
        return result

"""In-memory LINE delivery claims and an in-memory LINE gateway, for the LINE sender's behaviour tests.

The claims keep the Deliveries table's rules: a plan is stored once, and extended only by a writer
who read its current number of extensions; a unit is claimed only when it has no state, is `retry`
or `deferred`, or its `sending` lease has run out; a final unit answers FINAL and a held one BUSY;
only the claim's token finishes it. The gateway is LINE as the sender sees it through
cems.adapters.line_api.LineGateway: a retry key it accepted before answers 409 (sent);
answers can be scripted (429 storms, the monthly limit, a 400, an answer lost after LINE accepted).
cems.local.fake_line is the HTTP version of LINE for the handler and e2e tests.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from cems import clock
from cems.line.deliveries import (
    FINAL_UNIT_STATUSES,
    Claim,
    ClaimResult,
    DispatchPlan,
    DispatchState,
    PlanUnit,
    RecipientRecord,
    Skip,
    UnitKind,
    UnitState,
    UnitStatus,
)
from cems.line.dispatch import LineMessage
from cems.line.sender import CallResult, classify_error
from cems.ports import ServiceUnavailable

CLAIMABLE = frozenset({UnitStatus.RETRY, UnitStatus.DEFERRED})


class InMemoryLineDeliveries:
    """Plans, unit states and recipient records per dispatch key."""

    def __init__(self) -> None:
        self.plans: dict[str, DispatchPlan] = {}
        self.units: dict[tuple[str, str], UnitState] = {}
        self.recipients: dict[str, dict[str, RecipientRecord]] = {}
        self._lock = threading.Lock()

    def state(self, idempotency_key: str) -> DispatchState:
        with self._lock:
            units = {uid: replace(s) for (key, uid), s in self.units.items() if key == idempotency_key}
            recipients = {c: replace(r) for c, r in self.recipients.get(idempotency_key, {}).items()}
            return DispatchState(self.plans.get(idempotency_key), units, recipients)

    def create_plan(self, plan: DispatchPlan) -> bool:
        with self._lock:
            if plan.idempotency_key in self.plans:
                return False
            self.plans[plan.idempotency_key] = plan
        return True

    def extend_plan(self, plan: DispatchPlan) -> bool:
        with self._lock:
            stored = self.plans.get(plan.idempotency_key)
            if stored is None or len(stored.extensions) != len(plan.extensions) - 1:
                return False
            # Only the units and extensions change, as the adapter's UpdateItem sets only those.
            self.plans[plan.idempotency_key] = replace(stored, units=plan.units, extensions=plan.extensions)
        return True

    def claim(
        self,
        idempotency_key: str,
        unit: PlanUnit,
        lease: timedelta,
        skipped: Mapping[str, Skip] | None = None,
    ) -> Claim:
        now = clock.now()
        with self._lock:
            current = self.units.get((idempotency_key, unit.unit_id))
            lapsed = (
                current is not None
                and current.status is UnitStatus.SENDING
                and current.lease_until is not None
                and current.lease_until < now
            )
            if current is not None and current.status not in CLAIMABLE and not lapsed:
                result = ClaimResult.FINAL if current.status in FINAL_UNIT_STATUSES else ClaimResult.BUSY
                return Claim(result, state=replace(current))
            token = uuid.uuid4().hex
            claimed = UnitState(
                unit.unit_id,
                UnitStatus.SENDING,
                attempts=(current.attempts if current else 0) + 1,
                lease_until=now + lease,
                claim=token,
                reason=current.reason if current else None,
                http_status=current.http_status if current else None,
                line_request_id=current.line_request_id if current else None,
                at=current.at if current else None,
                # Given only on a first claim; a stored audience stays (as DynamoDB's SET of
                # the fields given leaves the others).
                skipped=dict(skipped) if skipped is not None else (current.skipped if current else None),
            )
            self.units[(idempotency_key, unit.unit_id)] = claimed
            return Claim(ClaimResult.CLAIMED, token=token, attempt=claimed.attempts, state=replace(claimed))

    def finish(
        self,
        idempotency_key: str,
        unit: PlanUnit,
        token: str,
        status: UnitStatus,
        *,
        reason: str | None = None,
        http_status: int | None = None,
        line_request_id: str | None = None,
    ) -> bool:
        with self._lock:
            current = self.units.get((idempotency_key, unit.unit_id))
            if current is None or current.claim != token:
                return False
            self.units[(idempotency_key, unit.unit_id)] = replace(
                current,
                status=status,
                lease_until=None,
                reason=reason,
                http_status=http_status,
                line_request_id=line_request_id,
                at=clock.now(),
            )
        return True

    def record(
        self, idempotency_key: str, records: Iterable[RecipientRecord], metadata: Mapping[str, Any]
    ) -> None:
        now = clock.now()
        with self._lock:
            stored = self.recipients.setdefault(idempotency_key, {})
            for record in records:
                stored[record.customer_id] = replace(record, at=record.at or now)

    def outcomes(self, idempotency_key: str) -> dict[str, str]:
        """Each recipient's status, by customer id."""
        return {c: r.status.value for c, r in self.state(idempotency_key).recipients.items()}


@dataclass(frozen=True)
class LineCall:
    kind: UnitKind
    to: tuple[str, ...]
    messages: list[LineMessage]
    retry_key: str
    quiet: bool
    answered: CallResult


# What a scripted answer is: LINE's HTTP status and body (classified as the gateway classifies them),
# or a network failure after LINE accepted the call (the sender sees a time-out).
@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: str = ""
    # LINE accepted the call but the answer was lost on the way back.
    lost_after_accepting: bool = False


@dataclass
class InMemoryLineGateway:
    """LINE's Messaging API for push and multicast: who received which messages, and every call."""

    calls: list[LineCall] = field(default_factory=list)
    received: dict[str, list[LineMessage]] = field(default_factory=dict)
    accepted_keys: set[str] = field(default_factory=set)
    answers: list[Answer] = field(default_factory=list)
    # Called with each call before it is answered (a test can race another worker in here).
    on_call: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def answer_next(self, *answers: Answer) -> None:
        """The next calls get these answers, in order (then 200 again)."""
        self.answers.extend(answers)

    def send(
        self, kind: UnitKind, to: Sequence[str], messages: list[LineMessage], key: str, quiet: bool
    ) -> CallResult:
        if self.on_call is not None:
            self.on_call()
        with self._lock:
            answer = self.answers.pop(0) if self.answers else Answer()
            if key in self.accepted_keys:
                result = classify_error(409, '{"message":"The retry key is already accepted"}', {})
            elif answer.lost_after_accepting:
                self._deliver(to, messages, key)
                result = CallResult(UnitStatus.RETRY, reason="network error: ReadTimeoutError")
            elif answer.status >= 300:
                result = classify_error(
                    answer.status, answer.body, {"x-line-request-id": f"req-{len(self.calls)}"}
                )
            else:
                self._deliver(to, messages, key)
                result = CallResult(UnitStatus.SENT, answer.status, line_request_id=f"req-{len(self.calls)}")
            self.calls.append(LineCall(kind, tuple(to), messages, key, quiet, result))
        return result

    def _deliver(self, to: Sequence[str], messages: list[LineMessage], key: str) -> None:
        self.accepted_keys.add(key)
        for user in to:
            self.received.setdefault(user, []).extend(messages)


@dataclass
class InMemoryShortLinks:
    """Short links of LINE texts (ports.ShortLinkWriter and ShortLinkReader; the DynamoDB adapter
    keeps the same contract: tests/integration/test_line_text_links.py): code -> (token, expiry),
    written once; `writes` counts every put asked (a redo's refused ones too), `fail` makes puts
    raise ServiceUnavailable."""

    items: dict[str, tuple[str, int]] = field(default_factory=dict)
    writes: int = 0
    fail: bool = False

    def put(self, code: str, token: str, expires_at: int) -> bool:
        self.writes += 1
        if self.fail:
            raise ServiceUnavailable("short link not stored: ProvisionedThroughputExceededException")
        if code in self.items:
            return False
        self.items[code] = (token, expires_at)
        return True

    def token(self, code: str) -> str | None:
        item = self.items.get(code)
        return item[0] if item else None

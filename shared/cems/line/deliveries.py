"""LINE delivery records as values: each dispatch's frozen plan, the state of each LINE call (unit),
the outcome for each recipient. Stored by cems.adapters.dynamodb.line_deliveries.

A unit is claimed with a conditional write before LINE is called and finished with one after, so a
unit that is `sent` (or `failed`) is never called again, however often SQS delivers the dispatch; a
second worker finds the claim and backs off. A worker that dies mid-call leaves a claim whose lease
runs out; the next attempt calls LINE again under the same retry key, and LINE answers 409 if the
first call got through.

A plan is frozen, with one exception: a shared dispatch that holds every recipient of its content in
its batch (`LineDispatch.sole_chunk`, cems.line.multicast) may name, when its batch is done again,
customers the plan never had (a profile created inside the page's key range in between). The sender
then adds units for them, once (`PlanExtension`: a conditional write on the number of extensions,
so two racing attempts agree on one), and never touches the units already planned.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

# Fixed namespace for X-Line-Retry-Key: uuid5(namespace, "<idempotency key>\n<unit id>").
RETRY_KEY_NAMESPACE = uuid.UUID("6f1d2c4e-8a3b-5e7f-9c0d-1b2a3c4d5e6f")


class UnitKind(StrEnum):
    MULTICAST = "multicast"
    PUSH = "push"


class UnitStatus(StrEnum):
    SENDING = "sending"  # claimed; LINE is being called
    SENT = "sent"  # final: LINE accepted it (2xx, or 409 for a retry key it had accepted)
    FAILED = "failed"  # final: LINE refused it (a 4xx other than 409/429); never retried
    RETRY = "retry"  # 429, 5xx, time-out: tried again later through SQS
    DEFERRED = "deferred"  # LINE's monthly limit: tried again much later
    SKIPPED = "skipped"  # final: nobody in it could be reached any more at send time


FINAL_UNIT_STATUSES = frozenset({UnitStatus.SENT, UnitStatus.FAILED, UnitStatus.SKIPPED})


class RecipientStatus(StrEnum):
    SENT = "sent"
    FAILED = "failed"
    DEFERRED = "deferred"
    SKIPPED_UNREACHABLE = "skipped_unreachable"
    SKIPPED_NO_CONSENT = "skipped_no_consent"


def retry_key(idempotency_key: str, unit_id: str) -> str:
    """X-Line-Retry-Key for one unit: the same on every attempt of the same dispatch."""
    return str(uuid.uuid5(RETRY_KEY_NAMESPACE, f"{idempotency_key}\n{unit_id}"))


@dataclass(frozen=True)
class PlanUnit:
    """One LINE call of a dispatch: a multicast to up to 500 customers, or a push to one."""

    unit_id: str
    kind: UnitKind
    customer_ids: tuple[str, ...]


@dataclass(frozen=True)
class Skip:
    status: RecipientStatus
    reason: str


@dataclass(frozen=True)
class PlanExtension:
    """Recipients added to a frozen plan after it was made (see the module's docstring): its units
    are appended to `DispatchPlan.units` (ids `x<nn>m0000`..., or `p#<customer>`); this keeps the
    ones set aside, counted under a marker of the extension's own (`plan#x<nn>`)."""

    skipped: Mapping[str, Skip] = field(default_factory=dict)


@dataclass(frozen=True)
class DispatchPlan:
    """Who gets which call, decided once (on the first attempt) and reused by every retry."""

    idempotency_key: str
    fingerprint: str
    units: tuple[PlanUnit, ...]
    skipped: Mapping[str, Skip]
    created_at: datetime
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # Made from a dispatch that is its content's only chunk in its batch (LineDispatch.sole_chunk):
    # the sender may add recipients it never had, and only then.
    extendable: bool = False
    # Additions since, in order (extension n is `extensions[n - 1]`).
    extensions: tuple[PlanExtension, ...] = ()

    def recipients(self) -> set[str]:
        skipped = set(self.skipped).union(*(e.skipped for e in self.extensions))
        return {c for u in self.units for c in u.customer_ids} | skipped


@dataclass
class UnitState:
    unit_id: str
    status: UnitStatus
    attempts: int = 0
    lease_until: datetime | None = None
    claim: str | None = None
    reason: str | None = None
    http_status: int | None = None
    line_request_id: str | None = None
    at: datetime | None = None
    # Recipients of the unit found unreachable when it was first claimed: its audience, fixed then,
    # so every later attempt makes the same LINE request under the same retry key (a call that went
    # through unanswered reached them as they were), and a later attempt recomputes the unit's
    # records and report counts exactly after a worker stopped. None: not stored (an older unit).
    skipped: dict[str, Skip] | None = None


@dataclass
class RecipientRecord:
    customer_id: str
    status: RecipientStatus
    reason: str | None = None
    unit_id: str | None = None
    line_request_id: str | None = None
    at: datetime | None = None
    attempt: int = 0


@dataclass
class DispatchState:
    plan: DispatchPlan | None
    units: dict[str, UnitState]
    recipients: dict[str, RecipientRecord]


class ClaimResult(StrEnum):
    CLAIMED = "claimed"
    FINAL = "final"  # sent, failed or skipped already: nothing to do
    BUSY = "busy"  # another worker holds an unexpired claim


@dataclass(frozen=True)
class Claim:
    result: ClaimResult
    token: str | None = None
    attempt: int = 0
    state: UnitState | None = None

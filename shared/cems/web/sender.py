"""Sending a web dispatch: the message written into the visitor's on-site inbox, once.

"Sending" on the web channel is a write: the rendered message goes into the customer's inbox (one
DynamoDB item per customer and dispatch, cems.web.inbox), where the tag finds it on the customer's
next page view. One attempt of a dispatch (one SQS delivery):

1. The recipient, read at send time: the profile must exist (an erased customer gets nothing) and
   be reachable on the web channel (seen on the site, not opted out: cems.web.channel.reachable).
   A test send goes to the preview inbox of its token, whoever the profile was.
2. The claim: `DISPATCH#<key>` / `CLAIM#web#inbox` in the Deliveries table (status `writing`, with a
   lease) through the one claim store (cems.ports.DeliveryClaims), then the inbox write, then the
   outcome `written`. The inbox write is itself keyed by the dispatch (a conditional put), so a
   claim whose worker died is simply taken again after its lease: the write cannot be doubled, and
   a redelivery never brings back a message the visitor dismissed.
3. Report counters: a web message counts `sent` when it is shown (the tag's impression, not here:
   cems.web.channel's imp_definition); a skipped dispatch counts `suppressed` once (`once=` marker).

Requests per message written: GetItem (profile), UpdateItem (claim), PutItem (inbox), UpdateItem
(outcome).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from cems import clock
from cems.errors import validation_reasons
from cems.models import Channel
from cems.ports import CounterPort, CustomerReader, DeliveryClaims, WebInbox
from cems.reports.counters import Metric, ReportCell
from cems.web.channel import reachable
from cems.web.dispatch import WebDispatch
from cems.web.inbox import InboxItem, InboxOwner
from pydantic import ValidationError

# The claim's one unit: a web dispatch is one inbox write.
UNIT = "inbox"
# Far longer than one PutItem (the DynamoDB client's time-outs and retries).
CLAIM_LEASE = timedelta(seconds=60)
# How long a staff member's preview link shows the message.
PREVIEW_LIFETIME = timedelta(hours=24)
RETRY_MAX_SECONDS = 300


class Status(StrEnum):
    WRITING = "writing"  # claimed: the inbox is being written
    WRITTEN = "written"  # final: the message is in the inbox
    SKIPPED = "skipped"  # final: the customer may not get it (reason says why)
    RETRY = "retry"  # the write failed: the next attempt claims it again


@dataclass
class WebReport:
    """What one attempt of one dispatch did: for metrics, logs and the SQS decision. Never holds
    content, a preview token or an anonymous id."""

    idempotency_key: str | None = None
    test: bool = False
    invalid: bool = False
    status: Status | None = None
    already_done: bool = False
    skip_reason: str | None = None
    failure_reasons: list[str] = field(default_factory=list)
    retry_after: int | None = None

    def metrics(self) -> dict[str, int]:
        """The counts this attempt adds to CloudWatch (test sends under `WebTest…`)."""
        if self.invalid:
            return {"WebDispatchesInvalid": 1}
        prefix = "WebTest" if self.test else "Web"
        fresh = not self.already_done
        return {
            prefix + "Written": int(fresh and self.status is Status.WRITTEN),
            prefix + "Skipped": int(fresh and self.status is Status.SKIPPED),
            prefix + "Retries": int(self.status is Status.RETRY),
        }


class WebSender:
    def __init__(
        self,
        customers: CustomerReader,
        claims: DeliveryClaims,
        inbox: WebInbox,
        counters: CounterPort,
    ) -> None:
        self.customers = customers
        self.claims = claims
        self.inbox = inbox
        self.counters = counters

    def handle(
        self, body: str, receive_count: int = 1, remaining_ms: Callable[[], int] | None = None
    ) -> WebReport:
        report = WebReport()
        try:
            dispatch = WebDispatch.model_validate_json(body)
        except ValidationError as exc:
            # Never right however often it is retried: reported and dropped (paths and reasons only).
            report.invalid = True
            report.failure_reasons = validation_reasons(exc)
            return report
        report.idempotency_key = dispatch.idempotency_key
        report.test = dispatch.test

        skip = None if dispatch.test else self._skip_reason(dispatch)
        if skip is not None:
            self._skip(dispatch, skip, report)
            return report

        now = clock.now()
        claimed = self.claims.claim(
            Channel.WEB,
            dispatch.idempotency_key,
            UNIT,
            Status.WRITING.value,
            fields={"customer_id": dispatch.customer_id, "test": dispatch.test or None},
            lease=CLAIM_LEASE,
            retake=(Status.RETRY.value,),
            # The write is keyed by the dispatch: retaking a dead worker's claim cannot double it.
            retake_expired_lease_of=Status.WRITING.value,
        )
        if claimed.token is None:
            self._found(dispatch, claimed.item or {}, now, report)
            return report
        try:
            written = self.inbox.put(self._item(dispatch, now))
        except Exception:
            # Given back, so the next delivery claims it at once rather than after the lease.
            self.claims.finish(
                Channel.WEB,
                dispatch.idempotency_key,
                UNIT,
                claimed.token,
                Status.RETRY.value,
                {},
                release=True,
            )
            report.status = Status.RETRY
            report.retry_after = self._backoff(receive_count)
            report.failure_reasons.append("inbox_write_failed")
            return report
        self.claims.finish(
            Channel.WEB,
            dispatch.idempotency_key,
            UNIT,
            claimed.token,
            Status.WRITTEN.value,
            {"new": written},
        )
        report.status = Status.WRITTEN
        # `written` False: the item was there (a claim retaken after its lease): nothing new.
        report.already_done = not written
        return report

    def _skip_reason(self, dispatch: WebDispatch) -> str | None:
        profile = self.customers.profile(dispatch.customer_id)
        if profile is None:
            return "no_profile"
        if not reachable(profile):
            return "unreachable"
        return None

    def _item(self, dispatch: WebDispatch, now: datetime) -> InboxItem:
        lifetime = timedelta(seconds=dispatch.message.expires_seconds)
        if dispatch.test and dispatch.preview_token is not None:
            owner = InboxOwner.of_preview(dispatch.preview_token)
            lifetime = min(lifetime, PREVIEW_LIFETIME)
        else:
            owner = InboxOwner.customer(dispatch.customer_id)
        return InboxItem(
            owner=owner,
            dispatch_key=dispatch.idempotency_key,
            customer_id=dispatch.customer_id,
            message=dispatch.message,
            written_at=now,
            expires_at=now + lifetime,
            scenario_id=dispatch.scenario_id,
            version=dispatch.version,
            step_id=dispatch.step_id,
            variant=dispatch.variant,
            test=dispatch.test,
        )

    def _skip(self, dispatch: WebDispatch, reason: str, report: WebReport) -> None:
        report.skip_reason = reason
        claimed = self.claims.claim(
            Channel.WEB,
            dispatch.idempotency_key,
            UNIT,
            Status.SKIPPED.value,
            fields={"customer_id": dispatch.customer_id, "reason": reason},
            # An earlier attempt whose write failed: the customer is now out of reach.
            retake=(Status.RETRY.value,),
        )
        if claimed.token is None:
            self._found(dispatch, claimed.item or {}, clock.now(), report)
            return
        report.status = Status.SKIPPED
        self._count(dispatch, Metric.SUPPRESSED)

    def _found(self, dispatch: WebDispatch, item: dict[str, Any], now: datetime, report: WebReport) -> None:
        """The dispatch has an outcome already, or another worker holds its claim."""
        try:
            status = Status(str(item.get("status")))
        except ValueError:
            status = Status.WRITING
        if status is Status.WRITING:
            lease = item.get("lease_until")
            lease_until = datetime.fromisoformat(lease) if isinstance(lease, str) else now
            report.status = Status.WRITING
            report.retry_after = max(1, int((lease_until - now).total_seconds()) + 1)
            return
        report.status = status
        report.already_done = True
        if status is Status.SKIPPED:
            # A crash between the outcome and its counter: applied now, or counted once before.
            self._count(dispatch, Metric.SUPPRESSED)

    def _count(self, dispatch: WebDispatch, metric: Metric) -> None:
        if dispatch.test or dispatch.scenario_id is None or dispatch.version is None:
            return
        cell = ReportCell(
            dispatch.scenario_id,
            dispatch.version,
            dispatch.step_id,
            dispatch.variant,
            channel=Channel.WEB.value,
        )
        self.counters.add(cell, metric, once=f"{metric.value}#{dispatch.idempotency_key}")

    @staticmethod
    def _backoff(receive_count: int) -> int:
        delay = min(RETRY_MAX_SECONDS, 2 ** max(0, receive_count - 1))
        # Jitter spreads a failed burst's retries.
        return max(1, round(random.uniform(delay / 2, delay)))  # noqa: S311 - not for security

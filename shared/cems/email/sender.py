"""Sending an email dispatch: who may be mailed, one SES call at most, and what came of it.

One attempt of a dispatch (one SQS delivery):

1. The recipient, read at send time: the profile must exist (an erased customer is never mailed),
   have an address (`traits.email`) and email consent (`channels.email.consent`), and the address
   must not be suppressed (hard bounce, complaint). A test send with `to_address` goes to that
   address without the customer's consent, but never to a suppressed address.
2. The claim: a conditional write of `DISPATCH#<key>` / `EMAIL` in the Deliveries table (status
   `sending`) before SES is called, and the outcome written after it (`sent` with SES's message id,
   `failed` with SES's error code, or `retry`). A redelivered dispatch that finds `sent`, `failed`,
   `skipped` or `unknown` sends nothing.
3. At most once: SES has no idempotency key, so a claim found still `sending` after its lease (the
   function died during the call) and a call whose answer never came (a read time-out) are recorded
   `unknown` and not sent again; a duplicate mail is worse for the shop than a missing one.
4. SES throttling and pauses (TooManyRequests, LimitExceeded, SendingPaused, 5xx, a connection that
   never reached SES) release the claim (`retry`) and the dispatch comes back after an exponential
   backoff; permanent rejections (MessageRejected, an unverified sender, BadRequest, ...) are
   `failed` for good.
5. Report counters (cems.reports.counters): `sent`, `failed` or `suppressed` once per dispatch
   (`once=<metric>#<key>`), never for a test send. A dispatch found final again re-applies its
   counter, which counts nothing if it was counted: a crash between the outcome and the counter
   loses no count.

Requests per mail sent: GetItem (profile), GetItem (suppression), UpdateItem (claim), SES SendEmail,
UpdateItem (outcome), TransactWriteItems (counter).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.errors import HeaderParseError, MessageError
from email.headerregistry import Address
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from cems import clock
from cems.email.compose import LinkMaker, compose
from cems.email.config import EmailSettings
from cems.email.dispatch import EmailDispatch
from cems.errors import validation_reasons
from cems.models import Channel, address_hash
from cems.ports import CounterPort, CustomerReader, EmailDeliveryRecords, MailGateway, SuppressionPort
from cems.reports.counters import Metric, ReportCell
from cems.topics import left_topic

RETRY_MAX_SECONDS = 600
# How long a claim holds: far longer than one SES call (connect 2 s + read 10 s, no retries).
CLAIM_LEASE = timedelta(seconds=60)
# SES is not called with less than this left before the Lambda time-out; the dispatch comes back.
MIN_REMAINING_MS = 15_000
_ADDRESS_LIKE = re.compile(r"[^\s<>\"'(),;:]+@[^\s<>\"'(),;:]+")


class Status(StrEnum):
    SENDING = "sending"  # claimed: SES is being called
    SENT = "sent"  # final: SES accepted the mail
    FAILED = "failed"  # final: SES refused it for good
    SKIPPED = "skipped"  # final: the customer may not be mailed (reason says why)
    UNKNOWN = "unknown"  # final: SES may or may not have it; never sent again (at most once)
    RETRY = "retry"  # SES said "not now": the next attempt claims it again


@dataclass
class EmailReport:
    """What one attempt of one dispatch did: for metrics, logs and the SQS decision. Never holds an
    address or content."""

    idempotency_key: str | None = None
    test: bool = False
    invalid: bool = False
    status: Status | None = None  # the outcome this attempt wrote or found
    already_done: bool = False  # found final: nothing sent
    skip_reason: str | None = None
    error_code: str | None = None
    ses_message_id: str | None = None
    api_calls: int = 0
    retries: int = 0
    links_tracked: int = 0
    failure_reasons: list[str] = field(default_factory=list)
    retry_after: int | None = None

    @property
    def sent(self) -> int:
        return int(self.status is Status.SENT and not self.already_done)

    @property
    def failed(self) -> int:
        return int(self.status is Status.FAILED and not self.already_done)

    @property
    def skipped(self) -> int:
        return int(self.status is Status.SKIPPED and not self.already_done)

    @property
    def unknown(self) -> int:
        return int(self.status is Status.UNKNOWN and not self.already_done)

    def later(self, seconds: int) -> None:
        self.retry_after = max(self.retry_after or 0, seconds)

    def metrics(self) -> dict[str, int]:
        """The counts this attempt adds to CloudWatch, by metric name (test sends under `EmailTest…`,
        apart from real ones)."""
        if self.invalid:
            return {"EmailDispatchesInvalid": 1}
        prefix = "EmailTest" if self.test else "Email"
        return {
            prefix + "Sent": self.sent,
            prefix + "Failed": self.failed,
            prefix + "Skipped": self.skipped,
            prefix + "Retries": self.retries,
            prefix + "OutcomeUnknown": self.unknown,
        }


@dataclass(frozen=True)
class SesResult:
    status: Status  # SENT, FAILED, RETRY or UNKNOWN
    message_id: str | None = None
    error_code: str | None = None
    reason: str | None = None


def scrub(text: str, limit: int = 300) -> str:
    """SES's error text without addresses (it names unverified identities and recipients)."""
    return _ADDRESS_LIKE.sub("<address>", text)[:limit]


def valid_address(value: str) -> bool:
    """A mailbox SES can send to: `local@domain.tld`, ASCII only (SES has no SMTPUTF8; an
    internationalised domain must be given in its xn-- form)."""
    if not value.isascii():
        return False
    try:
        address = Address(addr_spec=value)
    except (ValueError, HeaderParseError, IndexError):
        return False
    return bool(address.username and address.domain and "." in address.domain)


@dataclass(frozen=True)
class Recipient:
    address: str | None
    skip_reason: str | None = None


class EmailSender:
    def __init__(
        self,
        settings: EmailSettings,
        customers: CustomerReader,
        suppressions: SuppressionPort,
        deliveries: EmailDeliveryRecords,
        counters: CounterPort,
        gateway: MailGateway,
        links: Callable[[EmailDispatch], LinkMaker],
    ) -> None:
        self.settings = settings
        self.customers = customers
        self.suppressions = suppressions
        self.deliveries = deliveries
        self.counters = counters
        self.gateway = gateway
        self.links = links

    def handle(
        self, body: str, receive_count: int = 1, remaining_ms: Callable[[], int] | None = None
    ) -> EmailReport:
        report = EmailReport()
        try:
            dispatch = EmailDispatch.model_validate_json(body)
        except ValidationError as exc:
            # Never right however often it is retried: reported and dropped (field paths and reasons
            # only; the input is not logged, it holds content and perhaps an address).
            report.invalid = True
            report.failure_reasons = validation_reasons(exc)
            return report
        report.idempotency_key = dispatch.idempotency_key
        report.test = dispatch.test

        recipient = self.recipient(dispatch)
        if recipient.skip_reason is not None or recipient.address is None:
            self._skip(dispatch, recipient.skip_reason or "no_address", report)
            return report
        if remaining_ms is not None and remaining_ms() < MIN_REMAINING_MS:
            report.later(self._backoff(1))
            report.status = Status.RETRY
            return report
        try:
            composed = compose(dispatch, recipient.address, self.settings, self.links(dispatch))
            # Serialised before the claim: a mail that cannot be written is a failure, not a claim
            # left `sending`.
            raw = composed.as_bytes()
        except (ValueError, MessageError) as exc:
            # The shop's own settings or content cannot make a valid mail: failed for good.
            self._record_failure(dispatch, "InvalidMessage", scrub(str(exc)), report)
            return report
        report.links_tracked = composed.links_tracked

        token, existing = self.deliveries.claim(dispatch, Status.SENDING)
        if token is None:
            self._found(dispatch, existing or {}, report)
            return report
        result = self.gateway.send(
            self.settings.from_address,
            recipient.address,
            raw,
            self.settings.configuration_set,
            dispatch.ses_tags(),
        )
        report.api_calls += 1
        report.status = result.status
        report.error_code = result.error_code
        report.ses_message_id = result.message_id
        self.deliveries.finish(
            dispatch.idempotency_key,
            token,
            result.status,
            message_id=result.message_id,
            error_code=result.error_code,
            reason=result.reason,
        )
        if result.status is Status.RETRY:
            report.retries += 1
            report.later(self._backoff(receive_count))
            report.failure_reasons.append(result.error_code or "retry")
            return report
        if result.status is Status.FAILED:
            report.failure_reasons.append(result.error_code or "failed")
        self._count(dispatch, result.status)
        return report

    # The recipient ------------------------------------------------------------------------------

    def recipient(self, dispatch: EmailDispatch) -> Recipient:
        """The address to mail, or why nobody may be mailed (read at send time)."""
        if dispatch.test and dispatch.to_address:
            # A staff member's own address: no customer consent applies, suppression still does.
            address: str | None = dispatch.to_address.strip()
        else:
            profile = self.customers.profile(dispatch.customer_id)
            if profile is None:
                return Recipient(None, "no_profile")
            value = profile.traits.get("email")
            address = value.strip() if isinstance(value, str) and value.strip() else None
            if address is None:
                return Recipient(None, "no_address")
            if dispatch.purpose == "confirmation":
                # It asks for consent, so none is needed; but only to the address it was made for.
                if address_hash(address) != dispatch.address_hash:
                    return Recipient(None, "address_changed")
                return self._unsuppressed(address)
            state = profile.channels.get(Channel.EMAIL)
            if state is None or not state.consent:
                return Recipient(None, "no_consent")
            if state.reachable and not state.consents_for(address):
                # The consent was given for another address than the one on the profile now.
                return Recipient(None, "no_consent")
            if not state.reachable:
                return Recipient(None, "unreachable")
            if left_topic(profile.topics, dispatch.topic):
                # Left on the preference page since the engine made the dispatch: stop at once.
                return Recipient(None, "topic_left")
        return self._unsuppressed(address)

    def _unsuppressed(self, address: str | None) -> Recipient:
        if address is None or not valid_address(address):
            return Recipient(None, "invalid_address")
        suppressed = self.suppressions.reason(address)
        if suppressed is not None:
            return Recipient(None, f"suppressed_{suppressed}")
        return Recipient(address)

    # Outcomes -----------------------------------------------------------------------------------

    def _skip(self, dispatch: EmailDispatch, reason: str, report: EmailReport) -> None:
        report.skip_reason = reason
        token, existing = self.deliveries.claim(dispatch, Status.SKIPPED, reason)
        if token is None:
            self._found(dispatch, existing or {}, report)
            return
        report.status = Status.SKIPPED
        self._count(dispatch, Status.SKIPPED)

    def _record_failure(self, dispatch: EmailDispatch, code: str, reason: str, report: EmailReport) -> None:
        token, existing = self.deliveries.claim(dispatch, Status.SENDING)
        if token is None:
            self._found(dispatch, existing or {}, report)
            return
        self.deliveries.finish(dispatch.idempotency_key, token, Status.FAILED, error_code=code, reason=reason)
        report.status = Status.FAILED
        report.error_code = code
        report.failure_reasons.append(code)
        self._count(dispatch, Status.FAILED)

    def _found(self, dispatch: EmailDispatch, item: dict[str, Any], report: EmailReport) -> None:
        """The dispatch already has an outcome, or a claim: nothing is sent."""
        try:
            status = Status(str(item.get("status")))
        except ValueError:
            status = Status.SENDING
        if status is Status.SENDING:
            lease = item.get("lease_until")
            lease_until = datetime.fromisoformat(lease) if lease else None
            now = clock.now()
            if lease_until is not None and lease_until > now:
                # Another worker is calling SES for it right now; look again after its lease.
                report.status = Status.SENDING
                report.later(max(1, int((lease_until - now).total_seconds()) + 1))
                return
            if self.deliveries.abandon(dispatch.idempotency_key, str(item.get("claim", ""))):
                report.status = Status.UNKNOWN
                report.error_code = "ClaimAbandoned"
                return
            fresh = self.deliveries.get(dispatch.idempotency_key) or {}
            status = Status(fresh.get("status", Status.UNKNOWN.value))
        report.status = status
        report.already_done = True
        report.error_code = item.get("error_code")
        # A crash between the outcome and its counter: the counter is applied now (or was already).
        self._count(dispatch, status)

    def _count(self, dispatch: EmailDispatch, status: Status) -> None:
        metric = {
            Status.SENT: Metric.SENT,
            Status.FAILED: Metric.FAILED,
            Status.SKIPPED: Metric.SUPPRESSED,
        }.get(status)
        if metric is None or dispatch.test or dispatch.scenario_id is None or dispatch.version is None:
            return
        cell = ReportCell(
            dispatch.scenario_id,
            dispatch.version,
            dispatch.step_id,
            dispatch.variant,
            channel=Channel.EMAIL.value,
        )
        self.counters.add(cell, metric, once=f"{metric.value}#{dispatch.idempotency_key}")

    def _backoff(self, receive_count: int) -> int:
        delay = min(RETRY_MAX_SECONDS, self.settings.retry_base_seconds * 2 ** max(0, receive_count - 1))
        # Jitter spreads a throttled burst's retries so they do not all come back in the same second.
        return max(1, round(random.uniform(delay / 2, delay)))  # noqa: S311 - not for security

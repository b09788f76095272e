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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.errors import HeaderParseError, MessageError
from email.headerregistry import Address
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
)
from pydantic import ValidationError

from cems import clock
from cems.adapters.dynamodb.customers import CustomerStore
from cems.adapters.dynamodb.items import condition_failed, from_attribute_map, to_attribute_map
from cems.email.compose import LinkMaker, compose
from cems.email.config import EmailSettings
from cems.email.dispatch import EmailDispatch
from cems.email.suppression import SuppressionStore
from cems.models import Channel, address_hash
from cems.reports.counters import Metric, ReportCell, ReportCounters

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sesv2 import SESV2Client
    from mypy_boto3_sesv2.type_defs import MessageTagTypeDef

EMAIL_SK = "EMAIL"
RETRY_MAX_SECONDS = 600
# How long a claim holds: far longer than one SES call (connect 2 s + read 10 s, no retries).
CLAIM_LEASE = timedelta(seconds=60)
# SES is not called with less than this left before the Lambda time-out; the dispatch comes back.
MIN_REMAINING_MS = 15_000
# SES error codes that mean "not now": the claim is released and the dispatch tried again.
RETRYABLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "SendingPausedException",
        # The operator's to fix (account, IAM, credentials), not the mail's fault: the dispatch waits,
        # then in the DLQ, and a redrive after the fix sends it.
        "AccountSuspendedException",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "Throttling",
        "ThrottlingException",
        "ServiceUnavailable",
        "InternalFailure",
        "RequestTimeout",
    }
)
# The SES client's own settings: no retries of its own (a retried call could send a mail twice; the
# dispatch's retries go through SQS), and a read time-out long enough for SES on a bad day.
SES_CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=10,
    retries={"mode": "standard", "total_max_attempts": 1},
    tcp_keepalive=True,
)
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


@dataclass(frozen=True)
class SesResult:
    status: Status  # SENT, FAILED, RETRY or UNKNOWN
    message_id: str | None = None
    error_code: str | None = None
    reason: str | None = None


class SesGateway:
    """SES v2 SendEmail with a raw MIME message, classified into an outcome. The client is made on
    the first send (cold start) and makes no retries of its own: a retried call could send twice."""

    def __init__(self, client_factory: Callable[[], SESV2Client]) -> None:
        self._client_factory = client_factory
        self._client: SESV2Client | None = None

    def client(self) -> SESV2Client:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def send(
        self,
        from_address: str,
        to_address: str,
        raw: bytes,
        configuration_set: str | None,
        tags: Sequence[MessageTagTypeDef],
    ) -> SesResult:
        request: dict[str, Any] = {
            "FromEmailAddress": from_address,
            "Destination": {"ToAddresses": [to_address]},
            # Raw, so that our headers (List-Unsubscribe, ...) and parts go out exactly as composed.
            "Content": {"Raw": {"Data": raw}},
            "EmailTags": list(tags),
        }
        if configuration_set:
            request["ConfigurationSetName"] = configuration_set
        try:
            answer = self.client().send_email(**request)
        except ClientError as exc:
            return classify_error(exc)
        except (ConnectTimeoutError, EndpointConnectionError, ProxyConnectionError) as exc:
            # The request never reached SES: safe to try again.
            return SesResult(Status.RETRY, error_code=type(exc).__name__, reason="could not connect to SES")
        except (ReadTimeoutError, ConnectionClosedError) as exc:
            # SES may have accepted it before the answer was lost: not sent again (at most once).
            return SesResult(Status.UNKNOWN, error_code=type(exc).__name__, reason="no answer from SES")
        except ParamValidationError as exc:
            # The SDK refused the request before sending it: the same request never passes.
            return SesResult(Status.FAILED, error_code=type(exc).__name__, reason=scrub(str(exc)))
        except (NoCredentialsError, PartialCredentialsError) as exc:
            return SesResult(Status.RETRY, error_code=type(exc).__name__, reason="no AWS credentials")
        except BotoCoreError as exc:
            # Anything else the SDK raises may come after the request left: at most once.
            return SesResult(Status.UNKNOWN, error_code=type(exc).__name__, reason=scrub(str(exc)))
        return SesResult(Status.SENT, message_id=answer.get("MessageId"))


def classify_error(exc: ClientError) -> SesResult:
    error = exc.response.get("Error", {})
    code = str(error.get("Code") or "Unknown")
    http_status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    reason = scrub(f"{code}: {error.get('Message', '')}")
    if code in RETRYABLE_CODES or http_status >= 500 or http_status == 429:
        return SesResult(Status.RETRY, error_code=code, reason=reason)
    return SesResult(Status.FAILED, error_code=code, reason=reason)


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


class DeliveryRecords:
    """`DISPATCH#<key>` / `EMAIL` in the Deliveries table: the claim and outcome of one dispatch."""

    def __init__(self, table_name: str, client: DynamoDBClient, retention: timedelta) -> None:
        self.table_name = table_name
        self.client = client
        self.retention = retention

    def _key(self, idempotency_key: str) -> dict[str, Any]:
        return {"pk": {"S": f"DISPATCH#{idempotency_key}"}, "sk": {"S": EMAIL_SK}}

    def get(self, idempotency_key: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table_name, Key=self._key(idempotency_key), ConsistentRead=True
        ).get("Item")
        return from_attribute_map(item) if item else None

    def claim(
        self, dispatch: EmailDispatch, status: Status, reason: str | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Write `status` (SENDING to claim; SKIPPED to record a final skip) unless the dispatch has an
        outcome already. Returns (claim token, None) when written, or (None, the existing item)."""
        now = clock.now()
        token = uuid.uuid4().hex
        values: dict[str, Any] = {
            ":status": status.value,
            ":retry": Status.RETRY.value,
            ":token": token,
            ":lease": now + CLAIM_LEASE,
            ":at": now,
            ":customer": dispatch.customer_id,
            ":test": dispatch.test,
            ":exp": int((now + self.retention).timestamp()),
            ":one": 1,
            ":reason": reason,
        }
        sets = [
            "#s = :status",
            "claim = :token",
            "#at = :at",
            "customer_id = :customer",
            "test = :test",
            "expires_at = :exp",
        ]
        if status is Status.SENDING:
            sets.append("lease_until = :lease")
        else:
            del values[":lease"]
        if reason is not None:
            sets.append("reason = :reason")
        else:
            del values[":reason"]
        for name in ("scenario_id", "version", "step_id", "variant"):
            value = getattr(dispatch, name)
            if value is not None:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(dispatch.idempotency_key),
                UpdateExpression=f"SET {', '.join(sets)} ADD attempts :one",
                ConditionExpression="attribute_not_exists(pk) OR #s = :retry",
                ExpressionAttributeNames={"#s": "status", "#at": "at"},
                ExpressionAttributeValues=to_attribute_map(values),
                # The existing item comes back with the refusal: no second read.
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            # Sent back by ReturnValuesOnConditionCheckFailure (the stubs do not name it).
            item: Any = dict(exc.response).get("Item")
            return None, from_attribute_map(item) if item else {}
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
        """Record the outcome of our claim; False if the claim is not ours any more."""
        values: dict[str, Any] = {":status": status.value, ":at": clock.now(), ":token": token}
        sets = ["#s = :status", "#at = :at"]
        removes = ["lease_until"]
        for name, value in (("ses_message_id", message_id), ("error_code", error_code), ("reason", reason)):
            if value is None:
                removes.append(name)
            else:
                values[f":{name}"] = value
                sets.append(f"{name} = :{name}")
        if status is Status.RETRY:
            removes.append("claim")
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(idempotency_key),
                UpdateExpression=f"SET {', '.join(sets)} REMOVE {', '.join(removes)}",
                ConditionExpression="claim = :token",
                ExpressionAttributeNames={"#s": "status", "#at": "at"},
                ExpressionAttributeValues=to_attribute_map(values),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def abandon(self, idempotency_key: str, token: str) -> bool:
        """A claim left `sending` past its lease (its worker died during the SES call): `unknown`.
        The stale claim token stays, so that worker, if it lives after all, can still record `sent`."""
        try:
            self.client.update_item(
                TableName=self.table_name,
                Key=self._key(idempotency_key),
                UpdateExpression="SET #s = :unknown, #at = :at, reason = :reason REMOVE lease_until",
                ConditionExpression="#s = :sending AND claim = :token",
                ExpressionAttributeNames={"#s": "status", "#at": "at"},
                ExpressionAttributeValues=to_attribute_map(
                    {
                        ":unknown": Status.UNKNOWN.value,
                        ":sending": Status.SENDING.value,
                        ":token": token,
                        ":at": clock.now(),
                        ":reason": "the sender stopped during the SES call; not sent again",
                    }
                ),
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True


class EmailSender:
    def __init__(
        self,
        settings: EmailSettings,
        customers: CustomerStore,
        suppressions: SuppressionStore,
        deliveries: DeliveryRecords,
        counters: ReportCounters,
        gateway: SesGateway,
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
            report.failure_reasons = [
                f"{'.'.join(str(p) for p in e['loc']) or 'dispatch'}: {e['msg']}"[:200]
                for e in exc.errors()[:5]
            ]
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
        cell = ReportCell(dispatch.scenario_id, dispatch.version, dispatch.step_id, dispatch.variant)
        self.counters.add(cell, metric, once=f"{metric.value}#{dispatch.idempotency_key}")

    def _backoff(self, receive_count: int) -> int:
        delay = min(RETRY_MAX_SECONDS, self.settings.retry_base_seconds * 2 ** max(0, receive_count - 1))
        # Jitter spreads a throttled burst's retries so they do not all come back in the same second.
        return max(1, round(random.uniform(delay / 2, delay)))  # noqa: S311 - not for security

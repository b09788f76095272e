"""Sending a LINE dispatch: the plan, reachability at send time, LINE calls and their outcomes.

One attempt of a dispatch (one SQS delivery):

1. The plan. On the first attempt the recipients' profiles are read, those who cannot be reached
   (no LINE account, unfollowed) or did not agree (no consent) are set aside, and the rest are cut
   into units: common content goes by multicast in chunks of at most 500 (a chunk of one is a push),
   personalised content by one push each. The plan is stored (conditionally, so two racing attempts
   agree on one) and every later attempt reuses it: the same units with the same X-Line-Retry-Key
   (uuid5 of the idempotency key and the unit id), even if the dispatch's audience has changed since.
   A test send with `test_line_user_id` (cems scenario test-send) is one push to that LINE user id:
   no profile is read and no reachability or consent is checked, there or in step 2.
   One exception to "frozen": a shared dispatch that is its content's only chunk in its batch
   (`LineDispatch.sole_chunk`, cems.line.multicast) naming customers the plan never had (a redone
   broadcast page that found a profile created in its key range since). They were under no other
   key of that content, so they are added: units of their own appended to the plan (`x<nn>m0000`
   for the common content, `p#<customer>` for a push), made like the plan's and stored with a
   conditional write on the number of extensions, so two racing attempts agree on one; the units
   already planned are never changed. Then they are sent, recorded and counted as any unit, under
   retry keys from their own unit ids. A dispatch that is not a sole chunk (one made by hand, or a
   plan stored before) keeps its plan as it is, and those customers get nothing under its key (the
   log says how many).
2. Each unit that is not final yet is claimed in the Deliveries table, its recipients' reachability
   and consent are checked again (a follower may have left since the plan) and stored with the claim
   as the unit's audience, and LINE is called. A retry after a call that may have gone through (no
   answer, a 5xx, a worker that stopped) keeps that audience: the same request under the same retry
   key, which LINE answers 409 if it had accepted it. After a refusal (429) it is decided again.
3. LINE's answer decides: 2xx and 409 (that retry key was accepted before) are `sent`; LINE's
   monthly limit is `deferred` (the dispatch comes back in an hour); other 429s, 5xx, 401 and network
   errors or time-outs are retried with exponential backoff; any other 4xx is `failed` for good,
   with LINE's message.

4. A final unit is counted, then recorded: its report counts (sent, failed, suppressed) in one
   `add_many` under a marker of its own, then a record per recipient (BatchWriteItem, 25 a call);
   the plan's skipped recipients likewise under the plan's marker (an extension's under its own,
   `plan#x<nn>`). A worker that stops between any
   two writes leaves the rest to the next delivery, which recomputes the unit's records and counts
   from the unit (its outcome and stored audience) and whose count the marker refuses if it was made:
   each recipient is counted exactly once.

The caller (functions/send_line) turns `DispatchReport.retry_after` into ChangeMessageVisibility and
a batch item failure, and the counts into metrics.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Logger
from pydantic import ValidationError

from cems import clock
from cems.errors import validation_reasons
from cems.line.deliveries import (
    FINAL_UNIT_STATUSES,
    ClaimResult,
    DispatchPlan,
    DispatchState,
    PlanExtension,
    PlanUnit,
    RecipientRecord,
    RecipientStatus,
    Skip,
    UnitKind,
    UnitState,
    UnitStatus,
    retry_key,
)
from cems.line.dispatch import MAX_MULTICAST_RECIPIENTS, LineDispatch
from cems.models import Channel, Profile
from cems.ports import (
    CountDelta,
    CounterPort,
    CustomerProfiles,
    LineDeliveryClaims,
    LineGateway,
    ServiceUnavailable,
    ShortLinkWriter,
)
from cems.reports.counters import Metric, ReportCell

logger = Logger(child=True)
# Recipient outcomes as report counters (a deferral is not an outcome: the dispatch comes back).
REPORTED_OUTCOMES = {
    RecipientStatus.SENT: Metric.SENT,
    RecipientStatus.FAILED: Metric.FAILED,
    RecipientStatus.SKIPPED_UNREACHABLE: Metric.SUPPRESSED,
    RecipientStatus.SKIPPED_NO_CONSENT: Metric.SUPPRESSED,
}

MONTHLY_LIMIT_MESSAGE = "monthly limit"
# LINE's monthly limit lasts until the month ends or the plan changes: look again in an hour.
MONTHLY_LIMIT_DEFER_SECONDS = 3600
# Once LINE said "monthly limit", this execution environment stops calling it for a while.
MONTHLY_LIMIT_PAUSE_SECONDS = 600
# Exponential backoff for retryable answers: base * 2^(receive count - 1), jittered, capped.
RETRY_BASE_SECONDS = 2.0
RETRY_MAX_SECONDS = 600
# How long a claim on a unit holds: longer than one LINE call with its time-outs and one reconnect.
CLAIM_LEASE = timedelta(seconds=60)
# No LINE call starts with less than this left before the Lambda time-out; the dispatch comes back.
MIN_REMAINING_MS = 15_000
# Unit ids: `m0000`, `m0001`, ... for multicast chunks of common content, `p#<customer id>` for a push of
# personalised content.
PERSONAL_UNIT_PREFIX = "p#"
# Units added to a frozen plan by extension n: `x01m0000`, ... (`p#<customer>` for a push).
EXTENSION_UNIT_PREFIX = "x"
# Conditional writes an attempt tries to extend a plan others keep extending; then it comes back.
EXTEND_ATTEMPTS = 3
PROFILES_PER_READ = 100
_LINE_USER_ID = re.compile(r"U[0-9a-f]{32}")


@dataclass(frozen=True)
class CallResult:
    """LINE's answer to one push or multicast, classified."""

    status: UnitStatus  # SENT, FAILED, RETRY or DEFERRED
    http_status: int | None = None
    reason: str | None = None
    line_request_id: str | None = None
    monthly_limit: bool = False
    unauthorised: bool = False


@dataclass
class DispatchReport:
    """What one attempt of one dispatch did: for metrics, logs and the SQS decision."""

    idempotency_key: str | None = None
    test: bool = False
    invalid: bool = False
    plan_created: bool = False
    api_calls: int = 0
    sent: int = 0
    failed: int = 0
    deferred: int = 0
    skipped_unreachable: int = 0
    skipped_no_consent: int = 0
    # Units found final already (a redelivered or repeated dispatch): not sent again.
    already_done: int = 0
    retries: int = 0
    monthly_limit_hits: int = 0
    content_mismatch: bool = False
    # Recipients this attempt added to the frozen plan (a sole chunk naming customers it never had).
    added_to_plan: int = 0
    # Short links of the dispatch's texts this attempt stored (0 when an earlier attempt had).
    short_links_stored: int = 0
    failure_reasons: list[str] = field(default_factory=list)
    retry_after: int | None = None

    def count(self, status: RecipientStatus, n: int) -> None:
        name = status.value
        setattr(self, name, getattr(self, name) + n)

    def later(self, seconds: int) -> None:
        self.retry_after = max(self.retry_after or 0, seconds)

    def metrics(self) -> dict[str, int]:
        """The counts this attempt adds to CloudWatch, by metric name (test sends under `LineTest…`,
        apart from real ones; the monthly limit only when it was hit, for its alarm)."""
        if self.invalid:
            return {"LineDispatchesInvalid": 1}
        prefix = "LineTest" if self.test else "Line"
        counts = {
            prefix + "RecipientsSent": self.sent,
            prefix + "RecipientsFailed": self.failed,
            prefix + "RecipientsDeferred": self.deferred,
            prefix + "RecipientsSkippedUnreachable": self.skipped_unreachable,
            prefix + "RecipientsSkippedNoConsent": self.skipped_no_consent,
            prefix + "ApiCalls": self.api_calls,
            prefix + "ApiRetries": self.retries,
        }
        if self.monthly_limit_hits:
            counts["LineMonthlyLimitReached"] = self.monthly_limit_hits
        return counts


def classify_error(status: int, body: Any, headers: Any) -> CallResult:
    """LINE's non-2xx answer: sent (409), deferred (monthly limit), retry, or failed for good."""
    message = _error_message(body)
    request_id = response_header(headers, "x-line-request-id")
    reason = scrub(f"{status} {message}".strip())
    if status == 409:
        # "The retry key is already accepted": an earlier attempt of this very unit got through.
        return CallResult(UnitStatus.SENT, status, "already accepted (409)", request_id)
    if status == 429 and MONTHLY_LIMIT_MESSAGE in message.lower():
        return CallResult(UnitStatus.DEFERRED, status, reason, request_id, monthly_limit=True)
    if status == 429 or status >= 500 or status == 0:
        return CallResult(UnitStatus.RETRY, status, reason, request_id)
    if status == 401:
        # A wrong or expired channel access token is the operator's to fix, not the message's fault:
        # retried (the token is read again), and after maxReceiveCount the dispatch waits in the DLQ.
        return CallResult(UnitStatus.RETRY, status, reason, request_id, unauthorised=True)
    return CallResult(UnitStatus.FAILED, status, reason, request_id)


def _error_message(body: Any) -> str:
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return str(body)[:200]
    if not isinstance(parsed, dict):
        return str(parsed)[:200]
    text = str(parsed.get("message", ""))
    details = parsed.get("details") or []
    parts = [
        f"{d.get('property', '')}: {d.get('message', '')}".strip(": ") for d in details if isinstance(d, dict)
    ]
    if parts:
        text += " (" + "; ".join(parts) + ")"
    return text


def response_header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    for key, value in dict(headers).items():
        if str(key).lower() == name:
            return str(value)
    return None


def scrub(text: str, limit: int = 500) -> str:
    """LINE's error text, without anything that looks like a LINE user id, for records and logs."""
    return _LINE_USER_ID.sub("U…", text)[:limit]


def reachability(profile: Profile | None) -> Skip | None:
    """Why a customer cannot be sent LINE messages now, or None if they can (Profile.line_contact)."""
    if profile is not None and profile.line_contact():
        return None
    if profile is None:
        return Skip(RecipientStatus.SKIPPED_UNREACHABLE, "no profile")
    state = profile.channels.get(Channel.LINE)
    if not profile.line_user_id or state is None:
        return Skip(RecipientStatus.SKIPPED_UNREACHABLE, "no LINE account linked")
    if not state.reachable:
        return Skip(RecipientStatus.SKIPPED_UNREACHABLE, state.reason or "not following the LINE account")
    return Skip(RecipientStatus.SKIPPED_NO_CONSENT, state.reason or "no consent to LINE messages")


def make_plan(dispatch: LineDispatch, profiles: Mapping[str, Profile]) -> DispatchPlan:
    """Who gets which LINE call: multicast chunks for common content, a push per personalised one."""
    if dispatch.test_line_user_id is not None:
        # A test send to a staff member's LINE account: one push for its one recipient, no profile.
        return _plan(dispatch, [_test_unit(dispatch)], {})
    units, skipped = _cut(dispatch, dispatch.recipients, profiles, set(), "")
    return _plan(dispatch, units, skipped)


def extend_plan(
    plan: DispatchPlan, dispatch: LineDispatch, added: Sequence[str], profiles: Mapping[str, Profile]
) -> DispatchPlan:
    """`plan` with one extension more: units for `added` (customers the plan never had), cut as the
    plan was (`_cut`) under unit ids of their own, and those set aside; a customer whose LINE account
    a planned recipient has already is set aside (it gets the message through them)."""
    number = len(plan.extensions) + 1
    contacts = {
        str(contact)
        for unit in plan.units
        for c in unit.customer_ids
        if (p := profiles.get(c)) is not None and (contact := p.line_contact())
    }
    units, skipped = _cut(dispatch, added, profiles, contacts, f"{EXTENSION_UNIT_PREFIX}{number:02d}")
    return replace(
        plan,
        units=(*plan.units, *units),
        extensions=(*plan.extensions, PlanExtension(skipped)),
    )


def _cut(
    dispatch: LineDispatch,
    customer_ids: Sequence[str],
    profiles: Mapping[str, Profile],
    seen_line_users: set[str],
    prefix: str,
) -> tuple[list[PlanUnit], dict[str, Skip]]:
    """The units of `customer_ids` (multicast chunks `<prefix>m0000`... of the common content, a push
    `p#<customer>` each for personalised content) and who is set aside, with why."""
    skipped: dict[str, Skip] = {}
    shared: list[str] = []
    personal: list[str] = []
    for customer_id in customer_ids:
        profile = profiles.get(customer_id)
        skip = reachability(profile)
        if skip is None and profile is not None:
            contact = profile.line_contact()
            if contact in seen_line_users:
                skip = Skip(RecipientStatus.SKIPPED_UNREACHABLE, "same LINE account as another recipient")
            seen_line_users.add(str(contact))
        if skip is not None:
            skipped[customer_id] = skip
        elif customer_id in dispatch.personalised:
            personal.append(customer_id)
        else:
            shared.append(customer_id)
    units: list[PlanUnit] = []
    for index, start in enumerate(range(0, len(shared), MAX_MULTICAST_RECIPIENTS)):
        chunk = tuple(shared[start : start + MAX_MULTICAST_RECIPIENTS])
        kind = UnitKind.MULTICAST if len(chunk) > 1 else UnitKind.PUSH
        units.append(PlanUnit(f"{prefix}m{index:04d}", kind, chunk))
    units.extend(PlanUnit(f"{PERSONAL_UNIT_PREFIX}{c}", UnitKind.PUSH, (c,)) for c in personal)
    return units, skipped


def _test_unit(dispatch: LineDispatch) -> PlanUnit:
    customer_id = dispatch.recipients[0]
    personal = customer_id in dispatch.personalised
    unit_id = f"{PERSONAL_UNIT_PREFIX}{customer_id}" if personal else "m0000"
    return PlanUnit(unit_id, UnitKind.PUSH, (customer_id,))


def _plan(dispatch: LineDispatch, units: list[PlanUnit], skipped: dict[str, Skip]) -> DispatchPlan:
    return DispatchPlan(
        idempotency_key=dispatch.idempotency_key,
        fingerprint=dispatch.fingerprint(),
        units=tuple(units),
        skipped=skipped,
        created_at=clock.now(),
        metadata={
            "scenario_id": dispatch.scenario_id,
            "step_id": dispatch.step_id,
            "variant": dispatch.variant,
            "test": dispatch.test,
        },
        extendable=dispatch.sole_chunk and not dispatch.test,
    )


class LineSender:
    def __init__(
        self,
        customers: CustomerProfiles,
        deliveries: LineDeliveryClaims,
        gateway: LineGateway,
        *,
        retry_base_seconds: float = RETRY_BASE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        counters: CounterPort | None = None,
        short_links: ShortLinkWriter | None = None,
    ) -> None:
        self.counters = counters
        self.short_links = short_links
        self.customers = customers
        self.deliveries = deliveries
        self.gateway = gateway
        self.retry_base_seconds = retry_base_seconds
        self._monotonic = monotonic
        self._paused_until = 0.0

    # One attempt of one dispatch -----------------------------------------------------------------

    def handle(
        self, body: str, receive_count: int = 1, remaining_ms: Callable[[], int] | None = None
    ) -> DispatchReport:
        report = DispatchReport()
        try:
            dispatch = LineDispatch.model_validate_json(body)
        except ValidationError as exc:
            # Never right however often it is retried: reported and dropped (the input is not logged,
            # it may hold personal content).
            report.invalid = True
            report.failure_reasons = validation_reasons(exc)
            return report
        report.idempotency_key = dispatch.idempotency_key
        report.test = dispatch.test
        state = self.deliveries.state(dispatch.idempotency_key)
        # A test send to a staff member's LINE account (test_line_user_id) reads no profile.
        profiles: dict[str, Profile] | None = {} if dispatch.test_line_user_id is not None else None
        if state.plan is None:
            if profiles is None:
                profiles = self._profiles(dispatch.recipients)
            new_plan = make_plan(dispatch, profiles)
            if self.deliveries.create_plan(new_plan):
                report.plan_created = True
                state.plan = new_plan
            else:
                state = self.deliveries.state(dispatch.idempotency_key)
        plan = state.plan
        assert plan is not None
        if plan.fingerprint != dispatch.fingerprint():
            # Same key, different content or audience: the frozen plan decides who gets which call.
            # A shared dispatch done again with fewer recipients is expected (they were sent under
            # this key). One naming customers the plan never had: a sole chunk adds them to the plan
            # (they were under no other key of its content); any other dispatch leaves them out, and
            # says so in the log (a count, never the ids).
            report.content_mismatch = True
            if dispatch.sole_chunk and plan.extendable and not dispatch.test:
                state, profiles = self._extend(dispatch, state, profiles, report)
                plan = state.plan
                assert plan is not None
            unplanned = set(dispatch.recipients) - plan.recipients()
            if unplanned:
                logger.warning(
                    "recipients not in the dispatch's frozen plan get nothing under its key",
                    extra={"idempotency_key": dispatch.idempotency_key, "unplanned": len(unplanned)},
                )
        self._record_missing(dispatch, plan, state, report)
        pending = [
            u
            for u in plan.units
            if (s := state.units.get(u.unit_id)) is None or s.status not in FINAL_UNIT_STATUSES
        ]
        report.already_done = len(plan.units) - len(pending)
        if pending and dispatch.test_line_user_id is None:
            # Read once: by the plan or its extension (which read every planned recipient), else now.
            unread = [c for u in pending for c in u.customer_ids if profiles is None or c not in profiles]
            if unread or profiles is None:
                profiles = {**(profiles or {}), **self._profiles(unread)}
        if pending and not self._store_short_links(dispatch, report, receive_count):
            return report
        for unit in pending:
            assert profiles is not None
            earlier = state.units.get(unit.unit_id)
            self._send_unit(dispatch, plan, unit, profiles, report, receive_count, remaining_ms, earlier)
        return report

    def _store_short_links(self, dispatch: LineDispatch, report: DispatchReport, receive_count: int) -> bool:
        """The short links the dispatch's texts carry, stored before any unit calls LINE, so no tap
        finds its code missing: one conditional PutItem per link, on every attempt that still has a
        unit to send (an attempt after a retry finds them stored and changes nothing). False when
        one could not be written: nothing is sent, and the dispatch comes back."""
        if not dispatch.short_links or self.short_links is None:
            return True
        try:
            for code, link in dispatch.short_links.items():
                report.short_links_stored += self.short_links.put(code, link.token, link.expires_at)
        except ServiceUnavailable as exc:
            error = type(exc.__cause__ or exc).__name__
            # A count and the error type only: a code is as good as the link it stands for.
            logger.warning("short links not stored; dispatch not sent", extra={"error": error})
            report.later(self._backoff(receive_count))
            return False
        return True

    def _extend(
        self,
        dispatch: LineDispatch,
        state: DispatchState,
        profiles: dict[str, Profile] | None,
        report: DispatchReport,
    ) -> tuple[DispatchState, dict[str, Profile] | None]:
        """The state with the plan extended by the dispatch's recipients it never had (none: as it
        is). Stored only if the plan is still as read (its number of extensions); when another
        attempt extended it first, read again and add whoever is still missing. After
        EXTEND_ATTEMPTS lost races the dispatch comes back to try again."""
        for _ in range(EXTEND_ATTEMPTS):
            plan = state.plan
            assert plan is not None
            known = plan.recipients()
            added = [c for c in dispatch.recipients if c not in known]
            if not added:
                return state, profiles
            # The planned recipients too: their LINE accounts (none is sent twice) and their units.
            wanted = [c for u in plan.units for c in u.customer_ids] + added
            unread = [c for c in wanted if profiles is None or c not in profiles]
            profiles = {**(profiles or {}), **self._profiles(unread)}
            extended = extend_plan(plan, dispatch, added, profiles)
            if self.deliveries.extend_plan(extended):
                report.added_to_plan += len(added)
                logger.info(
                    "recipients added to the dispatch's frozen plan",
                    extra={"idempotency_key": dispatch.idempotency_key, "added": len(added)},
                )
                state.plan = extended
                return state, profiles
            state = self.deliveries.state(dispatch.idempotency_key)
        report.later(self._backoff(1))
        return state, profiles

    def _profiles(self, customer_ids: Sequence[str]) -> dict[str, Profile]:
        profiles: dict[str, Profile] = {}
        # In reads of at most 100 profiles (one DynamoDB BatchGetItem each).
        for start in range(0, len(customer_ids), PROFILES_PER_READ):
            profiles.update(self.customers.profiles(customer_ids[start : start + PROFILES_PER_READ]))
        # A recipient merged into another customer since the dispatch was made: use the survivor.
        for customer_id in customer_ids:
            profile = profiles.get(customer_id)
            if profile is not None and profile.merged_into:
                survivor = self.customers.profile(customer_id)
                if survivor is not None:
                    profiles[customer_id] = survivor
        return profiles

    def _record_missing(
        self, dispatch: LineDispatch, plan: DispatchPlan, state: DispatchState, report: DispatchReport
    ) -> None:
        """Counts and recipient records an earlier attempt decided but did not get to write (it
        stopped between two writes): the plan's skipped recipients and those of final units. Each
        is recomputed from the whole plan or unit and counted under its own marker, which an
        attempt that did count refuses: so the counts are exact whichever write was the last."""
        recorded = state.recipients
        if any(c not in recorded for c in plan.skipped):
            skipped = [RecipientRecord(c, s.status, s.reason) for c, s in plan.skipped.items()]
            if report.plan_created:
                for record in skipped:
                    report.count(record.status, 1)
            if not self._write(dispatch, plan, "plan", skipped, report):
                return
        for number, extension in enumerate(plan.extensions, start=1):
            if all(c in recorded for c in extension.skipped):
                continue
            skipped = [RecipientRecord(c, s.status, s.reason) for c, s in extension.skipped.items()]
            if report.added_to_plan and number == len(plan.extensions):
                for record in skipped:  # set aside by this attempt's extension
                    report.count(record.status, 1)
            if not self._write(dispatch, plan, f"plan#{EXTENSION_UNIT_PREFIX}{number:02d}", skipped, report):
                return
        for unit in plan.units:
            unit_state = state.units.get(unit.unit_id)
            if unit_state is None or unit_state.status not in FINAL_UNIT_STATUSES:
                continue
            # A record from before the unit was final (deferred) is not its outcome.
            if all(c in recorded and recorded[c].status in FINAL_RECORDS for c in unit.customer_ids):
                continue
            records = _unit_records(unit, unit_state)
            if not self._write(dispatch, plan, unit.unit_id, records, report):
                return

    def _send_unit(
        self,
        dispatch: LineDispatch,
        plan: DispatchPlan,
        unit: PlanUnit,
        profiles: Mapping[str, Profile],
        report: DispatchReport,
        receive_count: int,
        remaining_ms: Callable[[], int] | None,
        earlier: UnitState | None = None,
    ) -> None:
        paused = self._monotonic() < self._paused_until
        if not paused and remaining_ms is not None and remaining_ms() < MIN_REMAINING_MS:
            report.later(self._backoff(1))
            return
        # Who in the unit cannot be reached: decided when it is claimed and stored with the claim.
        # After an attempt whose call may have gone through (no answer, a 5xx, a worker that
        # stopped), the stored audience is kept, so the retry is the same request under the same
        # retry key: LINE answers 409 if it had accepted it, and it reached them as they were then.
        # After a refusal (a 4xx such as 429) nothing went out: it is decided again.
        audience: dict[str, Skip] | None = None
        if _refused_or_new(earlier) and dispatch.test_line_user_id is None:
            audience = {c: k for c in unit.customer_ids if (k := reachability(profiles.get(c))) is not None}
        claim = self.deliveries.claim(dispatch.idempotency_key, unit, CLAIM_LEASE, audience)
        if claim.result is ClaimResult.FINAL:
            report.already_done += 1
            return
        if claim.result is ClaimResult.BUSY:
            # Another worker is calling LINE for this unit right now; look again after its lease.
            report.later(int(CLAIM_LEASE.total_seconds()))
            return
        assert claim.token is not None
        records: list[RecipientRecord] = []
        stored = claim.state.skipped if claim.state is not None else None
        skipped: dict[str, Skip] = {}
        contacts: list[str] = []
        reachable: list[str] = []
        for customer_id in unit.customer_ids:
            if dispatch.test_line_user_id is not None:
                # A test send: to the staff member's own account, whatever the customer's state.
                contacts.append(dispatch.test_line_user_id)
                reachable.append(customer_id)
                continue
            profile = profiles.get(customer_id)
            if stored is None:  # a unit claimed before audiences were stored: decided now
                skip = reachability(profile)
            else:
                skip = stored.get(customer_id)
                if skip is None and (profile is None or not profile.line_user_id):
                    # Unlinked or erased since the unit's first claim: no LINE user id to send to.
                    skip = Skip(RecipientStatus.SKIPPED_UNREACHABLE, "no LINE account linked")
            if skip is not None:
                skipped[customer_id] = skip
                records.append(RecipientRecord(customer_id, skip.status, skip.reason, unit.unit_id))
                report.count(skip.status, 1)
                continue
            assert profile is not None and profile.line_user_id is not None
            contacts.append(profile.line_contact() or profile.line_user_id)
            reachable.append(customer_id)
        if not contacts:
            finished = self.deliveries.finish(
                dispatch.idempotency_key,
                unit,
                claim.token,
                UnitStatus.SKIPPED,
                reason="nobody reachable",
            )
            if finished:
                self._write(dispatch, plan, unit.unit_id, records, report)
            return
        if paused:
            result = CallResult(UnitStatus.DEFERRED, reason="monthly limit reached (not called)")
        else:
            key = retry_key(dispatch.idempotency_key, unit.unit_id)
            personal = unit.unit_id.startswith(PERSONAL_UNIT_PREFIX)
            content = dispatch.content_for(unit.customer_ids[0]) if personal else dispatch.messages
            # A multicast chunk that shrank to one recipient stays a multicast: same request, same key.
            result = self.gateway.send(unit.kind, contacts, content, key, dispatch.notification_disabled)
            report.api_calls += 1
        if result.monthly_limit:
            report.monthly_limit_hits += 1
            self._paused_until = self._monotonic() + MONTHLY_LIMIT_PAUSE_SECONDS
        finished = self.deliveries.finish(
            dispatch.idempotency_key,
            unit,
            claim.token,
            result.status,
            reason=result.reason,
            http_status=result.http_status,
            line_request_id=result.line_request_id,
        )
        recipient_status = {
            UnitStatus.SENT: RecipientStatus.SENT,
            UnitStatus.FAILED: RecipientStatus.FAILED,
            UnitStatus.DEFERRED: RecipientStatus.DEFERRED,
        }.get(result.status)
        if recipient_status is not None:
            records += [
                RecipientRecord(
                    c,
                    recipient_status,
                    result.reason,
                    unit.unit_id,
                    result.line_request_id,
                    None,
                    claim.attempt,
                )
                for c in reachable
            ]
            report.count(recipient_status, len(reachable))
        if result.status is UnitStatus.FAILED and result.reason:
            report.failure_reasons.append(result.reason)
        if result.status is UnitStatus.RETRY:
            report.retries += 1
            report.later(self._backoff(receive_count))
            if result.reason:
                report.failure_reasons.append(result.reason)
        elif result.status is UnitStatus.DEFERRED:
            report.later(MONTHLY_LIMIT_DEFER_SECONDS)
        if not finished:
            # The claim was lost (its lease ran out, another attempt took the unit): that attempt
            # records and counts the unit's outcome.
            return
        if result.status not in FINAL_UNIT_STATUSES:
            # Retried or deferred: recorded as it stands, counted when the unit ends.
            self.deliveries.record(dispatch.idempotency_key, records, plan.metadata)
            return
        state = UnitState(
            unit.unit_id,
            result.status,
            claim.attempt,
            reason=result.reason,
            line_request_id=result.line_request_id,
            skipped=skipped,
        )
        self._write(dispatch, plan, unit.unit_id, _unit_records(unit, state), report)

    def _write(
        self,
        dispatch: LineDispatch,
        plan: DispatchPlan,
        part: str,
        records: list[RecipientRecord],
        report: DispatchReport,
    ) -> bool:
        """The report counts of one part of the plan (a unit, or the plan's skipped recipients),
        then its recipient records. Counted first, all at once under one marker for the part: a
        worker stopping after the count leaves records missing, which the next attempt writes (and
        its count is refused by the marker); one stopping before it leaves both to the next attempt.
        Never a test send. False when the count could not be written: the records wait with it,
        and the dispatch comes back to count (and record) them."""
        if not dispatch.test and self.counters is not None and dispatch.scenario_id is not None:
            deltas = _deltas(dispatch, records)
            if deltas:
                try:
                    self.counters.add_many(deltas, once=f"line#{dispatch.idempotency_key}#{part}")
                except ServiceUnavailable as exc:
                    error = type(exc.__cause__ or exc).__name__
                    logger.warning("report counters not added", extra={"part": part, "error": error})
                    report.later(self._backoff(1))
                    return False
        self.deliveries.record(dispatch.idempotency_key, records, plan.metadata)
        return True

    def _backoff(self, receive_count: int) -> int:
        delay = min(RETRY_MAX_SECONDS, self.retry_base_seconds * 2 ** max(0, receive_count - 1))
        # Jitter spreads a storm's retries so they do not all come back in the same second.
        return max(1, round(random.uniform(delay / 2, delay)))  # noqa: S311 - not for security


# Recipient statuses that are a unit's (or the plan's) last word: not a deferral, which comes back.
FINAL_RECORDS = frozenset(REPORTED_OUTCOMES)


def _unit_records(unit: PlanUnit, state: UnitState) -> list[RecipientRecord]:
    """Every recipient's record of a final unit, from the unit alone: those unreachable at send time
    as they were found, the others as the unit ended (sent or failed)."""
    outcome = RecipientStatus.SENT if state.status is UnitStatus.SENT else RecipientStatus.FAILED
    records: list[RecipientRecord] = []
    for customer_id in unit.customer_ids:
        skip = (state.skipped or {}).get(customer_id)
        if skip is None and state.status is UnitStatus.SKIPPED:
            skip = Skip(RecipientStatus.SKIPPED_UNREACHABLE, state.reason or "nobody reachable")
        if skip is not None:
            records.append(RecipientRecord(customer_id, skip.status, skip.reason, unit.unit_id))
        else:
            records.append(
                RecipientRecord(
                    customer_id,
                    outcome,
                    state.reason,
                    unit.unit_id,
                    state.line_request_id,
                    state.at,
                    state.attempts,
                )
            )
    return records


def _deltas(dispatch: LineDispatch, records: Sequence[RecipientRecord]) -> list[CountDelta]:
    """The report counts of `records` (outcomes only: a deferral comes back), one delta per metric."""
    assert dispatch.scenario_id is not None
    if dispatch.version is None:
        return []
    cell = ReportCell(
        dispatch.scenario_id, dispatch.version, dispatch.step_id, dispatch.variant, channel=Channel.LINE.value
    )
    counts = Counter(REPORTED_OUTCOMES[r.status] for r in records if r.status in REPORTED_OUTCOMES)
    return [CountDelta(cell, metric, n) for metric, n in counts.items()]


def _refused_or_new(earlier: UnitState | None) -> bool:
    """Whether no earlier attempt of a unit can have reached anyone: none was made, or LINE refused
    it (a 4xx), or it was deferred without calling LINE."""
    if earlier is None:
        return True
    if earlier.status not in (UnitStatus.RETRY, UnitStatus.DEFERRED):
        return False  # sending (its worker stopped): unknown
    status = earlier.http_status
    if status is None:
        return earlier.status is UnitStatus.DEFERRED  # paused, not called; else a network error
    return 400 <= status < 500

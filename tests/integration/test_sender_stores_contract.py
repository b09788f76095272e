"""The senders' in-memory stores (tests/fakes) keep the DynamoDB adapters' contract: the same
assertions run against each fake and against its adapter under moto. Covered: what the senders'
at-most-once rules depend on (a LINE plan stored once, and extended only by a writer who read its
current number of extensions; a unit claimed once until it is final, by a
second worker only after the lease ran out, and finished only by the claim's token; an email dispatch
claimed once unless its last attempt was `retry`, a refused claim returning the record, an abandoned
claim becoming `unknown`; a suppression keeping its first reason)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.email_deliveries import DeliveryRecords
from cems.adapters.dynamodb.line_deliveries import DeliveryStore
from cems.adapters.dynamodb.suppression import SuppressionStore
from cems.email.dispatch import EmailDispatch
from cems.email.sender import CLAIM_LEASE as EMAIL_LEASE
from cems.email.sender import Status
from cems.line.deliveries import (
    ClaimResult,
    DispatchPlan,
    PlanExtension,
    PlanUnit,
    RecipientRecord,
    RecipientStatus,
    Skip,
    UnitKind,
    UnitStatus,
)
from cems.ports import EmailDeliveryRecords, LineDeliveryClaims, SuppressionPort

from tests.fakes.email import InMemoryEmailDeliveries, InMemorySuppressions
from tests.fakes.line import InMemoryLineDeliveries

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, module_dynamodb  # noqa: F401

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
LEASE = timedelta(seconds=60)
IMPLEMENTATIONS = ["fake", "moto"]


@pytest.fixture(autouse=True)
def frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture(params=IMPLEMENTATIONS)
def line(request: pytest.FixtureRequest) -> LineDeliveryClaims:
    if request.param == "fake":
        return InMemoryLineDeliveries()
    return DeliveryStore("DeliveriesTable", request.getfixturevalue("empty_dynamodb"), timedelta(days=30))


@pytest.fixture(params=IMPLEMENTATIONS)
def email(request: pytest.FixtureRequest) -> EmailDeliveryRecords:
    if request.param == "fake":
        return InMemoryEmailDeliveries()
    return DeliveryRecords("DeliveriesTable", request.getfixturevalue("empty_dynamodb"), timedelta(days=30))


@pytest.fixture(params=IMPLEMENTATIONS)
def suppressions(request: pytest.FixtureRequest) -> SuppressionPort:
    if request.param == "fake":
        return InMemorySuppressions()
    return SuppressionStore("CustomersTable", request.getfixturevalue("empty_dynamodb"))


UNIT = PlanUnit("m0000", UnitKind.MULTICAST, ("c1", "c2"))


def plan(fingerprint: str = "f1") -> DispatchPlan:
    return DispatchPlan(
        idempotency_key="k1",
        fingerprint=fingerprint,
        units=(UNIT, PlanUnit("p#c3", UnitKind.PUSH, ("c3",))),
        skipped={"c4": Skip(RecipientStatus.SKIPPED_NO_CONSENT, "no consent")},
        created_at=NOW,
        metadata={"scenario_id": "s1"},
    )


# ------------------------------------------------------------------------------------------- LINE


def test_a_line_plan_is_stored_once_and_read_back_whole(line: LineDeliveryClaims) -> None:
    assert line.state("k1").plan is None
    assert line.create_plan(plan())
    assert not line.create_plan(plan("another"))
    stored = line.state("k1").plan
    assert stored is not None
    assert (stored.fingerprint, stored.units, dict(stored.skipped)) == (
        "f1",
        plan().units,
        {"c4": Skip(RecipientStatus.SKIPPED_NO_CONSENT, "no consent")},
    )


def test_a_line_plan_is_extended_once_per_number_of_extensions_read(line: LineDeliveryClaims) -> None:
    # A shared dispatch's redo naming customers the plan never had (cems.line.sender._extend).
    assert not line.extend_plan(replace(plan(), extensions=(PlanExtension(),)))  # no plan stored
    base = replace(plan(), extendable=True)
    assert line.create_plan(base)
    stored = line.state("k1").plan
    assert stored is not None and stored.extendable and stored.extensions == ()
    added = PlanUnit("x01m0000", UnitKind.MULTICAST, ("c5", "c6"))
    away = {"c7": Skip(RecipientStatus.SKIPPED_UNREACHABLE, "no LINE account linked")}
    first = replace(stored, units=(*stored.units, added), extensions=(PlanExtension(away),))
    # Two attempts that read the plan alike: one extension is stored, the other refused.
    rival = replace(
        stored, units=(*stored.units, PlanUnit("p#c9", UnitKind.PUSH, ("c9",))), extensions=(PlanExtension(),)
    )
    assert line.extend_plan(first)
    assert not line.extend_plan(rival)
    again = line.state("k1").plan
    assert again is not None
    assert (again.units, again.extensions) == (first.units, first.extensions)
    assert again.recipients() == {"c1", "c2", "c3", "c4", "c5", "c6", "c7"}
    # The rest of the plan as it was; the next extension is made from the plan as read now.
    assert (again.fingerprint, dict(again.skipped), again.metadata, again.extendable) == (
        "f1",
        {"c4": Skip(RecipientStatus.SKIPPED_NO_CONSENT, "no consent")},
        {"scenario_id": "s1"},
        True,
    )
    assert not line.extend_plan(
        replace(rival, extensions=(PlanExtension(), PlanExtension(), PlanExtension()))
    )
    second = replace(
        again,
        units=(*again.units, PlanUnit("p#c9", UnitKind.PUSH, ("c9",))),
        extensions=(*again.extensions, PlanExtension()),
    )
    assert line.extend_plan(second)
    assert not line.extend_plan(second)
    final = line.state("k1").plan
    assert final is not None and [u.unit_id for u in final.units] == ["m0000", "p#c3", "x01m0000", "p#c9"]
    assert len(final.extensions) == 2


def test_a_unit_is_claimed_once_and_a_final_one_never_again(line: LineDeliveryClaims) -> None:
    first = line.claim("k1", UNIT, LEASE)
    assert first.result is ClaimResult.CLAIMED and first.token and first.attempt == 1
    assert line.claim("k1", UNIT, LEASE).result is ClaimResult.BUSY
    assert line.finish("k1", UNIT, first.token, UnitStatus.SENT, http_status=200, line_request_id="r1")
    final = line.claim("k1", UNIT, LEASE)
    assert final.result is ClaimResult.FINAL and final.state is not None
    assert (final.state.status, final.state.http_status, final.state.line_request_id) == (
        UnitStatus.SENT,
        200,
        "r1",
    )


def test_a_units_audience_is_stored_by_its_first_claim_and_kept_by_later_ones(
    line: LineDeliveryClaims,
) -> None:
    # The sender keeps a unit's request the same on every attempt whose call may have gone through.
    away = {"c2": Skip(RecipientStatus.SKIPPED_UNREACHABLE, "not following the LINE account")}
    first = line.claim("k1", UNIT, LEASE, away)
    assert first.state is not None and first.state.skipped == away
    assert first.token is not None
    assert line.finish("k1", UNIT, first.token, UnitStatus.RETRY, reason="500", http_status=500)
    again = line.claim("k1", UNIT, LEASE)
    assert again.state is not None and again.state.skipped == away
    assert again.token is not None
    assert line.finish("k1", UNIT, again.token, UnitStatus.SENT, http_status=200)
    assert line.state("k1").units["m0000"].skipped == away
    # Everyone reachable is an audience too (empty), unlike a unit claimed without one.
    everyone = PlanUnit("p#c3", UnitKind.PUSH, ("c3",))
    assert line.claim("k1", everyone, LEASE, {}).state.skipped == {}  # type: ignore[union-attr]
    unknown = PlanUnit("p#c5", UnitKind.PUSH, ("c5",))
    assert line.claim("k1", unknown, LEASE).state.skipped is None  # type: ignore[union-attr]


@pytest.mark.parametrize("outcome", [UnitStatus.RETRY, UnitStatus.DEFERRED])
def test_a_unit_to_try_again_is_claimed_again_with_the_next_attempt(
    line: LineDeliveryClaims, outcome: UnitStatus
) -> None:
    first = line.claim("k1", UNIT, LEASE)
    assert first.token is not None
    line.finish("k1", UNIT, first.token, outcome, reason="429 Too Many Requests")
    again = line.claim("k1", UNIT, LEASE)
    assert again.result is ClaimResult.CLAIMED and again.attempt == 2 and again.token != first.token


def test_a_lapsed_claim_is_taken_over_and_the_old_token_can_no_longer_finish(
    line: LineDeliveryClaims,
) -> None:
    dead = line.claim("k1", UNIT, LEASE)
    assert dead.token is not None
    clock.advance(LEASE.total_seconds() - 1)
    assert line.claim("k1", UNIT, LEASE).result is ClaimResult.BUSY
    clock.advance(2)
    taken = line.claim("k1", UNIT, LEASE)
    assert taken.result is ClaimResult.CLAIMED and taken.attempt == 2 and taken.token is not None
    assert not line.finish("k1", UNIT, dead.token, UnitStatus.SENT)
    assert line.finish("k1", UNIT, taken.token, UnitStatus.FAILED, reason="400", http_status=400)
    unit = line.state("k1").units["m0000"]
    assert (unit.status, unit.reason, unit.attempts) == (UnitStatus.FAILED, "400", 2)


def test_recipient_outcomes_are_recorded_and_the_latest_one_kept(line: LineDeliveryClaims) -> None:
    line.record("k1", [RecipientRecord("c1", RecipientStatus.DEFERRED, "monthly limit", "m0000")], {})
    line.record(
        "k1",
        [
            RecipientRecord("c1", RecipientStatus.SENT, None, "m0000", "r2", None, 2),
            RecipientRecord("c4", RecipientStatus.SKIPPED_NO_CONSENT, "no consent"),
        ],
        {"scenario_id": "s1"},
    )
    recipients = line.state("k1").recipients
    assert {c: (r.status, r.unit_id, r.attempt) for c, r in recipients.items()} == {
        "c1": (RecipientStatus.SENT, "m0000", 2),
        "c4": (RecipientStatus.SKIPPED_NO_CONSENT, None, 0),
    }
    assert recipients["c1"].at == NOW
    assert line.state("k2").recipients == {}


# ------------------------------------------------------------------------------------------ email


def mail(key: str = "k1", **fields: Any) -> EmailDispatch:
    values: dict[str, Any] = {
        "idempotency_key": key,
        "customer_id": "c1",
        "subject": "新茶のご案内",
        "text": "こんにちは",
        "scenario_id": "s1",
        "version": 2,
        "step_id": "mail",
    }
    return EmailDispatch.model_validate(values | fields)


def _seen(record: dict[str, Any] | None) -> dict[str, Any]:
    """What the sender reads from a record."""
    assert record is not None
    return {
        name: record.get(name)
        for name in ("status", "lease_until", "error_code", "ses_message_id", "reason", "customer_id")
    } | {"attempts": int(record.get("attempts", 0)), "claimed": bool(record.get("claim"))}


def test_an_email_dispatch_is_claimed_once_and_a_refusal_returns_the_record(
    email: EmailDeliveryRecords,
) -> None:
    token, existing = email.claim(mail(), Status.SENDING)
    assert token is not None and existing is None
    again, found = email.claim(mail(), Status.SENDING)
    assert again is None
    assert _seen(found) == {
        "status": "sending",
        "lease_until": clock.iso(NOW + EMAIL_LEASE),
        "error_code": None,
        "ses_message_id": None,
        "reason": None,
        "customer_id": "c1",
        "attempts": 1,
        "claimed": True,
    }
    assert email.finish("k1", token, Status.SENT, message_id="ses-1")
    sent = _seen(email.get("k1"))
    assert (sent["status"], sent["ses_message_id"], sent["lease_until"]) == ("sent", "ses-1", None)
    assert email.claim(mail(), Status.SENDING)[0] is None
    assert email.get("other") is None


def test_an_email_dispatch_to_retry_is_claimed_again_and_the_old_token_is_spent(
    email: EmailDeliveryRecords,
) -> None:
    token, _ = email.claim(mail(), Status.SENDING)
    assert token is not None
    assert email.finish("k1", token, Status.RETRY, error_code="Throttling", reason="rate exceeded")
    assert _seen(email.get("k1"))["claimed"] is False
    second, _ = email.claim(mail(), Status.SENDING)
    assert second is not None
    assert not email.finish("k1", token, Status.SENT)
    assert email.finish("k1", second, Status.FAILED, error_code="MessageRejected")
    seen = _seen(email.get("k1"))
    assert (seen["status"], seen["error_code"], seen["reason"], seen["attempts"]) == (
        "failed",
        "MessageRejected",
        None,
        2,
    )


def test_a_skip_is_recorded_final_with_its_reason(email: EmailDeliveryRecords) -> None:
    token, _ = email.claim(mail(), Status.SKIPPED, "no_consent")
    assert token is not None
    seen = _seen(email.get("k1"))
    assert (seen["status"], seen["reason"], seen["lease_until"]) == ("skipped", "no_consent", None)
    assert email.claim(mail(), Status.SENDING)[0] is None


def test_an_abandoned_claim_becomes_unknown_only_through_its_own_token(email: EmailDeliveryRecords) -> None:
    token, _ = email.claim(mail(), Status.SENDING)
    assert token is not None
    assert not email.abandon("k1", "someone-else")
    assert email.abandon("k1", token)
    seen = _seen(email.get("k1"))
    assert (seen["status"], seen["lease_until"]) == ("unknown", None)
    assert not email.abandon("k1", token)  # no longer sending
    # The worker that held it, alive after all, may still record what SES answered.
    assert email.finish("k1", token, Status.SENT, message_id="ses-late")
    assert _seen(email.get("k1"))["status"] == "sent"


# ------------------------------------------------------------------------------------ suppression


def test_a_suppression_keeps_its_first_reason_for_any_spelling_of_the_address(
    suppressions: SuppressionPort,
) -> None:
    assert suppressions.reason("a@example.jp") is None
    assert suppressions.suppress("a@example.jp", "bounce")
    assert not suppressions.suppress("a@example.jp", "complaint")
    assert suppressions.reason("a@example.jp") == "bounce"
    assert suppressions.reason(" A@Example.JP ") == suppressions.reason("a@example.jp")
    assert suppressions.reason("b@example.jp") is None

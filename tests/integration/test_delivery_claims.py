"""The one delivery-claim store (adapters.dynamodb.delivery_claims) under moto: keyed by channel, with
LINE's and email's items where they were before the store was shared, so a dispatch in flight
across a deploy is not sent again. Its claim rules run on the in-memory fake too
(tests/fakes/delivery_claims.py), so the fake cannot lie."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.delivery_claims import DeliveryClaimStore
from cems.adapters.dynamodb.email_deliveries import DeliveryRecords
from cems.adapters.dynamodb.line_deliveries import DeliveryStore
from cems.email.dispatch import EmailDispatch
from cems.email.sender import Status
from cems.line.deliveries import ClaimResult, PlanUnit, UnitKind, UnitStatus
from cems.models import Channel
from cems.ports import DeliveryClaims

from tests.fakes.delivery_claims import InMemoryDeliveryClaims

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, module_dynamodb  # noqa: F401

NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
KEY = "cus_1#welcome#v1#hello#e1"
TABLE = "DeliveriesTable"
RETENTION = timedelta(days=30)
UNIT = PlanUnit("u0", UnitKind.PUSH, ("cus_1",))


@pytest.fixture
def dynamodb(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue("empty_dynamodb")


@pytest.fixture(autouse=True)
def frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


def _mail() -> EmailDispatch:
    return EmailDispatch(idempotency_key=KEY, customer_id="cus_1", subject="件名", text="本文")


def _sort_keys(dynamodb: Any) -> set[str]:
    items = dynamodb.query(
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": keys.dispatch_pk(KEY)}},
    )["Items"]
    return {item["sk"]["S"] for item in items}


def test_each_channels_claim_of_one_dispatch_is_its_own_item_where_it_always_was(
    dynamodb: Any,
) -> None:
    line = DeliveryStore(TABLE, dynamodb, RETENTION)
    email = DeliveryRecords(TABLE, dynamodb, RETENTION)
    assert line.claim(KEY, UNIT, timedelta(seconds=60)).result is ClaimResult.CLAIMED
    token, existing = email.claim(_mail(), Status.SENDING)
    assert token is not None and existing is None
    assert _sort_keys(dynamodb) == {"UNIT#u0", "EMAIL"}
    # Both senders' stores write through the one store.
    assert line.claims.read(Channel.LINE, KEY, "u0") is not None
    assert email.claims.read(Channel.EMAIL, KEY, "mail") == email.get(KEY)


def test_claims_written_before_the_store_was_shared_still_stop_a_second_send(dynamodb: Any) -> None:
    # Items as the stores wrote them before: a LINE unit and a mail, both sent, still within their TTL.
    expires = int((NOW + RETENTION).timestamp())
    for sk, extra in (("UNIT#u0", {"kind": {"S": "push"}}), ("EMAIL", {"customer_id": {"S": "cus_1"}})):
        dynamodb.put_item(
            TableName=TABLE,
            Item={
                "pk": {"S": keys.dispatch_pk(KEY)},
                "sk": {"S": sk},
                "status": {"S": "sent"},
                "claim": {"S": "old-token"},
                "attempts": {"N": "1"},
                "expires_at": {"N": str(expires)},
                **extra,
            },
        )
    line = DeliveryStore(TABLE, dynamodb, RETENTION).claim(KEY, UNIT, timedelta(seconds=60))
    assert line.result is ClaimResult.FINAL and line.state is not None
    assert line.state.status is UnitStatus.SENT
    token, existing = DeliveryRecords(TABLE, dynamodb, RETENTION).claim(_mail(), Status.SENDING)
    assert token is None and existing is not None and existing["status"] == "sent"


@pytest.fixture(params=["fake", "moto"])
def claims(request: pytest.FixtureRequest) -> DeliveryClaims:
    if request.param == "fake":
        return InMemoryDeliveryClaims()
    return DeliveryClaimStore(TABLE, request.getfixturevalue("empty_dynamodb"), RETENTION)


def test_a_claim_is_taken_again_only_as_its_channel_allows(claims: DeliveryClaims) -> None:
    store = claims
    lease = timedelta(seconds=60)
    first = store.claim(
        Channel.LINE,
        KEY,
        "u1",
        "sending",
        fields={"kind": "push"},
        lease=lease,
        retake_expired_lease_of="sending",
    )
    assert first.token is not None and first.item is not None and first.item["attempts"] == 1
    busy = store.claim(
        Channel.LINE, KEY, "u1", "sending", fields={}, lease=lease, retake_expired_lease_of="sending"
    )
    assert busy.token is None and busy.item is not None and busy.item["claim"] == first.token
    clock.freeze(NOW + lease + timedelta(seconds=1))
    again = store.claim(
        Channel.LINE, KEY, "u1", "sending", fields={}, lease=lease, retake_expired_lease_of="sending"
    )
    assert again.token is not None and again.item is not None and again.item["attempts"] == 2
    # Only the latest token finishes it, and only from the status asked for.
    assert not store.finish(Channel.LINE, KEY, "u1", first.token, "sent", {})
    assert not store.finish(Channel.LINE, KEY, "u1", again.token, "unknown", {}, only_from="retry")
    assert store.finish(Channel.LINE, KEY, "u1", again.token, "retry", {"reason": "throttled"}, release=True)
    finished = store.read(Channel.LINE, KEY, "u1")
    assert finished is not None and finished["status"] == "retry" and "claim" not in finished
    assert "lease_until" not in finished and finished["reason"] == "throttled"
    assert store.claim(Channel.LINE, KEY, "u1", "sending", fields={}, retake=("retry",)).token is not None


def test_a_channel_added_later_claims_under_its_own_name() -> None:
    assert keys.claim_key("web", KEY, "u0")["sk"] == {"S": "CLAIM#web#u0"}
    assert keys.claim_key(Channel.LINE, KEY, "u0")["sk"] == {"S": "UNIT#u0"}
    assert keys.claim_key(Channel.EMAIL, KEY, "mail")["sk"] == {"S": "EMAIL"}


def test_claims_of_two_channels_or_two_units_never_meet(claims: DeliveryClaims) -> None:
    line = claims.claim(Channel.LINE, KEY, "u0", "sending", fields={})
    email = claims.claim(Channel.EMAIL, KEY, "mail", "sending", fields={"customer_id": "cus_1"})
    other = claims.claim(Channel.LINE, KEY, "u1", "sending", fields={})
    assert None not in (line.token, email.token, other.token)
    assert line.token is not None and claims.finish(Channel.LINE, KEY, "u0", line.token, "sent", {})
    read = claims.read(Channel.EMAIL, KEY, "mail")
    assert read is not None and read["status"] == "sending" and read["customer_id"] == "cus_1"
    refused = claims.claim(Channel.LINE, KEY, "u0", "sending", fields={}, retake=("retry",))
    assert refused.token is None and refused.item is not None and refused.item["status"] == "sent"

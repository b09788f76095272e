"""Email delivery records in the Deliveries table: the claim and outcome of one email dispatch, so a
mail is sent at most once (SES has no idempotency key), in the delivery-claim store every channel
shares (adapters.dynamodb.delivery_claims; key formats: keys.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cems import clock
from cems.adapters.dynamodb.delivery_claims import DeliveryClaimStore
from cems.email.dispatch import EmailDispatch
from cems.email.sender import CLAIM_LEASE, Status
from cems.models import Channel

# An email dispatch is one mail: one claim, whatever its unit is called.
MAIL_UNIT = "mail"

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DeliveryRecords:
    """An email dispatch's claim and outcome (`DISPATCH#<key>` / `EMAIL`), in the delivery-claim
    store shared by every channel."""

    def __init__(self, table_name: str, client: DynamoDBClient, retention: timedelta) -> None:
        self.claims = DeliveryClaimStore(table_name, client, retention)

    def get(self, idempotency_key: str) -> dict[str, Any] | None:
        return self.claims.read(Channel.EMAIL, idempotency_key, MAIL_UNIT)

    def claim(
        self, dispatch: EmailDispatch, status: Status, reason: str | None = None
    ) -> tuple[str | None, dict[str, Any] | None]:
        """Write `status` (SENDING to claim; SKIPPED to record a final skip) unless the dispatch has an
        outcome already. Returns (claim token, None) when written, or (None, the existing item).
        A claim is never taken again once its lease runs out: SES has no idempotency key, so a mail
        that may have gone is `unknown` (`abandon`), not sent again."""
        answer = self.claims.claim(
            Channel.EMAIL,
            dispatch.idempotency_key,
            MAIL_UNIT,
            status.value,
            fields={
                "at": clock.now(),
                "customer_id": dispatch.customer_id,
                "test": dispatch.test,
                "reason": reason,
                "scenario_id": dispatch.scenario_id,
                "version": dispatch.version,
                "step_id": dispatch.step_id,
                "variant": dispatch.variant,
            },
            lease=CLAIM_LEASE if status is Status.SENDING else None,
            retake=(Status.RETRY.value,),
        )
        if answer.token is None:
            return None, answer.item or {}
        return answer.token, None

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
        """Record the outcome of our claim; False if the claim is not ours any more. A retry gives
        the claim up, so the next delivery may claim it."""
        return self.claims.finish(
            Channel.EMAIL,
            idempotency_key,
            MAIL_UNIT,
            token,
            status.value,
            {"ses_message_id": message_id, "error_code": error_code, "reason": reason},
            release=status is Status.RETRY,
        )

    def abandon(self, idempotency_key: str, token: str) -> bool:
        """A claim left `sending` past its lease (its worker died during the SES call): `unknown`.
        The stale claim token stays, so that worker, if it lives after all, can still record `sent`."""
        return self.claims.finish(
            Channel.EMAIL,
            idempotency_key,
            MAIL_UNIT,
            token,
            Status.UNKNOWN.value,
            {"reason": "the sender stopped during the SES call; not sent again"},
            only_from=Status.SENDING.value,
        )

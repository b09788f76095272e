"""Double opt-in: email consent asked for from a browser is given only by the click in a confirmation mail.

Under the Act on Specified Electronic Mail the sender must hold the recipient's consent. A browser's
identify can prove who is signed in (cems.trust), not that the address is theirs, so its
`email_opt_in: true` only asks: the trigger function (Events stream) sees the stored identify and
queues a confirmation mail (`EmailDispatch` purpose `confirmation`, written by send_email) to the
address on the profile. The mail's link (`/c/<token>`, signed, for that address, 7 days) shows a
page; its button (POST) stores `Email Consent Confirmed` through engage, which sets the consent with
the address it is for (cems.ingest). A server's identify (secret key) asserts consent directly.

One confirmation mail per address per CONFIRMATION_INTERVAL at most: a marker item per address hash
(`OPTIN#<sha256>`, TTL) is taken with a conditional write, so nobody can turn the shop into a mail
cannon aimed at someone else's inbox. The marker remembers which stored event took it, so the same
event seen again (the stream retries a batch) queues its mail again rather than losing it; send_email
then sends it once (the dispatch key is the event's).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum

from cems import clock
from cems.email.dispatch import EmailDispatch
from cems.models import Channel, MessageType, StoredEvent, address_hash
from cems.ports import ConfirmationMarkerPort, CustomerReader, SqsSender
from cems.trust import EMAIL_OPT_IN_TRAIT, Proof

CONFIRMATION_INTERVAL = timedelta(hours=24)
CONFIRMATION_SUBJECT = "メール配信登録の確認 / Please confirm your email subscription"


def asks_for_email_consent(event: StoredEvent) -> bool:
    """A proven user's own identify saying `email_opt_in: true`: consent to be confirmed by mail.
    (A server's says it outright; an unproven one changes nothing.)"""
    return (
        event.type is MessageType.IDENTIFY
        and event.proof == Proof.VERIFIED
        and event.traits.get(EMAIL_OPT_IN_TRAIT) is True
    )


class Outcome(StrEnum):
    QUEUED = "queued"
    NOT_ASKED = "not_asked"  # not a request for consent
    NO_ADDRESS = "no_address"  # the customer has no address (or no profile) to confirm
    ALREADY = "already"  # consent for this address is held already
    RECENTLY_ASKED = "recently_asked"  # a confirmation went to this address within the interval


# The outcomes that are metrics (the rest are the usual case, or nothing to do), by metric name.
OUTCOME_METRICS = {
    Outcome.QUEUED: "ConsentConfirmationsQueued",
    Outcome.RECENTLY_ASKED: "ConsentConfirmationsLimited",
}


def outcome_metrics(outcomes: Mapping[str, int]) -> dict[str, int]:
    """A batch's outcome counts (by `Outcome` value) as CloudWatch metrics; none of a kind, no metric."""
    return {
        name: outcomes[outcome.value]
        for outcome, name in OUTCOME_METRICS.items()
        if outcomes.get(outcome.value)
    }


class ConsentConfirmations:
    """Queues the confirmation mail for each stored request for email consent."""

    def __init__(
        self,
        customers: CustomerReader,
        markers: ConfirmationMarkerPort,
        sqs: SqsSender,
        email_queue_url: str,
        shop_name: str | None = None,
        interval: timedelta = CONFIRMATION_INTERVAL,
    ) -> None:
        self.customers = customers
        self.markers = markers
        self.sqs = sqs
        self.email_queue_url = email_queue_url
        self.shop_name = shop_name
        self.interval = interval

    def on_stored_event(self, event: StoredEvent) -> Outcome:
        if not asks_for_email_consent(event):
            return Outcome.NOT_ASKED
        profile = self.customers.profile(event.customer_id)
        address = profile.traits.get("email") if profile is not None else None
        if profile is None or not isinstance(address, str) or not address.strip():
            return Outcome.NO_ADDRESS
        state = profile.channels.get(Channel.EMAIL)
        if state is not None and state.address_hash is not None and state.consents_for(address):
            return Outcome.ALREADY
        hashed = address_hash(address)
        if not self.markers.take(hashed, event.message_id, clock.now(), self.interval):
            return Outcome.RECENTLY_ASKED
        subject = f"【{self.shop_name}】{CONFIRMATION_SUBJECT}" if self.shop_name else CONFIRMATION_SUBJECT
        dispatch = EmailDispatch(
            idempotency_key=f"{profile.customer_id}#optin#{event.message_id}"[:256],
            customer_id=profile.customer_id,
            subject=subject,
            purpose="confirmation",
            address_hash=hashed,
        )
        self.sqs.send_message(QueueUrl=self.email_queue_url, MessageBody=dispatch.to_sqs_body())
        return Outcome.QUEUED

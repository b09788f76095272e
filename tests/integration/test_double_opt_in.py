"""Double opt-in (moto): a browser's email_opt_in asks, a confirmation mail's link gives consent.

A proven browser identify with `email_opt_in: true` changes no consent; the trigger's
ConsentConfirmations queues one confirmation mail per address a day; send_email writes it with a
signed /c/ link and no unsubscribe header; the page behind the link changes nothing; its button
records consent for that address only, once; an expired link or a changed address gives nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.consent_markers import ConfirmationMarkers
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.dynamodb.suppression import SuppressionStore
from cems.consent import ConsentConfirmations, Outcome
from cems.email.compose import SignedLinks, compose
from cems.email.config import EmailSettings
from cems.email.dispatch import EmailDispatch
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.engagement.engage import ConfirmResult, Engagement
from cems.engagement.tokens import TokenSigner
from cems.ingest import Ingestor
from cems.models import Channel, SegmentMessage, Site, StoredEvent, Trust, address_hash
from cems.trust import user_hash

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
IDENTITY_SECRET = "is_shop-identity-secret"
SHOP = Site(
    write_key="wk_shop",
    site_id="site_shop",
    name="shop",
    origins=["https://shop.example.jp"],
    created_at=NOW,
    identity_secret=IDENTITY_SECRET,
)
SERVER = SHOP.model_copy(update={"trust": Trust.SERVER, "write_key": "secret#x"})
SETTINGS = EmailSettings(
    from_address="shop@shop.example.jp",
    from_name="サンプル茶舗",
    postal_address="東京都千代田区千代田1-1",
    contact="support@shop.example.jp",
    configuration_set=None,
    engage_base_url="https://links.shop.example.jp",
)
SIGNER = TokenSigner(lambda: LOCAL_TRACKING_SECRET.encode())


@pytest.fixture(autouse=True)
def frozen_clock() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture
def queue(aws: None) -> tuple[Any, str]:
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    return sqs, sqs.create_queue(QueueName="EmailSendQueue")["QueueUrl"]


@pytest.fixture
def confirmations(stores: Stores, dynamodb: Any, queue: tuple[Any, str]) -> ConsentConfirmations:
    sqs, url = queue
    return ConsentConfirmations(
        stores.customers, ConfirmationMarkers("CustomersTable", dynamodb), sqs, url, shop_name="サンプル茶舗"
    )


@pytest.fixture
def engagement(stores: Stores, dynamodb: Any) -> Engagement:
    return Engagement(
        SIGNER,
        Ingestor(stores.ingest),
        stores.customers,
        ReportCounters("JourneysTable", dynamodb),
        SuppressionStore("CustomersTable", dynamodb),
    )


def identify(
    stores: Stores, user_id: str, traits: dict[str, Any], *, site: Site = SHOP, proof: bool = True
) -> str:
    """A browser's (or with `site=SERVER`, a server's) identify; returns the stored message id."""
    context = {"userHash": user_hash(IDENTITY_SECRET, user_id)} if proof and site is SHOP else {}
    message_id = (
        f"m-{hashlib.sha256(json.dumps([user_id, traits, str(clock.now())]).encode()).hexdigest()[:12]}"
    )
    message = SegmentMessage.model_validate(
        {
            "type": "identify",
            "messageId": message_id,
            "userId": user_id,
            "anonymousId": f"anon-{user_id}",
            "traits": traits,
            "context": context,
        }
    )
    Ingestor(stores.ingest).ingest(site, [message], clock.now())
    return message_id


def stored(stores: Stores, user_id: str, message_id: str) -> StoredEvent:
    customer = stores.customers.customer_for_user_id(user_id) or stores.customers.customer_for_anonymous_id(
        f"anon-{user_id}"
    )
    assert customer is not None
    profile = stores.customers.profile(customer)
    assert profile is not None
    [event] = [e for e in stores.events.history(profile) if e.message_id == message_id]
    return event


def queued(queue: tuple[Any, str]) -> list[EmailDispatch]:
    sqs, url = queue
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return [EmailDispatch.model_validate_json(m["Body"]) for m in messages]


def confirmation_link(dispatch: EmailDispatch, address: str) -> str:
    mail = compose(dispatch, address, SETTINGS, SignedLinks(SETTINGS.engage_base_url, SIGNER, dispatch))
    text = mail.message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    [link] = set(re.findall(r"https://links\.shop\.example\.jp/c/[A-Za-z0-9._-]+", text))
    assert mail.message["List-Unsubscribe"] is None  # nothing to unsubscribe from yet
    assert "サンプル茶舗" in text and "東京都千代田区千代田1-1" in text and "support@shop.example.jp" in text
    return link.rsplit("/", 1)[1]


def email_state(stores: Stores, user_id: str) -> Any:
    customer = stores.customers.customer_for_user_id(user_id)
    assert customer is not None
    profile = stores.customers.profile(customer)
    assert profile is not None
    return profile.channels.get(Channel.EMAIL)


def test_a_browser_opt_in_is_confirmed_by_the_mails_link_and_only_then_is_consent(
    stores: Stores, confirmations: ConsentConfirmations, engagement: Engagement, queue: tuple[Any, str]
) -> None:
    address = "hanako@example.jp"
    message_id = identify(stores, "member-1", {"email": address, "email_opt_in": True})
    assert email_state(stores, "member-1") is None  # asked, not given

    assert confirmations.on_stored_event(stored(stores, "member-1", message_id)) is Outcome.QUEUED
    [dispatch] = queued(queue)
    assert (dispatch.purpose, dispatch.address_hash) == ("confirmation", address_hash(address))
    assert dispatch.subject.startswith("【サンプル茶舗】")
    token = confirmation_link(dispatch, address)

    # The page (GET, what mail scanners open) changes nothing.
    assert engagement.confirm_state(token)[1] is None
    assert email_state(stores, "member-1") is None

    assert engagement.confirm(token)[1] is ConfirmResult.CONFIRMED
    state = email_state(stores, "member-1")
    assert (state.consent, state.reachable, state.reason, state.source) == (
        True,
        True,
        "double_opt_in",
        "engage",
    )
    assert state.address_hash == address_hash(address) and state.consents_for(address)
    # The same button again stores nothing more.
    assert engagement.confirm(token)[1] is ConfirmResult.ALREADY
    assert engagement.confirm_state(token)[1] is ConfirmResult.ALREADY


def test_one_confirmation_mail_per_address_a_day_and_a_retried_event_still_gets_its_mail(
    stores: Stores, confirmations: ConsentConfirmations, queue: tuple[Any, str]
) -> None:
    first = identify(stores, "member-2", {"email": "taro@example.jp", "email_opt_in": True})
    event = stored(stores, "member-2", first)
    assert confirmations.on_stored_event(event) is Outcome.QUEUED
    # The stream delivers the same record again (a batch retried): its mail is queued again with the
    # same dispatch key, which send_email sends once.
    assert confirmations.on_stored_event(event) is Outcome.QUEUED
    assert len({d.idempotency_key for d in queued(queue)}) == 1

    clock.freeze(NOW + timedelta(hours=1))
    again = identify(stores, "member-2", {"email": "taro@example.jp", "email_opt_in": True})
    assert confirmations.on_stored_event(stored(stores, "member-2", again)) is Outcome.RECENTLY_ASKED
    assert queued(queue) == []
    clock.freeze(NOW + timedelta(hours=25))
    later = identify(stores, "member-2", {"email": "taro@example.jp", "email_opt_in": True})
    assert confirmations.on_stored_event(stored(stores, "member-2", later)) is Outcome.QUEUED


def test_an_expired_link_or_a_changed_address_gives_no_consent(
    stores: Stores, confirmations: ConsentConfirmations, engagement: Engagement, queue: tuple[Any, str]
) -> None:
    message_id = identify(stores, "member-3", {"email": "old@example.jp", "email_opt_in": True})
    confirmations.on_stored_event(stored(stores, "member-3", message_id))
    [dispatch] = queued(queue)
    token = confirmation_link(dispatch, "old@example.jp")

    clock.freeze(NOW + timedelta(days=8))
    assert engagement.confirm(token)[1] is ConfirmResult.EXPIRED
    assert email_state(stores, "member-3") is None

    clock.freeze(NOW + timedelta(days=1))
    identify(stores, "member-3", {"email": "new@example.jp"})
    assert engagement.confirm(token)[1] is ConfirmResult.ADDRESS_CHANGED
    assert email_state(stores, "member-3") is None


def test_consent_follows_the_address_a_server_asserted_it_for(stores: Stores) -> None:
    identify(stores, "member-4", {"email": "a@example.jp", "email_opt_in": True}, site=SERVER)
    state = email_state(stores, "member-4")
    assert state.consents_for("a@example.jp") and state.reason == "identify" and state.source == "site_shop"
    # The customer changes their address (their own, proven browser): the consent was not for it.
    identify(stores, "member-4", {"email": "b@example.jp"})
    assert not email_state(stores, "member-4").consents_for("b@example.jp")


def test_a_forged_opt_in_gives_no_consent_and_sends_no_mail(
    stores: Stores, confirmations: ConsentConfirmations, queue: tuple[Any, str]
) -> None:
    identify(stores, "victim", {"email": "victim@example.jp"}, site=SERVER)
    # Someone holding only the public key claims the customer and an opt-in, without a user hash.
    forged = identify(stores, "victim", {"email": "victim@example.jp", "email_opt_in": True}, proof=False)
    assert email_state(stores, "victim") is None
    event = stored(stores, "victim", forged)
    assert (event.proof, event.claimed_user_id, event.user_id) == ("claimed", "victim", None)
    assert confirmations.on_stored_event(event) is Outcome.NOT_ASKED
    assert queued(queue) == []

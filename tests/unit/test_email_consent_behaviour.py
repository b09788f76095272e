"""The email channel state that ingest leaves on profiles, on the in-memory store: identify
`email_opt_in` records consent, and only the `engage` source's unsubscribe / bounce / complaint
events withdraw it."""

from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest
from cems.engagement import ENGAGE_SOURCE_ID
from cems.engagement.engage import ENGAGE_SOURCE
from cems.ingest import Ingestor, IngestResult
from cems.models import Channel, ChannelState, Profile, SegmentMessage, Site, Trust, address_hash

from tests.fakes.customers import InMemoryCustomers

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
OPTED_IN = ChannelState(reachable=True, consent=True, updated_at=NOW, reason="identify", source="site_test")
SHOP = Site(
    write_key="wk", site_id="site_test", name="test", origins=["*"], created_at=NOW, trust=Trust.SERVER
)


def msg(type_: str, message_id: str, **fields: Any) -> SegmentMessage:
    return SegmentMessage.model_validate({"type": type_, "messageId": message_id, "userId": "u1", **fields})


class Ingest(Protocol):
    def __call__(self, site: Site, *messages: SegmentMessage, at: datetime = NOW) -> IngestResult: ...


@pytest.fixture
def customers() -> InMemoryCustomers:
    return InMemoryCustomers()


@pytest.fixture
def ingest(customers: InMemoryCustomers) -> Ingest:
    ingestor = Ingestor(customers)

    def run(site: Site, *messages: SegmentMessage, at: datetime = NOW) -> IngestResult:
        return ingestor.ingest(site, list(messages), at)

    return run


def email_state(customers: InMemoryCustomers) -> ChannelState | None:
    profile = profile_of(customers)
    return profile.channels.get(Channel.EMAIL)


def profile_of(customers: InMemoryCustomers) -> Profile:
    customer = customers.customer_for_user_id("u1")
    assert customer is not None
    profile = customers.profile(customer)
    assert profile is not None
    return profile


def test_the_engage_source_is_not_a_site_id_a_site_can_get() -> None:
    assert ENGAGE_SOURCE.site_id == ENGAGE_SOURCE_ID == "engage"


def test_identify_email_opt_in_records_consent_with_when_and_how(
    ingest: Ingest, customers: InMemoryCustomers
) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email": "sato@example.jp", "email_opt_in": True}))
    # Consent is for the address it was given with: a later change of address voids it.
    assert email_state(customers) == OPTED_IN.model_copy(
        update={"address_hash": address_hash("sato@example.jp")}
    )
    # The identify event itself is stored: the record of where consent was given.
    events = customers.history(profile_of(customers))
    assert [(e.site_id, e.traits["email_opt_in"]) for e in events] == [("site_test", True)]

    later = NOW + timedelta(days=1)
    ingest(SHOP, msg("identify", "i2", traits={"email_opt_in": False}, timestamp=later.isoformat()), at=later)
    assert email_state(customers) == OPTED_IN.model_copy(update={"consent": False, "updated_at": later})


@pytest.mark.parametrize("value", ["true", 1, None, "yes"])
def test_only_a_boolean_opt_in_is_consent(ingest: Ingest, customers: InMemoryCustomers, value: Any) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email_opt_in": value}))
    assert email_state(customers) is None
    assert profile_of(customers).traits["email_opt_in"] == value


def test_within_one_request_the_latest_identify_wins(ingest: Ingest, customers: InMemoryCustomers) -> None:
    later = NOW + timedelta(minutes=5)
    ingest(
        SHOP,
        msg("identify", "i2", traits={"email_opt_in": False}, timestamp=later.isoformat()),
        msg("identify", "i1", traits={"email_opt_in": True}, timestamp=NOW.isoformat()),
        at=later,
    )
    state = email_state(customers)
    assert state is not None and state.consent is False


@pytest.mark.parametrize(
    ("event", "properties", "expected"),
    [
        ("Email Unsubscribed", {}, (True, False, "unsubscribed")),
        ("Email Bounced", {"bounce_type": "Permanent"}, (False, False, "bounced")),
        ("Email Complained", {}, (False, False, "complained")),
    ],
)
def test_engage_events_withdraw_consent(
    ingest: Ingest,
    customers: InMemoryCustomers,
    event: str,
    properties: dict[str, Any],
    expected: tuple[bool, bool, str],
) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email_opt_in": True}))
    later = NOW + timedelta(hours=1)
    ingest(ENGAGE_SOURCE, msg("track", "e1", event=event, properties=properties), at=later)
    state = email_state(customers)
    assert state is not None
    assert (state.reachable, state.consent, state.reason) == expected
    assert state.updated_at == later


def test_a_transient_bounce_changes_no_channel(ingest: Ingest, customers: InMemoryCustomers) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email_opt_in": True}))
    ingest(ENGAGE_SOURCE, msg("track", "e1", event="Email Bounced", properties={"bounce_type": "Transient"}))
    state = email_state(customers)
    assert state is not None and state.consent is True and state.reachable is True


@pytest.mark.parametrize("event", ["Email Unsubscribed", "Email Bounced", "Email Complained"])
def test_a_site_cannot_fake_engagement_events(
    ingest: Ingest, customers: InMemoryCustomers, event: str
) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email_opt_in": True}))
    result = ingest(
        SHOP,
        msg("track", "fake", event=event, properties={"bounce_type": "Permanent"}),
        at=NOW + timedelta(hours=1),
    )
    # Stored as the site's own event (scenarios may still read it), but no channel changes.
    assert result.stored == 1
    assert email_state(customers) == OPTED_IN


def test_consent_given_again_after_unsubscribing(ingest: Ingest, customers: InMemoryCustomers) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email_opt_in": True}))
    ingest(ENGAGE_SOURCE, msg("track", "e1", event="Email Unsubscribed"), at=NOW + timedelta(hours=1))
    again = NOW + timedelta(days=2)
    ingest(SHOP, msg("identify", "i2", traits={"email_opt_in": True}, timestamp=again.isoformat()), at=again)
    state = email_state(customers)
    assert state is not None and state.consent is True and state.reason == "identify"


def test_other_engage_events_change_no_channel(ingest: Ingest, customers: InMemoryCustomers) -> None:
    ingest(SHOP, msg("identify", "i1", traits={"email_opt_in": True}))
    ingest(ENGAGE_SOURCE, msg("track", "e1", event="Email Opened"), msg("track", "e2", event="Link Clicked"))
    assert email_state(customers) == OPTED_IN

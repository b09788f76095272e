"""Finding, viewing and exporting a customer (cems.console.customers) on the in-memory records: each
way of finding someone, merges answered by the survivor, a masked view and its timeline, an unmasked
view, and an export holding every id of the person."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.console.customers import CustomerDirectory, LookupKind, UnusableLookupValue
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor
from cems.models import Channel, ChannelState, Profile, SegmentMessage, Site, Trust, address_hash

from tests.fakes.customer_records import InMemoryCustomerRecords

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
SERVER = Site(write_key="sk", site_id="shop", name="shop", created_at=NOW, trust=Trust.SERVER)
LINE_ID = "U" + "0123456789abcdef" * 2
EMAIL = "hanako@example.jp"


def send(records: InMemoryCustomerRecords, *messages: dict[str, Any], minutes: int = 0) -> None:
    at = NOW + timedelta(minutes=minutes)
    parsed = [SegmentMessage.model_validate({"timestamp": at, **m}) for m in messages]
    Ingestor(records.customers).ingest(SERVER, parsed, at)


@pytest.fixture
def records() -> InMemoryCustomerRecords:
    """u1 (山田花子, an address and a phone) who was a visitor a1 with another address before
    signing in; a LINE friend with no site account; and 5 page views of u1."""
    records = InMemoryCustomerRecords()
    send(
        records,
        {"type": "identify", "messageId": "v1", "anonymousId": "a1", "traits": {"email": "old@example.jp"}},
    )
    send(
        records,
        {
            "type": "identify",
            "messageId": "i1",
            "userId": "u1",
            "traits": {"name": "山田花子", "email": EMAIL, "phone": "090-1234-5678", "email_opt_in": True},
        },
        minutes=1,
    )
    send(records, {"type": "identify", "messageId": "i2", "userId": "u1", "anonymousId": "a1"}, minutes=2)
    for n in range(5):
        send(
            records,
            {"type": "page", "messageId": f"p{n}", "userId": "u1", "name": f"page {n}"},
            minutes=10 + n,
        )
    records.customers.put_profile(
        Profile(
            customer_id="cus_line",
            line_user_id=LINE_ID,
            channels={Channel.LINE: ChannelState(reachable=True, consent=True, updated_at=NOW)},
            first_seen_at=NOW,
            updated_at=NOW,
        )
    )
    return records


def known(records: InMemoryCustomerRecords) -> str:
    customer = records.customers.customer_for(IdentityKey(IdentityKind.USER, "u1"))
    assert customer is not None
    return customer


def test_a_customer_is_found_by_each_of_their_contact_points_and_identities(
    records: InMemoryCustomerRecords,
) -> None:
    directory = CustomerDirectory(records)
    customer = known(records)
    for kind, value in (
        (LookupKind.EMAIL, " Hanako@Example.JP"),
        (LookupKind.EMAIL, "old@example.jp"),  # the merged-away visitor's address: the survivor
        (LookupKind.PHONE, "+81 90-1234-5678"),
        (LookupKind.USER, "u1"),
        (LookupKind.ANONYMOUS, "a1"),
    ):
        found = directory.find(kind, value)
        assert [f.customer_id for f in found] == [customer], (kind, value)
    [line] = directory.find(LookupKind.LINE, LINE_ID)
    assert line.customer_id == "cus_line"
    assert line.masked()["profile"]["line_user_id"] == "U01…ef"
    assert directory.find(LookupKind.EMAIL, "nobody@example.jp") == []
    assert directory.find(LookupKind.LINE, "U-unknown") == []


def test_finding_by_email_reads_the_lookup_and_one_profile(records: InMemoryCustomerRecords) -> None:
    records.reads.clear()
    CustomerDirectory(records).find(LookupKind.EMAIL, EMAIL)
    assert records.reads == {"lookup": 1, "profile": 1}
    records.reads.clear()
    CustomerDirectory(records).find(LookupKind.LINE, LINE_ID)
    assert records.reads == {"identity": 1, "profile": 1}


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (LookupKind.EMAIL, "not an address"),
        (LookupKind.PHONE, "123"),
        (LookupKind.USER, "  "),
        (LookupKind.LINE, ""),
    ],
)
def test_a_value_no_lookup_can_hold_is_refused(
    records: InMemoryCustomerRecords, kind: LookupKind, value: str
) -> None:
    with pytest.raises(UnusableLookupValue) as refused:
        CustomerDirectory(records).find(kind, value)
    assert refused.value.kind is kind


def test_a_view_is_masked_with_the_latest_events_first(records: InMemoryCustomerRecords) -> None:
    customer = known(records)
    records.journeys[customer] = {
        "enrolments": [
            {
                "scenario_id": "welcome",
                "state": "active",
                "step_id": "mail-1",
                "sends": 1,
                "entered_at": "2026-12-04T09:00:00Z",
                "due_shard": 3,
            }
        ]
    }
    view = CustomerDirectory(records, timeline_events=3).view(customer)
    assert view is not None and view["masked"] is True
    assert view["customer_id"] == customer and len(view["customer_ids"]) == 2
    assert view["profile"]["traits"]["name"] == "山*"
    assert view["profile"]["traits"]["email"] == "h***@example.jp"
    events = view["timeline"]["events"]
    assert [e["message_id"] for e in events] == ["p4", "p3", "p2"]
    assert view["timeline"]["enrolments"] == [
        {
            "scenario_id": "welcome",
            "state": "active",
            "step_id": "mail-1",
            "sends": 1,
            "entered_at": "2026-12-04T09:00:00Z",
            "customer_id": customer,
        }
    ]
    assert "messages" in view["not_included"]
    text = json.dumps(view, ensure_ascii=False)
    for personal in (EMAIL, "old@example.jp", "山田花子", "090-1234-5678"):
        assert personal not in text


def test_a_masked_timeline_masks_the_traits_of_its_events(records: InMemoryCustomerRecords) -> None:
    view = CustomerDirectory(records, timeline_events=100).view(known(records))
    assert view is not None
    identify = next(e for e in view["timeline"]["events"] if e["message_id"] == "i1")
    assert identify["traits"]["email"] == "h***@example.jp" and identify["traits"]["email_opt_in"] is True


def test_an_unmasked_view_shows_the_profile_and_events_as_stored(records: InMemoryCustomerRecords) -> None:
    view = CustomerDirectory(records).view(known(records), unmasked=True)
    assert view is not None and view["masked"] is False
    assert view["profile"]["traits"]["email"] == EMAIL
    assert any(e.get("traits", {}).get("email") == EMAIL for e in view["timeline"]["events"])


def test_an_unknown_customer_has_no_view_and_no_export(records: InMemoryCustomerRecords) -> None:
    assert CustomerDirectory(records).view("cus_unknown") is None
    assert CustomerDirectory(records).export("cus_unknown") is None


def test_an_export_holds_everything_about_every_id_of_the_person(records: InMemoryCustomerRecords) -> None:
    customer = known(records)
    visitor = next(c for c in records.customers.stored_profiles if c not in (customer, "cus_line"))
    records.journeys[visitor] = {"caps": [{"counter": "email#D#2026-12-04", "count": 1}]}
    records.suppressed[address_hash(EMAIL)] = {"reason": "bounce", "at": "2026-12-04T10:00:00Z"}
    # Asked by the merged-away id: the whole person.
    document = CustomerDirectory(records).export(visitor, at=NOW)
    assert document is not None
    json.dumps(document, ensure_ascii=False)  # one JSON document
    assert (
        document["format"] == "cems.customer-export/1"
        and document["exported_at"] == "2026-12-04T09:00:00.000Z"
    )
    assert document["customer_id"] == customer and document["customer_ids"] == sorted([customer, visitor])
    assert [p["customer_id"] for p in document["profiles"]] == [customer, visitor]
    assert document["profiles"][0]["traits"]["email"] == EMAIL  # unmasked
    assert {(i["kind"], i["value"]) for i in document["identities"]} == {("user", "u1"), ("anon", "a1")}
    assert document["consent"][customer]["email"]["consent"] is True
    assert [e["message_id"] for e in document["events"]] == ["v1", "i1", "i2", "p0", "p1", "p2", "p3", "p4"]
    assert document["events_complete"] is True
    assert document["journeys"][visitor]["caps"] == [{"counter": "email#D#2026-12-04", "count": 1}]
    assert document["journeys"][customer] == {"enrolments": [], "schedules": [], "caps": []}
    assert document["suppression"] == [
        {"address_hash": address_hash(EMAIL), "reason": "bounce", "at": "2026-12-04T10:00:00Z"}
    ]


def test_an_export_beyond_its_maximum_keeps_the_latest_events_and_says_so(
    records: InMemoryCustomerRecords,
) -> None:
    document = CustomerDirectory(records, max_export_events=4).export(known(records))
    assert document is not None and document["events_complete"] is False
    assert [e["message_id"] for e in document["events"]] == ["p1", "p2", "p3", "p4"]

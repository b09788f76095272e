"""Contact lookups (cems.lookups) on DynamoDB (moto) and on the in-memory store alike: written with the
trusted contact traits in the same transaction, moved when the address changes, moved to the
surviving customer by a merge, kept for each of two customers sharing an address, removed by
erasure; and the items on DynamoDB are exactly those (no stale one left)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.erasure import CustomerEraser
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor
from cems.lookups import ContactKind, contact_hash
from cems.models import SegmentMessage, Site, Trust

from tests.fakes.customers import InMemoryCustomers

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, empty_stores, module_dynamodb  # noqa: F401

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
SERVER = Site(write_key="sk", site_id="shop", name="shop", created_at=NOW, trust=Trust.SERVER)
BROWSER = Site(write_key="wk", site_id="shop", name="shop", created_at=NOW)


@dataclass
class World:
    """One store under test: ingest into it, read lookups and identities back, set traits."""

    ingestor: Ingestor
    with_contact: Callable[[ContactKind, str], list[str]]
    customer_for: Callable[[IdentityKey], str | None]
    set_traits: Callable[[str, dict[str, Any]], bool]
    dynamodb: Any = None  # the raw client, on DynamoDB

    def send(self, *messages: dict[str, Any], site: Site = SERVER, minutes: int = 0) -> None:
        parsed = [SegmentMessage.model_validate(m) for m in messages]
        self.ingestor.ingest(site, parsed, NOW + timedelta(minutes=minutes))

    def find(self, kind: ContactKind, value: str) -> list[str]:
        hashed = contact_hash(kind, value)
        assert hashed is not None
        return self.with_contact(kind, hashed)

    def user(self, user_id: str) -> str:
        found = self.customer_for(IdentityKey(IdentityKind.USER, user_id))
        assert found is not None
        return found

    def lookup_items(self) -> list[tuple[str, str]]:
        """Every lookup item on DynamoDB as (pk, sk): the test reads the whole table (a Scan)."""
        items = self.dynamodb.scan(TableName="CustomersTable")["Items"]
        return sorted((i["pk"]["S"], i["sk"]["S"]) for i in items if i["pk"]["S"].startswith("LOOKUP#"))


@pytest.fixture(params=["fake", "dynamodb"])
def world(request: pytest.FixtureRequest) -> World:
    if request.param == "fake":
        fake = InMemoryCustomers()
        return World(
            Ingestor(fake),
            fake.customers_with_contact,
            fake.customer_for,
            lambda c, t: fake.set_traits(c, t, NOW),
        )
    stores: Stores = request.getfixturevalue("empty_stores")
    customers = stores.customers
    return World(
        Ingestor(stores.ingest),
        customers.customers_with_contact,
        customers.customer_for,
        lambda c, t: customers.set_traits(c, t, NOW),
        customers.client,
    )


def identify(message_id: str, traits: dict[str, Any], **ids: str) -> dict[str, Any]:
    return {"type": "identify", "messageId": message_id, "traits": traits, **ids}


def test_contact_traits_write_their_lookups_and_a_change_moves_them(world: World) -> None:
    world.send(identify("m1", {"email": "Taro@Example.jp", "phone": "090-1234-5678"}, userId="u1"))
    customer = world.user("u1")
    assert world.find(ContactKind.EMAIL, " taro@example.JP") == [customer]
    assert world.find(ContactKind.PHONE, "+81 90 1234 5678") == [customer]
    # A new address: the old one finds no one, in the same write (one retry reads the old value).
    world.send(identify("m2", {"email": "taro@new.example.jp", "plan": "gold"}, userId="u1"), minutes=1)
    assert world.find(ContactKind.EMAIL, "taro@example.jp") == []
    assert world.find(ContactKind.EMAIL, "taro@new.example.jp") == [customer]
    assert world.find(ContactKind.PHONE, "09012345678") == [customer]  # untouched
    # The same address sent again, in another spelling: still one lookup.
    world.send(identify("m3", {"email": "TARO@new.example.jp"}, userId="u1"), minutes=2)
    assert world.find(ContactKind.EMAIL, "taro@new.example.jp") == [customer]
    # Cleared: found by it no more.
    world.send(identify("m4", {"phone": None}, userId="u1"), minutes=3)
    assert world.find(ContactKind.PHONE, "09012345678") == []
    if world.dynamodb is not None:
        hashed = contact_hash(ContactKind.EMAIL, "taro@new.example.jp")
        assert world.lookup_items() == [(f"LOOKUP#email#{hashed}", f"CUST#{customer}")]


def test_an_unproven_visitors_contact_traits_write_no_lookup(world: World) -> None:
    world.send(identify("m1", {"email": "visitor@example.jp"}, anonymousId="a1"), site=BROWSER)
    assert world.find(ContactKind.EMAIL, "visitor@example.jp") == []


def test_two_customers_giving_one_address_are_both_found(world: World) -> None:
    world.send(
        identify("m1", {"email": "family@example.jp"}, userId="u1"),
        identify("m2", {"email": "family@example.jp"}, userId="u2"),
    )
    assert world.find(ContactKind.EMAIL, "family@example.jp") == sorted([world.user("u1"), world.user("u2")])
    world.send(identify("m3", {"email": "u2@example.jp"}, userId="u2"), minutes=1)
    assert world.find(ContactKind.EMAIL, "family@example.jp") == [world.user("u1")]


def test_a_merge_points_the_lookups_at_the_surviving_customer(world: World) -> None:
    world.send(identify("m1", {"email": "known@example.jp"}, userId="u1"))
    # A visitor the shop's server told an address and a phone, then seen signing in as u1.
    world.send(identify("m2", {"email": "other@example.jp", "phone": "03-1234-5678"}, anonymousId="a1"))
    visitor = world.customer_for(IdentityKey(IdentityKind.ANONYMOUS, "a1"))
    known = world.user("u1")
    assert visitor is not None and visitor != known
    world.send(identify("m3", {}, userId="u1", anonymousId="a1"), minutes=1)
    assert world.customer_for(IdentityKey(IdentityKind.ANONYMOUS, "a1")) == known
    for kind, value in (
        (ContactKind.EMAIL, "known@example.jp"),
        (ContactKind.EMAIL, "other@example.jp"),
        (ContactKind.PHONE, "0312345678"),
    ):
        assert world.find(kind, value) == [known], value
    if world.dynamodb is not None:
        assert all(sk == f"CUST#{known}" for _, sk in world.lookup_items())
        assert len(world.lookup_items()) == 3


def test_a_scenarios_set_trait_of_an_address_moves_its_lookup(world: World) -> None:
    world.send(identify("m1", {"email": "before@example.jp"}, userId="u1"))
    customer = world.user("u1")
    assert world.set_traits(customer, {"email": "after@example.jp", "plan": "gold"})
    assert world.find(ContactKind.EMAIL, "before@example.jp") == []
    assert world.find(ContactKind.EMAIL, "after@example.jp") == [customer]


def test_a_batch_of_many_customers_with_addresses_lands_whole(request: pytest.FixtureRequest) -> None:
    """Each profile change with contact traits takes lookup writes in its transaction: the planner
    counts them, so a batch of 40 new customers with an email and a phone each is split into
    transactions DynamoDB accepts (at most 100 actions) and every lookup is written."""
    stores: Stores = request.getfixturevalue("empty_stores")
    ingestor = Ingestor(stores.ingest)
    messages = [
        SegmentMessage.model_validate(
            identify(f"m{n}", {"email": f"c{n}@example.jp", "phone": f"090-0000-{n:04d}"}, userId=f"u{n}")
        )
        for n in range(40)
    ]
    assert ingestor.ingest(SERVER, messages, NOW).stored == 40
    customers = stores.customers
    for n in (0, 17, 39):
        owner = customers.customer_for(IdentityKey(IdentityKind.USER, f"u{n}"))
        for kind, value in ((ContactKind.EMAIL, f"c{n}@example.jp"), (ContactKind.PHONE, f"0900000{n:04d}")):
            hashed = contact_hash(kind, value)
            assert hashed is not None and customers.customers_with_contact(kind, hashed) == [owner]


def test_erasure_removes_the_persons_lookups_and_no_one_elses(request: pytest.FixtureRequest) -> None:
    stores: Stores = request.getfixturevalue("empty_stores")
    ingestor = Ingestor(stores.ingest)
    messages = [
        identify("m1", {"email": "known@example.jp"}, userId="u1"),
        identify("m2", {"email": "other@example.jp", "phone": "03-1234-5678"}, anonymousId="a1"),
        identify("m3", {"email": "known@example.jp"}, userId="u2"),  # someone sharing the address
    ]
    ingestor.ingest(SERVER, [SegmentMessage.model_validate(m) for m in messages], NOW)
    ingestor.ingest(
        SERVER, [SegmentMessage.model_validate(identify("m4", {}, userId="u1", anonymousId="a1"))], NOW
    )
    customers = stores.customers
    known = customers.customer_for(IdentityKey(IdentityKind.USER, "u1"))
    other = customers.customer_for(IdentityKey(IdentityKind.USER, "u2"))
    assert known is not None and other is not None
    eraser = CustomerEraser("CustomersTable", "EventsTable", "JourneysTable", customers.client)
    erasure = eraser.erase(known)
    assert erasure is not None and erasure.lookups == 3
    shared = contact_hash(ContactKind.EMAIL, "known@example.jp")
    assert shared is not None
    assert customers.customers_with_contact(ContactKind.EMAIL, shared) == [other]
    remaining = customers.client.scan(TableName="CustomersTable")["Items"]
    assert sorted(i["sk"]["S"] for i in remaining if i["pk"]["S"].startswith("LOOKUP#")) == [f"CUST#{other}"]

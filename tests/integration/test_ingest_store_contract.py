"""The in-memory ingest store keeps the DynamoDB store's contract: the same requests through ingest
leave the same customers on both (identities, traits, channels, purchase facts, write counts), so a
behaviour test on the fake (tests/fakes) tells what production does."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.activity import counts
from cems.adapters.dynamodb.customers import Stores
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor, IngestStorePort
from cems.models import Channel, EngagementKind, Profile, SegmentMessage, Site, Trust
from cems.trust import user_hash

from tests.fakes.ingest_store import InMemoryIngestStore

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, empty_stores, module_dynamodb  # noqa: F401

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SECRET = "identity-secret"
SERVER = Site(write_key="sk", site_id="shop", name="shop", created_at=NOW, trust=Trust.SERVER)
BROWSER = Site(write_key="wk", site_id="shop", name="shop", created_at=NOW, identity_secret=SECRET)
LINE = Site(write_key="line", site_id="line", name="LINE", created_at=NOW, trust=Trust.SERVER)
ENGAGE = Site(write_key="engage", site_id="engage", name="engage", created_at=NOW, trust=Trust.SERVER)

Request = tuple[Site, list[dict[str, Any]]]


def signed_in(user_id: str, **fields: Any) -> dict[str, Any]:
    return {"userId": user_id, "context": {"userHash": user_hash(SECRET, user_id)}, **fields}


def order(order_id: str, total: int, *skus: str) -> dict[str, Any]:
    products = [{"product_id": f"p-{s}", "sku": s, "category": "tea", "price": total} for s in skus]
    return {"order_id": order_id, "total": total, "currency": "JPY", "products": products}


# Each script: requests in order, and the identities whose customers are compared afterwards.
SCRIPTS: dict[str, tuple[list[Request], list[IdentityKey]]] = {
    "a visitor signs in and is merged into the known customer": (
        [
            (SERVER, [{"type": "identify", "messageId": "m0", "userId": "u1", "traits": {"plan": "gold"}}]),
            (BROWSER, [{"type": "page", "messageId": "m1", "anonymousId": "a1"}]),
            (BROWSER, [{"type": "identify", "messageId": "m2", "anonymousId": "a1", **signed_in("u1")}]),
        ],
        [IdentityKey(IdentityKind.USER, "u1"), IdentityKey(IdentityKind.ANONYMOUS, "a1")],
    ),
    "a message sent again is stored once and an order sent again counts once": (
        [
            (
                SERVER,
                [
                    {
                        "type": "track",
                        "messageId": "o",
                        "userId": "u1",
                        "event": "Order Completed",
                        "properties": order("o-1", 3000, "s1"),
                    }
                ],
            ),
            (
                SERVER,
                [
                    {
                        "type": "track",
                        "messageId": "o",
                        "userId": "u1",
                        "event": "Order Completed",
                        "properties": order("o-1", 3000, "s1"),
                    }
                ],
            ),
            (
                SERVER,
                [
                    {
                        "type": "track",
                        "messageId": "o2",
                        "userId": "u1",
                        "event": "Order Completed",
                        "properties": order("o-1", 3000, "s1", "s2"),
                    }
                ],
            ),
        ],
        [IdentityKey(IdentityKind.USER, "u1")],
    ),
    "a second user signing in on a shared browser gets a customer of their own": (
        [
            (BROWSER, [{"type": "identify", "messageId": "m1", "anonymousId": "shared", **signed_in("u1")}]),
            (BROWSER, [{"type": "identify", "messageId": "m2", "anonymousId": "shared", **signed_in("u2")}]),
            (BROWSER, [{"type": "page", "messageId": "m3", "anonymousId": "shared"}]),
        ],
        [
            IdentityKey(IdentityKind.USER, "u1"),
            IdentityKey(IdentityKind.USER, "u2"),
            IdentityKey(IdentityKind.ANONYMOUS, "shared"),
        ],
    ),
    "consent comes and goes by identify, LINE and engage": (
        [
            (
                SERVER,
                [
                    {
                        "type": "identify",
                        "messageId": "m1",
                        "userId": "u1",
                        "traits": {"email": "a@example.jp", "email_opt_in": True},
                    }
                ],
            ),
            (
                LINE,
                [
                    {
                        "type": "track",
                        "messageId": "l1",
                        "userId": "u1",
                        "lineUserId": "U1",
                        "event": "line_follow",
                    }
                ],
            ),
            (
                LINE,
                [
                    {
                        "type": "track",
                        "messageId": "l3",
                        "userId": "u1",
                        "lineUserId": "U1",
                        "event": "line_follow",
                        "timestamp": NOW + timedelta(minutes=2),
                    },
                    {
                        "type": "track",
                        "messageId": "l2",
                        "userId": "u1",
                        "lineUserId": "U1",
                        "event": "line_unfollow",
                        "timestamp": NOW + timedelta(minutes=1),
                    },
                ],
            ),
            (ENGAGE, [{"type": "track", "messageId": "e1", "userId": "u1", "event": "Email Unsubscribed"}]),
            (
                BROWSER,
                [
                    {
                        "type": "identify",
                        "messageId": "m2",
                        **signed_in("u1"),
                        "traits": {"email_opt_in": True},
                    }
                ],
            ),
        ],
        [IdentityKey(IdentityKind.USER, "u1"), IdentityKey(IdentityKind.LINE, "U1")],
    ),
    "engagement is folded into the profile: opens, clicks and LINE replies, each write onto the last": (
        [
            (SERVER, [{"type": "identify", "messageId": "m1", "userId": "u1", "traits": {"a": 1}}]),
            *(
                (
                    ENGAGE,
                    [
                        {
                            "type": "track",
                            "messageId": f"e{n}",
                            "userId": "u1",
                            "event": name,
                            "properties": {"channel": channel},
                            "timestamp": NOW - timedelta(days=days),
                        }
                    ],
                )
                for n, (name, channel, days) in enumerate(
                    [
                        ("Link Clicked", "email", 3),
                        ("Email Opened", "email", 3),
                        ("Link Clicked", "line", 1),
                        ("Link Clicked", "email", 200),  # long before the others: older than the days kept
                    ]
                )
            ),
            (
                LINE,
                [
                    {
                        "type": "track",
                        "messageId": "l1",
                        "userId": "u1",
                        "lineUserId": "U1",
                        "event": "line_message",
                    },
                    {
                        "type": "track",
                        "messageId": "l2",
                        "userId": "u1",
                        "lineUserId": "U1",
                        "event": "line_postback",
                    },
                ],
            ),
        ],
        [IdentityKey(IdentityKind.USER, "u1")],
    ),
    "two ids of one person are joined by a server's alias": (
        [
            (SERVER, [{"type": "identify", "messageId": "m1", "userId": "old", "traits": {"a": 1}}]),
            (SERVER, [{"type": "identify", "messageId": "m2", "userId": "new", "traits": {"b": 2}}]),
            (SERVER, [{"type": "alias", "messageId": "m3", "userId": "new", "previousId": "old"}]),
        ],
        [IdentityKey(IdentityKind.USER, "old"), IdentityKey(IdentityKind.USER, "new")],
    ),
}


def observed(profile: Profile | None) -> dict[str, Any] | None:
    """What a customer is, without the ids and times that differ between runs by construction."""
    if profile is None:
        return None
    return profile.model_dump(exclude={"customer_id", "merged_ids", "merged_into", "updated_at"}) | {
        "merged": len(profile.merged_ids)
    }


def run(port: IngestStorePort, profile_of: Callable[[str], Profile | None], script: str) -> list[Any]:
    requests, identities = SCRIPTS[script]
    ingestor = Ingestor(port)
    outcomes = []
    for i, (site, messages) in enumerate(requests):
        parsed = [SegmentMessage.model_validate({"timestamp": NOW, **m}) for m in messages]
        result = ingestor.ingest(site, parsed, NOW + timedelta(minutes=10 + i))
        outcomes.append((result.stored, result.duplicates, sorted(result.stored_ids)))
    owners = port.resolve_identities(identities)
    customers = {key: owners.get(key) for key in identities}
    # Which identities share a customer, and each one's customer as it is now.
    same = [[customers[a] == customers[b] for b in identities] for a in identities]
    return [outcomes, same, [observed(profile_of(c)) if c else None for c in customers.values()]]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_ingest_leaves_the_same_customers_on_the_fake_as_on_dynamodb(
    request: pytest.FixtureRequest, script: str
) -> None:
    stores: Stores = request.getfixturevalue("empty_stores")
    fake = InMemoryIngestStore()
    on_fake = run(fake, fake.profile, script)
    on_dynamodb = run(stores.ingest, stores.customers.profile, script)
    assert on_fake == on_dynamodb


def test_engagement_lands_on_dynamodb_folded_write_after_write(request: pytest.FixtureRequest) -> None:
    """Each engagement after the first is refused once (the unread write expects none yet), then
    folded into the profile the refusal returned: nothing lost, nothing counted twice."""
    stores: Stores = request.getfixturevalue("empty_stores")
    script = "engagement is folded into the profile: opens, clicks and LINE replies, each write onto the last"
    run(stores.ingest, stores.customers.profile, script)
    owner = stores.ingest.resolve_identities([IdentityKey(IdentityKind.USER, "u1")])
    customer = stores.customers.profile(owner[IdentityKey(IdentityKind.USER, "u1")])
    assert customer is not None
    window_end = NOW + timedelta(days=1)
    assert counts(customer, Channel.EMAIL, window_end) == {EngagementKind.CLICK: 1, EngagementKind.OPEN: 1}
    assert counts(customer, Channel.LINE, window_end) == {EngagementKind.CLICK: 1, EngagementKind.REPLY: 2}
    # The click of 200 days before arrived after later ones: older than the days kept, so dropped.
    assert list(customer.engagement[Channel.EMAIL].days) == [(NOW - timedelta(days=3)).date().isoformat()]

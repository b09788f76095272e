"""Simulate parity: the same events make the same customer in production's ingest and in simulate.

Random sequences of one customer's events (identify with contact traits and email consent, orders,
engage's email events, LINE follow/unfollow/postback, page views; a site faking engage's events)
go once through the Ingestor on the in-memory store, as the shop's server, a signed-in browser,
LINE's webhook and engage would send them, and once through `cems scenario simulate`. Both must
end with the same channel states, traits and purchase facts.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cems.engagement import EngagementEvent
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor, IngestStorePort
from cems.models import Profile, SegmentMessage, Site, Trust, address_hash
from cems.scenario.model import Scenario
from cems.scenario.simulate import events_from, simulate
from cems.trust import user_hash
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.ingest_store import InMemoryIngestStore

USER_ID = "u-1"
LINE_USER_ID = "U0123456789abcdef0123456789abcdef"
IDENTITY_SECRET = "shop-identity-secret"
START = datetime(2026, 5, 1, tzinfo=UTC)
CREATED = datetime(2026, 1, 1, tzinfo=UTC)
ADDRESSES = ["hanako@example.jp", " Hanako@Example.JP", "taro@example.jp"]

SITES = {
    "server": Site(write_key="sk", site_id="shop", name="shop", created_at=CREATED, trust=Trust.SERVER),
    "browser": Site(
        write_key="wk", site_id="shop", name="shop", created_at=CREATED, identity_secret=IDENTITY_SECRET
    ),
    "line": Site(write_key="line", site_id="line", name="LINE", created_at=CREATED, trust=Trust.SERVER),
    "engage": Site(
        write_key="engage", site_id="engage", name="engage", created_at=CREATED, trust=Trust.SERVER
    ),
}

# A scenario nobody enters: simulate only plays the events onto the profile.
QUIET = Scenario.model_validate(
    {
        "id": "quiet",
        "name": "quiet",
        "trigger": {"type": "event", "event": "Never Happens"},
        "steps": [{"id": "end", "type": "end"}],
    }
)

identifies = st.fixed_dictionaries(
    {"type": st.just("identify"), "proof": st.sampled_from(["server", "verified"])},
    optional={
        "traits": st.fixed_dictionaries(
            {},
            optional={
                "email": st.sampled_from(ADDRESSES),
                "email_opt_in": st.booleans(),
                "plan": st.sampled_from(["free", "gold"]),
                "birthday": st.sampled_from(["1990-04-01", "1985-12-24"]),
            },
        )
    },
)
products = st.fixed_dictionaries(
    {},
    optional={
        "product_id": st.sampled_from(["tea-1", "tea-2", "cup-1"]),
        "sku": st.sampled_from(["SKU-1", "SKU-2"]),
        "category": st.sampled_from(["tea", "ware"]),
        "price": st.integers(0, 5000),
        "quantity": st.integers(0, 3),
    },
)
orders = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "event": st.just("Order Completed"),
        "properties": st.fixed_dictionaries(
            {"products": st.lists(products, max_size=3)},
            optional={
                # A few ids, so the same order is sometimes sent again.
                "order_id": st.sampled_from(["o-1", "o-2", "o-3"]),
                "revenue": st.integers(0, 20_000),
                "total": st.integers(0, 20_000),
                "currency": st.just("JPY"),
            },
        ),
    }
)
email_events = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "event": st.sampled_from([e.value for e in EngagementEvent]),
        # A site may send an event of that name; only engage's changes the email channel.
        "site_id": st.sampled_from(["engage", "engage", "shop"]),
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "bounce_type": st.sampled_from(["Permanent", "Transient"]),
                "address_hash": st.sampled_from([address_hash(a) for a in ADDRESSES]),
            },
        ),
    }
)
line_events = st.fixed_dictionaries(
    {
        "type": st.just("track"),
        "event": st.sampled_from(["line_follow", "line_unfollow", "line_postback"]),
        "properties": st.fixed_dictionaries(
            {},
            optional={
                "survey": st.fixed_dictionaries(
                    {"question": st.just("taste"), "answer": st.sampled_from(["sweet", "bitter"])}
                )
            },
        ),
    }
)
page_views = st.fixed_dictionaries({"type": st.just("page"), "name": st.sampled_from(["top", "tea"])})
any_event = st.one_of(identifies, orders, email_events, line_events, page_views)


@st.composite
def timelines(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One customer's events in time order (equal times allowed), each as `--events` gives it."""
    events = draw(st.lists(any_event, min_size=1, max_size=12))
    at = START
    out = []
    for i, event in enumerate(events):
        at += timedelta(minutes=draw(st.integers(0, 3000)))
        out.append({**event, "messageId": f"m-{i}", "timestamp": at.isoformat()})
    return out


def source_of(event: dict[str, Any]) -> str:
    """Which sender production has for the event: LINE's webhook, engage, or the shop's server or
    signed-in browser."""
    if event.get("event", "").startswith("line_"):
        return "line"
    if event.get("site_id") == "engage":
        return "engage"
    return "browser" if event.get("proof") == "verified" else "server"


def message(event: dict[str, Any]) -> SegmentMessage:
    """The event as its sender sends it to ingest."""
    source = source_of(event)
    wire: dict[str, Any] = {
        key: value for key, value in event.items() if key not in ("proof", "site_id") and value is not None
    }
    wire["userId"] = USER_ID
    if source == "line":
        wire["lineUserId"] = LINE_USER_ID
    if source == "browser":
        wire["context"] = {"userHash": user_hash(IDENTITY_SECRET, USER_ID)}
    return SegmentMessage.model_validate(wire)


def ingested(events: list[dict[str, Any]], batched: list[bool]) -> Profile:
    """The customer as production's ingest leaves them: each run of one sender's events in one
    request when `batched` says so, else one request per event."""
    store = InMemoryIngestStore()
    port: IngestStorePort = store
    ingestor = Ingestor(port)
    requests: list[list[dict[str, Any]]] = []
    for event, together in zip(events, batched, strict=True):
        if together and requests and source_of(requests[-1][-1]) == source_of(event):
            requests[-1].append(event)
        else:
            requests.append([event])
    for request in requests:
        received = max(datetime.fromisoformat(e["timestamp"]) for e in request) + timedelta(seconds=1)
        ingestor.ingest(SITES[source_of(request[0])], [message(e) for e in request], received)
    user = IdentityKey(IdentityKind.USER, USER_ID)
    customer_id = store.resolve_identities([user])[user]
    profile = store.profile(customer_id)
    assert profile is not None
    return profile


def simulated(events: list[dict[str, Any]], customer_id: str) -> Profile:
    """The customer as `cems scenario simulate` plays the same events, from an empty profile."""
    first = datetime.fromisoformat(events[0]["timestamp"])
    start = Profile(customer_id=customer_id, line_user_id=LINE_USER_ID, first_seen_at=first, updated_at=first)
    stored = events_from(json.loads(json.dumps(events)), customer_id)
    sim = simulate(QUIET, stored, start)
    assert sim.profile is not None
    return sim.profile


def facts(profile: Profile) -> dict[str, Any]:
    return {
        "channels": profile.channels,
        "traits": profile.traits,
        "orders": profile.orders,
        "order_rollup": profile.order_rollup,
        "products_bought": profile.products_bought,
        "skus_bought": profile.skus_bought,
        "categories_bought": profile.categories_bought,
        "purchase_count": profile.purchase_count,
        "monetary_total": profile.monetary_total,
        "first_purchase_at": profile.first_purchase_at,
        "last_purchase_at": profile.last_purchase_at,
    }


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ingest_and_simulate_make_the_same_customer_of_the_same_events(data: st.DataObject) -> None:
    events = data.draw(timelines())
    batched = data.draw(st.lists(st.booleans(), min_size=len(events), max_size=len(events)))
    production = ingested(events, batched)
    assert facts(simulated(events, production.customer_id)) == facts(production)

"""Erasing a customer under moto: a person of several merged ids, their identities, events, journeys;
other customers and the report counters untouched; idempotent; a retry after a partial erasure."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores, identity_key
from cems.adapters.dynamodb.erasure import CustomerEraser, UnprocessedItemsError
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor
from cems.models import Profile, SegmentMessage, Site, Trust
from cems.reports.counters import Metric, ReportCell

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SITE = Site(
    write_key="wk", site_id="site_test", name="test", origins=["*"], created_at=NOW, trust=Trust.SERVER
)
LINE_ID = "U" + "a" * 32


def msg(type_: str, message_id: str, **fields: Any) -> SegmentMessage:
    return SegmentMessage.model_validate({"type": type_, "messageId": message_id, **fields})


@pytest.fixture
def person(stores: Stores, dynamodb: Any) -> dict[str, str]:
    """u1 known on one device, then seen anonymously on another (a2) and merged in; a LINE friend;
    enrolled in a scenario with a cap counter and a date schedule. And a bystander, u2."""
    clock.freeze(NOW)
    ingest = Ingestor(stores.ingest)
    ingest.ingest(SITE, [msg("identify", "m0", userId="u1", anonymousId="a1", traits={"name": "Sato"})], NOW)
    ingest.ingest(SITE, [msg("track", f"m{i}", anonymousId="a2", event="Viewed") for i in range(1, 31)], NOW)
    visitor = stores.customers.customer_for_anonymous_id("a2") or ""
    ingest.ingest(SITE, [msg("identify", "m40", userId="u1", anonymousId="a2")], NOW)
    known = stores.customers.customer_for_user_id("u1") or ""
    assert visitor != known and stores.customers.customer_for_anonymous_id("a2") == known
    ingest.ingest(SITE, [msg("identify", "b0", userId="u2", anonymousId="b1", traits={"name": "Ito"})], NOW)
    # The LINE contact, as the webhook's account link leaves it.
    dynamodb.update_item(
        TableName="CustomersTable",
        Key={"pk": {"S": f"CUST#{known}"}, "sk": {"S": "PROFILE"}},
        UpdateExpression="SET line_user_id = :l",
        ExpressionAttributeValues={":l": {"S": LINE_ID}},
    )
    dynamodb.put_item(
        TableName="CustomersTable",
        Item={**identity_key(IdentityKey(IdentityKind.LINE, LINE_ID)), "customer_id": {"S": known}},
    )
    for pk, sk in (
        (f"ENR#{known}", "welcome"),
        (f"ENR#{visitor}", "browse"),
        (f"CAP#{known}", "line#D#2026-11-20"),
    ):
        dynamodb.put_item(TableName="JourneysTable", Item={"pk": {"S": pk}, "sk": {"S": sk}})
    dynamodb.put_item(TableName="JourneysTable", Item={"pk": {"S": f"DATE#{known}"}, "sk": {"S": "birthday"}})
    ReportCounters("JourneysTable", dynamodb).add(ReportCell("welcome", 1), Metric.ENROLLED)
    return {
        "known": known,
        "visitor": visitor,
        "bystander": stores.customers.customer_for_user_id("u2") or "",
    }


def eraser(dynamodb: Any, **kwargs: Any) -> CustomerEraser:
    return CustomerEraser("CustomersTable", "EventsTable", "JourneysTable", dynamodb, **kwargs)


def _count(dynamodb: Any, table: str, key: str, value: str) -> int:
    answer = dynamodb.query(
        TableName=table,
        KeyConditionExpression="#k = :v",
        ExpressionAttributeNames={"#k": key},
        ExpressionAttributeValues={":v": {"S": value}},
        Select="COUNT",
    )
    return int(answer["Count"])


def test_the_whole_person_is_erased_by_any_of_their_ids(
    person: dict[str, str], stores: Stores, dynamodb: Any
) -> None:
    known, visitor = person["known"], person["visitor"]
    # Asked by the merged-away id: the profile it joined goes too (the person is one).
    erasure = eraser(dynamodb).erase(visitor)
    assert erasure is not None
    assert set(erasure.customer_ids) == {known, visitor}
    assert erasure.counts() == {
        "profiles": 2,
        "identities": 4,  # user u1, anonymous a1 and a2, the LINE id
        "lookups": 0,  # no email or phone given
        "events": 32,  # m0, m1..m30 under the visitor, m40
        "enrolments": 2,
        "schedules": 1,
        "caps": 1,
        "web_messages": 0,
    }
    for cid in (known, visitor):
        assert stores.customers.profile(cid, follow_merges=False) is None
        assert _count(dynamodb, "EventsTable", "customer_id", cid) == 0
        for prefix in ("ENR#", "CAP#", "DATE#"):
            assert _count(dynamodb, "JourneysTable", "pk", prefix + cid) == 0
    for key in (
        IdentityKey(IdentityKind.USER, "u1"),
        IdentityKey(IdentityKind.ANONYMOUS, "a1"),
        IdentityKey(IdentityKind.ANONYMOUS, "a2"),
        IdentityKey(IdentityKind.LINE, LINE_ID),
    ):
        assert "Item" not in dynamodb.get_item(TableName="CustomersTable", Key=identity_key(key))
    # Someone else is untouched, and the report counters (no personal data) stay.
    bystander = stores.customers.profile(person["bystander"])
    assert bystander is not None and bystander.traits == {"name": "Ito"}
    assert _count(dynamodb, "EventsTable", "customer_id", person["bystander"]) == 1
    assert stores.customers.customer_for_anonymous_id("b1") == person["bystander"]
    assert ReportCounters("JourneysTable", dynamodb).cells("welcome")
    # A second erasure finds no one.
    assert eraser(dynamodb).erase(known) is None
    assert eraser(dynamodb).erase(visitor) is None
    assert eraser(dynamodb).erase("cus_never") is None


def test_the_on_site_inboxes_of_every_id_of_the_person_are_erased_and_no_one_elses(
    person: dict[str, str], dynamodb: Any
) -> None:
    from cems.adapters.dynamodb.web_inbox import WebInboxStore
    from cems.web.dispatch import WebMessage
    from cems.web.inbox import InboxItem, InboxOwner

    inbox = WebInboxStore("CustomersTable", dynamodb)
    message = WebMessage(kind="banner", title="山田様、カートに商品が残っています", expires_seconds=86400)
    for owner, key in ((person["known"], "k1"), (person["known"], "k2"), (person["visitor"], "v1")):
        inbox.put(_inbox_item(InboxOwner.customer(owner), key, message, InboxItem))
    inbox.put(_inbox_item(InboxOwner.customer(person["bystander"]), "b1", message, InboxItem))
    preview = InboxOwner.of_preview("p" * 32)
    inbox.put(_inbox_item(preview, "t1", message, InboxItem))
    erasure = eraser(dynamodb).erase(person["known"])
    assert erasure is not None and erasure.web_messages == 3
    for owner in (person["known"], person["visitor"]):
        assert inbox.items(InboxOwner.customer(owner), 50) == []
    assert [i.dispatch_key for i in inbox.items(InboxOwner.customer(person["bystander"]), 50)] == ["b1"]
    # A preview inbox is nobody's (a staff member's link, gone within 24 hours): left to its TTL.
    assert len(inbox.items(preview, 50)) == 1


def _inbox_item(owner: Any, key: str, message: Any, model: Any) -> Any:
    return model(
        owner=owner,
        dispatch_key=key,
        customer_id=owner.id,
        message=message,
        written_at=NOW,
        expires_at=NOW.replace(day=27),
    )


def test_an_identity_that_moved_to_someone_else_is_kept(person: dict[str, str], dynamodb: Any) -> None:
    # a1 now belongs to the bystander (a shared browser's newest sign-in): it is theirs to keep.
    dynamodb.put_item(
        TableName="CustomersTable",
        Item={
            **identity_key(IdentityKey(IdentityKind.ANONYMOUS, "a1")),
            "customer_id": {"S": person["bystander"]},
        },
    )
    erasure = eraser(dynamodb).erase(person["known"])
    assert erasure is not None and erasure.identities == 3
    item = dynamodb.get_item(
        TableName="CustomersTable", Key=identity_key(IdentityKey(IdentityKind.ANONYMOUS, "a1"))
    )
    assert item["Item"]["customer_id"]["S"] == person["bystander"]


def test_an_erasure_cut_short_is_finished_by_asking_again(person: dict[str, str], dynamodb: Any) -> None:
    real = dynamodb.batch_write_item
    calls = {"n": 0}

    def throttled(**kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            # Half of the chunk comes back unprocessed once, then goes through: retried.
            [(table, requests)] = kwargs["RequestItems"].items()
            real(RequestItems={table: requests[:10]})
            return {"UnprocessedItems": {table: requests[10:]}}
        if calls["n"] >= 4:
            return {"UnprocessedItems": kwargs["RequestItems"]}  # sustained throttling
        return real(**kwargs)

    dynamodb.batch_write_item = throttled
    with pytest.raises(UnprocessedItemsError):
        eraser(dynamodb, sleep=lambda _: None).erase(person["known"])
    dynamodb.batch_write_item = real
    # The profiles are still there (they go last), so asking again finds the person and finishes.
    erasure = eraser(dynamodb).erase(person["known"])
    assert erasure is not None and erasure.profiles == 2
    assert _count(dynamodb, "EventsTable", "customer_id", person["visitor"]) == 0
    assert eraser(dynamodb).erase(person["known"]) is None


def test_a_chain_of_merges_is_followed(stores: Stores, dynamodb: Any) -> None:
    # Merges hand merged_ids on, but a chain whose target lists only the last source still finds all.
    clock.freeze(NOW)
    chain = {
        "cus_c": Profile(customer_id="cus_c", merged_ids={"cus_b"}, first_seen_at=NOW, updated_at=NOW),
        "cus_b": Profile(
            customer_id="cus_b", merged_ids={"cus_a"}, merged_into="cus_c", first_seen_at=NOW, updated_at=NOW
        ),
        "cus_a": Profile(customer_id="cus_a", merged_into="cus_b", first_seen_at=NOW, updated_at=NOW),
    }
    for profile in chain.values():
        dynamodb.put_item(TableName="CustomersTable", Item=stores.customers.profile_item(profile))
    erasure = eraser(dynamodb).erase("cus_c")
    assert erasure is not None and erasure.profiles == 3
    assert set(erasure.customer_ids) == {"cus_a", "cus_b", "cus_c"}
    assert eraser(dynamodb).erase("cus_a") is None


def test_a_journey_erased_while_waiting_at_a_step_leaves_it_in_the_report(
    stores: Stores, dynamodb: Any
) -> None:
    """The diagram's "waiting now" per step: an erased customer's waiting journey is counted as
    having left its step, once however often the erasure is asked."""
    from cems.adapters.dynamodb.journeys import EnrolmentStore
    from cems.scenario.engine import Enrolment, EnrolmentState

    clock.freeze(NOW)
    Ingestor(stores.ingest).ingest(SITE, [msg("identify", "w0", userId="u9", traits={"name": "Kato"})], NOW)
    customer = stores.customers.customer_for_user_id("u9") or ""
    waiting = Enrolment(
        customer_id=customer,
        scenario_id="cart",
        version=2,
        step_id="wait-for-order",
        state=EnrolmentState.WAITING_EVENT,
        entered_at=NOW,
        due_at=NOW,
    )
    assert EnrolmentStore("JourneysTable", dynamodb, model=Enrolment).create(waiting) is not None
    counters = ReportCounters("JourneysTable", dynamodb)
    cell = ReportCell("cart", 2, "wait-for-order")
    counters.add(cell, Metric.WAIT_BEGUN)

    assert eraser(dynamodb, counters=counters).erase(customer) is not None
    assert eraser(dynamodb, counters=counters).erase(customer) is None
    counted = {k: v for c, counts in counters.cells("cart") for k, v in counts.items() if c.step_id}
    assert counted == {"wait_begun": 1, "wait_ended": 1}

"""The broadcast worker's in-memory ports (tests/fakes) keep the AWS adapters' contract: the same
assertions run against each fake and against its adapter under moto. Covered: a run started once
and claimed again only after RESTART_AFTER, by one caller, never once enqueued; segment progress
written on the pages read, a page opened only where none is; a parallel scan of profiles that
yields every live profile exactly once; a page read again through where it first ended, the
profiles created inside it since too; a queue that delivers what it was given and says so when it
could not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.adapters.dynamodb.broadcasts import BroadcastStore
from cems.adapters.dynamodb.customers import Stores, profile_key
from cems.adapters.dynamodb.table_size import DynamoTableSize
from cems.adapters.sqs import SqsQueue
from cems.models import ChannelState, Profile
from cems.ports import BroadcastStorePort, MessageQueue, ServiceUnavailable
from cems.scenario.broadcast import RESTART_AFTER, SegmentProgress

from tests.fakes.broadcasts import InMemoryBroadcastStore, InMemoryQueue
from tests.fakes.customers import InMemoryCustomers

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, empty_sqs, empty_stores, module_dynamodb  # noqa: F401

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
IMPLEMENTATIONS = ["fake", "moto"]


@pytest.fixture(params=IMPLEMENTATIONS)
def store(request: pytest.FixtureRequest) -> BroadcastStorePort:
    if request.param == "fake":
        return InMemoryBroadcastStore()
    return BroadcastStore("JourneysTable", request.getfixturevalue("empty_dynamodb"))


def test_a_run_is_started_once(store: BroadcastStorePort) -> None:
    assert store.start_run("s1", "r1", 2, 4, NOW)
    assert not store.start_run("s1", "r1", 3, 8, NOW, kind="backfill")
    assert store.start_run("s1", "r2", 2, 4, NOW)
    assert store.start_run("s2", "r1", 2, 4, NOW)


def test_a_stalled_run_is_claimed_after_a_while_by_one_caller_and_never_once_enqueued(
    store: BroadcastStorePort,
) -> None:
    store.start_run("s1", "r1", 2, 4, NOW)
    assert store.claim_stalled("s1", "r1", NOW + RESTART_AFTER - timedelta(seconds=1)) is None
    later = NOW + RESTART_AFTER + timedelta(seconds=1)
    claimed = store.claim_stalled("s1", "r1", later)
    assert claimed is not None and (int(claimed["version"]), int(claimed["segments"])) == (2, 4)
    assert store.claim_stalled("s1", "r1", later) is None  # claimed: its clock starts again
    store.mark_enqueued("s1", "r1")
    assert store.claim_stalled("s1", "r1", later + 2 * RESTART_AFTER) is None
    assert store.claim_stalled("s1", "unknown", later) is None


def test_segment_progress_is_written_on_the_pages_read(store: BroadcastStorePort) -> None:
    assert store.progress("s1", "r1", 0) is None
    first = SegmentProgress(scenario_id="s1", run="r1", segment=0, pages=1, last_key={"pk": {"S": "x"}})
    assert store.save_progress(first, None)
    assert not store.save_progress(first, None)  # another worker recorded it first
    second = first.model_copy(update={"pages": 2, "last_key": None, "done": True, "profiles": 30})
    assert not store.save_progress(second, 0)
    assert store.save_progress(second, 1)
    assert store.progress("s1", "r1", 0) == second
    assert store.progress("s1", "r1", 1) is None


def test_a_page_is_opened_only_on_the_pages_read_and_where_none_is_open(store: BroadcastStorePort) -> None:
    end = {"pk": {"S": "CUST#cus_007"}, "sk": {"S": "PROFILE"}}
    opened = SegmentProgress(
        scenario_id="s1",
        run="r1",
        segment=0,
        page_open=True,
        page_end=end,
        page_customers=bytes(range(256)) * 8,  # 2,048 bytes: a page of 500 customers' digests
    )
    assert store.open_page(opened, None)
    assert store.progress("s1", "r1", 0) == opened
    assert not store.open_page(opened, None)  # recorded since
    assert not store.open_page(opened, 0)  # a page is open already
    done = opened.model_copy(
        update={"pages": 1, "last_key": end, "page_open": False, "page_end": None, "page_customers": None}
    )
    assert store.save_progress(done, 0)
    assert store.progress("s1", "r1", 0) == done
    assert not store.open_page(opened.model_copy(update={"pages": 1}), 0)  # not on the pages read
    last = opened.model_copy(update={"pages": 1, "last_key": end, "page_end": None, "page_customers": None})
    assert store.open_page(last, 1)  # the segment's last page: it ends where the segment does
    assert store.progress("s1", "r1", 0) == last
    assert not store.save_progress(done, 0)
    # A page recorded done with the next one opened, in one write (the worker's write a page).
    next_open = last.model_copy(update={"pages": 2, "page_end": end, "page_customers": b"\x00\x01\x02\x03"})
    assert store.save_progress(next_open, 1)
    assert store.progress("s1", "r1", 0) == next_open
    assert not store.open_page(next_open, 2)  # open already


class Profiles:
    """Profiles put as a test arranges them, and the scanner that reads them."""

    def __init__(self, put: Any, scanner: Any, delete: Any) -> None:
        self.put = put
        self.scanner = scanner
        self.delete = delete


@pytest.fixture(params=IMPLEMENTATIONS)
def profiles(request: pytest.FixtureRequest) -> Profiles:
    if request.param == "fake":
        fake = InMemoryCustomers()
        return Profiles(fake.put_profile, fake, fake.stored_profiles.pop)
    stores: Stores = request.getfixturevalue("empty_stores")

    def put(profile: Profile) -> None:
        stores.customers.client.put_item(
            TableName=stores.customers.table_name, Item=stores.customers.profile_item(profile)
        )

    def delete(customer_id: str) -> None:
        stores.customers.client.delete_item(
            TableName=stores.customers.table_name, Key=profile_key(customer_id)
        )

    return Profiles(put, stores.customers, delete)


def _profile(customer_id: str, **extra: Any) -> Profile:
    state = ChannelState(reachable=True, consent=True, updated_at=NOW)
    return Profile(
        customer_id=customer_id,
        line_user_id=f"U{int(customer_id[4:]):032x}",
        channels={"line": state},
        first_seen_at=NOW,
        updated_at=NOW,
        **extra,
    )


def test_a_parallel_scan_yields_every_live_profile_once(profiles: Profiles) -> None:
    state = ChannelState(reachable=True, consent=True, updated_at=NOW)
    for n in range(40):
        merged = {"merged_into": "cus_000"} if n % 10 == 9 else {}
        profiles.put(
            Profile(
                customer_id=f"cus_{n:03d}",
                line_user_id=f"U{n:032x}",
                channels={"line": state},
                first_seen_at=NOW,
                updated_at=NOW,
                **merged,
            )
        )
    seen: list[str] = []
    for segment in range(3):
        start = None
        while True:
            page = profiles.scanner.scan_profiles(segment, 3, start, 7)
            assert page.scanned <= 7 and len(page.profiles) <= page.scanned
            seen += [p.customer_id for p in page.profiles]
            start = page.next_start
            if start is None:
                break
    assert sorted(seen) == [f"cus_{n:03d}" for n in range(40) if n % 10 != 9]


class Queue:
    def __init__(self, queue: MessageQueue, received: Any, break_it: Any) -> None:
        self.queue = queue
        self.received = received
        self.break_it = break_it


@pytest.fixture(params=IMPLEMENTATIONS)
def queue(request: pytest.FixtureRequest) -> Queue:
    if request.param == "fake":
        fake = InMemoryQueue()
        return Queue(fake, fake.take, lambda: setattr(fake, "unavailable", True))
    sqs = request.getfixturevalue("empty_sqs")
    url = sqs.create_queue(QueueName="BroadcastQueue")["QueueUrl"]

    def received() -> list[str]:
        bodies: list[str] = []
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
            for message in messages:
                bodies.append(message["Body"])
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return bodies

    return Queue(SqsQueue(sqs, url), received, lambda: sqs.delete_queue(QueueUrl=url))


def test_a_queue_delivers_every_message_it_was_given(queue: Queue) -> None:
    bodies = [json.dumps({"segment": n}) for n in range(23)]  # more than one SQS batch
    queue.queue.send(bodies)
    assert sorted(queue.received(), key=lambda b: json.loads(b)["segment"]) == bodies


def test_a_queue_that_cannot_take_the_messages_says_so(queue: Queue) -> None:
    queue.break_it()
    with pytest.raises(ServiceUnavailable):
        queue.queue.send(["{}"])


def test_a_page_holds_up_to_the_profiles_asked_for_and_every_live_profile_once(profiles: Profiles) -> None:
    """A broadcast page is sized in recipients: other items (here profiles merged away) do not make
    it smaller, and a page cut inside a Scan's answer resumes after its last profile."""
    state = ChannelState(reachable=True, consent=True, updated_at=NOW)
    for n in range(45):
        merged = {"merged_into": "cus_000"} if n % 3 == 2 else {}
        profiles.put(
            Profile(
                customer_id=f"cus_{n:03d}",
                line_user_id=f"U{n:032x}",
                channels={"line": state},
                first_seen_at=NOW,
                updated_at=NOW,
                **merged,
            )
        )
    seen: list[str] = []
    sizes: list[int] = []
    start = None
    while True:
        page = profiles.scanner.scan_profile_page(0, 1, start, 7)
        sizes.append(len(page.profiles))
        seen += [p.customer_id for p in page.profiles]
        start = page.next_start
        if start is None:
            break
    assert sorted(seen) == [f"cus_{n:03d}" for n in range(45) if n % 3 != 2]
    assert sizes == [7, 7, 7, 7, 2]
    assert len(seen) == len(set(seen)) == 30


def test_the_customers_tables_size_is_its_item_count(request: pytest.FixtureRequest) -> None:
    stores: Stores = request.getfixturevalue("empty_stores")
    size = DynamoTableSize(stores.customers.table_name, stores.customers.client)
    assert size.approximate_items() == 0
    for n in range(3):
        stores.customers.client.put_item(
            TableName=stores.customers.table_name,
            Item=stores.customers.profile_item(
                Profile(customer_id=f"cus_{n}", first_seen_at=NOW, updated_at=NOW)
            ),
        )
    # moto counts the items as they are; DynamoDB refreshes the figure about every six hours.
    assert size.approximate_items() == 3


def test_a_page_read_again_goes_through_where_it_first_ended_with_the_profiles_created_in_it(
    profiles: Profiles,
) -> None:
    """The range of a page (`scan_profile_page`'s start and next_start), read again: every live
    profile in it, those created in it since too, however many; nothing after it, so the page after
    it, read from its end, holds nobody twice. One segment: both order a segment's items by key."""
    for n in range(0, 40, 2):
        profiles.put(_profile(f"cus_{n:03d}", **({"merged_into": "cus_000"} if n % 10 == 8 else {})))
    first = profiles.scanner.scan_profile_page(0, 1, None, 7)
    second = profiles.scanner.scan_profile_page(0, 1, first.next_start, 7)
    ids = [p.customer_id for p in second.profiles]
    assert len(ids) == 7 and second.next_start is not None
    # Created inside the second page's range meanwhile, one before its first, one before its last.
    created = [f"cus_{int(ids[0][4:]) - 1:03d}", f"cus_{int(ids[-1][4:]) - 1:03d}"]
    for customer_id in created:
        profiles.put(_profile(customer_id))
    again = profiles.scanner.scan_profile_range(0, 1, first.next_start, second.next_start)
    assert sorted(p.customer_id for p in again.profiles) == sorted([*ids, *created])
    assert again.next_start == second.next_start and again.scanned >= 9
    rest: list[str] = []
    start = again.next_start
    while start is not None:
        page = profiles.scanner.scan_profile_page(0, 1, start, 7)
        rest += [p.customer_id for p in page.profiles]
        start = page.next_start
    assert not set(rest) & {*ids, *created}
    everyone = [p.customer_id for p in first.profiles] + [p.customer_id for p in again.profiles] + rest
    live = [f"cus_{n:03d}" for n in range(0, 40, 2) if n % 10 != 8]
    assert sorted(everyone) == sorted([*live, *created])

    # The profile the page ended at, erased since: the range still ends where it did.
    profiles.delete(ids[-1])
    erased = profiles.scanner.scan_profile_range(0, 1, first.next_start, second.next_start)
    assert sorted(p.customer_id for p in erased.profiles) == sorted([*ids[:-1], *created])
    # A page that ended with the segment: through the segment's end.
    to_end = profiles.scanner.scan_profile_range(0, 1, second.next_start, None)
    assert sorted(p.customer_id for p in to_end.profiles) == sorted(rest)
    assert to_end.next_start is None

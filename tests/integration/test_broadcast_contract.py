"""The broadcast worker's in-memory ports (tests/fakes) keep the AWS adapters' contract: the same
assertions run against each fake and against its adapter under moto. Covered: a run started once
and claimed again only after RESTART_AFTER, by one caller, never once enqueued; segment progress
written on the pages read; a parallel scan of profiles that yields every live profile exactly once;
a queue that delivers what it was given and says so when it could not."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cems.adapters.dynamodb.broadcasts import BroadcastStore
from cems.adapters.dynamodb.customers import Stores
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


class Profiles:
    """Profiles put as a test arranges them, and the scanner that reads them."""

    def __init__(self, put: Any, scanner: Any) -> None:
        self.put = put
        self.scanner = scanner


@pytest.fixture(params=IMPLEMENTATIONS)
def profiles(request: pytest.FixtureRequest) -> Profiles:
    if request.param == "fake":
        fake = InMemoryCustomers()
        return Profiles(fake.put_profile, fake)
    stores: Stores = request.getfixturevalue("empty_stores")

    def put(profile: Profile) -> None:
        stores.customers.client.put_item(
            TableName=stores.customers.table_name, Item=stores.customers.profile_item(profile)
        )

    return Profiles(put, stores.customers)


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

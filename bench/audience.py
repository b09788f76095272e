"""Audience count (issue 12): customers read a second and AWS requests per 1,000 customers of the
count the admin API answers (cems.console.audience), at two table sizes; and from those counts a
projection of time and cost at 100k and 1M customers.

How it runs, at each size N (CEMS_BENCH_AUDIENCE_SIZES, default 2000,10000):

- moto in process, the tables created as template.yaml declares them (bench.tables); N customers
  seeded with moto's own `put_item` (setup, not counted), as CustomerStore.profile_item builds them:
  two in three LINE friends, one in four with an email address and consent, half of them green-tea
  buyers (30 days ago), one in ten on a trial plan. The scenario counted (BENCH_SCENARIO: green-tea
  buyers not on a trial plan, `line_or_email`, 5 % holdout) is a file, not stored; two other
  scenarios are stored and active (IN_PLAY), so the priority check reads their enrolments as a
  broadcast page does.
- The counter is built by cems.wiring.audience from AdminFunction's environment (segments sized to
  the table as a broadcast's: one per CEMS_BROADCAST_SEGMENT_CUSTOMERS items), and counts once.
  Every request moto answers is counted (bench.aws_requests.MotoRequests), and the count's own
  tally (the answer's `requests`) is checked against it.
- moto answers in process and is most of the time measured, so "customers read a second" is a
  floor, not what DynamoDB gives. The client's own CPU (profiles parsed from DynamoDB JSON, the
  decisions, the counting) is timed apart, on the same profiles held in memory.

The fanned-out count (cems.console.audience_runs), at the largest N: the same scenario counted as a
run of FAN_OUT_SEGMENTS segments, its messages taken by the worker the broadcast function builds
(AudienceSegmentCounter over the same entry decision), then its status read once; it must equal the
count at once. Its requests per 1,000 customers (the start, every segment's reads and tally writes,
the status's Query), and the projection of its time and cost at 100k and 1M customers.

The projection (notes say the same): time = the requests one after another at REQUEST_MS each, in
THREADS segments at once (the admin function's thread pool), plus the client CPU per customer; cost =
the Scan's read units (eventually consistent, 4 KB a unit, ITEMS_PER_CUSTOMER items a customer of
the measured profile size), the consistent BatchGetItem keys (1 unit each, found or not), Lambda
GB-seconds.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from bench.aws_requests import MotoRequests, key_schemas
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, template

SIZES = tuple(int(s) for s in os.environ.get("CEMS_BENCH_AUDIENCE_SIZES", "2000,10000").split(",") if s)
PROJECTED = (100_000, 1_000_000)
NOW = datetime(2026, 5, 8, 3, 0, tzinfo=UTC)
BENCH_SCENARIO: dict[str, Any] = {
    "id": "bench-audience",
    "name": "bench: green-tea buyers, not on a trial plan",
    "trigger": {"type": "broadcast", "at": "2026-05-09T12:00:00+09:00"},
    "audience": {
        "kind": "all",
        "conditions": [
            {"kind": "bought", "categories": ["緑茶"]},
            {"kind": "not", "condition": {"kind": "trait", "trait": "plan", "op": "eq", "value": "trial"}},
        ],
    },
    "entry": {"holdout_percent": 5},
    "steps": [
        {
            "id": "announce",
            "type": "send",
            "channel": "line_or_email",
            "line": [{"type": "text", "text": "新茶が入荷しました🍃"}],
            "email": {"subject": "新茶のご案内", "text": "新茶が入荷しました"},
        },
        {"id": "done", "type": "end"},
    ],
}
IN_PLAY = ("bench-welcome", "bench-cart")

# --- the assumptions of the projection (docs/performance.md, "Issue 12: audience counts") --------------
# One DynamoDB request from Lambda in the same region, round trip (as bench.broadcast assumes); a Scan
# page of 500 profiles (~1 MB read) and a BatchGetItem of 100 keys take longer than a GetItem: an average.
REQUEST_MS = 8.0
# The admin function's segments read at once (cems.console.audience.DEFAULT_THREADS).
THREADS = 8
# CustomersTable holds more than profiles: identities (user id, anonymous ids, LINE id) and contact
# lookups. A Scan pays for every item it reads, so a customer costs about this many items.
ITEMS_PER_CUSTOMER = 3
# DynamoDB on demand in ap-northeast-1, per million read request units (as bench.broadcast); an
# eventually consistent read (a Scan) of up to 4 KB is half a unit, a consistent one (BatchGetItem
# of enrolments) one unit, an item not found too.
DYNAMODB_RRU_USD = 0.1425
# AdminFunction runs on arm64 with 512 MB (template.yaml Globals): Lambda's arm64 price per GB-second.
LAMBDA_GB_SECOND_USD = 0.0000133334
LAMBDA_MEMORY_GB = 0.5
# Lambda gives a function CPU in proportion to its memory, one vCPU at 1,769 MB: at 512 MB the client
# CPU measured here (taking one of this machine's cores as one vCPU) takes this many times as long.
LAMBDA_CPU_FACTOR = 1769 / 512
# API Gateway's HTTP API waits 30 s for the function (AdminFunction's Timeout is 29 s).
API_TIMEOUT_S = 29.0
# The fanned-out count measured: this many segments at the largest N.
FAN_OUT_SEGMENTS = 8
# --- the fanned-out count's projection ------------------------------------------------------------------
# A run has a segment per CEMS_BROADCAST_SEGMENT_CUSTOMERS (10,000) items, as a broadcast; the broadcast
# function takes BROADCAST_BATCH of them an invocation, one after another (template.yaml BatchSize).
SEGMENT_ITEMS = 10_000
BROADCAST_BATCH = 5
# Lambda's SQS poller starts with this many concurrent invocations and adds up to this many a second
# (300 a minute) while messages wait; the account's concurrency is shared, so at most this many.
SQS_START_CONCURRENCY = 5
SQS_RAMP_PER_S = 5
MAX_WORKERS = 500
# How long before the first segment message is taken (the SQS poller's long poll), and how often the
# console and the CLI ask for the run (the last ask can come up to that late).
PICKUP_S = 1.0
POLL_S = 2.0
# DynamoDB per million write units; SQS per million requests (ap-northeast-1, on demand).
DYNAMODB_WRU_USD = 0.715
SQS_REQUEST_USD = 0.40


@dataclass
class Run:
    customers: int
    counter: MotoRequests
    seconds: float = 0.0
    client_cpu_s: float = 0.0
    profile_bytes: float = 0.0  # the average profile item's size (DynamoDB's item size, roughly)
    matching: int = 0
    segments: int = 0
    tallied: int | None = None  # the count's own requests figure
    # The fanned-out count (the largest N only): its AWS requests by operation, and its segment writes.
    fan_requests: Counter[str] | None = None
    fan_writes: int = 0
    fan_messages: int = 0
    sync_keys: int | None = None

    @property
    def requests(self) -> int:
        return self.counter.total("", "dynamodb")  # the count at once (the fanned-out one is "fanout")

    def per_thousand(self) -> float:
        return self.requests * 1000 / self.customers

    def keys_read(self) -> int:
        """Keys the count at once read (before the fanned-out count read them again)."""
        return sum(self.counter.reads.values()) if self.sync_keys is None else self.sync_keys


def measure(sizes: tuple[int, ...] = SIZES) -> Measured:
    runs = [_run(n, fan_out=n == sizes[-1]) for n in sizes]
    figures: list[Figure] = []
    notes: list[str] = []
    for run in runs:
        n = run.customers
        figures += [
            Figure(f"audience N={n}: customers read a second (moto in process)", n / run.seconds, digits=0),
            Figure(f"audience N={n}: AWS requests per 1,000 customers", run.per_thousand(), digits=1),
            Figure(f"audience N={n}: client CPU per 1,000 customers", run.client_cpu_s * 1e6 / n, "ms"),
        ]
        by_operation = Counter(
            {
                op: v
                for (stage, svc, op), v in run.counter.requests.items()
                if (stage, svc) == ("", "dynamodb") and v
            }
        )
        notes.append(
            f"audience N={n}: {run.matching} matching, {run.segments} segment(s), {run.seconds:.1f} s; "
            f"requests {dict(sorted(by_operation.items()))} (the count's own tally said {run.tallied}); "
            f"{run.keys_read() / n:.2f} enrolment keys read a customer; "
            f"profile item ~{run.profile_bytes:.0f} B"
        )
    projection, projection_notes = project(runs[-1])
    fanned, fanned_notes = project_fan_out(runs[-1])
    return Measured(figures + projection + fanned, notes + projection_notes + fanned_notes)


def project_fan_out(run: Run) -> tuple[list[Figure], list[str]]:
    """The fanned-out count: requests per 1,000 customers measured, and time and cost at 100k and 1M.

    Time: the first message taken (PICKUP_S), then the invocations, each BROADCAST_BATCH segments one
    after another, each segment its customers' requests one after another plus their client CPU on a
    512 MB Lambda (as the count at once, in one thread); concurrency ramps from SQS_START_CONCURRENCY by
    SQS_RAMP_PER_S, so the last invocation starts when the ramp has let them all start; then up to
    one POLL_S until the page asks. Cost: the same reads as the count at once (the Scan and the
    enrolment keys), the segment tallies' writes (one a segment, ~6 KB: 6 units), the messages, the
    Lambda time, and the page's polls (each reads every segment's item, ~6 KB, eventually consistent)."""
    assert run.fan_requests is not None
    n = run.customers
    requests = sum(run.fan_requests.values())
    figures = [
        Figure(
            f"audience fanned out N={n} ({FAN_OUT_SEGMENTS} segments): AWS requests per 1,000 customers",
            requests * 1000 / n,
            digits=1,
        )
    ]
    rows: list[str] = []
    per_customer_s = (
        requests / n * REQUEST_MS / 1000 + run.client_cpu_s / n * LAMBDA_CPU_FACTOR
    )  # one thread: waiting and CPU one after another
    keys_per_customer = run.keys_read() / n
    scan_units_per_customer = ITEMS_PER_CUSTOMER * run.profile_bytes / 4096 / 2
    for customers in PROJECTED:
        segments = max(1, min(1000, math.ceil(customers * ITEMS_PER_CUSTOMER / SEGMENT_ITEMS)))
        invocations = math.ceil(segments / BROADCAST_BATCH)
        segment_s = customers / segments * per_customer_s
        invocation_s = min(segments, BROADCAST_BATCH) * segment_s
        workers = min(MAX_WORKERS, invocations)
        # Invocations start as the ramp allows; each worker takes another batch when it is done.
        ramp_s = max(0.0, (workers - SQS_START_CONCURRENCY) / SQS_RAMP_PER_S)
        rounds = math.ceil(invocations / workers)
        wall_s = PICKUP_S + ramp_s + rounds * invocation_s + POLL_S
        polls = math.ceil(wall_s / POLL_S)
        read_units = customers * (scan_units_per_customer + keys_per_customer) + polls * segments * 6 / 4 / 2
        write_units = segments * 6
        lambda_s = customers * per_customer_s
        usd = (
            read_units / 1e6 * DYNAMODB_RRU_USD
            + write_units / 1e6 * DYNAMODB_WRU_USD
            + (segments / 10 + 3 * invocations) / 1e6 * SQS_REQUEST_USD
            + lambda_s * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND_USD
        )
        label = f"{customers // 1000}k" if customers < 1_000_000 else f"{customers // 1_000_000}M"
        figures += [
            Figure(f"audience fanned out {label} (projected): time", wall_s, "s", digits=0),
            Figure(f"audience fanned out {label} (projected): cost per count", usd, "USD", digits=3),
        ]
        rows.append(
            f"{label}: {segments} segments of {customers // segments:,} customers ({segment_s:.1f} s each), "
            f"{invocations} invocations of {invocation_s:.1f} s, {workers} at once after a {ramp_s:.0f} s "
            f"ramp: {wall_s:.0f} s with the pick-up and the last poll; {read_units / 1e6:.3f}M read units, "
            f"{write_units:,} write units, Lambda {lambda_s:.0f} s: ${usd:.3f}"
        )
    notes = [
        f"audience fanned out N={n}: {FAN_OUT_SEGMENTS} segments, {run.fan_messages} messages, "
        f"{run.fan_writes} tally writes, requests {dict(sorted(run.fan_requests.items()))}; "
        "equal to the count at once",
        "audience fanned-out projection: " + "; ".join(rows),
        f"audience fanned-out assumptions: a segment per {SEGMENT_ITEMS:,} items ({ITEMS_PER_CUSTOMER} a "
        f"customer), {BROADCAST_BATCH} an invocation (BatchSize), the SQS poller from "
        f"{SQS_START_CONCURRENCY} invocations adding {SQS_RAMP_PER_S} a second up to {MAX_WORKERS}, each "
        f"request {REQUEST_MS:g} ms one after another, the client CPU times {LAMBDA_CPU_FACTOR:.2f} (512 "
        f"MB), pick-up {PICKUP_S:g} s, polls every {POLL_S:g} s; ${DYNAMODB_WRU_USD}/M write units, "
        f"${SQS_REQUEST_USD}/M SQS requests",
    ]
    return figures, notes


def project(run: Run) -> tuple[list[Figure], list[str]]:
    figures: list[Figure] = []
    rows: list[str] = []
    requests_per_customer = run.requests / run.customers
    keys_per_customer = run.keys_read() / run.customers
    cpu_per_customer = run.client_cpu_s / run.customers
    # A Scan reads 4 KB a unit over the items it reads, eventually consistent: half a unit.
    scan_units_per_customer = ITEMS_PER_CUSTOMER * run.profile_bytes / 4096 / 2
    for customers in PROJECTED:
        threads = min(THREADS, max(1, math.ceil(customers * ITEMS_PER_CUSTOMER / 10_000)))
        wait_s = customers * requests_per_customer * REQUEST_MS / 1000 / threads
        # The client CPU does not run in parallel (one interpreter), and is added to the waiting: an
        # upper bound, as the threads' waiting overlaps some of it.
        cpu_s = customers * cpu_per_customer * LAMBDA_CPU_FACTOR
        wall_s = wait_s + cpu_s
        read_units = customers * (scan_units_per_customer + keys_per_customer)
        dynamodb_usd = read_units / 1e6 * DYNAMODB_RRU_USD
        lambda_usd = wall_s * LAMBDA_MEMORY_GB * LAMBDA_GB_SECOND_USD
        label = f"{customers // 1000}k" if customers < 1_000_000 else f"{customers // 1_000_000}M"
        figures += [
            Figure(f"audience {label} (projected): time", wall_s, "s", digits=0),
            Figure(
                f"audience {label} (projected): cost per count", dynamodb_usd + lambda_usd, "USD", digits=3
            ),
        ]
        fits = "fits" if wall_s <= API_TIMEOUT_S else "does not fit"
        rows.append(
            f"{label}: {customers * requests_per_customer:,.0f} requests, {threads} threads, "
            f"waiting {wait_s:.0f} s + client CPU on Lambda {cpu_s:.0f} s = {wall_s:.0f} s ({fits} in the "
            f"API's {API_TIMEOUT_S:.0f} s); {read_units / 1e6:.3f}M read units = ${dynamodb_usd:.3f}, Lambda "
            f"${lambda_usd:.4f}"
        )
    notes = [
        f"audience projection from N={run.customers}: " + "; ".join(rows),
        f"audience projection assumptions: each request {REQUEST_MS:g} ms (DynamoDB in region, one after "
        f"another in each thread), {THREADS} threads (segments read at once; fewer when the table has "
        f"fewer segments, one per 10,000 items), {ITEMS_PER_CUSTOMER} CustomersTable items a customer "
        f"(profile, identities, lookups: the Scan reads them all, identities priced at the profile's "
        f"size, an overestimate), Scan eventually consistent (0.5 unit per 4 KB), enrolments read "
        f"consistently (1 unit a key, found or not: {keys_per_customer:.2f} keys a customer = this "
        f"scenario plus {len(IN_PLAY)} in play), ${DYNAMODB_RRU_USD}/M read units and "
        f"${LAMBDA_GB_SECOND_USD}/GB-s at {LAMBDA_MEMORY_GB * 1024:.0f} MB (ap-northeast-1, on demand); "
        "an audience with `event_count` also reads each candidate's events (a Query each), not "
        f"included; the client CPU measured here, times {LAMBDA_CPU_FACTOR:.2f} for a 512 MB Lambda "
        "(one vCPU at 1,769 MB), added to the waiting (an upper bound)",
    ]
    return figures, notes


# --- one run --------------------------------------------------------------------------------------------


def _run(customers: int, fan_out: bool = False) -> Run:
    import boto3
    from cems import clock, wiring
    from cems.adapters import aws
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.local import resources
    from cems.local.cfn import function_specs
    from cems.scenario.model import Scenario
    from moto import mock_aws

    loaded = template()
    tables = {n: r["Properties"] for n, r in loaded.resources_of_type("AWS::DynamoDB::Table").items()}
    saved = dict(os.environ)
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    aws.dynamodb.cache_clear()
    counter = MotoRequests(key_schemas(tables))
    run = Run(customers, counter)
    try:
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            for name, props in tables.items():
                resources.create_table(dynamodb, loaded, name, props)
            clock.freeze(NOW)
            _store_in_play(ScenarioStore("JourneysTable", dynamodb))
            items = _seed(dynamodb, customers)
            run.profile_bytes = sum(_item_size(i) for i in items) / len(items)
            settings = _admin_settings(function_specs(loaded))
            scenario = Scenario.model_validate(BENCH_SCENARIO)
            counting = wiring.audience(settings)
            started = time.perf_counter()
            with counter.counting():
                count = counting.count(scenario)
            run.seconds = time.perf_counter() - started
            run.matching, run.segments, run.tallied = count.matching, count.segments, count.requests
            if count.customers_read != customers or not count.complete:
                raise RuntimeError(f"read {count.customers_read} of {customers} customers")
            run.client_cpu_s = _client_cpu(items, scenario, count.matching)
            if fan_out:
                run.sync_keys = run.keys_read()
                _fan_out(run, dynamodb, counting, scenario, count)
    finally:
        clock.reset()
        aws.dynamodb.cache_clear()
        os.environ.clear()
        os.environ.update(saved)
    return run


def _fan_out(run: Run, dynamodb: Any, counting: Any, scenario: Any, at_once: Any) -> None:
    """The same count as a run of FAN_OUT_SEGMENTS segments, its messages worked through at once by the
    segment counter the broadcast function builds (on the count's own entrance: the same reads), the
    status read once; its requests counted by operation. Raises unless it equals the count at once."""
    import json

    from cems.adapters.dynamodb.audience_runs import DynamoAudienceRunStore
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.console.audience import AudienceCounter
    from cems.console.audience_runs import AudienceRuns, AudienceSegmentCounter
    from cems.scenario.broadcast import SegmentMessage

    class Queue:  # SQS is counted as messages: one SendMessageBatch per ten
        def __init__(self) -> None:
            self.bodies: list[str] = []

        def send(self, bodies: Sequence[str]) -> None:
            self.bodies += bodies

    queue, store = Queue(), DynamoAudienceRunStore("JourneysTable", dynamodb)
    fixed = AudienceCounter(counting.profiles, counting.entrance, segments=FAN_OUT_SEGMENTS)
    runs = AudienceRuns(fixed, store, queue, None)
    worker = AudienceSegmentCounter(
        counting.entrance, CustomerStore("CustomersTable", dynamodb), store, queue
    )
    before = Counter(run.counter.requests)
    with run.counter.counting(), run.counter.stage_of("fanout"):
        started = runs.start(
            scenario, json.dumps(BENCH_SCENARIO), started_by="bench", segments=FAN_OUT_SEGMENTS
        )
        while queue.bodies:
            bodies, queue.bodies = queue.bodies, []
            run.fan_messages += len(bodies)
            for body in bodies:
                outcome = worker.run_segment(SegmentMessage.model_validate_json(body), lambda: 60_000).outcome
                run.fan_writes += outcome in ("done", "continued")
        assert started.run is not None
        done = runs.status(started.run)
    spent = Counter(run.counter.requests)
    spent.subtract(before)
    run.fan_requests = Counter({op: v for (stage, svc, op), v in spent.items() if stage == "fanout" and v})
    if done is None or not done.complete:
        raise RuntimeError("the fanned-out count did not complete")
    ignored = {"requests", "elapsed_ms", "run", "segments_done", "note", "complete", "segments", "sample"}
    if done.model_dump(exclude=ignored) != at_once.model_dump(exclude=ignored):
        raise RuntimeError("the fanned-out count differs from the count at once")


def _admin_settings(specs: list[Any]) -> Any:
    """AdminFunction's environment from template.yaml (Globals and its own variables)."""
    from cems.settings import Settings

    spec = next(s for s in specs if s.logical_id == "AdminFunction")
    return Settings({k: v for k, v in spec.environment.items() if not k.endswith("_PARAMETER")})


def _store_in_play(scenarios: Any) -> None:
    """Two other active scenarios: a broadcast page reads each customer's enrolment in them."""
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource

    for scenario_id in IN_PLAY:
        document = {
            **BENCH_SCENARIO,
            "id": scenario_id,
            "trigger": {"type": "event", "event": "Order Completed"},
        }
        scenarios.put_version(Scenario.model_validate(document), document, ScenarioSource(scenario_id, "b"))


def _seed(dynamodb: Any, customers: int) -> list[dict[str, Any]]:
    """N customers (see the module's docstring), stored with moto's own put_item: their items."""
    import boto3
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.models import Channel, ChannelState, OrderSummary, Profile, address_hash
    from moto.dynamodb.models import dynamodb_backends

    store = CustomerStore("CustomersTable", dynamodb)
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    backend = dynamodb_backends[account][REGION]
    at = NOW - timedelta(days=30)
    items: list[dict[str, Any]] = []
    gc.disable()
    try:
        for n in range(customers):
            channels: dict[Channel, ChannelState] = {}
            traits: dict[str, Any] = {"plan": "trial" if n % 10 == 4 else "member", "last_name": "山田"}
            if n % 3:
                channels[Channel.LINE] = ChannelState(reachable=True, consent=True, updated_at=at)
            if n % 4 == 0:
                traits["email"] = f"c{n}@example.jp"
                channels[Channel.EMAIL] = ChannelState(
                    reachable=True, consent=True, updated_at=at, address_hash=address_hash(traits["email"])
                )
            profile = Profile(
                customer_id=f"cus_{n:07d}",
                line_user_id=f"U{n:032x}" if n % 3 else None,
                channels=channels,
                traits=traits,
                orders={f"o-{n}": OrderSummary(at=at, amount=Decimal(1620))},
                categories_bought={"緑茶" if n % 2 == 0 else "紅茶"},
                first_seen_at=at - timedelta(days=60),
                updated_at=at,
            )
            item = store.profile_item(profile)
            items.append(item)
            backend.put_item("CustomersTable", item)
    finally:
        gc.enable()
    return items


def _item_size(item: dict[str, Any]) -> int:
    """An item's size as DynamoDB counts it, roughly: attribute names and values in UTF-8."""

    def size(value: Any) -> int:
        if isinstance(value, dict):
            if len(value) == 1 and next(iter(value)) in ("S", "N", "B", "BOOL", "NULL"):
                return len(str(next(iter(value.values()))).encode("utf-8"))
            return sum(len(k.encode("utf-8")) + size(v) for k, v in value.items()) + 3
        if isinstance(value, list):
            return sum(size(v) for v in value) + 3
        return len(str(value).encode("utf-8"))

    return sum(len(k.encode("utf-8")) + size(v) for k, v in item.items())


def _client_cpu(items: list[dict[str, Any]], scenario: Any, matching: int) -> float:
    """The client's own CPU for the count: profiles parsed from DynamoDB JSON as the Scan's adapter
    parses them, then the same count over them held in memory (no enrolments, no scenario in play,
    which costs the decisions nothing but reads). Checked against the moto count's `matching`."""
    from cems.adapters.dynamodb.items import from_attribute_map
    from cems.console.audience import AudienceCounter
    from cems.models import Profile
    from cems.ports import ProfilePage
    from cems.scenario.entrance import Entrance

    class Pages:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []

        def scan_profile_page(self, segment: int, total: int, start: Any, profiles: int) -> ProfilePage:
            at = 0 if start is None else int(start["at"])
            page = self.profiles[at : at + profiles]
            more = at + profiles < len(self.profiles)
            return ProfilePage(page, len(page), {"at": at + profiles} if more else None)

    class Empty:
        def get_many(self, pairs: Any) -> dict[Any, Any]:
            return {}

        def of_customer(self, customer_id: str) -> list[Any]:
            return []

        def active_summaries(self) -> list[Any]:
            return []

        def scenarios_in_play(self) -> list[Any]:
            return []

        def history(self, profile: Any) -> list[Any]:
            return []

    pages, empty = Pages(), Empty()
    # moto's tables are in this process: the cyclic collector would scan them on every full collection,
    # which a Lambda's heap does not hold. Frozen, they are left out of the collections.
    gc.collect()
    gc.freeze()
    try:
        started = time.process_time()
        pages.profiles = [Profile.model_validate(from_attribute_map(item)) for item in items]
        entrance = Entrance(empty, empty, empty)  # type: ignore[arg-type]  # reads nothing
        counter = AudienceCounter(pages, entrance, segments=1, threads=1)  # type: ignore[arg-type]
        count = counter.count(scenario)
        spent = time.process_time() - started
    finally:
        gc.unfreeze()
    if count.matching != matching:
        raise RuntimeError(f"in memory {count.matching} matching, on moto {matching}")
    return spent


if __name__ == "__main__":
    import sys

    from bench.report import table

    chosen = tuple(int(s) for s in sys.argv[1:]) or SIZES
    measured = measure(chosen)
    print(table(measured.figures))
    print("\n".join(f"- {note}" for note in measured.notes))

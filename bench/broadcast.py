"""Broadcast simulation (issue 11): AWS requests per recipient stage by stage, LINE calls per recipient
for identical content, writes to the hottest item, at two audience sizes; and from those counts and
the documented limits of AWS and LINE, a projection of wall time and cost for 1M customers.

How it runs, at each size N (CEMS_BENCH_BROADCAST_SIZES, default 2000,10000:
moto costs about 25 ms of CPU a customer here, so 50,000 would take about half an hour):

- moto in process, the tables created as template.yaml declares them (bench.tables), the queues
  LineSendQueue, EmailSendQueue and BroadcastQueue; the LINE API is the fake LINE API
  (cems.local.fake_line) on a local port, reached through the real LineGateway and the LINE SDK.
- A broadcast scenario (one LINE text, the same for everyone: BENCH_SCENARIO) is stored and activated
  with ScenarioStore.put_version, as the loader stores it; N customers are seeded as
  CustomerStore.profile_item builds them (LINE user id, LINE reachable and consenting), with moto's
  own `put_item` in process (setup, not counted).
- Each function's objects are built by its cems.wiring builder (wiring.tick, wiring.broadcast,
  wiring.send_line; report counters on, as the handlers build them) from that function's environment
  in template.yaml (Globals and its own variables, cems.local.cfn.function_specs), with the queue URLs,
  the fake LINE API's URL and the secrets' values put in.
- Stages, each run as its handler runs it: `tick` (runner.tick(), then starter.start_due(): the run
  starts, segment messages go on BroadcastQueue); `broadcast` (each BroadcastQueue message, taken
  as the event source mapping takes them, BatchSize from the template, through
  worker.run_segment(SegmentMessage)); `send_line` (each LineSendQueue message as the SQS record
  Lambda hands the function, through QueueRetry.run(record, sender.handle, ...)). What the queues'
  event source mappings themselves send (ReceiveMessage, DeleteMessageBatch) is counted apart as
  `poller`; it is not the functions' work.

Every request is counted where moto receives it (bench.aws_requests.MotoRequests: any client,
retries included), and DynamoDB writes are counted per item key from the request bodies moto got.
moto's TransactWriteItems is replaced by the local stack's undo-log version for the run (as in
bench.journeys): moto's own deep-copies every table a transaction touches, which made each
counter transaction cost time in proportion to the table. The requests are the same.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.aws_requests import MotoRequests, key_schemas
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, template

SIZES = tuple(int(s) for s in os.environ.get("CEMS_BENCH_BROADCAST_SIZES", "2000,10000").split(",") if s)
PROJECTED = 1_000_000
SCENARIO_ID = "bench-broadcast"
# 12:00 in Tokyo on a Friday: inside the default send window.
AT = datetime(2026, 5, 8, 3, 0, tzinfo=UTC)
UPLOADED = AT - timedelta(days=1)
TOKEN = "bench-channel-access-token"
STAGES = ("tick", "broadcast", "send_line")
POLLER = "poller"
BENCH_SCENARIO: dict[str, Any] = {
    "id": SCENARIO_ID,
    "name": "bench: one LINE text to every LINE friend",
    "version": 1,
    "priority": 50,
    "trigger": {"type": "broadcast", "at": "2026-05-08T12:00:00+09:00"},
    "audience": {"kind": "all", "conditions": [{"kind": "reachable", "channel": "line"}]},
    "entry": {"reentry": "never"},
    "steps": [
        {
            "id": "announce",
            "type": "send",
            "channel": "line",
            "line": [{"type": "text", "text": "今年も八女の新茶が入荷しました🍃"}],
        },
        {"id": "done", "type": "end"},
    ],
}

# --- the assumptions of the 1M projection (docs/performance.md, "Issue 11", repeats them) ---------------
# Lambda: the default concurrency quota of an account in a region, shared by every function.
LAMBDA_CONCURRENCY = 1000
# One DynamoDB or SQS request from Lambda in the same region, round trip: DynamoDB answers single-item
# requests in single-digit milliseconds; batches, transactions and SQS take longer. An average.
REQUEST_MS = 8.0
# One LINE push or multicast call, round trip from Tokyo.
LINE_CALL_MS = 150.0
# DynamoDB: what one partition serves a second; a write of an item up to 1 KB is 1 write unit, 2 in a
# transaction; a consistent read of up to 4 KB is 1 read unit.
PARTITION_WCU = 1000
PARTITION_RCU = 3000
# LINE Messaging API rate limits per channel (developers.line.biz/en/reference/messaging-api/#rate-limits):
# multicast 200 requests a second; push is among "other endpoints", 2,000 requests a second.
LINE_RATE = {"multicast": 200, "push": 2000}
# Prices in ap-northeast-1 (on demand): DynamoDB per million write / read request units, SQS per
# million requests (standard queue, 64 KB chunks), Lambda per GB-second (x86) and per million invokes.
DYNAMODB_WRU_USD = 0.715
DYNAMODB_RRU_USD = 0.1425
SQS_REQUEST_USD = 0.40
LAMBDA_GB_SECOND_USD = 0.0000166667
LAMBDA_INVOKE_USD = 0.20
# The first run starts at the tick after its `at`: up to a minute.
TICK_DELAY_S = 60.0


@dataclass
class Run:
    """What one broadcast to `customers` did, counted."""

    customers: int
    counter: MotoRequests
    line_calls: Counter[str] = field(default_factory=Counter)  # endpoint -> accepted calls
    line_failures: int = 0
    messaged: Counter[str] = field(default_factory=Counter)  # LINE user id -> messages received
    segments: int = 0
    max_segments: int = LAMBDA_CONCURRENCY // 2  # the starter's most segments a run (its settings)
    broadcast_batch: int = 1  # segment messages an invocation (the function's SQS BatchSize)
    segment_customers: int | None = None  # table items per segment when the starter sizes runs
    invocations: Counter[str] = field(default_factory=Counter)  # stage -> handler invocations
    retried: int = 0
    report_counts: dict[str, int] | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def recipients(self) -> int:
        return len(self.messaged)

    def per_recipient(self, stage: str | None = None, service: str | None = None) -> float:
        return self.counter.total(stage, service) / max(self.recipients, 1)

    def function_requests(self) -> int:
        return sum(self.counter.total(stage) for stage in STAGES)


def measure(sizes: tuple[int, ...] = SIZES) -> Measured:
    runs = [_run(n) for n in sizes]
    figures: list[Figure] = []
    notes: list[str] = []
    for run in runs:
        figures += _figures(run)
        notes += _notes(run)
    if len(runs) > 1:
        small, large = runs[0], runs[-1]
        figures.append(
            Figure(
                f"broadcast: requests per recipient, N={large.customers} / N={small.customers}",
                (large.function_requests() / max(large.recipients, 1))
                / max(small.function_requests() / max(small.recipients, 1), 1e-9),
                aim=("<=", 1.1),
            )
        )
    projection = project(runs)
    figures += projection.figures
    notes += projection.notes
    return Measured(figures, notes)


# --- one run --------------------------------------------------------------------------------------------


def _run(customers: int) -> Run:
    import boto3
    from cems import clock
    from cems.adapters import aws
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.local import resources
    from cems.local.cfn import function_specs
    from cems.local.fake_line import FakeLine, FakeLineServer
    from moto import mock_aws

    loaded = template()  # read once: parsing template.yaml takes about a second
    tables = {n: r["Properties"] for n, r in loaded.resources_of_type("AWS::DynamoDB::Table").items()}
    saved = dict(os.environ)
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    aws.dynamodb.cache_clear()
    fake = FakeLine(TOKEN)
    server = FakeLineServer(fake).start()
    counter = MotoRequests(key_schemas(tables))
    run = Run(customers, counter)
    try:
        with mock_aws(), _undo_log_transactions():
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            sqs = boto3.client("sqs", region_name=REGION)
            # Every table as template.yaml declares it, as the local stack creates it (bench.tables).
            for name, props in tables.items():
                resources.create_table(dynamodb, loaded, name, props)
            queues = {
                name: sqs.create_queue(QueueName=name)["QueueUrl"]
                for name in ("LineSendQueue", "EmailSendQueue", "BroadcastQueue")
            }
            clock.freeze(UPLOADED)
            _upload(ScenarioStore("JourneysTable", dynamodb))
            started = time.perf_counter()
            _seed(dynamodb, customers)
            run.seconds["seed"] = time.perf_counter() - started
            clock.freeze(AT + timedelta(seconds=30))
            with counter.counting():
                _stages(run, sqs, queues, server.url, function_specs(loaded))
            run.messaged = Counter(m["to"] for m in fake.messages)
            run.line_calls = Counter(c["endpoint"] for c in fake.calls if c.get("status") == 200)
            run.line_failures = sum(1 for c in fake.calls if c.get("status") != 200)
            run.report_counts = _report_counts(dynamodb)
    finally:
        clock.reset()
        server.stop()
        aws.dynamodb.cache_clear()
        os.environ.clear()
        os.environ.update(saved)
    return run


def _upload(scenarios: Any) -> None:
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource

    scenario = Scenario.model_validate(BENCH_SCENARIO)
    scenarios.put_version(scenario, BENCH_SCENARIO, ScenarioSource(f"scenarios/{SCENARIO_ID}.json", "bench"))


def line_user_id(n: int) -> str:
    return f"U{n:032x}"


def _seed(dynamodb: Any, customers: int) -> None:
    """N LINE friends who agreed to messages, each the item CustomerStore.profile_item builds, stored
    with moto's own put_item in process (the call its BatchWriteItem handler makes per item), with the
    cyclic garbage collector paused; then the count and the first item are checked through boto3."""
    import boto3
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.models import ChannelState, Profile
    from moto.dynamodb.models import dynamodb_backends

    store = CustomerStore("CustomersTable", dynamodb)
    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    backend = dynamodb_backends[account][REGION]
    at = AT - timedelta(days=30)
    first: dict[str, Any] = {}
    gc.disable()
    try:
        for n in range(customers):
            item = store.profile_item(
                Profile(
                    customer_id=f"cus_{n:07d}",
                    line_user_id=line_user_id(n),
                    channels={"line": ChannelState(reachable=True, consent=True, updated_at=at)},
                    first_seen_at=at,
                    updated_at=at,
                )
            )
            first = first or item
            backend.put_item("CustomersTable", item)
    finally:
        gc.enable()
    count = dynamodb.describe_table(TableName="CustomersTable")["Table"]["ItemCount"]
    if count != customers:
        raise RuntimeError(f"CustomersTable holds {count} items, not {customers}")
    key = {"pk": first["pk"], "sk": first["sk"]}
    if dynamodb.get_item(TableName="CustomersTable", Key=key, ConsistentRead=True).get("Item") != first:
        raise RuntimeError("the first profile does not read back as written")


def _function_settings(specs: list[Any], function: str, queues: dict[str, str], line_url: str) -> Any:
    """The function's environment as template.yaml gives it, with the local queue URLs, the fake LINE
    API and the secrets' values (instead of their SSM parameter names) put in."""
    from cems.engagement.config import TRACKING_SECRET
    from cems.line.config import LINE_CHANNEL_ACCESS_TOKEN, LINE_CHANNEL_SECRET
    from cems.settings import Settings

    spec = next(s for s in specs if s.logical_id == function)
    env = {k: v for k, v in spec.environment.items() if not k.endswith("_PARAMETER")}
    env |= {
        "LINE_SEND_QUEUE_URL": queues["LineSendQueue"],
        "EMAIL_SEND_QUEUE_URL": queues["EmailSendQueue"],
        "BROADCAST_QUEUE_URL": queues["BroadcastQueue"],
        "CEMS_LINE_API_URL": line_url,
        LINE_CHANNEL_ACCESS_TOKEN.env_name: TOKEN,
        LINE_CHANNEL_SECRET.env_name: "bench-channel-secret",
        TRACKING_SECRET.env_name: "bench-tracking-secret",
    }
    return Settings(env), spec


def _stages(run: Run, sqs: Any, queues: dict[str, str], line_url: str, specs: list[Any]) -> None:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
    from cems import wiring
    from cems.adapters.sqs import RetryLater
    from cems.scenario.broadcast import SegmentMessage

    counter = run.counter
    arn = f"arn:aws:sqs:{REGION}:123456789012:"

    started = time.perf_counter()
    settings, _ = _function_settings(specs, "TickFunction", queues, line_url)
    runner, starter = wiring.tick(settings)
    with counter.stage_of("tick"):
        runner.tick()
        starter.start_due()
    run.invocations["tick"] += 1
    run.seconds["tick"] = time.perf_counter() - started

    started = time.perf_counter()
    settings, spec = _function_settings(specs, "BroadcastFunction", queues, line_url)
    worker = wiring.broadcast(settings)
    budget_ms = spec.timeout * 1000
    segments: set[int] = set()
    run.broadcast_batch = _batch_size(spec)
    run.max_segments = _max_segments(settings)
    run.segment_customers = _segment_customers(settings)
    for records in _polled(run, sqs, queues["BroadcastQueue"], run.broadcast_batch, arn + "BroadcastQueue"):
        run.invocations["broadcast"] += 1
        with counter.stage_of("broadcast"):
            for record in records:
                message = SegmentMessage.model_validate_json(record["body"])
                segments.add(message.segment)
                # The function's whole time-out: moto is slower than DynamoDB, and a segment handed on
                # for want of time on this machine would add requests Lambda would not make.
                worker.run_segment(message, lambda: budget_ms)
    run.segments = len(segments)
    run.seconds["broadcast"] = time.perf_counter() - started

    started = time.perf_counter()
    settings, spec = _function_settings(specs, "SendLineFunction", queues, line_url)
    logger = Logger(service="cems-bench", level="ERROR")
    sender, retry = wiring.send_line(logger, settings)
    budget_ms = spec.timeout * 1000
    for records in _polled(run, sqs, queues["LineSendQueue"], _batch_size(spec), arn + "LineSendQueue"):
        run.invocations["send_line"] += 1
        with counter.stage_of("send_line"):
            for record in records:
                try:
                    retry.run(SQSRecord(record), sender.handle, lambda *_: None, lambda: budget_ms)
                except RetryLater:
                    run.retried += 1
    run.seconds["send_line"] = time.perf_counter() - started


def _max_segments(settings: Any) -> int:
    """The most segments the starter gives a run (EngineSettings), or half of Lambda's concurrency."""
    from cems.scenario.config import EngineSettings

    engine = settings.area(EngineSettings)
    return int(getattr(engine, "broadcast_max_segments", None) or LAMBDA_CONCURRENCY // 2)


def _segment_customers(settings: Any) -> int | None:
    """Table items per segment when the starter sizes a run to the table (None: a fixed number)."""
    from cems.scenario.config import EngineSettings

    engine = settings.area(EngineSettings)
    if getattr(engine, "broadcast_segments", None) is not None and "CEMS_BROADCAST_SEGMENTS" in settings._env:
        return None
    value = getattr(engine, "broadcast_segment_customers", None)
    return int(value) if value else None


def _batch_size(spec: Any) -> int:
    """The BatchSize of the function's SQS event source in the template (Lambda's default: 10)."""
    for event in spec.events.values():
        if event.get("Type") == "SQS":
            return int(event.get("Properties", {}).get("BatchSize", 10))
    return 10


def _polled(run: Run, sqs: Any, queue_url: str, batch: int, arn: str) -> Iterator[list[dict[str, Any]]]:
    """The queue's messages in the batches an SQS event source mapping hands the function; each batch
    deleted after the function returned (as the mapping does), under the `poller` stage."""
    from cems.local.pollers import sqs_record

    while True:
        with run.counter.stage_of(POLLER):
            answer = sqs.receive_message(
                QueueUrl=queue_url, MaxNumberOfMessages=min(batch, 10), AttributeNames=["All"]
            )
        messages = answer.get("Messages", [])
        if not messages:
            return
        yield [sqs_record(m, arn) for m in messages]
        with run.counter.stage_of(POLLER):
            sqs.delete_message_batch(
                QueueUrl=queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)],
            )


def _report_counts(dynamodb: Any) -> dict[str, int] | None:
    """The scenario's report counts summed over its cells, read back after the run (None when the
    counters' read is not available)."""
    from cems.adapters.dynamodb.report_counters import ReportCounters

    try:
        cells = ReportCounters("JourneysTable", dynamodb).cells(SCENARIO_ID)
    except Exception:
        return None
    totals: Counter[str] = Counter()
    for _, counts in cells:
        for metric, value in counts.items():
            if metric != "revenue":
                totals[metric] += int(value)
    return dict(totals)


@contextmanager
def _undo_log_transactions() -> Iterator[None]:
    from bench.journeys import _undo_log_transactions as undo_log

    with undo_log(), partition_queries():
        yield


@contextmanager
def partition_queries() -> Iterator[None]:
    """moto's Query of a table (not an index) as DynamoDB runs it: from the one partition it names.
    moto sorts and walks every item of the table to keep those of the partition, so each Query's cost
    grew with the table (the Deliveries table's per-dispatch Query made a broadcast quadratic). Here
    moto's own `Table.query` is given only that partition's items, in the same order, and filters,
    pages and answers them as before: the same answer (tests/integration/test_bench_moto_requests.py
    checks it), the same requests counted."""
    from unittest import mock

    from moto.dynamodb.models.table import Table

    original = Table.query

    def query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
        # Table.query(hash_key, range_comparison, range_objs, limit, exclusive_start_key,
        # scan_index_forward, projection_expressions, index_name, ...), as moto's backend calls it.
        index_name = args[6] if len(args) > 6 else kwargs.get("index_name")
        if index_name or hash_key is None or not self.range_key_attr:
            return original(self, hash_key, *args, **kwargs)
        partition = list(self.items[hash_key].values()) if hash_key in self.items else []
        self.all_items = lambda: sorted(partition, key=lambda item: (item.hash_key, item.range_key))
        try:
            return original(self, hash_key, *args, **kwargs)
        finally:
            del self.all_items

    with mock.patch.object(Table, "query", query):
        yield


# --- figures --------------------------------------------------------------------------------------------


def _figures(run: Run) -> list[Figure]:
    n = run.customers
    recipients = max(run.recipients, 1)
    hot_writes = run.counter.hottest(run.counter.writes)[2]
    calls = sum(run.line_calls.values())
    exactly_once = sum(1 for count in run.messaged.values() if count == 1)
    figures = [
        Figure(
            f"broadcast N={n}: AWS requests per recipient, all stages",
            run.function_requests() / recipients,
            aim=("<=", 3),
        )
    ]
    figures += [
        Figure(f"broadcast N={n}: AWS requests per recipient, {stage}", run.per_recipient(stage), digits=3)
        for stage in STAGES
    ]
    figures += [
        Figure(
            f"broadcast N={n}: LINE calls per recipient", calls / recipients, aim=("<=", 1 / 400), digits=4
        ),
        Figure(
            f"broadcast N={n}: writes to the hottest item per 1,000 recipients",
            hot_writes * 1000 / recipients,
            aim=("<=", 5),
            digits=1,
        ),
        Figure(
            f"broadcast N={n}: customers not messaged exactly once",
            n - exactly_once,
            aim=("<=", 0),
            digits=0,
        ),
    ]
    return figures


def _spelled(counts: Counter[str]) -> str:
    return ", ".join(f"{op} {n}" for op, n in counts.most_common()) or "none"


def _notes(run: Run) -> list[str]:
    n = run.customers
    c = run.counter
    table, key, hot = c.hottest(c.writes)
    p_table, p_key, p_hot = c.hottest(c.writes, partition=True)
    r_table, r_key, r_hot = c.hottest(c.reads)
    notes = [
        f"broadcast N={n}: {run.recipients} recipients messaged, {run.segments} segments, handler "
        f"invocations {dict(run.invocations)}, {run.retried} records made to wait; LINE calls accepted "
        f"{dict(run.line_calls) or 'none'}, refused {run.line_failures}; wall time on moto (not a "
        f"figure): seed {run.seconds.get('seed', 0):.0f} s, "
        + ", ".join(f"{s} {run.seconds.get(s, 0):.0f} s" for s in STAGES),
    ]
    for stage in (*STAGES, POLLER):
        notes.append(
            f"broadcast N={n}, {stage}: {c.total(stage)} requests: {_spelled(c.by_operation(stage))}"
        )
    notes.append(
        f"broadcast N={n}: hottest item written {hot} times ({hot * 1000 / max(run.recipients, 1):.1f} per "
        f"1,000 recipients; {c.transactional[(table, key)]} in transactions): {table} {_safe(key)}; hottest "
        f"partition key written {p_hot} times: {p_table} {_safe(p_key)}; hottest item read {r_hot} times: "
        f"{r_table} {_safe(r_key)}"
    )
    if run.report_counts is not None:
        notes.append(f"broadcast N={n}: report counts read back: {run.report_counts}")
    return notes


def _safe(key: str) -> str:
    """An item key for the notes: bench customers' ids are made up, LINE user ids are cut."""
    return "|".join(part if not part.startswith("U") or len(part) != 33 else "U…" for part in key.split("|"))


# --- the 1M projection ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Projection:
    figures: list[Figure]
    notes: list[str]


def project(runs: list[Run]) -> Projection:
    """Wall time and cost of a broadcast to PROJECTED customers, from the largest run's counts per
    recipient and the limits above. Stages run as a pipeline (send_line works while the broadcast
    workers enqueue), so the wall time is the start delay plus the slowest bound:

    - broadcast workers: the broadcast stage's requests, one after another in each invocation; as
      many invocations at once as segments / the function's SQS BatchSize (an invocation works through
      its batch's segments one after another); segments fixed if both runs had the same number, else
      grown in proportion to the audience up to the starter's maximum, within Lambda's concurrency;
    - send_line: its requests and LINE calls over the concurrency the workers leave;
    - LINE: the calls of each endpoint at its rate limit;
    - DynamoDB: the hottest partition's write units at 1,000 a second and read units at 3,000; a
      partition's count is scaled to 1M only if it grew with the audience between the two runs (a
      report counter does; one dispatch's records do not)."""
    large = runs[-1]
    scale = PROJECTED / max(large.recipients, 1)
    c = large.counter
    if large.segment_customers:
        segments = min(large.max_segments, max(1, math.ceil(PROJECTED / large.segment_customers)))
        sizing = (
            f"segments sized to the table, one per {large.segment_customers} items ({large.segments} at "
            f"N={large.customers}; {segments} at 1M, at most {large.max_segments})"
        )
    elif len(runs) > 1 and runs[0].segments != large.segments and runs[0].customers != large.customers:
        per_customer = large.segments / large.customers
        segments = min(large.max_segments, max(1, math.ceil(per_customer * PROJECTED)))
        sizing = (
            f"segments grow with the audience ({large.segments} at N={large.customers}; "
            f"{segments} at 1M, at most {large.max_segments})"
        )
    else:
        segments = max(large.segments, 1)
        sizing = f"segments fixed at {segments}"
    workers = min(LAMBDA_CONCURRENCY // 2, math.ceil(segments / max(large.broadcast_batch, 1)))
    sizing += f", {large.broadcast_batch} segment messages an invocation"
    senders = max(LAMBDA_CONCURRENCY - workers, 1)

    broadcast_requests = c.total("broadcast") * scale
    send_requests = c.total("send_line") * scale
    line_calls = {endpoint: n * scale for endpoint, n in large.line_calls.items()}
    all_line_calls = sum(line_calls.values())
    hot_writes = _projected_hottest(runs, _partition_units(runs, "writes"))
    hot_reads = _projected_hottest(runs, _partition_units(runs, "reads"))
    bounds = {
        "broadcast workers": broadcast_requests * REQUEST_MS / 1000 / workers,
        "send_line": (send_requests * REQUEST_MS + all_line_calls * LINE_CALL_MS) / 1000 / senders,
        "LINE rate limits": sum(n / LINE_RATE.get(endpoint, 2000) for endpoint, n in line_calls.items()),
        "hottest partition, writes": hot_writes[1] / PARTITION_WCU,
        "hottest partition, reads": hot_reads[1] / PARTITION_RCU,
    }
    slowest = max(bounds, key=lambda k: bounds[k])
    wall = TICK_DELAY_S + bounds[slowest]

    write_units = (sum(c.writes.values()) + sum(c.transactional.values()) + sum(c.checks.values())) * scale
    # Reads by key at 1 unit each; a Query at 1 unit; the Scan of the audience at 1 KB a profile read
    # eventually consistently (1/8 unit a profile).
    queries = c.total(None, "dynamodb") - _key_requests(c)
    read_units = (sum(c.reads.values()) + queries) * scale + PROJECTED / 8
    sqs_requests = c.total(None, "sqs") * scale
    function_seconds = (
        c.total("tick") + c.total("broadcast") + c.total("send_line")
    ) * REQUEST_MS / 1000 * scale + all_line_calls * LINE_CALL_MS / 1000
    invocations = sum(large.invocations.values()) * scale
    cost = {
        "DynamoDB": write_units / 1e6 * DYNAMODB_WRU_USD + read_units / 1e6 * DYNAMODB_RRU_USD,
        "SQS": sqs_requests / 1e6 * SQS_REQUEST_USD,
        "Lambda": function_seconds * 0.5 * LAMBDA_GB_SECOND_USD + invocations / 1e6 * LAMBDA_INVOKE_USD,
    }
    figures = [
        Figure(
            f"broadcast 1M (projected): wall time ({slowest})",
            wall / 60,
            unit="min",
            aim=("<=", 10),
            digits=1,
        ),
        Figure(
            "broadcast 1M (projected): AWS requests", large.function_requests() * scale / 1e6, "M", digits=2
        ),
        Figure("broadcast 1M (projected): LINE calls", all_line_calls, digits=0),
        Figure("broadcast 1M (projected): AWS cost per run", sum(cost.values()), unit="USD", digits=2),
    ]
    notes = [
        f"1M projection from the N={large.customers} run's counts scaled by {scale:.1f}: wall = start delay "
        f"{TICK_DELAY_S:.0f} s (the tick after `at`) + the slowest of: "
        + "; ".join(f"{name} {seconds:.0f} s" for name, seconds in bounds.items())
        + ". Stages overlap (send_line works while the workers enqueue), so the slowest bound sets the pace; "
        f"hottest partition at 1M: writes {_safe(hot_writes[0])} ({hot_writes[1]:.0f} units), reads "
        f"{_safe(hot_reads[0])} ({hot_reads[1]:.0f} units)",
        f"1M projection assumptions: {sizing}, so {workers} broadcast workers and {senders} send_line "
        f"instances (Lambda's default {LAMBDA_CONCURRENCY} concurrent executions a region, shared); each "
        f"worker makes its requests one after another at {REQUEST_MS:g} ms each (DynamoDB and SQS in "
        f"region); a LINE call takes {LINE_CALL_MS:g} ms; LINE allows multicast {LINE_RATE['multicast']}/s "
        f"and push {LINE_RATE['push']}/s per channel; one partition serves {PARTITION_WCU} write units/s "
        f"and {PARTITION_RCU} read units/s, an item write is 1 unit (2 in a transaction), a read 1 unit; "
        "SQS standard queues have no practical throughput limit",
        f"1M projection cost: DynamoDB ${cost['DynamoDB']:.2f} ({write_units / 1e6:.2f}M write units at "
        f"${DYNAMODB_WRU_USD}/M, {read_units / 1e6:.2f}M read units at ${DYNAMODB_RRU_USD}/M, on demand), "
        f"SQS ${cost['SQS']:.2f} ({sqs_requests / 1e6:.2f}M requests at ${SQS_REQUEST_USD}/M, pollers "
        "included), "
        f"Lambda ${cost['Lambda']:.2f} ({function_seconds / 3600:.1f} h at 512 MB, "
        f"${LAMBDA_GB_SECOND_USD}/GB-s, {invocations:.0f} invocations); LINE's message fees (by plan) not "
        "included",
    ]
    return Projection(figures, notes)


def _partition_units(runs: list[Run], kind: str) -> list[Counter[str]]:
    """Per run, the units each partition key took: writes (a transactional write counts twice) or
    reads, keyed `table pk`."""
    per_run: list[Counter[str]] = []
    for run in runs:
        c = run.counter
        units: Counter[str] = Counter()
        for (table, key), n in getattr(c, kind).items():
            extra = c.transactional[(table, key)] if kind == "writes" else 0
            units[f"{table} {key.split('|', 1)[0]}"] += n + extra
        per_run.append(units)
    return per_run


def _projected_hottest(runs: list[Run], units: list[Counter[str]]) -> tuple[str, float]:
    """The partition with the most units at 1M: its units in the largest run, scaled to 1M if it grew
    with the audience between the smallest and the largest run (at least half as fast), else as is
    (one run: every partition scaled, the cautious reading)."""
    large, small = runs[-1], runs[0]
    scale = PROJECTED / max(large.recipients, 1)
    growth = large.recipients / max(small.recipients, 1)
    best = ("", 0.0)
    for key, n in units[-1].items():
        before = units[0].get(key, 0)
        grows = len(runs) == 1 or (before > 0 and n / before >= 0.5 * growth)
        projected = n * scale if grows else float(n)
        if projected > best[1]:
            best = (key, projected)
    return best


def _key_requests(c: MotoRequests) -> int:
    """DynamoDB requests whose reads are counted per key (so not counted again as one unit each)."""
    return sum(
        n
        for (_, service, operation), n in c.requests.items()
        if service == "dynamodb" and operation in ("GetItem", "BatchGetItem", "TransactGetItems")
    ) + sum(
        n
        for (_, service, operation), n in c.requests.items()
        if service == "dynamodb"
        and operation in ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
    )


if __name__ == "__main__":
    import sys

    from bench.report import table

    chosen = tuple(int(s) for s in sys.argv[1:]) or SIZES
    measured = measure(chosen)
    print(table(measured.figures))
    print("\n".join(f"- {note}" for note in measured.notes))
    print(json.dumps({"sizes": chosen}))

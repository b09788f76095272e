"""Scenario-engine figures (issue 4): due-index efficiency of one tick, engine CPU per advance, and
real-time latency from /v1/track to the LINE API on the local stack.

(a) Due index: JourneysTable (from template.yaml) in moto holds 20,000 active cart-abandonment
enrolments, 200 of them due (CEMS_BENCH_ACTIVE overrides the 20,000; 1 % are due); one real
`ScenarioRunner.tick(now)` runs through boto3, and botocore event hooks count the items each DynamoDB
call read (Query: ScannedCount; GetItem: 1 per item returned; BatchGetItem: the items returned) and
the Query calls on the due index.

How the table is filled, and why: each enrolment item is the one `EnrolmentStore._item` builds (what
`EnrolmentStore.create` puts, due shard included), each due customer's profile the one
`CustomerStore.profile_item` builds, and each is stored with moto's own `DynamoDBBackend.put_item` in
process, the call moto's BatchWriteItem handler makes per item (same Item, same index attributes, same
stream record), rather than sent through boto3. Skipping botocore's validation and serialisation and
moto's parsing of the request, with the cyclic garbage collector paused while the 20,000 items are
made, takes the load from ~17 s (BatchWriteItem of 25) to ~6 s here. Nothing of the load is counted:
the hooks are installed on the boto3 client after it, and the tick reads the tables only through
that client. The load checks itself: JourneysTable must grow by the number of enrolments, and the
first item of each kind must read back through boto3 as written.

During the tick, moto's TransactWriteItems is replaced by the one `cems local` runs
(`cems.local.moto_server`). moto's own deep-copies every table a transaction touches, to be able to
roll back; CapStore counts each send in a transaction on JourneysTable, so the tick copied the whole
table once per due send, and its cost grew with due x active (at 2,000 / 20 the tick took ~29 s of a
32 s run; at 20,000 / 200 it would copy 100 times as much). That, not the load, is why a 20,000 run
never finished. The replacement checks every condition first, then writes with an undo log of just
the touched items; the tick's calls, and what the hooks count, are the same.

(b) Engine CPU: `time.process_time` around the pure engine's `advance()` over many due enrolments,
beside a bare `json.loads` of the scenario document (the reference that makes the figure a ratio).

(c) Real-time latency: `cems local` in a child process; a scenario triggered by `Bench Ping` that sends
one LINE text at once; 50 events through /v1/track, each timed from the 200 answer to the message
showing in the fake LINE API.
"""

from __future__ import annotations

import base64
import gc
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, ROOT, create_tables

if TYPE_CHECKING:
    from cems.models import Profile
    from cems.scenario import engine

EXAMPLE = ROOT / "examples" / "scenarios" / "cart_abandonment.json"
SCENARIO_ID = "cart-abandonment"
JOURNEYS = "JourneysTable"
ACTIVE = int(os.environ.get("CEMS_BENCH_ACTIVE", "20000"))
DUE = ACTIVE // 100
SHARDS = 16
# 12:00 in Tokyo on a Friday: inside the scenario's 09:00-21:00 send window.
T0 = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)
ADVANCES = 4000
LOADS = 4000
EVENTS = 50
PING = "Bench Ping"
PING_SCENARIO: dict[str, Any] = {
    "id": "bench-ping",
    "name": "bench: LINE reply to Bench Ping",
    "version": 1,
    "priority": 10,
    "trigger": {"type": "event", "event": PING},
    "entry": {"reentry": "never"},
    # Open all day: the figure is the pipeline's latency, not the default quiet hours (21:00-09:00 JST).
    "send_window": {"start": "00:00", "end": "23:59"},
    "steps": [
        {"id": "pong", "type": "send", "channel": "line", "line": [{"type": "text", "text": "pong"}]},
        {"id": "done", "type": "end"},
    ],
}


def measure() -> Measured:
    parts = [_due_index(), _engine_cpu(), _latency()]
    return Measured([f for p in parts for f in p.figures], [n for p in parts for n in p.notes])


# --- shared -------------------------------------------------------------------------------------------


def _profile(customer_id: str, at: datetime) -> Profile:
    from cems.models import ChannelState, Profile

    return Profile(
        customer_id=customer_id,
        line_user_id="U" + customer_id.encode().hex().ljust(32, "0")[:32],
        channels={"line": ChannelState(reachable=True, consent=True, updated_at=at)},
        first_seen_at=at - timedelta(days=30),
        updated_at=at,
    )


def _waiting_enrolment(scenario: Any, customer_id: str) -> engine.Enrolment:
    """A cart-abandonment enrolment as the engine leaves it after `Product Added` at T0: waiting an
    hour for an order (due at T0 + 1 h)."""
    from cems.models import MessageType, StoredEvent
    from cems.scenario import engine

    profile = _profile(customer_id, T0)
    event = StoredEvent(
        customer_id=customer_id,
        site_id="shop",
        type=MessageType.TRACK,
        message_id=f"msg-{customer_id}",
        event="Product Added",
        timestamp=T0,
        received_at=T0,
        properties={"name": "玉露 100g"},
    )
    decision = engine.enrol(scenario, 1, profile, event, None, T0, events=[event])
    assert decision.enrolment is not None, decision.reason
    started = engine.advance(scenario, decision.enrolment, profile, [event], T0, engine.CapView())
    assert started.enrolment.due_at == T0 + timedelta(hours=1), started.enrolment
    return started.enrolment


def _treated(prefix: str) -> str:
    from cems.scenario.assignment import in_holdout

    return next(f"{prefix}{n}" for n in range(100) if not in_holdout(SCENARIO_ID, f"{prefix}{n}", 5))


# --- (a) due-index efficiency -------------------------------------------------------------------------


class _ReadCounter:
    """Items read and calls made, per (operation, table, index), from botocore's event hooks."""

    def __init__(self) -> None:
        self.items: Counter[tuple[str, str, str]] = Counter()
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self._params: dict[str, Any] = {}

    def install(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.dynamodb.*", self._remember)
        client.meta.events.register("after-call.dynamodb.*", self._count)

    def reset(self) -> None:
        self.items.clear()
        self.calls.clear()

    def _remember(self, params: dict[str, Any], **_: Any) -> None:
        self._params = params

    def _count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        operation = model.name
        table = str(self._params.get("TableName", ""))
        if operation == "Query":
            key = (operation, table, str(self._params.get("IndexName", "")))
            self.items[key] += int(parsed.get("ScannedCount", parsed.get("Count", 0)))
        elif operation == "GetItem":
            pk = str(self._params.get("Key", {}).get("pk", {}).get("S", ""))
            key = (operation, table, pk.split("#", 1)[0] + "#" if "#" in pk else pk)
            self.items[key] += 1 if "Item" in parsed else 0
        elif operation == "BatchGetItem":
            # One call reads several tables: its items are counted under the call's own key, so the
            # per-call line shows them (not under each table, where no call is counted).
            key = (operation, "", "")
            self.items[key] += sum(len(items) for items in parsed.get("Responses", {}).values())
        else:
            return
        self.calls[key] += 1


def _due_index() -> Measured:
    import boto3
    from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
    from cems.adapters.sqs_dispatch import QueueDispatchSink
    from cems.models import Channel
    from cems.scenario import engine
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource
    from cems.scenario.runner import ScenarioRunner
    from cems.settings import Settings
    from cems.wiring import customer_stores
    from moto import mock_aws

    begun = time.perf_counter()
    saved = {k: os.environ.get(k) for k in FAKE_AWS_ENV}
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        with mock_aws():
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            create_tables(dynamodb)
            sqs = boto3.client("sqs", region_name=REGION)
            queue_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
            document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
            scenario = Scenario.model_validate(document)
            scenarios = ScenarioStore(JOURNEYS, dynamodb)
            scenarios.put_version(scenario, document, ScenarioSource("scenarios/cart_abandonment.json", "e"))
            enrolments = EnrolmentStore(JOURNEYS, dynamodb, SHARDS, model=engine.Enrolment)
            stores = customer_stores(dynamodb, Settings.from_environ())
            customers = stores.customers
            runner = ScenarioRunner(
                scenarios,
                enrolments,
                CapStore(JOURNEYS, dynamodb),
                customers,
                stores.events,
                QueueDispatchSink(sqs, {Channel.LINE: queue_url}),
            )
            template = _waiting_enrolment(scenario, _treated("cus_bench_"))
            later = template.due_at + timedelta(days=1) if template.due_at else T0
            assert template.awaiting is not None
            waiting_later = template.awaiting.model_copy(update={"timeout_at": later})
            started = time.perf_counter()
            items: list[tuple[str, dict[str, Any]]] = []
            with _collector_paused():
                for n in range(ACTIVE):
                    customer_id = f"cus_{n:05d}"
                    due = n % (ACTIVE // DUE) == 0
                    update: dict[str, Any] = {"customer_id": customer_id, "revision": 1, "updated_at": T0}
                    if not due:
                        update |= {"due_at": later, "awaiting": waiting_later}
                    # The item EnrolmentStore.create would put (same function, same due shard).
                    items.append((JOURNEYS, enrolments._item(template.model_copy(update=update))))
                    if due:
                        items.append(("CustomersTable", customers.profile_item(_profile(customer_id, T0))))
                _load(dynamodb, items)
            setup = time.perf_counter() - started

            counter = _ReadCounter()
            counter.install(dynamodb)
            started = time.perf_counter()
            with _undo_log_transactions():
                report = runner.tick(T0 + timedelta(hours=1, minutes=1))
            ticked = time.perf_counter() - started
            sent = _drain_count(sqs, queue_url)
    finally:
        gc.unfreeze()
        whole = time.perf_counter() - begun
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    index_key = ("Query", JOURNEYS, "due-index")
    index_items = counter.items[index_key]
    index_queries = counter.calls[index_key]
    enrolment_gets = counter.items[("GetItem", JOURNEYS, "ENR#")]
    all_items = sum(counter.items.values())
    due_count = max(report.due, 1)
    figures = [
        Figure(
            "due index: index items read per tick / due enrolments", index_items / due_count, aim=("<=", 1.1)
        ),
        Figure(
            "due index: enrolment items read (index + consistent get) / due",
            (index_items + enrolment_gets) / due_count,
        ),
        Figure("due index: all items read by the tick, every table / due", all_items / due_count),
        Figure("due index: due-index queries per tick", index_queries, aim=("<=", SHARDS + 1), digits=0),
    ]
    breakdown = ", ".join(
        f"{op} {table}{'/' + part if part else ''}: {counter.calls[k]} calls, {counter.items[k]} items"
        for k in sorted(counter.calls)
        for op, table, part in [k]
    )
    notes = [
        f"due index: {ACTIVE} active cart-abandonment enrolments in moto, {DUE} due, {SHARDS} shards; one "
        f"ScenarioRunner.tick advanced {report.changed} and dispatched {report.dispatched} "
        f"({sent} on LineSendQueue); load ({len(items)} items of EnrolmentStore._item and "
        f"CustomerStore.profile_item, put with moto's backend in process) {setup:.1f} s, tick "
        f"{ticked:.1f} s, whole measurement {whole:.1f} s",
        f"due index reads by call: {breakdown}",
        "due index: the aim (<= 1.1 items per due, plus one query per shard) is the index read; the "
        "runner then re-reads each due enrolment with a consistent GetItem (the GSI is KEYS_ONLY and "
        "eventually consistent), so enrolment items are ~2 per due; 'all items' adds the profile, "
        "the scenario's ACTIVE pointer/version and cap counters",
    ]
    return Measured(figures, notes)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the load makes its millions of objects (each full
    collection would walk all of them again); afterwards they are frozen out of later collections, so
    the tick does not walk them either."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


def _load(client: Any, items: list[tuple[str, dict[str, Any]]]) -> None:
    """Each item stored by moto's own `DynamoDBBackend.put_item`, the call its BatchWriteItem handler
    makes per item, without the boto3 request and moto's parsing of it (setup only; not counted). Then
    the first item of each kind (due enrolment, waiting enrolment, profile) must read back through
    boto3 as written, and JourneysTable must have grown by the number of enrolments."""
    import boto3
    from moto.dynamodb.models import dynamodb_backends

    account = boto3.client("sts", region_name=REGION).get_caller_identity()["Account"]
    backend = dynamodb_backends[account][REGION]
    before = client.describe_table(TableName=JOURNEYS)["Table"]["ItemCount"]
    for table, item in items:
        backend.put_item(table, item)
    after = client.describe_table(TableName=JOURNEYS)["Table"]["ItemCount"]
    enrolments = sum(1 for table, _ in items if table == JOURNEYS)
    if after - before != enrolments:
        raise RuntimeError(f"JourneysTable grew by {after - before} items, not {enrolments}")
    firsts: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
    for table, item in items:
        firsts.setdefault((table, str(item.get("due_at"))), (table, item))
    for table, item in firsts.values():
        key = {"pk": item["pk"], "sk": item["sk"]}
        stored = client.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        if stored != item:
            raise RuntimeError(f"{table} {key} reads back as {stored}, not as written: {item}")


@contextmanager
def _undo_log_transactions() -> Iterator[None]:
    """moto's TransactWriteItems as the local stack runs it (cems.local.moto_server): conditions
    checked first, then an undo log of the touched items instead of a deep copy of every touched
    table per transaction (which made the tick's cost grow with the table: one copy per send)."""
    from unittest import mock

    from cems.local import moto_server
    from moto.dynamodb.models import DynamoDBBackend

    with mock.patch.object(DynamoDBBackend, "transact_write_items", moto_server._transact_write_items):
        yield


def _drain_count(sqs: Any, queue_url: str) -> int:
    count = 0
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            return count
        count += len(messages)
        for message in messages:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


# --- (b) engine CPU per advance -----------------------------------------------------------------------


def _engine_cpu() -> Measured:
    from cems.models import MessageType, StoredEvent
    from cems.scenario import engine
    from cems.scenario.model import Scenario

    text = EXAMPLE.read_text(encoding="utf-8")
    scenario = Scenario.model_validate(json.loads(text))
    template = _waiting_enrolment(scenario, _treated("cus_cpu_"))
    now = T0 + timedelta(hours=1, minutes=1)
    work = []
    for n in range(ADVANCES):
        customer_id = f"cus_cpu_{n}"
        event = StoredEvent(
            customer_id=customer_id,
            site_id="shop",
            type=MessageType.TRACK,
            message_id=f"m-{n}",
            event="Product Added",
            timestamp=T0,
            received_at=T0,
            properties={"name": "玉露 100g"},
        )
        enrolment = template.model_copy(update={"customer_id": customer_id})
        work.append((enrolment, _profile(customer_id, T0), [event]))
    caps = engine.CapView()
    rounds: list[tuple[float, float]] = []
    sent = 0
    for _ in range(3):
        started = time.process_time()
        for enrolment, profile, events in work:
            result = engine.advance(scenario, enrolment, profile, events, now, caps)
            sent += len(result.dispatches)
        advance = (time.process_time() - started) / len(work)
        started = time.process_time()
        for _ in range(LOADS):
            json.loads(text)
        load = (time.process_time() - started) / LOADS
        rounds.append((advance, load))
    advance = statistics.median(a for a, _ in rounds)
    ratio = statistics.median(a / b for a, b in rounds)
    figures = [
        Figure("engine: CPU per advance (cart abandonment reminder)", advance * 1e6, unit="µs", digits=0),
        Figure("engine: CPU per advance / json.loads of the scenario", ratio, digits=1),
    ]
    notes = [
        f"engine: {ADVANCES} due cart-abandonment enrolments advanced 3 times (each sends the LINE reminder: "
        f"{sent} dispatches), beside {LOADS} json.loads of the {len(text.encode())}-byte document; "
        "medians of the 3 rounds; json.loads per call "
        + " / ".join(f"{b * 1e6:.0f}" for _, b in rounds)
        + " µs",
    ]
    return Measured(figures, notes)


# --- (c) real-time latency on the local stack --------------------------------------------------------


class _Stack:
    def __init__(self, http_url: str, write_key: str) -> None:
        self.http_url = http_url
        self.auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()

    def post(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if path.startswith("/v1/"):
            headers["Authorization"] = self.auth
        request = urllib.request.Request(
            f"{self.http_url}{path}", data=json.dumps(document).encode(), method="POST", headers=headers
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            body: dict[str, Any] = json.loads(answer.read() or b"{}")
            return body

    def run(self, path: str, document: dict[str, Any]) -> dict[str, Any]:
        """`/_local/drain` or `/_local/clock`: the stack answers at once; wait until the run ended."""
        from cems.local.runs import wait_for_run

        return wait_for_run(self.http_url, self.post(path, document))

    def messages(self, to: str) -> list[dict[str, Any]]:
        url = f"{self.http_url}/_local/line/messages?to={to}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            messages: list[dict[str, Any]] = json.loads(answer.read())["messages"]
            return messages


def _latency(events: int = EVENTS) -> Measured:
    import boto3
    from cems.adapters.dynamodb.customers import CustomerStore
    from cems.cli import main as cems_main
    from cems.local.running import running_local_stack
    from cems.local.stack import DEFAULT_SECRET_KEY
    from cems.models import Channel, ChannelState

    latencies: list[float] = []
    missing = 0
    with running_local_stack(http_port=0, aws_port=0, cwd=ROOT) as running:
        # The customers are registered as the shop's server would: with the secret key (cems.trust).
        stack = _Stack(running.http_url, DEFAULT_SECRET_KEY)
        dynamodb = boto3.client(
            "dynamodb",
            endpoint_url=running.aws_url,
            region_name=REGION,
            aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        )
        customers = CustomerStore("CustomersTable", dynamodb)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "bench_ping.json"
            path.write_text(json.dumps(PING_SCENARIO), encoding="utf-8")
            saved = os.environ.get("CEMS_AWS_PORT")
            os.environ["CEMS_AWS_PORT"] = running.aws_url.rsplit(":", 1)[1]
            try:
                if cems_main(["scenario", "upload", str(path)]) != 0:
                    raise RuntimeError("cems scenario upload failed")
            finally:
                if saved is None:
                    os.environ.pop("CEMS_AWS_PORT", None)
                else:
                    os.environ["CEMS_AWS_PORT"] = saved
        run = uuid.uuid4().hex[:8]
        users: list[tuple[str, str]] = []
        for n in range(events):
            stack.post("/v1/identify", {"userId": f"ping-{run}-{n}"})
        stack.run("/_local/drain", {})
        for n in range(events):
            user_id = f"ping-{run}-{n}"
            customer_id = customers.customer_for_user_id(user_id)
            profile = customers.profile(customer_id) if customer_id else None
            if profile is None:
                raise RuntimeError(f"no profile for {user_id}")
            line_user_id = "U" + uuid.uuid4().hex
            linked = profile.model_copy(
                update={
                    "line_user_id": line_user_id,
                    "channels": {
                        **profile.channels,
                        Channel.LINE: ChannelState(
                            reachable=True, consent=True, updated_at=profile.updated_at
                        ),
                    },
                }
            )
            dynamodb.put_item(TableName="CustomersTable", Item=customers.profile_item(linked))
            users.append((user_id, line_user_id))
        # trigger caches the active scenarios for 60 s of CEMS time.
        stack.run("/_local/clock", {"advance_seconds": 61})
        for user_id, line_user_id in users:
            stack.post("/v1/track", {"userId": user_id, "event": PING, "properties": {}})
            answered = time.perf_counter()
            deadline = answered + 10
            while time.perf_counter() < deadline:
                if stack.messages(line_user_id):
                    latencies.append(time.perf_counter() - answered)
                    break
                time.sleep(0.01)
            else:
                missing += 1
    if not latencies:
        raise RuntimeError("no LINE message arrived")
    figures = [
        Figure(
            "real time: track answer -> LINE API call, median",
            statistics.median(latencies) * 1e3,
            "ms",
            digits=0,
        ),
        Figure("real time: track answer -> LINE API call, max", max(latencies) * 1e3, "ms", digits=0),
    ]
    notes = [
        f"real time: {events} `{PING}` events on the local stack, one after another, each timed from the "
        f"200 answer of /v1/track to the message showing in GET /_local/line/messages (polled every 10 ms); "
        f"{len(latencies)} arrived, {missing} did not within 10 s; bounded below by the EventsTable stream "
        "poller (0.25 s) and the LineSendQueue SQS poller (0.25 s) of `cems local`",
    ]
    return Measured(figures, notes)


if __name__ == "__main__":
    part = sys.argv[1] if len(sys.argv) > 1 else "all"
    chosen = {"due": _due_index, "cpu": _engine_cpu, "latency": _latency}
    for name, fn in chosen.items():
        if part in (name, "all"):
            print(fn())

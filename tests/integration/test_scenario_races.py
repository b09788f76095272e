"""Many ticks and trigger redeliveries racing over the same enrolments never double-advance.

moto in-process is not thread-safe, so these tests run moto as a server in a subprocess
(`cems.local.moto_server`, which serialises DynamoDB requests and makes transactions all-or-nothing,
as DynamoDB is). Every thread has its own ScenarioRunner over its own boto3 clients to that server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
from cems.adapters.sqs_dispatch import QueueDispatchSink
from cems.local.cfn import Template
from cems.local.resources import create_table
from cems.models import Channel, StoredEvent
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.model import ChannelCap, FrequencyCaps, Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import RunReport, ScenarioRunner
from cems.settings import Settings
from cems.wiring import customer_stores
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import TEMPLATE, template_tables
from .journeys import drain_queue, put_customer, put_track_event

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
TABLE = "JourneysTable"
REGION = "ap-northeast-1"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo: inside the send window
SCENARIO = "cart-abandonment"
LIMITS = FrequencyCaps({Channel.LINE: ChannelCap(per_day=5, per_week=5)})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "cems.local.moto_server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(url + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def world(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST")).close()
    clock.freeze(NOW)
    try:
        yield World(endpoint)
    finally:
        clock.reset()


class World:
    """The shared moto server: tables, queue, scenario, customers; fresh runners on fresh clients."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.dynamodb = self.client("dynamodb")
        template = Template.load(TEMPLATE)
        for name, props in template_tables().items():
            create_table(self.dynamodb, template, name, props)
        self.sqs = self.client("sqs")
        self.queue_url = self.sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
        self.stores = customer_stores(self.dynamodb, Settings.from_environ())
        self.enrolments = EnrolmentStore(TABLE, self.dynamodb, 4, model=engine.Enrolment)
        self.caps = CapStore(TABLE, self.dynamodb)
        document = json.loads((EXAMPLES / "cart_abandonment.json").read_text(encoding="utf-8"))
        ScenarioStore(TABLE, self.dynamodb).put_version(
            Scenario.model_validate(document), document, ScenarioSource("scenarios/x", "x")
        )
        self.count = 0

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint)  # type: ignore[call-overload]

    def runner(self) -> ScenarioRunner:
        """A runner of its own, as a separate Lambda would have: its own clients and caches."""
        dynamodb, sqs = self.client("dynamodb"), self.client("sqs")
        stores = customer_stores(dynamodb, Settings.from_environ())
        return ScenarioRunner(
            ScenarioStore(TABLE, dynamodb),
            EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment),
            CapStore(TABLE, dynamodb),
            stores.customers,
            stores.events,
            QueueDispatchSink(sqs, {Channel.LINE: self.queue_url}),
            LIMITS,
        )

    def customer(self, customer_id: str) -> str:
        return put_customer(self.stores.customers, customer_id, NOW)

    def event(self, customer_id: str, event_name: str, **properties: Any) -> StoredEvent:
        self.count += 1
        return put_track_event(self.stores.events, customer_id, event_name, f"msg-{self.count}", **properties)

    def sent(self) -> list[dict[str, Any]]:
        return drain_queue(self.sqs, self.queue_url)


def _treated(prefix: str, count: int) -> list[str]:
    """Customer ids outside the scenario's 5 % holdout (holdouts send nothing)."""
    ids = (f"{prefix}{n:03d}" for n in range(1000))
    return [c for c in ids if not in_holdout(SCENARIO, c, 5)][:count]


def _waiting(world: World, customers: list[str]) -> dict[str, StoredEvent]:
    """Each customer enrolled by a `Product Added` and waiting; then the clock moved past the wait."""
    added: dict[str, StoredEvent] = {}
    enrolling = world.runner()
    for customer in customers:
        world.customer(customer)
        added[customer] = world.event(customer, "Product Added", name="玉露 100g")
        assert enrolling.on_stored_event(added[customer]).enrolled == 1
    assert world.sent() == []
    clock.advance(3600 + 60)
    return added


def _race(jobs: list[Callable[[], RunReport]]) -> list[RunReport]:
    """Runs every job on its own thread, all released at once; re-raises any thread's error."""
    barrier = threading.Barrier(len(jobs))
    reports: list[RunReport | None] = [None] * len(jobs)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            reports[i] = jobs[i]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a racing thread hung"
    if errors:
        raise errors[0]
    return [r for r in reports if r is not None]


def _assert_advanced_once(
    world: World, customers: list[str], before: dict[str, engine.Enrolment], reports: list[RunReport]
) -> None:
    keys: dict[str, set[str]] = defaultdict(set)
    for dispatch in world.sent():
        assert len(dispatch["recipients"]) == 1
        keys[dispatch["recipients"][0]].add(dispatch["idempotency_key"])
    # Every customer got exactly one dispatch key (a lost race may enqueue the same key twice:
    # the sender sends a key once), and nobody else got anything.
    assert {c: sorted(k) for c, k in keys.items()} == {c: [f"{c}#{SCENARIO}#v1#remind#e1"] for c in customers}
    assert len(keys) == len(customers)
    # Exactly one winning advance per enrolment across all threads.
    assert sum(r.changed for r in reports) == len(customers)
    for customer in customers:
        done = world.enrolments.get(customer, SCENARIO)
        assert done is not None
        assert done.state is engine.EnrolmentState.COMPLETED
        assert before[customer].state is engine.EnrolmentState.WAITING_EVENT
        assert done.step_id == "done" and done.due_at is None and done.awaiting is None
        assert (done.entry, done.sends, done.step_sends) == (1, 1, {"remind": 1})
        assert done.trigger == before[customer].trigger
        assert done.revision == before[customer].revision + 1  # one write won; the rest were refused
        # The cap counted the one send (a loser's reservation was released).
        assert world.caps.counts(customer, "line", clock.now()) == (1, 1)


N = 10
THREADS = 6


def test_racing_ticks_and_redelivered_triggers_advance_each_enrolment_once(world: World) -> None:
    customers = _treated("cus_race_", N)
    added = _waiting(world, customers)
    before = {c: world.enrolments.get(c, SCENARIO) for c in customers}
    assert all(e is not None and e.due_at is not None for e in before.values())
    runners = [world.runner() for _ in range(THREADS)]

    def tick(runner: ScenarioRunner) -> Callable[[], RunReport]:
        return lambda: runner.tick()

    def tick_and_redeliver(runner: ScenarioRunner) -> Callable[[], RunReport]:
        def job() -> RunReport:
            report = RunReport()
            for customer in customers:  # the stream delivering every Product Added again
                report.add(runner.on_stored_event(added[customer]))
            report.add(runner.tick())
            return report

        return job

    jobs = [tick(r) if i % 2 == 0 else tick_and_redeliver(r) for i, r in enumerate(runners)]
    reports = _race(jobs)
    assert sum(r.enrolled for r in reports) == 0  # a redelivered trigger never re-enters
    _assert_advanced_once(world, customers, before, reports)  # type: ignore[arg-type]

    # Afterwards, every runner finds nothing left to do.
    assert sum(r.tick().dispatched for r in runners) == 0
    assert world.sent() == []


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    plan=st.lists(
        st.lists(st.sampled_from(["tick", "redeliver"]), min_size=1, max_size=3), min_size=2, max_size=4
    ),
    data=st.data(),
)
def test_any_interleaving_of_ticks_and_redeliveries_advances_each_once(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, plan: list[list[str]], data: st.DataObject
) -> None:
    urllib.request.urlopen(urllib.request.Request(endpoint + "/moto-api/reset", method="POST")).close()
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clock.freeze(NOW)
    try:
        world = World(endpoint)
        customers = _treated("cus_hyp_", 3)
        added = _waiting(world, customers)
        before = {c: world.enrolments.get(c, SCENARIO) for c in customers}
        orders = [data.draw(st.permutations(customers)) for _ in plan]

        def job(steps: list[str], order: list[str]) -> Callable[[], RunReport]:
            runner = world.runner()

            def run() -> RunReport:
                report = RunReport()
                for step in steps:
                    if step == "tick":
                        report.add(runner.tick())
                    else:
                        for customer in order:
                            report.add(runner.on_stored_event(added[customer]))
                return report

            return run

        jobs = [job(steps, order) for steps, order in zip(plan, orders, strict=True)]
        reports = _race(jobs)
        # A redelivered trigger also settles an overdue wait, so every plan advances everyone.
        _assert_advanced_once(world, customers, before, reports)  # type: ignore[arg-type]
    finally:
        clock.reset()

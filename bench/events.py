"""(g) Whole-system AWS requests per stored event: collect + trigger (issue 11).

Both functions run as their handlers wire them, in process, against moto: collect through the
Collector its app builds (as bench/aws_requests.py does), trigger by loading functions/trigger/app.py
(wiring.trigger: the runner with its counters, the double opt-in, the relevance rule) and calling its
lambda_handler with the stream records DynamoDB would emit for the stored events (NEW_IMAGE, as
tests/integration/test_trigger_tick_handlers.py builds them). The cart-abandonment scenario is active
throughout, so the page views are judged against a real scenario.

Requests are counted on moto's side: every request moto's in-process backend receives passes its
recorder (moto.moto_api.recorder._record_request), which is wrapped here to count them by target
(DynamoDB_20120810.GetItem, AmazonSQS.SendMessage, ...), whatever client sent them. Reading the stored
items back to build the stream records is not counted (Lambda's event source mapping reads the
stream, not the function).

Each case runs on a warm container (the first call, which reads the site, the scenario summaries and
versions, is made before counting and reported apart).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import boto3

from bench import payloads
from bench.aws_requests import fake_aws_env
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, create_tables

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "scenarios" / "cart_abandonment.json"
BATCH_SIZE = 100
BATCH_VISITORS = 10


class MotoRequests:
    """Counts every request moto's backend receives, by target, while `counting`."""

    def __init__(self) -> None:
        from moto.moto_api import recorder

        self.sent: Counter[str] = Counter()
        self.on = False
        original = recorder._record_request

        def record(request: Any, body: bytes | None = None) -> None:
            if self.on:
                headers = request.headers
                target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or request.host
                self.sent[str(target).rsplit(".", 1)[-1]] += 1
            original(request, body)

        recorder._record_request = record  # type: ignore[method-assign]
        self._restore: Callable[[], None] = lambda: setattr(recorder, "_record_request", original)

    def during(self, action: Callable[[], object]) -> Counter[str]:
        before = self.sent.copy()
        self.on = True
        try:
            action()
        finally:
            self.on = False
        return self.sent - before

    def close(self) -> None:
        self._restore()


def _load_trigger() -> ModuleType:
    name = "cems_trigger_app_bench"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "trigger" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Context:
    function_name = "cems-bench-TriggerFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-northeast-1:123456789012:function:cems-bench-TriggerFunction"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000


def _records(dynamodb: DynamoDBClient, message_ids: set[str]) -> list[dict[str, Any]]:
    """The INSERT records the Events table's stream carries for these stored events."""
    items = [
        item
        for page in dynamodb.get_paginator("scan").paginate(TableName="EventsTable")
        for item in page["Items"]
        if item["message_id"]["S"] in message_ids
    ]
    return [
        {
            "eventID": f"id-{n}",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "awsRegion": REGION,
            "eventSourceARN": f"arn:aws:dynamodb:{REGION}:123456789012:table/EventsTable/stream/2026",
            "dynamodb": {
                "Keys": {"customer_id": item["customer_id"], "sk": item["sk"]},
                "NewImage": item,
                "SequenceNumber": f"{n:021d}",
                "SizeBytes": 100,
                "StreamViewType": "NEW_IMAGE",
            },
        }
        for n, item in enumerate(items)
    ]


def _page(anonymous_id: str) -> dict[str, Any]:
    """A page call as analytics.js sends it."""
    document = payloads.track(anonymous_id)
    return {
        "type": "page",
        "anonymousId": anonymous_id,
        "messageId": payloads.message_id(),
        "name": "商品ページ",
        "properties": {"path": "/products/sen-fk-100", "title": "深蒸し煎茶"},
        "context": document["context"],
        "timestamp": document["timestamp"],
        "sentAt": document["sentAt"],
    }


def _spelled(sent: Counter[str]) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(sent.items())) or "none"


def measure() -> Measured:
    from cems.engagement.config import TRACKING_SECRET
    from cems.line.config import LINE_CHANNEL_ACCESS_TOKEN, LINE_CHANNEL_SECRET
    from moto import mock_aws

    env = {
        **FAKE_AWS_ENV,
        # The secrets' public local defaults (as the integration tests set them): nothing is sent.
        **{
            s.env_name: s.local_default
            for s in (LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN, TRACKING_SECRET)
        },
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "JOURNEYS_TABLE": "JourneysTable",
    }
    with fake_aws_env(env), mock_aws():
        from cems.adapters import aws
        from cems.adapters.dynamodb.journeys import ScenarioStore
        from cems.adapters.dynamodb.sites import SiteStore
        from cems.collect import Collector
        from cems.ingest import Ingestor
        from cems.scenario.model import Scenario
        from cems.scenario.records import ScenarioSource
        from cems.settings import Settings
        from cems.sites import SiteDirectory
        from cems.wiring import customer_stores

        aws.dynamodb.cache_clear()
        dynamodb: DynamoDBClient = boto3.client("dynamodb", region_name=REGION)
        create_tables(dynamodb)
        sqs = boto3.client("sqs", region_name=REGION)
        for queue, variable in (
            ("LineSendQueue", "LINE_SEND_QUEUE_URL"),
            ("EmailSendQueue", "EMAIL_SEND_QUEUE_URL"),
        ):
            os.environ[variable] = sqs.create_queue(QueueName=queue)["QueueUrl"]
        document = json.loads(EXAMPLE.read_text(encoding="utf-8"))
        ScenarioStore("JourneysTable", dynamodb).put_version(
            Scenario.model_validate(document),
            document,
            ScenarioSource("scenarios/cart_abandonment.json", "e"),
        )
        settings = Settings.from_environ()
        write_key = SiteStore(settings.tables.sites, dynamodb).add("bench", [payloads.SHOP]).site.write_key
        # Wired as functions/collect/app.py wires it.
        stores = customer_stores(aws.dynamodb(), settings)
        collector = Collector(
            SiteDirectory(
                SiteStore(settings.tables.sites, aws.dynamodb()), settings.retention.site_cache_seconds
            ),
            Ingestor(stores.ingest),
        )
        quiet = io.StringIO()  # the handlers' JSON logs and metrics
        with contextlib.redirect_stdout(quiet):
            trigger = _load_trigger()
        counter = MotoRequests()
        auth = payloads.basic_auth(write_key)

        def collect(kind: str, body: dict[str, Any]) -> Counter[str]:
            return counter.during(lambda: collector.collect(kind, payloads.body(body), auth, payloads.SHOP))

        def run_trigger(message_ids: set[str]) -> Counter[str]:
            records = _records(dynamodb, message_ids)
            assert len(records) == len(message_ids), "every event stored"
            with contextlib.redirect_stdout(quiet):
                return counter.during(lambda: trigger.lambda_handler({"Records": records}, _Context()))

        def case(kind: str, messages: list[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
            body = messages[0] if kind != "batch" else {"batch": messages, "sentAt": messages[0]["sentAt"]}
            collected = collect(kind, body)
            return collected, run_trigger({m["messageId"] for m in messages})

        try:
            warm_visitor = payloads.new_anonymous_id()
            cold = case("page", [_page(warm_visitor)])
            visitor = payloads.new_anonymous_id()
            case("page", [_page(visitor)])  # the visitor is known from now on
            single_page = case("page", [_page(visitor)])
            visitors = [payloads.new_anonymous_id() for _ in range(BATCH_VISITORS)]
            for v in visitors:
                case("page", [_page(v)])
            batch_page = case("batch", [_page(visitors[n % BATCH_VISITORS]) for n in range(BATCH_SIZE)])
            added = payloads.track(visitor, event="Product Added")
            single_added = case("track", [added])
            batch_added = case(
                "batch",
                [payloads.track(visitors[n % BATCH_VISITORS], n, "Product Added") for n in range(BATCH_SIZE)],
            )
        finally:
            counter.close()
            sys.modules.pop("cems_trigger_app_bench", None)
            aws.dynamodb.cache_clear()

    figures: list[Figure] = []
    notes = [
        f"first page view of fresh containers: collect {_spelled(cold[0])}; trigger {_spelled(cold[1])} "
        "(the site, the scenario summaries, the scenarios in play and their versions, then cached)"
    ]
    for label, (collected, triggered), size, aims in (
        ("page view, single", single_page, 1, (None, None, 2.5)),
        (f"page views, batch of {BATCH_SIZE}", batch_page, BATCH_SIZE, (None, None, 0.5)),
        ("Product Added (a trigger), single", single_added, 1, (None, None, None)),
        (f"Product Added, batch of {BATCH_SIZE}", batch_added, BATCH_SIZE, (None, None, None)),
    ):
        for part, sent, aim in (
            ("collect", collected, aims[0]),
            ("trigger", triggered, aims[1]),
            ("collect + trigger", collected + triggered, aims[2]),
        ):
            figures.append(
                Figure(
                    f"requests per stored event, {part}: {label}",
                    sent.total() / size,
                    aim=None if aim is None else ("<=", aim),
                    digits=2,
                )
            )
        notes.append(f"{label}: collect {_spelled(collected)}; trigger {_spelled(triggered)}")
    notes.append(
        f"batches: {BATCH_SIZE} messages from {BATCH_VISITORS} known visitors (Segment's batch endpoint), "
        f"one trigger invocation of {BATCH_SIZE} stream records; requests counted on moto's side "
        "(its recorder)"
    )
    return Measured(figures, notes)

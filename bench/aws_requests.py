"""(a) AWS requests per tracked event, counted on the real collect code path against moto in-process.

Every HTTP send botocore makes (retries included) fires `before-send`; moto answers in-process, so the
count is exactly what Lambda would send to DynamoDB for the same calls.

`MotoRequests` counts on moto's side instead: every request moto answers, from any client of any
service (the clients the wiring builds inside its builders included), by stage and operation, and
the DynamoDB items each request writes or reads, by key, parsed from the request body moto got
(bench.broadcast uses it for requests per recipient and the hottest item).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from unittest import mock
from urllib.parse import parse_qs, urlsplit

import boto3
from cems.adapters import aws
from cems.adapters.dynamodb.sites import SiteStore
from cems.collect import Collector
from cems.ingest import Ingestor
from cems.settings import Settings
from cems.sites import SiteDirectory
from cems.trust import user_hash
from cems.wiring import customer_stores
from moto import mock_aws

from bench import payloads
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, create_tables

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

BATCH_SIZE = 100
BATCH_VISITORS = 10


class RequestCounter:
    """Counts HTTP sends per DynamoDB operation on one client."""

    def __init__(self, client: DynamoDBClient) -> None:
        self.sent: Counter[str] = Counter()
        client.meta.events.register("before-send.dynamodb.*", self._on_send)

    def _on_send(self, event_name: str, **_: Any) -> None:
        self.sent[event_name.rsplit(".", 1)[-1]] += 1

    def during(self, action: Callable[[], object]) -> Counter[str]:
        before = self.sent.copy()
        action()
        return self.sent - before


# DynamoDB operations that write items, and those that read items by key (Query and Scan read ranges,
# not keys, and are counted as requests only).
WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})
KEY_READ_OPERATIONS = frozenset({"GetItem", "BatchGetItem", "TransactGetItems"})


class MotoRequests:
    """Every request moto answers in this process, as moto received it, whichever client sent it.

    `requests[(stage, service, operation)]`: requests per stage (set `stage` around the work). For
    DynamoDB, from the request bodies: `writes[(table, key)]` counts each item write (PutItem's Item,
    UpdateItem's and DeleteItem's Key, each Put/Update/Delete of TransactWriteItems, each request of
    BatchWriteItem), `transactional[(table, key)]` those made inside TransactWriteItems (which cost 2
    write units an item), `checks[(table, key)]` the ConditionChecks of a transaction, and
    `reads[(table, key)]` each key of GetItem, BatchGetItem and TransactGetItems. A key is the item's
    key attribute values joined by `|`, in the table's key schema order (`key_names`, hash first).
    A refused request (a failed condition, a cancelled transaction) is counted: DynamoDB receives and
    bills it too. Requests moto does not answer (passed through) are not counted."""

    def __init__(self, key_names: Mapping[str, Sequence[str]]) -> None:
        self.key_names = {table: tuple(names) for table, names in key_names.items()}
        self.stage = ""
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.writes: Counter[tuple[str, str]] = Counter()
        self.transactional: Counter[tuple[str, str]] = Counter()
        self.checks: Counter[tuple[str, str]] = Counter()
        self.reads: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def counting(self) -> Iterator[MotoRequests]:
        """Counts while inside (within `mock_aws()`): wraps moto's one entry point for requests."""
        from moto.core.botocore_stubber import BotocoreStubber

        original = BotocoreStubber.process_request
        counter = self

        def process_request(stubber: Any, request: Any) -> Any:
            response = original(stubber, request)
            if response is not None:
                counter.record(request)
            return response

        with mock.patch.object(BotocoreStubber, "process_request", process_request):
            yield self

    @contextmanager
    def stage_of(self, stage: str) -> Iterator[None]:
        saved, self.stage = self.stage, stage
        try:
            yield
        finally:
            self.stage = saved

    def record(self, request: Any) -> None:
        service = (urlsplit(request.url).hostname or "").split(".", 1)[0]
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        if not isinstance(body, bytes):  # a stream (S3 uploads): not parsed
            body = b""
        target = request.headers.get("X-Amz-Target")
        if isinstance(target, bytes):
            target = target.decode()
        if target:
            operation = str(target).rsplit(".", 1)[-1]
        else:  # the query protocol: Action=... in the body or the URL
            query = parse_qs(body.decode("utf-8", "replace")) or parse_qs(urlsplit(request.url).query)
            operation = (query.get("Action") or [request.method])[0]
        self.requests[(self.stage, service, operation)] += 1
        if service == "dynamodb" and (operation in WRITE_OPERATIONS or operation in KEY_READ_OPERATIONS):
            self._items(operation, json.loads(body or b"{}"))

    def _items(self, operation: str, params: dict[str, Any]) -> None:
        table = str(params.get("TableName", ""))
        if operation == "PutItem":
            self.writes[(table, self.key_of(table, params.get("Item", {})))] += 1
        elif operation in ("UpdateItem", "DeleteItem"):
            self.writes[(table, self.key_of(table, params.get("Key", {})))] += 1
        elif operation == "GetItem":
            self.reads[(table, self.key_of(table, params.get("Key", {})))] += 1
        elif operation == "BatchWriteItem":
            for name, requests in params.get("RequestItems", {}).items():
                for request in requests:
                    if "PutRequest" in request:
                        self.writes[(name, self.key_of(name, request["PutRequest"].get("Item", {})))] += 1
                    elif "DeleteRequest" in request:
                        self.writes[(name, self.key_of(name, request["DeleteRequest"].get("Key", {})))] += 1
        elif operation == "BatchGetItem":
            for name, wanted in params.get("RequestItems", {}).items():
                for key in wanted.get("Keys", []):
                    self.reads[(name, self.key_of(name, key))] += 1
        elif operation == "TransactWriteItems":
            for item in params.get("TransactItems", []):
                for kind, op in item.items():
                    name = str(op.get("TableName", ""))
                    key = (name, self.key_of(name, op.get("Item") if kind == "Put" else op.get("Key", {})))
                    if kind == "ConditionCheck":
                        self.checks[key] += 1
                    else:
                        self.writes[key] += 1
                        self.transactional[key] += 1
        elif operation == "TransactGetItems":
            for item in params.get("TransactItems", []):
                op = item.get("Get", {})
                name = str(op.get("TableName", ""))
                self.reads[(name, self.key_of(name, op.get("Key", {})))] += 1

    def key_of(self, table: str, attributes: Mapping[str, Any] | None) -> str:
        attributes = attributes or {}
        names = self.key_names.get(table) or tuple(sorted(attributes))
        return "|".join(_scalar(attributes.get(name)) for name in names)

    def total(self, stage: str | None = None, service: str | None = None) -> int:
        return sum(
            n
            for (s, svc, _), n in self.requests.items()
            if (stage is None or s == stage) and (service is None or svc == service)
        )

    def by_operation(self, stage: str) -> Counter[str]:
        counts: Counter[str] = Counter()
        for (s, service, operation), n in self.requests.items():
            if s == stage:
                counts[f"{service}:{operation}"] += n
        return counts

    def hottest(self, counts: Counter[tuple[str, str]], partition: bool = False) -> tuple[str, str, int]:
        """(table, key, count) of the most counted item, or with `partition` of the most counted
        partition key value (the items of one hash key share a partition's throughput)."""
        if partition:
            merged: Counter[tuple[str, str]] = Counter()
            for (table, key), n in counts.items():
                merged[(table, key.split("|", 1)[0])] += n
            counts = merged
        if not counts:
            return ("", "", 0)
        (table, key), n = counts.most_common(1)[0]
        return table, key, n


def key_schemas(tables: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Each table's key attribute names, hash key first, from its template properties."""
    schemas: dict[str, tuple[str, ...]] = {}
    for name, props in tables.items():
        ordered = sorted(props.get("KeySchema", []), key=lambda k: k["KeyType"] != "HASH")
        schemas[name] = tuple(k["AttributeName"] for k in ordered)
    return schemas


def _scalar(value: Any) -> str:
    """A key attribute's value from its DynamoDB JSON ({"S": "..."} → "...")."""
    if isinstance(value, Mapping) and value:
        return str(next(iter(value.values())))
    return "" if value is None else str(value)


@contextmanager
def fake_aws_env(values: Mapping[str, str] = FAKE_AWS_ENV) -> Iterator[None]:
    """`values` in the environment (fake AWS credentials by default), no endpoint override, for the
    block; the environment as it was afterwards."""
    saved = dict(os.environ)
    os.environ.update(values)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _spelled(sent: Counter[str]) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(sent.items())) or "none"


def measure() -> Measured:
    with fake_aws_env(), mock_aws():
        client: DynamoDBClient = boto3.client("dynamodb", region_name=REGION, config=aws.CLIENT_CONFIG)
        create_tables(client)
        settings = Settings.from_environ()
        credentials = SiteStore(settings.tables.sites, client).add("bench", [payloads.SHOP])
        write_key, identity_secret = credentials.site.write_key, credentials.identity_secret
        assert identity_secret is not None
        # Wired as functions/collect/app.py wires it, on the counted client.
        stores = customer_stores(client, settings)
        collector = Collector(
            SiteDirectory(SiteStore(settings.tables.sites, client), settings.retention.site_cache_seconds),
            Ingestor(stores.ingest),
        )
        counter = RequestCounter(client)
        auth = payloads.basic_auth(write_key)

        def send(kind: str, document: dict[str, Any]) -> Callable[[], object]:
            return lambda: collector.collect(kind, payloads.body(document), auth, payloads.SHOP)

        visitor = payloads.new_anonymous_id()
        cold = counter.during(send("track", payloads.track(visitor)))
        second_visitor = payloads.new_anonymous_id()
        new = counter.during(send("track", payloads.track(second_visitor)))
        known = counter.during(send("track", payloads.track(second_visitor, 1)))
        batch = counter.during(send("batch", payloads.batch_of(BATCH_SIZE, BATCH_VISITORS)))
        # A signed-in visitor (issue 9): the user id with its user hash, first on a known customer.
        member, proof = payloads.new_anonymous_id(), user_hash(identity_secret, "bench-member")
        send("identify", payloads.identify(member, "bench-member", proof))()
        verified = counter.during(send("identify", payloads.identify(member, "bench-member", proof)))

    figures = [
        Figure("requests: first event of a fresh container", cold.total(), digits=0),
        Figure("requests: new visitor's event", new.total(), aim=("<=", 2), digits=0),
        Figure("requests: known visitor's event", known.total(), aim=("<=", 2), digits=0),
        Figure(
            "requests: signed-in visitor's identify (user hash)", verified.total(), aim=("<=", 2), digits=0
        ),
        Figure(
            f"requests per event: batch of {BATCH_SIZE}, {BATCH_VISITORS} visitors",
            batch.total() / BATCH_SIZE,
            aim=("<=", 0.1),
            digits=3,
        ),
    ]
    notes = [
        f"first event of a fresh container: {_spelled(cold)} (the Sites GetItem is then cached "
        f"for {settings.retention.site_cache_seconds:g} s, so later events skip it)",
        f"new visitor: {_spelled(new)}; known visitor: {_spelled(known)}; signed-in visitor's identify: "
        f"{_spelled(verified)} (the user hash is one HMAC-SHA256 with the cached site's identity secret)",
        f"batch of {BATCH_SIZE}: {_spelled(batch)}",
    ]
    return Measured(figures, notes)

"""(a) AWS requests per tracked event, counted on the real collect code path against moto in-process.

Every HTTP send botocore makes (retries included) fires `before-send`; moto answers in-process, so the
count is exactly what Lambda would send to DynamoDB for the same calls.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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


@contextmanager
def _fake_aws_env() -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(FAKE_AWS_ENV)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _spelled(sent: Counter[str]) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(sent.items())) or "none"


def measure() -> Measured:
    with _fake_aws_env(), mock_aws():
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

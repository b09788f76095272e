"""(c) Local stack throughput: events a second through the HTTP endpoint, as a ratio to raw DynamoDB
`put_item` calls a second against the same moto server.

Both loads use the same number of threads for the same time, in alternating rounds (the order rotating),
so both see the same machine. Each HTTP thread keeps one connection open and posts Segment `track`
events with a unique messageId for a few anonymous ids of its own; each raw thread puts items of about
the size CEMS stores for such an event through its own boto3 client, into a twin of EventsTable (see
RAW_TABLE).
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cems.adapters.dynamodb.items import to_attribute_map

from bench import payloads
from bench.report import Figure, Measured
from bench.tables import FAKE_AWS_ENV, REGION, create_table, template_tables

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

THREADS = 8
ROUNDS = 3
SECONDS = 3.0
WARM_UP_SECONDS = 0.5
VISITORS_PER_THREAD = 4
# The raw baseline writes to a twin of EventsTable (same definition, stream included), not to
# EventsTable itself: moto deep-copies every table a transaction names, stream records included, so
# rows the baseline added there would slow the collect function's transactions and skew the HTTP side.
RAW_TABLE = "BenchRawEventsTable"


class Worker(Protocol):
    """One thread's client: `send` makes one request and says whether it succeeded."""

    def send(self) -> bool: ...
    def close(self) -> None: ...


@dataclass
class _Load:
    """One kind of request, driven by THREADS threads for a fixed time."""

    new_worker: Callable[[], Worker]

    def run(self, seconds: float) -> tuple[int, int, float]:
        """(requests that succeeded, requests that failed, seconds elapsed)"""
        workers = [self.new_worker() for _ in range(THREADS)]
        ok = [0] * THREADS
        failed = [0] * THREADS
        start = threading.Barrier(THREADS + 1)
        stop = threading.Event()

        def drive(n: int) -> None:
            start.wait()
            while not stop.is_set():
                if workers[n].send():
                    ok[n] += 1
                else:
                    failed[n] += 1

        threads = [threading.Thread(target=drive, args=(n,), daemon=True) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        start.wait()
        began = time.perf_counter()
        time.sleep(seconds)
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        for worker in workers:
            worker.close()
        return sum(ok), sum(failed), elapsed


class HttpWorker:
    """Posts Segment track events over one keep-alive connection, for a few visitors of its own."""

    def __init__(self, http_url: str, write_key: str) -> None:
        url = urlsplit(http_url)
        self.connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=30)
        self.headers = {"Authorization": payloads.basic_auth(write_key), "Content-Type": "application/json"}
        self.visitors = [payloads.new_anonymous_id() for _ in range(VISITORS_PER_THREAD)]
        self.sent = 0

    def send(self) -> bool:
        self.sent += 1
        body = payloads.body(payloads.track(self.visitors[self.sent % len(self.visitors)], self.sent))
        try:
            self.connection.request("POST", "/v1/track", body, self.headers)
            response = self.connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            self.connection.close()  # the next request reconnects
            return False
        return response.status == 200

    def close(self) -> None:
        self.connection.close()


def stored_event_item(customer_id: str) -> dict[str, Any]:
    """An Events table item shaped and sized like the one CEMS stores for a track."""
    message = payloads.track(payloads.new_anonymous_id())
    return to_attribute_map(
        {
            "customer_id": customer_id,
            "sk": f"{message['timestamp']}#{message['messageId']}",
            "site_id": "site_bench",
            "type": message["type"],
            "message_id": message["messageId"],
            "event": message["event"],
            "anonymous_id": message["anonymousId"],
            "timestamp": message["timestamp"],
            "original_timestamp": message["timestamp"],
            "sent_at": message["sentAt"],
            "received_at": message["sentAt"],
            "properties": message["properties"],
            "traits": {},
            "context": message["context"],
            "expires_at": int(time.time()) + 395 * 86400,
        }
    )


class RawWorker:
    """Puts event-sized items, each under a new key, through its own boto3 client."""

    def __init__(self, aws_url: str) -> None:
        self.client = _client(aws_url)
        self.template = stored_event_item(f"cus_{uuid.uuid4().hex}")

    def send(self) -> bool:
        item = {**self.template, "sk": {"S": f"{time.time():.6f}#{uuid.uuid4()}"}}
        try:
            self.client.put_item(TableName=RAW_TABLE, Item=item)
        except (BotoCoreError, ClientError):
            return False
        return True

    def close(self) -> None:
        self.client.close()


def measure(rounds: int = ROUNDS, seconds: float = SECONDS) -> Measured:
    # Imported here: the local stack is only needed for this figure.
    from cems.local.running import running_local_stack

    rates: dict[str, list[float]] = {"http": [], "raw": []}
    failures = {"http": 0, "raw": 0}
    with running_local_stack(http_port=0, aws_port=0) as stack:
        create_table(_client(stack.aws_url), RAW_TABLE, template_tables()["EventsTable"])
        loads = {
            "http": _Load(lambda: HttpWorker(stack.http_url, stack.write_key)),
            "raw": _Load(lambda: RawWorker(stack.aws_url)),
        }
        for load in loads.values():
            load.run(WARM_UP_SECONDS)
        for n in range(rounds):
            for name in ("http", "raw") if n % 2 == 0 else ("raw", "http"):
                ok, failed, elapsed = loads[name].run(seconds)
                rates[name].append(ok / elapsed)
                failures[name] += failed
    ratio = statistics.median(h / r for h, r in zip(rates["http"], rates["raw"], strict=True))
    figures = [
        Figure("throughput: events/s through the HTTP endpoint", statistics.median(rates["http"]), digits=0),
        Figure("throughput: raw put_item/s, same moto server", statistics.median(rates["raw"]), digits=0),
        Figure("throughput: HTTP events/s / raw put_item/s", ratio, aim=(">=", 0.5)),
    ]
    notes = [
        f"throughput: {THREADS} threads, {rounds} alternating rounds of {seconds:g} s; medians of rounds; "
        f"failed requests: HTTP {failures['http']}, raw {failures['raw']}",
        "throughput by round, events/s: HTTP "
        + " / ".join(f"{r:.0f}" for r in rates["http"])
        + "; raw "
        + " / ".join(f"{r:.0f}" for r in rates["raw"]),
    ]
    return Measured(figures, notes)


def _client(aws_url: str) -> DynamoDBClient:
    client: DynamoDBClient = boto3.client(
        "dynamodb",
        endpoint_url=aws_url,
        region_name=REGION,
        aws_access_key_id=FAKE_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        config=Config(retries={"max_attempts": 1}, tcp_keepalive=True),
    )
    return client

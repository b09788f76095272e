"""On-site messages (issue 13): the tag's size and its renderer's share, requests per page view, and
AWS requests per shown message.

- Bytes: the served tag gzipped (level 9, as a CDN or API Gateway's compression would send it),
  and the renderer's share: the tag gzipped less the tag without its on-site message section (from
  "--- On-site messages" to "--- Start") gzipped.
- Requests per page view, in headless Chromium against a local fake endpoint: a page view with a
  message due, then two with nothing due (the second within the answer's cache time, which the tag
  remembers in sessionStorage).
- AWS requests, on moto in-process through the wiring collect and engage use: the fetch that answers
  the message (identity GetItem, inbox Query) and the `shown` report (profile, ingestion, counter,
  first impression), and a repeated `shown`.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bench.report import Figure, Measured
from bench.tables import ROOT

TAG = ROOT / "shared" / "cems" / "static" / "tag.js"
RENDERER_START = "// --- On-site messages"
RENDERER_END = "// --- Start:"
# Only tells a hung browser from a slow one.
HANG_SECONDS = 120


def tag_bytes() -> tuple[int, int]:
    """(the tag gzipped, the renderer's share of it gzipped)."""
    source = TAG.read_text(encoding="utf-8")
    start, end = source.index(RENDERER_START), source.index(RENDERER_END)
    without = source[:start] + source[end:]
    whole = len(gzip.compress(source.encode(), 9))
    return whole, whole - len(gzip.compress(without.encode(), 9))


def requests_per_page_view() -> tuple[int, int, int, int]:
    """(fetches for a page view with a message due, beacons it sent, fetches for a page view with
    nothing due, fetches for the next page view within the answer's cache time)."""
    from cems.collect import cors_headers, tag_script

    from tests.browser.chrome import chrome_driver

    seen: Counter[str] = Counter()
    answer: dict[str, Any] = {"due": True}
    page = (
        '<!doctype html><html><head><meta charset="utf-8"><title>bench</title>'
        '<script async src="{api}/tag.js" data-write-key="wk"></script></head>'
        "<body><h1>bench</h1></body></html>"
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            origin = self.headers.get("Origin")
            if path == "/tag.js":
                self._send(200, tag_script().encode(), {"Content-Type": "application/javascript"})
            elif path == "/v1/web/messages":
                seen["fetch"] += 1
                cache = {**cors_headers(origin), "Cache-Control": "private, max-age=10"}
                if answer["due"]:
                    body = {"id": "b", "token": "t", "message": {"kind": "banner", "title": "bench"}}
                    self._send(200, json.dumps(body).encode(), {**cache, "Content-Type": "application/json"})
                else:
                    self._send(204, b"", cache)
            else:
                self._send(200, page.format(api=api).encode(), {"Content-Type": "text/html"})

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path = self.path.split("?", 1)[0]
            seen["events" if path == "/v1/web/events" else "tracked"] += 1
            self._send(200, b"{}", cors_headers(self.headers.get("Origin")))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = f"http://127.0.0.1:{server.server_address[1]}"
    shop = f"http://localhost:{server.server_address[1]}"

    def visit(driver: Any, path: str, until: str) -> None:
        driver.get(shop + path)
        deadline = time.monotonic() + HANG_SECONDS
        while not driver.execute_script(until):
            assert time.monotonic() < deadline, f"{path}: {until}"
            time.sleep(0.05)

    try:
        with chrome_driver() as driver:
            visit(driver, "/due", "return !!document.querySelector('cems-message')")
            deadline = time.monotonic() + HANG_SECONDS
            while seen["events"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            due_fetches, beacons = seen["fetch"], seen["events"]
            answer["due"] = False
            visit(driver, "/none-1", "return !!sessionStorage.getItem('cems_wn')")
            nothing = seen["fetch"] - due_fetches
            before = seen["fetch"]
            visit(driver, "/none-2", "return window.cems && window.cems.loaded")
            # The tag's work after load is done once an idle callback queued after it has run.
            driver.execute_async_script(
                "var done = arguments[0]; function idle() { requestIdleCallback(function () { done(); }); }"
                "document.readyState === 'complete' ? idle() : addEventListener('load', idle);"
            )
            cached = seen["fetch"] - before
    finally:
        server.shutdown()
        server.server_close()
    return due_fetches, beacons, nothing, cached


def aws_requests() -> tuple[Counter[str], Counter[str], Counter[str]]:
    """DynamoDB requests of (the fetch answering a message, the first `shown`, a repeated `shown`)."""
    import boto3
    from cems import clock
    from cems.adapters import aws
    from cems.adapters.dynamodb.sites import SiteStore
    from cems.adapters.dynamodb.web_inbox import WebInboxStore
    from cems.engagement.config import TRACKING_SECRET
    from cems.ingest import Ingestor
    from cems.line.config import LINE_CHANNEL_ACCESS_TOKEN, LINE_CHANNEL_SECRET
    from cems.models import SegmentMessage, Site
    from cems.settings import Settings
    from cems.web.dispatch import WebMessage
    from cems.web.events import WebEventRequest
    from cems.web.inbox import InboxItem, InboxOwner
    from cems.wiring import collect, customer_stores, web_events
    from moto import mock_aws

    from bench import payloads
    from bench.aws_requests import RequestCounter, fake_aws_env
    from bench.tables import FAKE_AWS_ENV, REGION, create_tables

    now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    # collect's wiring reads the LINE settings too (account linking): configured as a deployment is.
    LINE_SECRETS = (LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN)
    env = {**FAKE_AWS_ENV, **{s.env_name: "bench-secret" for s in (TRACKING_SECRET, *LINE_SECRETS)}}
    clock.freeze(now)
    try:
        with fake_aws_env(env), mock_aws():
            aws.dynamodb.cache_clear()
            client = aws.dynamodb()
            create_tables(boto3.client("dynamodb", region_name=REGION))
            settings = Settings.from_environ()
            site = SiteStore(settings.tables.sites, client).add("bench", [payloads.SHOP]).site
            visitor = payloads.new_anonymous_id()
            seen = SegmentMessage.model_validate(
                {"type": "page", "messageId": "p1", "anonymousId": visitor, "timestamp": now.isoformat()}
            )
            stores = customer_stores(client, settings)
            Ingestor(stores.ingest).ingest(Site.model_validate(site.model_dump()), [seen], now)
            customer = stores.customers.customer_for_anonymous_id(visitor)
            assert customer is not None
            WebInboxStore(settings.tables.customers, client).put(
                InboxItem(
                    owner=InboxOwner.customer(customer),
                    dispatch_key=f"{customer}#bench#remind#1",
                    customer_id=customer,
                    message=WebMessage(kind="banner", title="bench", expires_seconds=86400),
                    written_at=now,
                    expires_at=now + timedelta(days=1),
                    scenario_id="bench",
                    version=1,
                    step_id="remind",
                )
            )
            collector, events = collect(settings), web_events(settings)
            counter = RequestCounter(client)
            query = {"writeKey": site.write_key, "anonymousId": visitor, "url": payloads.SHOP + "/"}
            collector.web_messages(None, payloads.SHOP, query)  # the site lookup, cached afterwards
            answered: list[Any] = []
            fetch = counter.during(
                lambda: answered.append(json.loads(collector.web_messages(None, payloads.SHOP, query).body))
            )
            report = WebEventRequest(token=answered[0]["token"], kind="shown")
            first = counter.during(lambda: events.record(report, now))
            again = counter.during(lambda: events.record(report, now))
    finally:
        clock.reset()
        aws.dynamodb.cache_clear()
    return fetch, first, again


def _spelled(sent: Counter[str]) -> str:
    return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(sent.items())) or "none"


def measure() -> Measured:
    whole, renderer = tag_bytes()
    due, beacons, nothing, cached = requests_per_page_view()
    fetch, first, again = aws_requests()
    figures = [
        Figure("web: tag.js gzipped", whole, "B", digits=0),
        Figure("web: the renderer's share of it, gzipped", renderer, "B", aim=("<=", 4096), digits=0),
        Figure("web: requests per page view, a message due", due, aim=("<=", 1), digits=0),
        Figure("web: requests per page view, nothing due", nothing, aim=("<=", 1), digits=0),
        Figure("web: requests per page view, nothing due and cached", cached, aim=("<=", 0), digits=0),
        Figure("web: AWS requests of a fetch that answers a message", fetch.total(), aim=("<=", 2), digits=0),
        Figure("web: AWS requests per shown message (first report)", first.total(), digits=0),
        Figure("web: AWS requests of a repeated shown report", again.total(), digits=0),
    ]
    notes = [
        f"web: the page view with a message sent {beacons} report(s) (shown, a sendBeacon to engage)",
        f"web: fetch {_spelled(fetch)}; first shown {_spelled(first)}; repeated shown {_spelled(again)}",
    ]
    return Measured(figures, notes)

"""Browser test fixtures: headless Chromium, a test site and a fake collector on another origin.

The test site is served as http://localhost:<port> and the collector as http://127.0.0.1:<port>,
so the tag always sends cross-origin, as it does on a real shop.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cems.collect import cors_headers, preflight_headers, tag_script
from selenium import webdriver

from tests.browser.chrome import chrome_driver

WRITE_KEY = "test-write-key"
LINE_LINK_PATH = "/v1/line/link"
# On-site messages (docs/web.md): the tag's fetch and its reports.
WEB_MESSAGES_PATH = "/v1/web/messages"
WEB_EVENTS_PATH = "/v1/web/events"
# Where the page posts the marker that shows the collector has everything sent before it.
MARKER_PATH = "/__marker"
# How long a wait on the browser may take before it counts as hung: a hang bound, not a speed test.
HANG = 300.0
# How often a wait looks again: how soon it notices, never whether it passes.
POLL_SECONDS = 0.05


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A browser test chains waits of up to HANG each: its own pytest-timeout is a deadlock backstop
    far above them (the project's default equals HANG, which would cut a slow wait short before it
    could say what it waited for)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.timeout(HANG * 10))


# The two-line install of docs/tag.md: the stub queues calls until the tag has loaded.
STUB = (
    "<script>!function(w,q){q=w.cems=w.cems||[];"
    '"track identify page alias reset ready".split(" ").forEach(function(m){'
    "q[m]=q[m]||function(){q.push([m].concat([].slice.call(arguments)))}})}(window)</script>"
)


@pytest.fixture
def chrome() -> Iterator[webdriver.Chrome]:
    with chrome_driver() as driver:
        yield driver


@dataclass
class Received:
    """One request the fake collector saw."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def route(self) -> str:
        """The path without its query."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)

    @property
    def message(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[_Server, threading.Thread]:
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name=handler.__name__, daemon=True)
    thread.start()
    return server, thread


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@dataclass
class FakeCollector:
    """Stands in for the collect endpoint: serves /tag.js, records /v1/* requests, answers CORS
    as the real endpoint does (origin echoed with credentials allowed; other origins get 403), and
    answers POST /v1/line/link with `link_redirect` as the redirectUrl."""

    url: str
    allowed_origins: set[str]
    link_redirect: str = ""
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # The test's browser, which sends the markers (`settle`).
    browser: webdriver.Chrome | None = None
    # What GET /v1/web/messages answers: a message (200, JSON) or None (204, nothing due), each
    # cacheable for `web_max_age` seconds as the real endpoint's answers are.
    web_message: dict[str, Any] | None = None
    web_max_age: int = 10

    def web_fetches(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.method == "GET" and r.route == WEB_MESSAGES_PATH]

    def web_events(self) -> list[dict[str, Any]]:
        """The reports on on-site messages the tag sent ({token, kind, button?})."""
        with self.lock:
            return [r.message for r in self.requests if r.method == "POST" and r.route == WEB_EVENTS_PATH]

    def posts(self) -> list[Received]:
        """The Segment calls (/v1/<type>), not the LINE link requests or markers."""
        with self.lock:
            return [
                r
                for r in self.requests
                if r.method == "POST" and r.route not in (LINE_LINK_PATH, MARKER_PATH, WEB_EVENTS_PATH)
            ]

    def link_posts(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.method == "POST" and r.route == LINE_LINK_PATH]

    def preflights(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.method == "OPTIONS"]

    def messages(self) -> list[dict[str, Any]]:
        return [r.message for r in self.posts()]

    def wait_for(
        self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = HANG
    ) -> list[dict[str, Any]]:
        """Wait until condition holds for the messages received so far; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            messages = self.messages()
            if condition(messages):
                return messages
            if time.monotonic() > deadline:
                raise AssertionError(f"collector did not get what was expected in {timeout}s: {messages!r}")
            time.sleep(POLL_SECONDS)

    def wait_for_count(self, count: int, timeout: float = HANG) -> list[dict[str, Any]]:
        """The messages, once at least `count` arrived and nothing more is on its way (`settle`): a
        test asserting exactly `count` sees any extra message the page sent."""
        self.wait_for(lambda m: len(m) >= count, timeout)
        self.settle(timeout)
        return self.messages()

    def settle(self, timeout: float = HANG) -> None:
        """Makes the page send a marker after everything it sent so far and waits for it. The
        marker is made after those requests and goes out after them, so "nothing more arrived" is
        shown by ordering (what was sent before the marker was received before it), not by
        waiting a while and hoping that was long enough."""
        assert self.browser is not None, "settle() needs the test's browser: use the chrome fixture"
        marker = uuid.uuid4().hex
        # XMLHttpRequest: tests wrap or remove fetch and sendBeacon, never this.
        self.browser.execute_script(
            "var x = new XMLHttpRequest(); x.open('POST', arguments[0]); x.send('');",
            f"{self.url}{MARKER_PATH}?id={marker}",
        )
        deadline = time.monotonic() + timeout
        while not self._has_marker(marker):
            if time.monotonic() > deadline:
                raise AssertionError(f"the page's marker did not reach the collector in {timeout}s")
            time.sleep(POLL_SECONDS)

    def _has_marker(self, marker: str) -> bool:
        with self.lock:
            return any(r.route == MARKER_PATH and r.query.get("id") == [marker] for r in self.requests)

    def clear(self) -> None:
        with self.lock:
            self.requests.clear()


@dataclass
class TestSite:
    """Pages served from the site origin (http://localhost:<port>), added by each test."""

    __test__ = False

    origin: str
    pages: dict[str, str] = field(default_factory=dict)

    def add(self, path: str, html: str) -> str:
        self.pages[path.split("?", 1)[0]] = html
        return self.origin + path

    def tag_page(
        self,
        path: str,
        collector: FakeCollector,
        *,
        before: str = "",
        after: str = "",
        attributes: str = "",
        src: str | None = None,
        title: str = "テストページ / Test page",
    ) -> str:
        """A page with the stub, `before` (a script run before the tag loads), the tag, and `after`."""
        tag_src = src or f"{collector.url}/tag.js"
        html = (
            f'<!doctype html><html lang="ja"><head><meta charset="utf-8"><title>{title}</title>'
            "<script>window.__errors=[];"
            "addEventListener('error',function(e){__errors.push(String(e.message))});"
            "addEventListener('unhandledrejection',function(e){__errors.push(String(e.reason))});</script>"
            f"{STUB}{before}"
            f'<script async src="{tag_src}" data-write-key="{WRITE_KEY}" {attributes}></script>'
            f"</head><body><h1>テスト</h1>{after}</body></html>"
        )
        return self.add(path, html)


@pytest.fixture
def site() -> Iterator[TestSite]:
    pages: dict[str, str] = {}

    class SiteHandler(_QuietHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/tag.js":
                self.reply(200, tag_script().encode(), "application/javascript; charset=utf-8", {})
            elif path in pages:
                self.reply(200, pages[path].encode(), "text/html; charset=utf-8", {})
            else:
                self.reply(404, b"not found", "text/plain", {})

    server, thread = _serve(SiteHandler)
    try:
        yield TestSite(origin=f"http://localhost:{server.server_address[1]}", pages=pages)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def collector(site: TestSite, request: pytest.FixtureRequest) -> Iterator[FakeCollector]:
    recorder: FakeCollector

    class CollectorHandler(_QuietHandler):
        def _record(self) -> tuple[str | None, bytes]:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            received = Received(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body
            )
            with recorder.lock:
                recorder.requests.append(received)
            return self.headers.get("Origin"), body

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] == "/tag.js":
                self.reply(200, tag_script().encode(), "application/javascript; charset=utf-8", {})
            elif self.path.split("?", 1)[0] == WEB_MESSAGES_PATH:
                origin, _ = self._record()
                cache = {**cors_headers(origin), "Cache-Control": f"private, max-age={recorder.web_max_age}"}
                answer = recorder.web_message
                self.send_response(204 if answer is None else 200)
                body = b"" if answer is None else json.dumps(answer, ensure_ascii=False).encode()
                if answer is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in cache.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)
            else:
                self.reply(404, b"not found", "text/plain", {})

        def do_OPTIONS(self) -> None:
            origin, _ = self._record()
            self.reply(204, b"", "text/plain", preflight_headers(origin))

        def do_POST(self) -> None:
            origin, _ = self._record()
            if urlsplit(self.path).path == MARKER_PATH:
                self.reply(204, b"", "text/plain", {"Access-Control-Allow-Origin": "*"})
                return
            if origin and origin not in recorder.allowed_origins:
                body = {"success": False, "error": "origin_not_allowed"}
                self.reply(403, json.dumps(body).encode(), "application/json", {})
                return
            if urlsplit(self.path).path == LINE_LINK_PATH:
                body = {"redirectUrl": recorder.link_redirect}
                self.reply(200, json.dumps(body).encode(), "application/json", cors_headers(origin))
                return
            self.reply(200, b'{"success": true}', "application/json", cors_headers(origin))

    server, thread = _serve(CollectorHandler)
    port = server.server_address[1]
    recorder = FakeCollector(url=f"http://127.0.0.1:{port}", allowed_origins={site.origin})
    if "chrome" in request.fixturenames:
        recorder.browser = request.getfixturevalue("chrome")
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

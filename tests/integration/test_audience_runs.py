"""A fanned-out audience count through the handlers under moto: the console's POST starts a run (202,
its segment messages on BroadcastQueue), the broadcast function's handler counts the segments (handing
on what it has no time for), and GET /admin/console/audience/{run} answers the counts, complete and
equal to the count answered at once on the same data. The admin API and `cems audience count` do the
same through the admin handler. Only the start is audited; polling needs the permission."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cems import clock, wiring
from cems.adapters import aws
from cems.adapters.dynamodb.audit import DynamoAuditStore
from cems.audit import AuditLog
from cems.cli import main as cems_main

from bench.http_api import http_api_event
from tests.integration.test_admin_handler import APP as ADMIN_APP
from tests.integration.test_admin_handler import FakeLambdaContext as AdminContext
from tests.integration.test_audience import _seed, _stored_scenario
from tests.integration.test_broadcast_handlers import (  # noqa: F401 - the fixture
    AT,
    EXAMPLE,
    SEGMENTS,
    BroadcastHandlers,
    handlers,
)
from tests.integration.test_console_handler import INSIDE, Call
from tests.integration.test_console_handler import call as console_call  # noqa: F401 - the fixture

ANALYST = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
WRITER = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
IGNORED = {"requests", "elapsed_ms", "run", "segments_done", "note", "complete"}


@pytest.fixture
def world(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> BroadcastHandlers:
    """The broadcast handlers' world (BroadcastQueue, 4 segments) with 260 customers, every count a
    run (the threshold 0 items), the clock at the broadcast's time."""
    monkeypatch.setenv("CEMS_AUDIENCE_SYNC_MAX_ITEMS", "0")
    found: BroadcastHandlers = request.getfixturevalue("handlers")
    _seed(found)
    clock.freeze(AT + timedelta(seconds=30))
    return found


def _work(world: BroadcastHandlers) -> int:
    """The broadcast function's handler given BroadcastQueue's messages until none is left (its
    context leaves little time for all but the last record of a batch: those hand on); invocations."""
    invocations = 0
    while records := world.receive():
        assert world.deliver(records) == {"batchItemFailures": []}
        invocations += 1
    return invocations


def _audit(dynamodb: Any) -> list[tuple[str, str, str]]:
    # Entries are at the clock's time, frozen here: the range [since, until) holds that moment.
    now = clock.now()
    log = AuditLog(DynamoAuditStore("AuditTable", dynamodb))
    page = log.entries(now - timedelta(hours=1), now + timedelta(minutes=1), limit=50)
    return sorted(
        (e.actor, e.action.value, e.outcome.value) for e in page.entries if e.action.value == "audience_count"
    )


def test_the_console_starts_a_run_the_broadcast_function_counts_it_and_the_poll_says_complete(
    world: BroadcastHandlers, request: pytest.FixtureRequest, dynamodb: Any
) -> None:
    at_once = wiring.audience().count(_stored_scenario(world))
    call: Call = request.getfixturevalue("console_call")
    document = json.loads(EXAMPLE.read_text("utf-8"))

    status, headers, started = call("POST", "/admin/console/audience", INSIDE, document, claims=ANALYST)

    assert status == 202 and started["run"] and started["complete"] is False
    assert headers["location"] == f"/admin/console/audience/{started['run']}"
    assert (started["segments"], started["segments_done"]) == (SEGMENTS, 0)
    path = f"/admin/console/audience/{started['run']}"
    status, _, halfway = call("GET", path, INSIDE, claims=ANALYST)
    assert status == 200 and halfway["complete"] is False and "0/4" in halfway["note"]

    assert _work(world) >= 1
    status, _, done = call("GET", path, INSIDE, claims=ANALYST)

    assert status == 200 and done["complete"] is True and done["segments_done"] == SEGMENTS
    expected = at_once.model_dump(mode="json", exclude=IGNORED)
    assert {k: v for k, v in done.items() if k not in IGNORED} == expected
    assert done["matching"] > 20 and all(s["profile"]["masked"] for s in done["sample"])
    # Nothing was enrolled or sent: a count.
    assert world.recipients() == {}
    # Polling needs the count's permission; an unknown run is 404; only the start is in the log.
    status, _, body = call("GET", path, INSIDE, claims=WRITER)
    assert (status, body["error"]) == (403, "forbidden")
    status, _, body = call("GET", "/admin/console/audience/" + "0" * 32, INSIDE, claims=ANALYST)
    assert (status, body["error"]) == (404, "audience_run_not_found")
    assert _audit(dynamodb) == [("op-analyst", "audience_count", "allowed")]


# -- the admin API and the CLI ---------------------------------------------------------------------------

Send = Callable[[str, str, bytes | None], tuple[int, dict[str, str], str]]


@pytest.fixture
def admin(world: BroadcastHandlers, monkeypatch: pytest.MonkeyPatch) -> Iterator[Send]:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    aws.dynamodb.cache_clear()
    name = "cems_admin_audience_runs_under_test"
    spec = importlib.util.spec_from_file_location(name, ADMIN_APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    def send(method: str, target: str, body: bytes | None) -> tuple[int, dict[str, str], str]:
        event = http_api_event(
            method,
            target,
            headers={"content-type": "application/json"},
            body=None if body is None else body.decode("utf-8"),
            iam_user_arn="arn:aws:iam::123456789012:user/operator",
        )
        response = module.lambda_handler(event, AdminContext())
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return response["statusCode"], headers, response.get("body") or ""

    yield send
    sys.modules.pop(name, None)


@pytest.fixture
def api(admin: Send, world: BroadcastHandlers) -> Iterator[str]:
    """A local HTTP server passing each request to the admin handler; before answering a GET it lets
    the broadcast function count what is queued (as the deployed function would meanwhile)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bytes | None) -> None:
            with lock:
                if body is None:
                    _work(world)
                status, headers, text = admin(self.command, self.path, body)
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            self._answer(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

        def do_GET(self) -> None:
            self._answer(None)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_the_admin_api_answers_202_and_the_run_until_complete(admin: Send, world: BroadcastHandlers) -> None:
    status, headers, text = admin("POST", "/admin/audience", EXAMPLE.read_bytes())
    assert status == 202
    run = json.loads(text)["run"]
    assert headers["location"] == f"/admin/audience/{run}"
    _work(world)
    status, _, text = admin("GET", f"/admin/audience/{run}", None)
    done = json.loads(text)
    assert status == 200 and done["complete"] is True and done["customers_read"] == 260


def test_cems_audience_count_waits_for_the_run_and_prints_the_counts(
    api: str,
    world: BroadcastHandlers,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    assert cems_main(["audience", "count", str(EXAMPLE), "--url", api, "--json"]) == 0
    captured = capsys.readouterr()
    done = json.loads(captured.out)
    assert done["complete"] is True and done["segments_done"] == SEGMENTS and done["matching"] > 20
    assert "集計中 counting: 0/4" in captured.err
    assert cems_main(["audience", "count", str(EXAMPLE), "--url", api, "--no-wait"]) == 0
    out = capsys.readouterr().out
    assert "分割集計 Fanned-out count" in out and "集計中 counting: 0/4" in out

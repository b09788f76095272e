"""POST /admin/audience through the admin Lambda handler under moto, and `cems audience count FILE`
against it through a small local HTTP server that invokes the handler (as the local stack's router
does): the counts of a scenario document, 400 with every problem for an invalid one."""

from __future__ import annotations

import base64
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
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.cli import main as cems_main
from cems.scenario.assignment import in_holdout

from bench.http_api import http_api_event
from tests.integration.journeys import put_customer
from tests.integration.test_admin_handler import APP, NOW, OPERATOR, Answer, FakeLambdaContext

ROOT = Path(__file__).parents[2]
DOCUMENT: dict[str, Any] = {
    "id": "autumn-tea",
    "name": "秋の便り",
    "trigger": {"type": "broadcast", "at": "2026-11-21T10:00:00+09:00"},
    "audience": {"kind": "reachable", "channel": "line"},
    "entry": {"holdout_percent": 20},
    "steps": [
        {
            "id": "announce",
            "type": "send",
            "channel": "line",
            "line": [{"type": "text", "text": "秋の新茶🍂"}],
        },
        {"id": "done", "type": "end"},
    ],
}
CUSTOMERS = 40

Post = Callable[[str, bytes], Answer]


@pytest.fixture
def seeded(stores: Stores) -> set[str]:
    """40 customers, every fourth without LINE: the ids of those with it."""
    clock.freeze(NOW)
    friends: set[str] = set()
    for n in range(CUSTOMERS):
        customer_id = f"cus_adm{n:03d}"
        put_customer(stores.customers, customer_id, NOW - timedelta(days=1), line=n % 4 != 0)
        if n % 4:
            friends.add(customer_id)
    return friends


@pytest.fixture
def post(seeded: set[str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Post]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cems")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CEMS")
    aws.dynamodb.cache_clear()
    name = "cems_admin_audience_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    def call(target: str, body: bytes) -> Answer:
        event = http_api_event(
            "POST",
            target,
            headers={"content-type": "application/json"},
            body=base64.b64encode(body).decode("ascii"),
            iam_user_arn=OPERATOR,
        )
        event["isBase64Encoded"] = True  # as API Gateway passes any body: bytes, UTF-8 or not
        response = module.lambda_handler(event, FakeLambdaContext())
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return Answer(response["statusCode"], headers, response.get("body") or "")

    yield call
    sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()


def test_a_scenario_document_is_answered_with_its_audience(
    post: Post, seeded: set[str], caplog: pytest.LogCaptureFixture
) -> None:
    answer = post("/admin/audience", json.dumps(DOCUMENT, ensure_ascii=False).encode("utf-8"))
    assert answer.status == 200 and answer.headers["cache-control"] == "no-store"
    count = answer.json
    held = {c for c in seeded if in_holdout("autumn-tea", c, 20)}
    assert count["matching"] == len(seeded) and count["holdout"] == len(held) > 0
    assert count["excluded"] == {"audience": CUSTOMERS - len(seeded)}
    line = next(c for c in count["channels"] if c["channel"] == "line")
    assert line["reachable_outside_holdout"] == len(seeded - held) == count["sendable"]
    assert count["complete"] is True and count["customers_read"] == CUSTOMERS
    assert count["requests"] > 0 and count["elapsed_ms"] >= 0
    assert len(count["sample"]) == 10 and all(s["profile"]["masked"] for s in count["sample"])
    # The log line: counts and the caller, never a customer.
    [logged] = [r for r in caplog.records if r.getMessage() == "audience counted"]
    assert logged.__dict__["matching"] == len(seeded)
    assert "cus_adm" not in json.dumps({k: str(v) for k, v in logged.__dict__.items()})


def test_a_body_that_is_not_utf8_is_a_400_naming_the_body(post: Post) -> None:
    answer = post("/admin/audience", b"\x80{}")
    assert answer.status == 400 and (answer.json["error"], answer.json["field"]) == ("invalid_body", "body")


def test_a_document_too_deep_or_too_large_is_refused_naming_it_not_a_500(post: Post) -> None:
    deep = post("/admin/audience", b"[" * 200_000)
    assert deep.status == 400 and deep.json["error"] == "invalid_scenario"
    assert [p["code"] for p in deep.json["problems"]] == ["too_deep"]
    large = post("/admin/audience", json.dumps({"id": "x", "name": "あ" * 110_000}).encode("utf-8"))
    assert large.status == 413 and (large.json["error"], large.json["field"]) == ("too_large", "body")


def test_an_invalid_scenario_is_refused_with_its_problems(post: Post) -> None:
    broken = {**DOCUMENT, "entry": {"holdout_percent": 90}, "steps": [{"id": "x", "type": "sned"}]}
    answer = post("/admin/audience", json.dumps(broken).encode("utf-8"))
    assert answer.status == 400 and answer.json["error"] == "invalid_scenario"
    paths = {p["path"] for p in answer.json["problems"]}
    assert "entry.holdout_percent" in paths and any(p.startswith("steps[0]") for p in paths)
    not_json = post("/admin/audience", b"{not json")
    assert not_json.status == 400 and not_json.json["problems"][0]["code"] == "json"
    empty = post("/admin/audience", b"")
    assert empty.status == 400


# -- the CLI against the handler ---------------------------------------------------------------------


@pytest.fixture
def api(post: Post, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server passing each POST to the handler (one at a time, as moto needs)."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            with lock:
                answer = post(self.path, body)
            data = answer.text.encode("utf-8")
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cems_audience_count_prints_the_counts(
    api: str, seeded: set[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "autumn.json"
    scenario.write_text(json.dumps(DOCUMENT, ensure_ascii=False), encoding="utf-8")
    assert cems_main(["audience", "count", str(scenario), "--url", api]) == 0
    out = capsys.readouterr().out
    assert "対象の顧客 Matching" in out and f"{len(seeded):,}" in out
    assert "ホールドアウト Holdout" in out and "サンプル（マスク済み） Sample (masked)" in out
    assert "条件に合わない / audience conditions not met" in out
    assert cems_main(["audience", "count", str(scenario), "--url", api, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["matching"] == len(seeded)


def test_cems_audience_count_checks_the_file_first(
    api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "broken.json"
    scenario.write_text(json.dumps({**DOCUMENT, "entry": {"holdout_percent": 90}}), encoding="utf-8")
    assert cems_main(["audience", "count", str(scenario), "--url", api]) == 1
    err = capsys.readouterr().err
    assert "無効なシナリオです" in err and "entry.holdout_percent" in err
    assert cems_main(["audience", "count", str(tmp_path / "missing.json"), "--url", api]) == 2

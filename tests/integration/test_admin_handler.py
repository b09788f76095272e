"""The admin Lambda handler under moto (reports, erasure, JSON errors), and `cems report` /
`cems customer erase` against it through a small local HTTP server that invokes the handler, as the
local stack's router does."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import ScenarioStore
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.cli import main as cems_main
from cems.ingest import Ingestor
from cems.models import SegmentMessage, Site, Trust
from cems.reports import cli as report_cli
from cems.reports.counters import Metric, ReportCell
from cems.scenario.model import Scenario
from cems.scenario.records import ScenarioSource

from bench.http_api import http_api_event
from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
APP = ROOT / "functions" / "admin" / "app.py"
SCENARIO_FILE = ROOT / "examples" / "scenarios" / "post_purchase_tea.json"
SCENARIO = "post-purchase-yame-gyokuro"
OPERATOR = "arn:aws:iam::123456789012:user/operator"
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
SITE = Site(
    write_key="wk", site_id="site_test", name="test", origins=["*"], created_at=NOW, trust=Trust.SERVER
)


FakeLambdaContext = partial(FakeContext, "cems-dev-AdminFunction")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


Invoke = Callable[[str, str], Answer]


@pytest.fixture
def seeded(stores: Stores, dynamodb: Any) -> dict[str, str]:
    """A scenario (v1 and v2 uploaded) with counters, and a customer who merged from a visitor."""
    clock.freeze(NOW)
    document = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))
    scenarios = ScenarioStore("JourneysTable", dynamodb)
    for etag in ("e1", "e2"):
        scenarios.put_version(Scenario.model_validate(document), document, ScenarioSource("k", etag))
    counters = ReportCounters("JourneysTable", dynamodb)
    for _ in range(9):
        counters.add(ReportCell(SCENARIO, 1), Metric.ENROLLED)
    counters.add(ReportCell(SCENARIO, 1, holdout=True), Metric.HELD_OUT)
    counters.add(ReportCell(SCENARIO, 1, variant="coupon"), Metric.CONVERTED, revenue=Decimal(3240))
    counters.add(ReportCell(SCENARIO, 1, "ask-taste"), Metric.SENT)
    counters.add(ReportCell(SCENARIO, 2), Metric.ENROLLED)
    ingest = Ingestor(stores.ingest)
    signed_in = {"type": "identify", "messageId": "i0", "userId": "u1"}
    ingest.ingest(SITE, [SegmentMessage.model_validate(signed_in)], NOW)
    ingest.ingest(
        SITE, [SegmentMessage.model_validate({"type": "page", "messageId": "p1", "anonymousId": "a1"})], NOW
    )
    identify = {"type": "identify", "messageId": "i1", "userId": "u1", "anonymousId": "a1"}
    ingest.ingest(SITE, [SegmentMessage.model_validate(identify)], NOW)
    return {"customer": stores.customers.customer_for_user_id("u1") or ""}


@pytest.fixture
def invoke(seeded: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cems")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CEMS")
    aws.dynamodb.cache_clear()  # the module builds its client at import; an old one could predate moto
    name = "cems_admin_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    def call(method: str, target: str) -> Answer:
        event = http_api_event(method, target, headers={"accept": "application/json"}, iam_user_arn=OPERATOR)
        response = module.lambda_handler(event, FakeLambdaContext())
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return Answer(response["statusCode"], headers, response.get("body") or "")

    yield call
    sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()


# -- the handler --------------------------------------------------------------------------------------


def test_scenarios_are_listed_with_headline_numbers(invoke: Invoke) -> None:
    answer = invoke("GET", "/admin/scenarios")
    assert answer.status == 200
    [item] = answer.json["scenarios"]
    assert item["scenario_id"] == SCENARIO and item["state"] == "active"
    assert (item["active_version"], item["latest_version"]) == (2, 2)
    assert (item["enrolled"], item["held_out"]) == (11, 1)
    assert item["treatment_rate"] == pytest.approx(0.1) and item["revenue"] == 3240


def test_a_report_of_every_version_and_of_one(invoke: Invoke) -> None:
    every = invoke("GET", f"/admin/scenarios/{SCENARIO}/report")
    assert every.status == 200 and every.headers["content-type"].startswith("application/json")
    report = every.json
    assert report["version"] is None and report["versions"] == [1, 2]
    assert report["treatment"]["enrolled"] == 10 and report["goal"] == "Order Completed within 30d"
    assert report["lift"]["absolute"] == pytest.approx(0.1)
    assert report["variants"][0]["variant"] == "coupon"
    one = invoke("GET", f"/admin/scenarios/{SCENARIO}/report?version=1").json
    assert one["version"] == 1 and one["treatment"]["enrolled"] == 9
    assert one["steps"][0]["step_id"] == "ask-taste" and one["steps"][0]["type"] == "send"


def test_the_report_as_html(invoke: Invoke) -> None:
    answer = invoke("GET", f"/admin/scenarios/{SCENARIO}/report?format=html")
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/html")
    assert "<svg" in answer.text and "ask-taste" in answer.text


def test_unknown_scenarios_versions_and_paths_get_json_errors(invoke: Invoke) -> None:
    unknown = invoke("GET", "/admin/scenarios/no-such/report")
    assert unknown.status == 404 and unknown.json["error"] == "scenario_not_found"
    assert unknown.json["success"] is False and unknown.json["field"] == "id"
    assert invoke("GET", f"/admin/scenarios/{SCENARIO}/report?version=9").status == 404
    # "²" is a digit to str.isdigit, and int() refuses 4,300 digits or more: both were a 500.
    for version in ("two", "0", "%C2%B2", "9" * 5000):
        bad = invoke("GET", f"/admin/scenarios/{SCENARIO}/report?version={version}")
        assert bad.status == 400 and bad.json["field"] == "version", version
    nothing = invoke("GET", "/admin/nothing")
    assert (nothing.json["error"], nothing.json["field"]) == ("not_found", "path")


def test_erasing_a_customer_then_again(
    invoke: Invoke, seeded: dict[str, str], stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    customer = seeded["customer"]
    first = invoke("DELETE", f"/admin/customers/{customer}")
    assert first.status == 200
    assert first.json["erased"]["profiles"] == 2 and first.json["erased"]["events"] == 3
    assert first.json["erased"]["identities"] == 2
    assert stores.customers.profile(customer) is None
    [audit] = [r for r in caplog.records if r.getMessage() == "customer erased"]
    # The audit line names the signer and internal ids, nothing personal.
    assert audit.__dict__["caller"] == OPERATOR
    assert audit.__dict__["customer_ids"] == sorted(first.json["customer_ids"])
    again = invoke("DELETE", f"/admin/customers/{customer}")
    assert again.status == 404 and again.json["error"] == "customer_not_found"
    unknown = invoke("DELETE", "/admin/customers/cus_unknown")
    assert (unknown.status, unknown.json["field"]) == (404, "id")


# -- the CLI against the handler ---------------------------------------------------------------------


@pytest.fixture
def api(invoke: Invoke, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local HTTP server passing each request to the handler (one at a time, as moto needs)."""
    # The CLI's own output is what these tests read: the handler's metrics stay out of stdout.
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            with lock:
                answer = invoke(self.command, self.path)
            body = answer.text.encode("utf-8")
            self.send_response(answer.status)
            self.send_header("Content-Type", answer.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_cems_report_prints_a_table_and_writes_html(
    api: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    html = tmp_path / "report.html"
    assert cems_main(["report", SCENARIO, "--url", api, "--html", str(html)]) == 0
    out = capsys.readouterr().out
    assert "配信群 Treatment" in out and "コントロール群 Holdout" in out and "ask-taste" in out
    assert "+10.0 pt" in out  # 1/10 converted against 0/1
    # Columns line up: every row of the group table is as wide as its rule, in display columns.
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("----"))
    widths = {report_cli._width(line) for line in lines[rule - 1 : rule + 3]}
    assert max(widths) == report_cli._width(lines[rule])
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page
    # Self-contained: nothing is fetched from anywhere.
    assert "<script" not in page and "<link" not in page and "src=" not in page and "@import" not in page


def test_cems_report_json_and_version(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cems_main(["report", SCENARIO, "--url", api, "--json", "--version", "2"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["version"] == 2 and document["treatment"]["enrolled"] == 1


def test_cems_report_of_an_unknown_scenario(api: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cems_main(["report", "no-such", "--url", api]) == 1
    assert "404 scenario_not_found" in capsys.readouterr().err


def test_cems_report_when_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    assert cems_main(["report", SCENARIO, "--url", "http://127.0.0.1:9"]) == 2
    assert "cannot reach" in capsys.readouterr().err


def test_cems_customer_erase(
    api: str, seeded: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    customer = seeded["customer"]
    # At a terminal it asks; "n" erases nothing.
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert cems_main(["customer", "erase", customer, "--url", api]) == 1
    assert "not erased" in capsys.readouterr().err
    assert cems_main(["customer", "erase", customer, "--url", api, "--yes"]) == 0
    out = capsys.readouterr().out
    assert customer in out and "profiles 2" in out
    assert cems_main(["customer", "erase", customer, "--url", api, "--yes"]) == 1
    assert "customer_not_found" in capsys.readouterr().err


def test_a_stage_request_is_signed_for_execute_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "samconfig.toml"
    config.write_text('[dev.deploy.parameters]\nstack_name = "cems-dev"\nregion = "ap-northeast-1"\n')
    monkeypatch.setattr(
        report_cli,
        "stack_outputs",
        lambda name, region: {"AdminApiUrl": "https://abc.execute-api.ap-northeast-1.amazonaws.com/admin"},
    )
    target = report_cli.admin_target("dev", config, None)
    assert target == report_cli.AdminTarget(
        "https://abc.execute-api.ap-northeast-1.amazonaws.com", "ap-northeast-1"
    )
    headers = report_cli.sign(
        "GET",
        target.base_url + "/admin/scenarios/x/report?version=1",
        {"Accept": "application/json"},
        "ap-northeast-1",
        Credentials("AKIDEXAMPLE", "secret-example"),
    )
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/ap-northeast-1/execute-api/aws4_request" in headers["Authorization"]
    assert "X-Amz-Date" in headers
    # The command sends those signed headers.
    seen: dict[str, Any] = {}

    def send(method: str, url: str, headers: dict[str, str]) -> report_cli.Answer:
        seen.update(method=method, url=url, headers=headers)
        return report_cli.Answer(404, b'{"success": false, "error": "customer_not_found", "message": "no"}')

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-example")
    args = argparse_namespace(stage="dev", config=str(config), url=None, customer_id="cus_1", yes=True)
    assert report_cli.erase_command(args, send) == 1
    assert seen["method"] == "DELETE" and seen["url"].endswith("/admin/customers/cus_1")
    assert seen["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256")


def argparse_namespace(**values: Any) -> Any:
    import argparse

    return argparse.Namespace(**values)

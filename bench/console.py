"""Issue 12: the console's page weight, and the server time of its pages as a ratio to an empty handler.

Page weight: the bytes a browser loads for /console (the page, its script and its styles; nothing
else is fetched), raw and gzip-compressed (what a CDN or API Gateway with compression would send;
the HTTP API itself sends them as they are).

Server time: the console function's handler invoked in this process on moto (tables from
template.yaml, the operators' pool in moto's Cognito, one scenario with counts, one customer),
alternating with an empty Powertools handler (one route answering `{}`) in the same rounds; each
ratio is the median of per-round ratios, so the machine's load cancels out. It is the time inside
the function after init: API Gateway, the JWT authorizer and the network are not in it.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from cems.adapters import aws
from cems.console.access import Role
from cems.console.pages import CONSOLE_ASSETS
from moto import mock_aws

from bench.aws_requests import fake_aws_env
from bench.http_api import http_api_event
from bench.report import Figure, Measured
from bench.tables import REGION, ROOT, create_tables

ROUNDS = 300
APP = ROOT / "functions" / "console" / "app.py"
SCENARIO_FILE = ROOT / "examples" / "scenarios" / "post_purchase_tea.json"


class _Context:
    function_name = "ConsoleFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:ap-northeast-1:123456789012:function:ConsoleFunction"
    aws_request_id = "bench"


def _event(target: str, claims: dict[str, str] | None = None) -> dict[str, Any]:
    """A GET from inside the console's address ranges, through the JWT authorizer when `claims` given."""
    return http_api_event(
        "GET", target, source_ip="203.0.113.10", headers={"accept": "*/*"}, jwt_claims=claims
    )


def _empty_handler() -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    app = APIGatewayHttpResolver()

    @app.get("/empty")
    def empty() -> Response[str]:
        return Response(200, "application/json", "{}")

    return app.resolve


def page_weight() -> tuple[int, int]:
    """(raw bytes, gzip bytes) of what /console loads."""
    texts = [text.encode("utf-8") for _, text in CONSOLE_ASSETS.values()]
    return sum(map(len, texts)), sum(len(gzip.compress(t, 9)) for t in texts)


def measure(rounds: int = ROUNDS) -> Measured:
    raw, zipped = page_weight()
    figures = [
        Figure("console: page weight, /console with its script and styles", raw / 1024, "KB", digits=1),
        Figure("console: page weight, gzip", zipped / 1024, "KB", digits=1),
    ]
    with (
        fake_aws_env(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_LOG_LEVEL": "WARNING",
            }
        ),
        mock_aws(),
    ):
        handler, customer = _console(rounds)
        empty = _empty_handler()
        scenario = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))["id"]
        analyst = {"cognito:username": "bench-analyst", "cognito:groups": "[analyst]"}
        pages = {
            "GET /console (the page)": _event("/console"),
            "GET /admin/console/me": _event("/admin/console/me", analyst),
            "GET /admin/console/scenarios": _event("/admin/console/scenarios", analyst),
            "GET /admin/console/scenarios/{id}/diagram": _event(
                f"/admin/console/scenarios/{scenario}/diagram", analyst
            ),
            "GET /admin/console/customers/{id} (masked)": _event(
                f"/admin/console/customers/{customer}", analyst
            ),
        }
        times: dict[str, list[float]] = {name: [] for name in pages}
        bare: list[float] = []
        for n in range(rounds + 1):
            t0 = time.perf_counter()
            empty(_event("/empty"), _Context())
            base = time.perf_counter() - t0
            for name, event in pages.items():
                t0 = time.perf_counter()
                answer = handler(event, _Context())
                elapsed = time.perf_counter() - t0
                assert answer["statusCode"] == 200, (name, answer)
                if n > 0:  # the first round builds caches (clients, models)
                    times[name].append(elapsed / base)
            if n > 0:
                bare.append(base)
    figures.append(
        Figure("console: empty Powertools handler (median)", statistics.median(bare) * 1e6, "µs", digits=0)
    )
    for name, ratios in times.items():
        figures.append(Figure(f"console: server time {name} / empty handler", statistics.median(ratios)))
    notes = [
        f"console: {rounds} rounds in process on moto, each page alternating with an empty Powertools "
        "handler; ratios are medians of per-round ratios; audited pages (the diagram with counts, the "
        "customer) write their audit entry each time, as they do on a stage; the pages that read "
        "DynamoDB spend nearly all their time in moto's in-process handling of those requests (about "
        "a millisecond each here), so their ratios say more about moto than about the console code"
    ]
    return Measured(figures, notes)


def _console(rounds: int) -> tuple[Callable[[dict[str, Any], Any], dict[str, Any]], str]:
    """The console function's handler over one scenario with counts and one customer; the customer id."""
    import os

    from cems.adapters.cognito import CognitoOperatorAccounts
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.identity import IdentityKey, IdentityKind
    from cems.ingest import Ingestor
    from cems.models import SegmentMessage, Site, Trust
    from cems.reports.counters import Metric, ReportCell
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource
    from cems.settings import Settings
    from cems.wiring import customer_stores

    dynamodb = boto3.client("dynamodb", region_name=REGION)
    create_tables(dynamodb)
    cognito = boto3.client("cognito-idp", region_name=REGION)
    pool = cognito.create_user_pool(PoolName="cems-bench-operators")["UserPool"]["Id"]
    client = cognito.create_user_pool_client(UserPoolId=pool, ClientName="cems-console")["UserPoolClient"]
    for role in Role:
        cognito.create_group(UserPoolId=pool, GroupName=role.value)
    CognitoOperatorAccounts(cognito, pool, client["ClientId"]).add(
        "bench-analyst", Role.ANALYST, "Bench-Pass-2026"
    )
    os.environ.update({"OPERATOR_POOL_ID": pool, "OPERATOR_POOL_CLIENT_ID": client["ClientId"]})

    document = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))
    ScenarioStore("JourneysTable", dynamodb).put_version(
        Scenario.model_validate(document), document, ScenarioSource("k", "e1")
    )
    counters = ReportCounters("JourneysTable", dynamodb)
    counters.add(ReportCell(document["id"], 1), Metric.ENROLLED)
    counters.add(ReportCell(document["id"], 1, document["steps"][0]["id"]), Metric.SENT)
    stores = customer_stores(dynamodb, Settings.from_environ())
    now = datetime.now(UTC)
    # The shop's server key (Trust.SERVER): contact traits count only from it.
    site = Site(
        write_key="wk_bench", site_id="bench", name="bench", origins=["*"], created_at=now, trust=Trust.SERVER
    )
    traits = {"name": "山田花子", "email": "hanako@example.jp", "phone": "090-1234-5678"}
    message = SegmentMessage.model_validate(
        {"type": "identify", "messageId": "b1", "userId": "u1", "traits": traits}
    )
    Ingestor(stores.ingest).ingest(site, [message], now)
    customer = stores.customers.customer_for(IdentityKey(IdentityKind.USER, "u1")) or ""

    aws.dynamodb.cache_clear()  # the module builds its client at import: one inside moto
    name = "cems_console_app_bench"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    handler: Callable[[dict[str, Any], Any], dict[str, Any]] = module.lambda_handler
    return handler, customer

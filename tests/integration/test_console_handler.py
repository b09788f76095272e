"""The console function's handler on moto (Cognito and the audit table): the address ranges from its
environment refuse an outside address with 403 on every route, recorded; an inside one signs in and
reads its roles; the page ships its own assets only (issue 12)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems.adapters import aws
from cems.adapters.cognito import CognitoOperatorAccounts
from cems.adapters.dynamodb.audit import DynamoAuditStore
from cems.audit import AuditLog
from cems.console.access import Role

from tests.lambda_context import FakeContext

APP = Path(__file__).parents[2] / "functions" / "console" / "app.py"
PASSWORD = "Console-Test-2026"
INSIDE, OUTSIDE = "203.0.113.10", "198.51.100.20"

Call = Callable[..., tuple[int, dict[str, str], Any]]


def http_event(
    method: str, path: str, source_ip: str, body: Any = None, claims: Any = None
) -> dict[str, Any]:
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "requestContext": {
            "http": {"method": method, "path": path, "sourceIp": source_ip, "protocol": "HTTP/1.1"},
            "requestId": "test",
            "stage": "$default",
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }
    if claims is not None:
        event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
    return event


@pytest.fixture
def call(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Call:
    cognito = boto3.client("cognito-idp", region_name="ap-northeast-1")
    pool = cognito.create_user_pool(PoolName="cems-dev-operators")["UserPool"]["Id"]
    client = cognito.create_user_pool_client(
        UserPoolId=pool, ClientName="cems-console", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    for role in Role:
        cognito.create_group(UserPoolId=pool, GroupName=role.value)
    CognitoOperatorAccounts(cognito, pool, client).add("keiko", Role.SCENARIO_DESIGNER, PASSWORD)
    for name, value in {
        "OPERATOR_POOL_ID": pool,
        "OPERATOR_POOL_CLIENT_ID": client,
        "OPERATOR_SOURCE_CIDRS": "203.0.113.0/24",
        "POWERTOOLS_SERVICE_NAME": "cems",
        "POWERTOOLS_METRICS_NAMESPACE": "CEMS",
        "POWERTOOLS_METRICS_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    aws.dynamodb.cache_clear()  # the module builds its client at import; an old one could predate moto
    name = "cems_console_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    def invoke(method: str, path: str, source_ip: str, body: Any = None, claims: Any = None) -> Any:
        response = module.lambda_handler(
            http_event(method, path, source_ip, body, claims), FakeContext("ConsoleFunction")
        )
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        text = response.get("body") or ""
        return (
            response["statusCode"],
            headers,
            json.loads(text) if "json" in headers.get("content-type", "") else text,
        )

    return invoke


def audit(dynamodb: Any) -> list[tuple[str, str, str]]:
    since = datetime.now(UTC) - timedelta(hours=1)
    page = AuditLog(DynamoAuditStore("AuditTable", dynamodb)).entries(since, limit=50)
    return sorted((e.actor, e.action.value, e.source_ip) for e in page.entries)


def test_an_inside_address_signs_in_and_reads_its_roles(call: Call, dynamodb: Any) -> None:
    status, headers, body = call(
        "POST", "/admin/console/sign-in", INSIDE, {"username": "keiko", "password": PASSWORD}
    )
    assert status == 200 and body["idToken"] and headers["cache-control"] == "no-store"
    claims = {"cognito:username": "keiko", "cognito:groups": "[scenario_designer]"}
    status, _, body = call("GET", "/admin/console/me", INSIDE, claims=claims)
    assert status == 200
    assert body["roles"] == [{"role": "scenario_designer", "label": "シナリオ設定者 / Scenario designer"}]
    assert "scenarios_write" in body["permissions"] and "customers_unmask" not in body["permissions"]
    assert audit(dynamodb) == [("keiko", "sign_in", INSIDE)]


def test_an_outside_address_is_refused_on_every_route_and_recorded(call: Call, dynamodb: Any) -> None:
    status, _, body = call(
        "POST", "/admin/console/sign-in", OUTSIDE, {"username": "keiko", "password": PASSWORD}
    )
    assert (status, body["error"]) == (403, "ip_not_allowed")
    assert "idToken" not in body
    claims = {"cognito:username": "keiko", "cognito:groups": "[admin]"}
    status, _, body = call("GET", "/admin/console/me", OUTSIDE, claims=claims)
    assert (status, body["error"]) == (403, "ip_not_allowed")
    assert set(body) == {"success", "error", "code", "message", "field"}  # no data
    assert audit(dynamodb) == [("keiko", "ip_refused", OUTSIDE), ("keiko", "ip_refused", OUTSIDE)]


def test_without_the_authorizers_claims_the_api_is_401(call: Call) -> None:
    status, _, body = call("GET", "/admin/console/me", INSIDE)
    assert (status, body["error"]) == (401, "unauthorized")


def test_the_page_and_its_assets_are_served_with_a_strict_policy_and_nothing_else_is(call: Call) -> None:
    status, headers, _ = call("GET", "/console", OUTSIDE)  # the page holds no data: any address
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    for asset, kind in (("console.js", "application/javascript"), ("console.css", "text/css")):
        status, headers, _ = call("GET", f"/console/{asset}", INSIDE)
        assert status == 200 and headers["content-type"].startswith(kind)
    for missing in ("app.py", "..%2Fapp.py", "index.htm", "static"):
        status, _, body = call("GET", f"/console/{missing}", INSIDE)
        assert (status, body["error"]) == (404, "not_found")

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

from bench.http_api import http_api_event
from tests.lambda_context import FakeContext

APP = Path(__file__).parents[2] / "functions" / "console" / "app.py"
BUCKET = "cems-test-scenarios"
PASSWORD = "Console-Test-2026"
INSIDE, OUTSIDE = "203.0.113.10", "198.51.100.20"

Call = Callable[..., tuple[int, dict[str, str], Any]]


@pytest.fixture
def call(dynamodb: Any, monkeypatch: pytest.MonkeyPatch) -> Call:
    s3 = boto3.client("s3", region_name="ap-northeast-1")
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-northeast-1"})
    cognito = boto3.client("cognito-idp", region_name="ap-northeast-1")
    pool = cognito.create_user_pool(PoolName="cems-dev-operators")["UserPool"]["Id"]
    client = cognito.create_user_pool_client(
        UserPoolId=pool, ClientName="cems-console", ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    for role in Role:
        cognito.create_group(UserPoolId=pool, GroupName=role.value)
    CognitoOperatorAccounts(cognito, pool, client).add("keiko", Role.SCENARIO_DESIGNER, PASSWORD)
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    for name, value in {
        "LINE_SEND_QUEUE_URL": sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"],
        "EMAIL_SEND_QUEUE_URL": sqs.create_queue(QueueName="EmailSendQueue")["QueueUrl"],
        "WEB_SEND_QUEUE_URL": sqs.create_queue(QueueName="WebSendQueue")["QueueUrl"],
        "OPERATOR_POOL_ID": pool,
        "OPERATOR_POOL_CLIENT_ID": client,
        "OPERATOR_SOURCE_CIDRS": "203.0.113.0/24",
        "SCENARIO_BUCKET": BUCKET,
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
        event = http_api_event(
            method,
            path,
            source_ip=source_ip,
            headers={"content-type": "application/json"},
            body=None if body is None else json.dumps(body),
            jwt_claims=claims,
        )
        response = module.lambda_handler(event, FakeContext("ConsoleFunction"))
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


# -- what each role may do, route by route ----------------------------------------------------------

EMAIL = "hanako@example.jp"


@pytest.fixture
def seeded_call(call: Call, dynamodb: Any) -> tuple[Call, str]:
    """`call` over a stored scenario with counts and a customer with a name, an address and a phone."""
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.identity import IdentityKey, IdentityKind
    from cems.ingest import Ingestor
    from cems.models import SegmentMessage
    from cems.reports.counters import Metric, ReportCell
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource
    from cems.settings import Settings
    from cems.wiring import customer_stores

    from tests.integration.test_admin_handler import SCENARIO, SCENARIO_FILE, SITE

    document = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))
    ScenarioStore("JourneysTable", dynamodb).put_version(
        Scenario.model_validate(document), document, ScenarioSource("k", "e1")
    )
    counters = ReportCounters("JourneysTable", dynamodb)
    counters.add(ReportCell(SCENARIO, 1), Metric.ENROLLED)
    counters.add(ReportCell(SCENARIO, 1, document["steps"][0]["id"]), Metric.SENT)
    for metric in (Metric.ENTERED, Metric.ENTERED, Metric.WAIT_BEGUN, Metric.WAIT_BEGUN, Metric.WAIT_ENDED):
        counters.add(ReportCell(SCENARIO, 1, document["steps"][0]["id"]), metric)
    stores = customer_stores(dynamodb, Settings.from_environ())
    traits = {"name": "山田花子", "email": EMAIL, "phone": "090-1234-5678"}
    message = SegmentMessage.model_validate(
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": traits}
    )
    Ingestor(stores.ingest).ingest(SITE, [message], datetime.now(UTC))
    customer = stores.customers.customer_for(IdentityKey(IdentityKind.USER, "u1"))
    assert customer is not None
    return call, customer


ROLES = [role.value for role in Role]
ALLOWED = {  # request -> the roles it answers 200 for; every other role gets 403
    "GET /admin/console/scenarios": set(ROLES),
    "GET /admin/console/scenarios/{scenario}/diagram": set(ROLES),
    "GET /admin/console/scenarios/{scenario}/diagram?counts=false": set(ROLES),
    "GET /admin/console/scenarios/{scenario}/compare?left=1&right=1": set(ROLES),
    "GET /admin/console/scenarios/{scenario}/report": {"admin", "scenario_designer", "analyst"},
    "GET /admin/console/scenarios/{scenario}/report?version=1": {"admin", "scenario_designer", "analyst"},
    "GET /admin/console/customers?email=hanako%40example.jp": {"admin", "scenario_designer", "analyst"},
    "GET /admin/console/customers/{customer}": {"admin", "scenario_designer", "analyst"},
    "GET /admin/console/customers/{customer}?unmasked=true": {"admin"},
    "GET /admin/console/customers/{customer}/export": {"admin"},
    "GET /admin/console/audit": {"admin"},
    # Preview and test send: the content's roles, never the analyst's (test_send).
    "POST /admin/console/scenarios/{scenario}/preview": {"admin", "scenario_designer", "content_writer"},
    "POST /admin/console/scenarios/{scenario}/test-send": {"admin", "scenario_designer", "content_writer"},
}
STAFF_LINE = "U" + "5a" * 16
STAFF_MAIL = "staff@midori-tea.example.jp"
BODIES = {  # the requests of ALLOWED that take a body
    "POST /admin/console/scenarios/{scenario}/preview": {"step": "refill-reminder"},
    "POST /admin/console/scenarios/{scenario}/test-send": {"step": "ask-taste", "to": f"line:{STAFF_LINE}"},
}
ANSWERED = {"POST /admin/console/scenarios/{scenario}/test-send": 202}  # else 200 when allowed
# Requests whose path has these leave one entry, allowed or refused (a preview is none: nothing
# leaves CEMS and no customer's data is read).
AUDITED = {"report", "customers", "test-send"}


@pytest.mark.parametrize("role", ROLES)
def test_each_role_gets_what_its_permissions_allow_and_403_without_data_otherwise(
    seeded_call: tuple[Call, str], dynamodb: Any, role: str
) -> None:
    from tests.integration.test_admin_handler import SCENARIO

    call, customer = seeded_call
    claims = {"cognito:username": f"op-{role.replace('_', '-')}", "cognito:groups": f"[{role}]"}
    for request, roles in ALLOWED.items():
        method, target = request.split(" ", 1)
        target = target.format(scenario=SCENARIO, customer=customer)
        before = len(audit(dynamodb))
        status, _, body = call(method, target, INSIDE, BODIES.get(request), claims=claims)
        expected = ANSWERED.get(request, 200) if role in roles else 403
        assert status == expected, (role, request, body)
        if status == 403:
            assert body["error"] == "forbidden" and set(body) == {
                "success",
                "error",
                "code",
                "message",
                "field",
            }
        if status == 200 and "/report" in target:
            # The report comes with its charts and its diagram with counts, in the one answer (so
            # one look is one entry).
            assert body["charts"]["lift"].startswith("<svg") and body["steps"], (role, request)
            assert "送 1" in body["diagram"], (role, request)
        written = len(audit(dynamodb)) - before
        # A diagram with counts (or two side by side) is a view of results: one entry for those who
        # may see them; the drawing alone is none.
        sees_results = role in ALLOWED["GET /admin/console/scenarios/{scenario}/report"]
        with_counts = ("/diagram" in target and "counts=false" not in target) or "/compare" in target
        audited = any(part in target for part in AUDITED) or (with_counts and sees_results)
        assert written == (1 if audited else 0), (role, request)
    # What a masked view shows, and what only the admin's unmasked view does.
    status, _, masked = call("GET", f"/admin/console/customers/{customer}", INSIDE, claims=claims)
    if status == 200:
        shown = json.dumps(masked, ensure_ascii=False)
        assert EMAIL not in shown and "山田花子" not in shown and "090-1234-5678" not in shown
    logged = json.dumps(audit(dynamodb), ensure_ascii=False)
    assert EMAIL not in logged and "山田" not in logged
    assert STAFF_LINE not in json.dumps(_audit_details(dynamodb), ensure_ascii=False)


def test_only_the_admin_erases_and_each_attempt_is_one_entry(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    call, customer = seeded_call
    analyst = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
    admin = {"cognito:username": "op-admin", "cognito:groups": "[admin]"}
    status, _, _ = call("DELETE", f"/admin/console/customers/{customer}", INSIDE, claims=analyst)
    assert status == 403
    status, _, body = call("DELETE", f"/admin/console/customers/{customer}", INSIDE, claims=admin)
    assert status == 200 and body["success"] is True
    status, _, body = call("DELETE", f"/admin/console/customers/{customer}", INSIDE, claims=admin)
    assert (status, body["error"]) == (404, "customer_not_found")
    erasures = [(actor, action) for actor, action, _ in audit(dynamodb) if action == "customer_erase"]
    assert sorted(erasures) == [("op-admin", "customer_erase")] * 2 + [("op-analyst", "customer_erase")]


def test_the_diagram_is_svg_with_counts_for_those_who_see_results(seeded_call: tuple[Call, str]) -> None:
    from tests.integration.test_admin_handler import SCENARIO

    call, _ = seeded_call
    analyst = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    path = f"/admin/console/scenarios/{SCENARIO}/diagram"
    status, headers, with_counts = call("GET", path, INSIDE, claims=analyst)
    assert status == 200 and headers["content-type"].startswith("image/svg+xml")
    status, _, without = call("GET", path, INSIDE, claims=writer)
    assert status == 200
    assert "送 1" in with_counts and "送 1" not in without
    # Two journeys entered the first step, one waits there now (two waits begun, one ended).
    assert "入 2 · 待 1 · 送 1" in with_counts
    status, _, body = call("GET", "/admin/console/scenarios/nope/diagram", INSIDE, claims=analyst)
    assert (status, body["error"]) == (404, "scenario_not_found")


def test_the_report_comes_with_its_charts_for_those_who_see_results_and_one_look_is_one_entry(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    from cems.adapters.dynamodb.report_counters import ReportCounters
    from cems.reports.counters import Metric, ReportCell

    from tests.integration.test_admin_handler import SCENARIO, SCENARIO_FILE

    call, _ = seeded_call
    step = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))["steps"][0]["id"]
    # LINE sends on a day of their own: their delivery cannot be measured, which the charts must say.
    counters = ReportCounters("JourneysTable", dynamodb)
    line_day = datetime.now(UTC) - timedelta(days=3)
    for _ in range(4):
        counters.add(ReportCell(SCENARIO, 1, step, channel="line"), Metric.SENT, at=line_day)
    analyst = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
    designer = {"cognito:username": "op-designer", "cognito:groups": "[scenario_designer]"}
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    path = f"/admin/console/scenarios/{SCENARIO}/report"

    status, headers, body = call("GET", path, INSIDE, claims=analyst)
    assert status == 200 and headers["cache-control"] == "no-store"
    charts = body["charts"]
    assert set(charts) == {"lift", "variants", "steps", "channels", "conversions", "days"}
    # One funnel per step row, in the report's order; each chart an SVG document of its own.
    assert [(c["step_id"], c["channel"]) for c in charts["steps"]] == [
        (r["step_id"], r["channel"]) for r in body["steps"]
    ]
    for svg in [charts["lift"], charts["days"], *(c["svg"] for c in charts["steps"] + charts["channels"])]:
        assert svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"') and svg.endswith("</svg>")
    (line,) = [c for c in charts["channels"] if c["channel"] == "line"]
    assert line["label"] == "LINE" and line["svg"].count("計測なし / not measured<title>") == 2
    assert "到達 Delivered: 0" not in line["svg"] and "開封 Opened: 0" not in line["svg"]
    days = [d for d in body["days"] if d["day"] is not None]
    assert len(days) >= 3 and days[0]["delivered"] is None and days[0]["sent"] == 4
    assert charts["days"].count('class="bar"') >= 3 and f"{days[0]['day']} 送信 Sent: 4" in charts["days"]
    assert charts["days"].count('class="not-measured"') == 1  # that day's deliveries, not a bar of 0

    status, _, body = call("GET", path + "?version=1", INSIDE, claims=designer)
    assert status == 200 and body["version"] == 1 and body["charts"]["steps"]

    status, _, body = call("GET", path, INSIDE, claims=writer)
    assert (status, body["error"]) == (403, "forbidden")
    assert "charts" not in body and "<svg" not in json.dumps(body)

    status, _, body = call("GET", "/admin/console/scenarios/nope/report", INSIDE, claims=analyst)
    assert (status, body["error"]) == (404, "scenario_not_found") and "charts" not in body

    views = sorted((a, o) for a, action, o in _audit_outcomes(dynamodb) if action == "report_view")
    assert views == [
        ("op-analyst", "allowed"),
        ("op-analyst", "failed"),
        ("op-designer", "allowed"),
        ("op-writer", "refused"),
    ]


def test_an_audience_count_is_for_roles_that_may_count_and_each_attempt_is_one_entry(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    from tests.integration.test_admin_handler import SCENARIO_FILE

    call, _ = seeded_call
    document = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))
    analyst = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    status, _, body = call("POST", "/admin/console/audience", INSIDE, document, claims=analyst)
    assert status == 200 and body["scenario_id"] == document["id"] and body["complete"] is True
    status, _, body = call("POST", "/admin/console/audience", INSIDE, document, claims=writer)
    assert (status, body["error"]) == (403, "forbidden")
    status, _, body = call("POST", "/admin/console/audience", INSIDE, {"id": "x"}, claims=analyst)
    assert (status, body["error"]) == (400, "invalid_scenario") and body["problems"]
    counted = sorted((a, o) for a, action, o in _audit_outcomes(dynamodb) if action == "audience_count")
    assert counted == [("op-analyst", "allowed"), ("op-analyst", "failed"), ("op-writer", "refused")]


def _audit_outcomes(dynamodb: Any) -> list[tuple[str, str, str]]:
    since = datetime.now(UTC) - timedelta(hours=1)
    page = AuditLog(DynamoAuditStore("AuditTable", dynamodb)).entries(since, limit=50)
    return [(e.actor, e.action.value, e.outcome.value) for e in page.entries]


def test_the_last_upload_report_is_shown_with_its_errors_at_their_paths(call: Call) -> None:
    from cems.adapters.s3 import ScenarioFiles
    from cems.scenario.validation import validate_text

    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    status, _, body = call(
        "GET", "/admin/console/scenarios/line-welcome/upload-report", INSIDE, claims=writer
    )
    assert (status, body["error"]) == (404, "upload_report_not_found")
    report = validate_text('{"id": "line-welcome", "steps": 3}', "scenarios/line-welcome.json")
    document = {"valid": report.valid, "errors": [e.to_dict() for e in report.errors]}
    ScenarioFiles(boto3.client("s3", region_name="ap-northeast-1")).write_report(
        BUCKET, "line-welcome", document, report.to_text()
    )
    status, _, body = call(
        "GET", "/admin/console/scenarios/line-welcome/upload-report", INSIDE, claims=writer
    )
    assert status == 200 and body["valid"] is False
    assert any(error["path"] == "steps" for error in body["errors"]), body["errors"]


def test_versions_are_listed_for_a_side_by_side_comparison(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource

    from tests.integration.test_admin_handler import SCENARIO, SCENARIO_FILE

    call, _ = seeded_call
    document = json.loads(SCENARIO_FILE.read_text(encoding="utf-8"))
    document["priority"] = 7
    ScenarioStore("JourneysTable", dynamodb).put_version(
        Scenario.model_validate(document), document, ScenarioSource("k", "e2")
    )
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    status, _, body = call("GET", f"/admin/console/scenarios/{SCENARIO}/versions", INSIDE, claims=writer)
    assert status == 200 and body["active_version"] == 2 and body["state"] == "active"
    assert [(v["version"], v["priority"]) for v in body["versions"]][-1] == (2, 7)
    # Each version's send steps, what the page's preview and test send choose from.
    sends = body["versions"][-1]["send_steps"]
    assert sends[0] == {"id": "ask-taste", "name": sends[0]["name"], "channel": "line"}
    assert ("refill-reminder", "line_or_email") in [(s["id"], s["channel"]) for s in sends]
    assert "wait-day-3" not in [s["id"] for s in sends]
    for version in ("1", "2"):
        target = f"/admin/console/scenarios/{SCENARIO}/diagram?version={version}"
        status, headers, _ = call("GET", target, INSIDE, claims=writer)
        assert status == 200 and headers["content-type"].startswith("image/svg+xml")
    # Side by side, each version with its own counts (version 1 sent one, version 2 nothing yet).
    analyst = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
    target = f"/admin/console/scenarios/{SCENARIO}/compare?left=1&right=2"
    status, _, body = call("GET", target, INSIDE, claims=analyst)
    assert status == 200 and "送 1" in body["left"] and "送 1" not in body["right"]
    status, _, body = call("GET", target, INSIDE, claims=writer)
    assert status == 200 and "送 " not in body["left"]  # no counts for a content writer
    status, _, body = call("GET", target.replace("right=2", "right=9"), INSIDE, claims=analyst)
    assert (status, body["error"]) == (404, "scenario_not_found")
    status, _, body = call("GET", "/admin/console/scenarios/nope/versions", INSIDE, claims=writer)
    assert (status, body["error"]) == (404, "scenario_not_found")


# -- previews and test sends --------------------------------------------------------------------------


def _audit_details(dynamodb: Any) -> list[dict[str, Any]]:
    since = datetime.now(UTC) - timedelta(hours=1)
    page = AuditLog(DynamoAuditStore("AuditTable", dynamodb)).entries(since, limit=50)
    return [e.model_dump(mode="json") for e in page.entries]


def _drained(queue: str) -> list[str]:
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    bodies: list[str] = []
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            bodies.append(message["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
    return bodies


def test_a_preview_renders_each_channel_of_the_step_as_the_engine_does_and_sends_nothing(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    from tests.integration.test_admin_handler import SCENARIO

    call, _ = seeded_call
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    path = f"/admin/console/scenarios/{SCENARIO}/preview"
    profile = {"traits": {"last_name": "佐藤"}}
    status, _, body = call("POST", path, INSIDE, {"step": "refill-reminder", "profile": profile}, writer)
    assert status == 200, body
    assert body["version"] == 1 and body["step"]["id"] == "refill-reminder" and body["profile"] == "given"
    line, mail = body["channels"]  # line_or_email: both, LINE first
    assert line["channel"] == "line" and line["content"]["messages"][0]["type"]
    assert mail["channel"] == "email" and set(mail["content"]) == {"subject", "text", "html"}
    assert mail["preview"] == mail["content"]["subject"]
    assert "佐藤" in json.dumps(body, ensure_ascii=False)  # the given profile's trait, rendered
    # Nothing queued, nothing recorded.
    assert _drained("LineSendQueue") == [] and _drained("EmailSendQueue") == []
    assert [a for _, a, _ in audit(dynamodb)] == []


def test_a_test_send_queues_one_dispatch_for_the_recipient_only_and_is_one_entry_without_it(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    from cems.email.dispatch import EmailDispatch
    from cems.line.dispatch import LineDispatch

    from tests.integration.test_admin_handler import SCENARIO

    call, customer = seeded_call
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    path = f"/admin/console/scenarios/{SCENARIO}/test-send"
    status, headers, body = call(
        "POST", path, INSIDE, {"step": "ask-taste", "to": f"line:{STAFF_LINE}"}, writer
    )
    assert status == 202 and headers["cache-control"] == "no-store", body
    assert body["queued"] is True and body["queue"] == "LineSendQueue" and body["channel"] == "line"
    assert (
        body["key"].startswith(f"test#{SCENARIO}#ask-taste#") and "レポートに数えられません" in body["note"]
    )
    assert STAFF_LINE not in json.dumps(body)  # the answer does not repeat the recipient
    assert body["link"] is None  # looked at in LINE itself
    (queued,) = _drained("LineSendQueue")
    dispatch = LineDispatch.model_validate_json(queued)
    assert dispatch.test is True and dispatch.test_line_user_id == STAFF_LINE
    assert dispatch.idempotency_key == body["key"] and dispatch.messages
    assert customer not in queued  # the sample profile, never a stored customer
    assert _drained("EmailSendQueue") == []

    status, _, body = call(
        "POST", path, INSIDE, {"step": "refill-reminder", "to": f"email:{STAFF_MAIL}", "version": 1}, writer
    )
    assert status == 202 and body["queue"] == "EmailSendQueue", body
    (queued,) = _drained("EmailSendQueue")
    mail = EmailDispatch.model_validate_json(queued)
    assert mail.test is True and mail.to_address == STAFF_MAIL and mail.subject

    entries = [e for e in _audit_details(dynamodb) if e["action"] == "test_send"]
    assert sorted(
        (e["actor"], e["outcome"], e["target"], e["detail"]["step"], e["detail"]["channel"]) for e in entries
    ) == [
        ("op-writer", "allowed", SCENARIO, "ask-taste", "line"),
        ("op-writer", "allowed", SCENARIO, "refill-reminder", "email"),
    ]
    logged = json.dumps(entries)
    assert STAFF_LINE not in logged and STAFF_MAIL not in logged


def test_a_web_test_send_answers_the_preview_link_that_shows_it_on_the_shop_page(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    """Issue 13: an on-site message is looked at on the shop's page, through a one-off preview
    link; the console's answer gives it (a LINE or mail test send has none)."""
    from cems.adapters.dynamodb.journeys import ScenarioStore
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource

    call, _ = seeded_call
    example = APP.parents[2] / "examples" / "scenarios" / "cart_abandonment_web.json"
    document = json.loads(example.read_text("utf-8"))
    ScenarioStore("JourneysTable", dynamodb).put_version(
        Scenario.model_validate(document), document, ScenarioSource("k", "e-web")
    )
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    path = f"/admin/console/scenarios/{document['id']}/test-send"
    page = "https://shop.example.jp/cart"
    status, _, body = call("POST", path, INSIDE, {"step": "remind", "to": f"web:{page}"}, writer)
    assert status == 202 and body["channel"] == "web" and body["queue"] == "WebSendQueue", body
    assert body["link"].startswith(f"{page}#cems-preview=")
    assert len(_drained("WebSendQueue")) == 1


@pytest.mark.parametrize(
    ("request_body", "status", "error", "field"),
    [
        ({"step": "no-such-step", "to": f"line:{STAFF_LINE}"}, 400, "not_a_send_step", "step"),
        ({"step": "wait-day-3", "to": f"line:{STAFF_LINE}"}, 400, "not_a_send_step", "step"),
        ({"to": f"line:{STAFF_LINE}"}, 400, "step_required", "step"),
        ({"step": "ask-taste", "to": "line:U123"}, 400, "invalid_to", "to"),
        ({"step": "ask-taste", "to": "fax:0312345678"}, 400, "invalid_to", "to"),
        ({"step": "ask-taste"}, 400, "to_required", "to"),
        ({"step": "ask-taste", "to": f"email:{STAFF_MAIL}"}, 400, "wrong_channel", "to"),
        ({"step": "ask-taste", "to": f"line:{STAFF_LINE}", "profile": []}, 400, "invalid_profile", "profile"),
        (
            {"step": "ask-taste", "to": f"line:{STAFF_LINE}", "version": "x"},
            400,
            "invalid_version",
            "version",
        ),
        ({"step": "ask-taste", "to": f"line:{STAFF_LINE}", "version": 9}, 404, "scenario_not_found", "id"),
    ],
)
def test_a_bad_test_send_names_the_field_queues_nothing_and_is_one_failed_entry(
    seeded_call: tuple[Call, str],
    dynamodb: Any,
    request_body: dict[str, Any],
    status: int,
    error: str,
    field: str,
) -> None:
    from tests.integration.test_admin_handler import SCENARIO

    call, _ = seeded_call
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    answer, _, body = call(
        "POST", f"/admin/console/scenarios/{SCENARIO}/test-send", INSIDE, request_body, writer
    )
    assert (answer, body["error"], body["field"]) == (status, error, field), body
    assert STAFF_LINE not in json.dumps(body) and STAFF_MAIL not in json.dumps(body)
    assert _drained("LineSendQueue") == [] and _drained("EmailSendQueue") == []
    entries = [e for e in _audit_details(dynamodb) if e["action"] == "test_send"]
    assert [(e["actor"], e["outcome"]) for e in entries] == [("op-writer", "failed")]
    assert STAFF_LINE not in json.dumps(entries) and STAFF_MAIL not in json.dumps(entries)


def test_the_analyst_may_neither_preview_nor_test_send_and_a_refusal_is_one_entry(
    seeded_call: tuple[Call, str], dynamodb: Any
) -> None:
    from tests.integration.test_admin_handler import SCENARIO

    call, _ = seeded_call
    analyst = {"cognito:username": "op-analyst", "cognito:groups": "[analyst]"}
    for route, body in (
        ("preview", {"step": "ask-taste"}),
        ("test-send", {"step": "ask-taste", "to": f"line:{STAFF_LINE}"}),
    ):
        status, _, answer = call(
            "POST", f"/admin/console/scenarios/{SCENARIO}/{route}", INSIDE, body, analyst
        )
        assert (status, answer["error"], answer["field"]) == (403, "forbidden", "test_send")
        assert "channels" not in answer and "queued" not in answer
    assert _drained("LineSendQueue") == []
    entries = [e for e in _audit_details(dynamodb) if e["action"] == "test_send"]
    assert [(e["outcome"], e["target"], e["detail"]) for e in entries] == [
        ("refused", SCENARIO, {"step": "ask-taste"})
    ]
    # Unknown scenario for a role that may: 404 on both routes.
    writer = {"cognito:username": "op-writer", "cognito:groups": "[content_writer]"}
    status, _, answer = call("POST", "/admin/console/scenarios/nope/preview", INSIDE, {"step": "x"}, writer)
    assert (status, answer["error"]) == (404, "scenario_not_found")

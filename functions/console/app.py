"""console: the operators' console and its API.

  GET  /console, /console/{asset}     the page and its script and styles (public: they hold no data)
  POST /admin/console/sign-in         user name and password -> an ID token (the address ranges apply)
  GET  /admin/console/me              who the token names: roles and what they allow
  GET  /admin/console/scenarios       every scenario with its headline numbers (scenarios_view)
  GET  /admin/console/scenarios/{id}/diagram   the flowchart as SVG, counts for reports_view
                                               (?version=N; ?counts=false: the drawing alone)
  GET  /admin/console/scenarios/{id}/compare?left=N&right=M   two versions' diagrams (JSON)
  GET  /admin/console/scenarios/{id}/versions  its versions (uploaded, name, priority), the active one
  GET  /admin/console/scenarios/{id}/upload-report   the loader's report on the last upload
  GET  /admin/console/scenarios/{id}/report    the report, its charts and its diagram with counts
                                               as SVG (reports_view; ?version=N)
  POST /admin/console/scenarios/{id}/preview     a send step rendered per channel, nothing sent
                                               (test_send; {step, version?, profile?, event?})
  POST /admin/console/scenarios/{id}/test-send   a send step queued as a test for one staff
                                               recipient (test_send; {step, to, version?, profile?,
                                               event?}); one audit entry, never the recipient
  GET  /admin/console/customers?email=... | phone | line_user_id | user_id | anonymous_id  (masked)
  GET  /admin/console/customers/{id}  the customer, masked (?unmasked=true: customers_unmask)
  GET  /admin/console/customers/{id}/export    an APPI disclosure export (customers_export)
  DELETE /admin/console/customers/{id}         erase the person (customers_erase)
  POST /admin/console/audience       a scenario document's audience before sending (audience_count):
                                     200 with the counts, or 202 with a fanned-out run's first status
  GET  /admin/console/audience/{run} a fanned-out count's counts so far, `complete` when done
                                     (audience_count; not audited: the count was, when started)
  GET  /admin/console/audit           the audit log, newest first (?days=1-90, ?cursor; audit_view)

Every /admin/console/ route but sign-in sits behind API Gateway's JWT authorizer (OperatorJwt), so a
request reaches this function only with a verified token; the function then checks the source
address and the role a route needs (cems.console.access). The rules are in cems.console.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.api_requests import request_body, request_text
from cems.console.access import ROLE_LABELS
from cems.console.actions import Caller
from cems.console.pages import CONSOLE_ASSETS, SECURITY_HEADERS
from cems.errors import ClientError
from cems.logs import function_logger
from cems.responses import NOT_FOUND, error_response, json_response

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()

console = wiring.console()
actions = wiring.operator_actions()
NO_STORE = {"Cache-Control": "no-store"}


def _source_ip() -> str | None:
    ip = app.current_event.request_context.http.source_ip
    return ip if isinstance(ip, str) else None


def _claims() -> dict[str, Any]:
    authorizer = app.current_event.raw_event.get("requestContext", {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    return claims if isinstance(claims, dict) else {}


def _caller() -> Caller:
    """The signed-in operator (API Gateway verified the token) from an allowed address."""
    source_ip = _source_ip()
    return Caller(
        console.caller(_claims(), source_ip), source_ip, app.current_event.request_context.request_id
    )


def _query() -> dict[str, str]:
    return dict(app.current_event.query_string_parameters or {})


@app.get("/console")
def page() -> Response[str]:
    return _asset("index.html")


@app.get("/console/<asset>")
def asset(asset: str) -> Response[str]:
    return _asset(asset)


def _asset(name: str) -> Response[str]:
    found = CONSOLE_ASSETS.get(name)
    if found is None:
        raise NOT_FOUND
    content_type, text = found
    return Response(200, content_type, text, {**SECURITY_HEADERS, "Cache-Control": "no-cache"})


@app.post("/admin/console/sign-in")
def sign_in() -> Response[str]:
    signed_in = console.sign_in(request_body(app.current_event.raw_event), _source_ip())
    metrics.add_metric("ConsoleSignIns", MetricUnit.Count, 1)
    return json_response(
        200,
        {"idToken": signed_in.tokens.id_token, "expiresIn": signed_in.tokens.expires_in},
        {"Cache-Control": "no-store"},
    )


@app.get("/admin/console/me")
def me() -> Response[str]:
    operator = _caller().operator
    return json_response(
        200,
        {
            "name": operator.name,
            "roles": [{"role": r.value, "label": ROLE_LABELS[r]} for r in sorted(operator.roles)],
            "permissions": sorted(p.value for p in operator.permissions),
        },
        {"Cache-Control": "no-store"},
    )


@app.get("/admin/console/scenarios")
def scenarios() -> Response[str]:
    items = actions.scenarios(_caller())
    return json_response(200, {"scenarios": [i.model_dump(mode="json") for i in items]}, NO_STORE)


@app.get("/admin/console/scenarios/<scenario_id>/diagram")
def diagram(scenario_id: str) -> Response[str]:
    query = _query()
    counts = query.get("counts", "true") != "false"
    svg = actions.diagram(_caller(), scenario_id, query.get("version"), counts=counts)
    return Response(200, "image/svg+xml; charset=utf-8", svg, {**SECURITY_HEADERS, **NO_STORE})


@app.get("/admin/console/scenarios/<scenario_id>/compare")
def compare(scenario_id: str) -> Response[str]:
    query = _query()
    drawn = actions.compare(_caller(), scenario_id, query.get("left"), query.get("right"))
    return json_response(200, drawn, NO_STORE)


@app.get("/admin/console/scenarios/<scenario_id>/versions")
def versions(scenario_id: str) -> Response[str]:
    return json_response(200, actions.versions(_caller(), scenario_id), NO_STORE)


@app.get("/admin/console/scenarios/<scenario_id>/upload-report")
def upload_report(scenario_id: str) -> Response[str]:
    return json_response(200, actions.upload_report(_caller(), scenario_id), NO_STORE)


@app.get("/admin/console/scenarios/<scenario_id>/report")
def report(scenario_id: str) -> Response[str]:
    # The charts come in the report's own answer, not from a route of their own: one look at a report
    # is one request, so one audit entry (actions.report writes it). A second route would write a
    # second entry per look, or show results unrecorded; and both halves are of the same counts.
    # The scenario's diagram with the report's counts per step comes in the same answer, for the same
    # reason (asked on its own with counts, a diagram is a look of its own).
    caller = _caller()
    found = actions.report(caller, scenario_id, _query().get("version"))
    # Imported here: the charts are drawn only for a report, not on every cold start (sign-in, me).
    from cems.reports.charts import report_charts

    charts = report_charts(found).model_dump(mode="json")
    answer = {
        **found.model_dump(mode="json"),
        "charts": charts,
        "diagram": actions.report_diagram(caller, found),
    }
    return json_response(200, answer, NO_STORE)


@app.post("/admin/console/scenarios/<scenario_id>/preview")
def preview(scenario_id: str) -> Response[str]:
    answer = actions.preview(_caller(), scenario_id, request_body(app.current_event.raw_event))
    return json_response(200, answer, NO_STORE)


@app.post("/admin/console/scenarios/<scenario_id>/test-send")
def test_send(scenario_id: str) -> Response[str]:
    # The body holds the recipient (a LINE user id or an address): it is never logged, and the
    # answer does not repeat it.
    answer = actions.test_send(_caller(), scenario_id, request_body(app.current_event.raw_event))
    # 202: queued; send_line or send_email sends it.
    return json_response(202, answer, NO_STORE)


@app.get("/admin/console/customers")
def find_customers() -> Response[str]:
    return json_response(200, {"customers": actions.find_customers(_caller(), _query())}, NO_STORE)


@app.get("/admin/console/customers/<customer_id>")
def view_customer(customer_id: str) -> Response[str]:
    return json_response(
        200, actions.view_customer(_caller(), customer_id, _query().get("unmasked")), NO_STORE
    )


@app.get("/admin/console/customers/<customer_id>/export")
def export_customer(customer_id: str) -> Response[str]:
    return json_response(200, actions.export_customer(_caller(), customer_id), NO_STORE)


@app.delete("/admin/console/customers/<customer_id>")
def erase_customer(customer_id: str) -> Response[str]:
    erasure = actions.erase_customer(_caller(), customer_id)
    body = {"success": True, "customer_ids": list(erasure.customer_ids), "erased": erasure.counts()}
    return json_response(200, body, NO_STORE)


@app.post("/admin/console/audience")
def audience() -> Response[str]:
    # Kept back from the invocation's time for answering: a count that runs out of time answers what
    # it read (`complete: false`) rather than time out (HttpApi gives up after 30 s).
    budget_ms = app.lambda_context.get_remaining_time_in_millis() - 3_000
    body = request_text(app.current_event.raw_event)
    count = actions.count_audience(_caller(), body, max(budget_ms, 1_000) / 1000)
    if count.run is not None:  # a large table: counted by a run, asked for until complete
        headers = {**NO_STORE, "Location": f"/admin/console/audience/{count.run}"}
        return json_response(202, count.model_dump(mode="json"), headers)
    return json_response(200, count.model_dump(mode="json"), NO_STORE)


@app.get("/admin/console/audience/<run>")
def audience_run(run: str) -> Response[str]:
    return json_response(200, actions.audience_run(_caller(), run).model_dump(mode="json"), NO_STORE)


@app.get("/admin/console/audit")
def audit() -> Response[str]:
    page = actions.audit_entries(_caller(), _query())
    entries = [entry.model_dump(mode="json") for entry in page.entries]
    return json_response(200, {"entries": entries, "cursor": page.cursor}, NO_STORE)


# Powertools leaves this decorator untyped.
@app.exception_handler(ClientError)  # type: ignore[untyped-decorator]
def client_error(error: ClientError) -> Response[str]:
    if error.code == "sign_in_failed":
        metrics.add_metric("ConsoleSignInFailures", MetricUnit.Count, 1)
    logger.info("refused", extra={"status": error.status, "error": error.code, "field": error.field})
    return error_response(error)


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return error_response(NOT_FOUND)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

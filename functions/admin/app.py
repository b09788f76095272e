"""admin: the operators' API behind IAM auth (SigV4): scenario reports, finding, viewing, exporting
and erasing customers.

  GET    /admin/scenarios                     every scenario with its headline numbers
  GET    /admin/scenarios/{id}/report         the report (?version=N for one version; ?format=html)
  GET    /admin/customers?email=X             customers found by one of email, phone, line_user_id,
                                              user_id, anonymous_id (masked profiles)
  GET    /admin/customers/{id}                the customer, masked (?unmasked=true: as stored), with a
                                              timeline of latest events and journeys
  GET    /admin/customers/{id}/export         everything CEMS holds about the person (APPI disclosure)
  DELETE /admin/customers/{id}                erase the customer (the whole person; counts answered)
  POST   /admin/audience                      a scenario document's audience: matching customers,
                                              reach per channel, holdout, a masked sample

The rules are in cems.reports, cems.console.customers, cems.console.audience and cems.erasure;
docs/reports.md describes the numbers, docs/customers.md finding, masking and the export,
docs/audience.md the audience count.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.console.customers import LookupKind, UnusableLookupValue
from cems.errors import ClientError
from cems.logs import function_logger
from cems.reports.html import render_html
from cems.reports.report import UnknownScenario
from cems.responses import NOT_FOUND, error_response, json_response
from cems.scenario.problems import bilingual
from cems.scenario.validation import validate_text

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()

MAX_VERSION_DIGITS = 9
reports, eraser = wiring.admin()
directory = wiring.customer_directory()
audience = wiring.audience()
# Kept back from the invocation's time for answering: a count that runs out of time answers what it
# read (`complete: false`) rather than time out (HttpApi gives up after 30 s).
ANSWER_MARGIN_MS = 3_000
# The query parameters GET /admin/customers finds by (exactly one), and what each is.
FIND_BY = {
    "email": LookupKind.EMAIL,
    "phone": LookupKind.PHONE,
    "line_user_id": LookupKind.LINE,
    "user_id": LookupKind.USER,
    "anonymous_id": LookupKind.ANONYMOUS,
}
NO_STORE = {"Cache-Control": "no-store"}


def _caller() -> str | None:
    """The IAM principal that signed the request (for the audit line), when API Gateway says."""
    authorizer = app.current_event.raw_event.get("requestContext", {}).get("authorizer") or {}
    iam = authorizer.get("iam") or {}
    arn = iam.get("userArn")
    return arn if isinstance(arn, str) else None


@app.get("/admin/scenarios")
def list_scenarios() -> Response[str]:
    items = reports.list()
    metrics.add_metric("AdminScenarioLists", MetricUnit.Count, 1)
    return json_response(200, {"scenarios": [i.model_dump(mode="json") for i in items]})


@app.get("/admin/scenarios/<scenario_id>/report")
def scenario_report(scenario_id: str) -> Response[str]:
    raw = app.current_event.get_query_string_value("version")
    version: int | None = None
    if raw is not None:
        # ASCII digits only, and few: str.isdigit accepts "²", and int() refuses 4,300 digits or more.
        if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_VERSION_DIGITS or int(raw) < 1:
            raise ClientError(
                400, "invalid_version", "version must be a positive whole number", field="version"
            )
        version = int(raw)
    try:
        report = reports.report(scenario_id, version)
    except UnknownScenario as exc:
        raise ClientError(404, "scenario_not_found", str(exc), field="id") from None
    metrics.add_metric("AdminReports", MetricUnit.Count, 1)
    if app.current_event.get_query_string_value("format") == "html":
        return Response(200, "text/html; charset=utf-8", render_html(report), {"Cache-Control": "no-store"})
    return json_response(200, report.model_dump(mode="json"), {"Cache-Control": "no-store"})


@app.get("/admin/customers")
def find_customers() -> Response[str]:
    query = app.current_event.query_string_parameters or {}
    given = [name for name in FIND_BY if name in query]
    if not given:
        raise ClientError(
            400, "lookup_required", f"give one of {', '.join(FIND_BY)} to find a customer by", field="query"
        )
    if len(given) > 1:
        raise ClientError(
            400, "one_lookup_only", f"give only one of {', '.join(given)}, not {len(given)}", field=given[1]
        )
    name = given[0]
    try:
        found = directory.find(FIND_BY[name], query[name])
    except UnusableLookupValue:
        raise ClientError(
            400, f"invalid_{name}", f"{name} is not a value a customer can be found by", field=name
        ) from None
    metrics.add_metric("CustomerLookups", MetricUnit.Count, 1)
    # The audit line: what was looked up by (never the value) and the internal ids found.
    logger.info(
        "customers found",
        extra={"by": name, "customer_ids": [f.customer_id for f in found], "caller": _caller()},
    )
    return json_response(200, {"customers": [f.masked() for f in found]}, NO_STORE)


@app.get("/admin/customers/<customer_id>")
def view_customer(customer_id: str) -> Response[str]:
    raw = app.current_event.get_query_string_value("unmasked")
    if raw not in (None, "true", "false"):
        raise ClientError(400, "invalid_unmasked", "unmasked must be true or false", field="unmasked")
    unmasked = raw == "true"
    view = directory.view(customer_id, unmasked=unmasked)
    if view is None:
        raise ClientError(404, "customer_not_found", "no such customer (never was, or erased)", field="id")
    if unmasked:
        logger.info("customer viewed unmasked", extra={"customer_id": customer_id, "caller": _caller()})
    return json_response(200, view, NO_STORE)


@app.get("/admin/customers/<customer_id>/export")
def export_customer(customer_id: str) -> Response[str]:
    document = directory.export(customer_id)
    if document is None:
        raise ClientError(404, "customer_not_found", "no such customer (never was, or erased)", field="id")
    metrics.add_metric("CustomersExported", MetricUnit.Count, 1)
    logger.info(
        "customer exported",
        extra={"customer_id": customer_id, "customer_ids": document["customer_ids"], "caller": _caller()},
    )
    return json_response(200, document, NO_STORE)


@app.delete("/admin/customers/<customer_id>")
def erase_customer(customer_id: str) -> Response[str]:
    erasure = eraser.erase(customer_id)
    if erasure is None:
        raise ClientError(
            404, "customer_not_found", "no such customer (never was, or erased already)", field="id"
        )
    metrics.add_metric("CustomersErased", MetricUnit.Count, 1)
    # The audit line: internal ids and counts only (no address, LINE id or trait).
    logger.info(
        "customer erased",
        extra={
            "customer_id": customer_id,
            "customer_ids": list(erasure.customer_ids),
            "caller": _caller(),
            **erasure.counts(),
        },
    )
    return json_response(
        200,
        {
            "success": True,
            "customer_id": customer_id,
            "customer_ids": list(erasure.customer_ids),
            "erased": erasure.counts(),
        },
    )


@app.post("/admin/audience")
def count_audience() -> Response[str]:
    body = app.current_event.decoded_body or ""
    report = validate_text(body, "request body")
    if report.scenario is None:
        metrics.add_metric("AdminRequestsRejected", MetricUnit.Count, 1)
        logger.info(
            "rejected", extra={"status": 400, "error": "invalid_scenario", "problems": len(report.errors)}
        )
        message = bilingual("シナリオに問題があります", "the scenario is not valid")
        problems = [e.to_dict() for e in report.errors]
        answer = {
            "success": False,
            "error": "invalid_scenario",
            "code": "invalid_scenario",
            "message": message,
        }
        return json_response(400, {**answer, "problems": problems}, NO_STORE)
    budget_ms = app.lambda_context.get_remaining_time_in_millis() - ANSWER_MARGIN_MS
    count = audience.count(report.scenario, time_budget_s=max(budget_ms, 1_000) / 1000)
    metrics.add_metric("AudienceCounts", MetricUnit.Count, 1)
    # Counts and cost only: no customer id, trait or address (the sample stays in the answer, masked).
    logger.info(
        "audience counted",
        extra={
            "scenario_id": count.scenario_id,
            "matching": count.matching,
            "complete": count.complete,
            "customers_read": count.customers_read,
            "requests": count.requests,
            "elapsed_ms": count.elapsed_ms,
            "caller": _caller(),
        },
    )
    return json_response(200, count.model_dump(mode="json"), NO_STORE)


# Powertools leaves this decorator untyped.
@app.exception_handler(ClientError)  # type: ignore[untyped-decorator]
def client_error(error: ClientError) -> Response[str]:
    metrics.add_metric("AdminRequestsRejected", MetricUnit.Count, 1)
    logger.info("rejected", extra={"status": error.status, "error": error.code, "field": error.field})
    return error_response(error)


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return error_response(NOT_FOUND)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

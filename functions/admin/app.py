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
                                              reach per channel, holdout, a masked sample (200); for
                                              a large table 202 with a run counted in segments
  GET    /admin/audience/{run}                that run's counts so far, `complete` when done

Every route but the audience count goes through cems.console.actions, which writes the audit entry
(an IAM caller acts as an admin: its IAM policy is the permission). The rules are in cems.reports,
cems.console.customers, cems.console.audience and cems.erasure;
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
from cems.api_requests import request_text
from cems.audit import withheld_if_personal
from cems.console.actions import Caller
from cems.errors import ClientError
from cems.logs import function_logger
from cems.reports.html import render_html
from cems.responses import NOT_FOUND, error_response, json_response

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()

actions = wiring.operator_actions()
# Kept back from the invocation's time for answering: a count that runs out of time answers what it
# read (`complete: false`) rather than time out (HttpApi gives up after 30 s).
ANSWER_MARGIN_MS = 3_000
NO_STORE = {"Cache-Control": "no-store"}


def _iam_caller() -> Caller:
    """The IAM principal that signed the request, as API Gateway says, and where it came from. Its IAM
    policy decided what it may call (template.yaml's operator policies); CEMS records what it did."""
    event = app.current_event
    return Caller.iam(_caller(), event.request_context.http.source_ip, event.request_context.request_id)


def _query() -> dict[str, str]:
    return dict(app.current_event.query_string_parameters or {})


def _caller() -> str | None:
    """The IAM principal that signed the request (for the audit line), when API Gateway says."""
    authorizer = app.current_event.raw_event.get("requestContext", {}).get("authorizer") or {}
    iam = authorizer.get("iam") or {}
    arn = iam.get("userArn")
    return arn if isinstance(arn, str) else None


@app.get("/admin/scenarios")
def list_scenarios() -> Response[str]:
    items = actions.scenarios(_iam_caller())
    metrics.add_metric("AdminScenarioLists", MetricUnit.Count, 1)
    return json_response(200, {"scenarios": [i.model_dump(mode="json") for i in items]})


@app.get("/admin/scenarios/<scenario_id>/report")
def scenario_report(scenario_id: str) -> Response[str]:
    report = actions.report(_iam_caller(), scenario_id, _query().get("version"))
    metrics.add_metric("AdminReports", MetricUnit.Count, 1)
    if _query().get("format") == "html":
        return Response(200, "text/html; charset=utf-8", render_html(report), NO_STORE)
    return json_response(200, report.model_dump(mode="json"), NO_STORE)


@app.get("/admin/customers")
def find_customers() -> Response[str]:
    found = actions.find_customers(_iam_caller(), _query())
    metrics.add_metric("CustomerLookups", MetricUnit.Count, 1)
    return json_response(200, {"customers": found}, NO_STORE)


@app.get("/admin/customers/<customer_id>")
def view_customer(customer_id: str) -> Response[str]:
    view = actions.view_customer(_iam_caller(), customer_id, _query().get("unmasked"))
    return json_response(200, view, NO_STORE)


@app.get("/admin/customers/<customer_id>/export")
def export_customer(customer_id: str) -> Response[str]:
    document = actions.export_customer(_iam_caller(), customer_id)
    metrics.add_metric("CustomersExported", MetricUnit.Count, 1)
    return json_response(200, document, NO_STORE)


@app.delete("/admin/customers/<customer_id>")
def erase_customer(customer_id: str) -> Response[str]:
    erasure = actions.erase_customer(_iam_caller(), customer_id)
    metrics.add_metric("CustomersErased", MetricUnit.Count, 1)
    # Internal ids and counts only (no address, LINE id or trait); the audit entry holds the same.
    logger.info(
        "customer erased",
        extra={
            "customer_id": customer_id,
            "customer_ids": list(erasure.customer_ids),
            "caller": withheld_if_personal(_caller() or "-"),
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
    budget_ms = app.lambda_context.get_remaining_time_in_millis() - ANSWER_MARGIN_MS
    body = request_text(app.current_event.raw_event)
    count = actions.count_audience(_iam_caller(), body, max(budget_ms, 1_000) / 1000)
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
            "run": count.run,
            "segments": count.segments,
        },
    )
    if count.run is not None:  # a large table: counted by a run, asked for until complete
        headers = {**NO_STORE, "Location": f"/admin/audience/{count.run}"}
        return json_response(202, count.model_dump(mode="json"), headers)
    return json_response(200, count.model_dump(mode="json"), NO_STORE)


@app.get("/admin/audience/<run>")
def audience_run(run: str) -> Response[str]:
    count = actions.audience_run(_iam_caller(), run)
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

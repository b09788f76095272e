"""console: the operators' console and its API.

  GET  /console, /console/{asset}     the page and its script and styles (public: they hold no data)
  POST /admin/console/sign-in         user name and password -> an ID token (the address ranges apply)
  GET  /admin/console/me              who the token names: roles and what they allow

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
from cems.api_requests import request_body
from cems.console.access import ROLE_LABELS
from cems.console.pages import CONSOLE_ASSETS, SECURITY_HEADERS
from cems.errors import ClientError
from cems.logs import function_logger
from cems.responses import NOT_FOUND, error_response, json_response

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()

console = wiring.console()


def _source_ip() -> str | None:
    ip = app.current_event.request_context.http.source_ip
    return ip if isinstance(ip, str) else None


def _claims() -> dict[str, Any]:
    authorizer = app.current_event.raw_event.get("requestContext", {}).get("authorizer") or {}
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    return claims if isinstance(claims, dict) else {}


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
    operator = console.caller(_claims(), _source_ip())
    return json_response(
        200,
        {
            "name": operator.name,
            "roles": [{"role": r.value, "label": ROLE_LABELS[r]} for r in sorted(operator.roles)],
            "permissions": sorted(p.value for p in operator.permissions),
        },
        {"Cache-Control": "no-store"},
    )


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

"""collect: the Segment-compatible tracking API (POST /v1/{kind}), the tag script (GET /tag.js), the
start of LINE account linking (POST /v1/line/link, called by the tag on the shop's link page) and
the tag's fetch of on-site messages (GET /v1/web/messages)."""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start: importing and wiring this module builds a great many long-lived objects and next to no
# garbage, yet the cyclic collector would sweep them over and over (about a tenth of init). It is off
# for init and back on at the end of this module, with everything init built frozen out of its way.
gc.disable()

import os

# Pydantic looks for plugins in the entry points of every installed distribution when it builds the
# first model (a few ms of cold start); this function uses none. An explicit setting still wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
from typing import TYPE_CHECKING, Any

from cems import lazy_packages

# Powertools' event_handler and data_classes packages import every resolver and event class they
# have in their __init__ (asyncio among them); this function uses one or two of each: only those
# load (cems.lazy_packages), before the Powertools imports below.
lazy_packages.install(lazy_packages.POWERTOOLS)


from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from cems import wiring
from cems.collect import error_cors_headers, preflight_headers, request_body, tag_script
from cems.errors import ClientError
from cems.logs import function_logger
from cems.responses import NOT_FOUND, error_response, json_response, method_not_allowed

if TYPE_CHECKING:  # an annotation only: not loaded at init
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()

collector = wiring.collect()
TAG_JS = tag_script()

ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


def _preflight_or_refused() -> Response[str] | None:
    """The CORS preflight answer for OPTIONS; a 405 for any method but POST; None for a POST."""
    event = app.current_event
    if event.request_context.http.method == "OPTIONS":
        return Response(204, None, "", preflight_headers(event.headers.get("origin")))
    if event.request_context.http.method != "POST":
        raise method_not_allowed("POST, OPTIONS")
    return None


# A static route: Powertools tries static routes before dynamic ones, so /v1/<kind> never sees it
# (and <kind> matches a single path segment anyway).
@app.route("/v1/line/link", method=ALL_METHODS)
def line_link() -> Response[str]:
    if (preflight := _preflight_or_refused()) is not None:
        return preflight
    event = app.current_event
    origin = event.headers.get("origin")
    started = collector.start_line_link(
        request_body(event.raw_event),
        event.headers.get("authorization"),
        origin,
        event.get_query_string_value("writeKey"),
    )
    metrics.add_metric("LineLinksStarted", MetricUnit.Count, 1)
    return json_response(200, {"redirectUrl": started.redirect_url}, started.headers)


WEB_FETCH_METHODS = "GET, OPTIONS"


# On-site messages (docs/web.md): what is due for this browser on this page. A static route, as above.
@app.route("/v1/web/messages", method=ALL_METHODS)
def web_messages() -> Response[str]:
    event = app.current_event
    method = event.request_context.http.method
    if method == "OPTIONS":
        # The fetch is a GET: a preflight naming only POST would make the browser block it.
        return Response(204, None, "", preflight_headers(event.headers.get("origin"), WEB_FETCH_METHODS))
    if method not in ("GET", "HEAD"):
        raise method_not_allowed(WEB_FETCH_METHODS)
    answer = collector.web_messages(
        event.headers.get("authorization"),
        event.headers.get("origin"),
        dict(event.query_string_parameters or {}),
        event.headers.get("if-none-match"),
    )
    metrics.add_metric("WebFetches", MetricUnit.Count, 1)
    if answer.status == 200:
        metrics.add_metric("WebFetchesDue", MetricUnit.Count, 1)
    content_type = "application/json" if answer.status == 200 else None
    return Response(answer.status, content_type, answer.body, answer.headers)


@app.route("/v1/<kind>", method=ALL_METHODS)
def collect(kind: str) -> Response[str]:
    if (preflight := _preflight_or_refused()) is not None:
        return preflight
    event = app.current_event
    origin = event.headers.get("origin")
    collected = collector.collect(
        kind,
        request_body(event.raw_event),
        event.headers.get("authorization"),
        origin,
        query_write_key=event.get_query_string_value("writeKey"),
        content_encoding=event.headers.get("content-encoding"),
    )
    metrics.add_metric("EventsStored", MetricUnit.Count, collected.result.stored)
    metrics.add_metric("EventsDuplicate", MetricUnit.Count, collected.result.duplicates)
    if collected.result.unverified:
        metrics.add_metric("UserIdsUnverified", MetricUnit.Count, collected.result.unverified)
    return json_response(200, collected.body(), collected.headers)


@app.get("/tag.js")
def tag() -> Response[str]:
    return Response(
        200, "application/javascript; charset=utf-8", TAG_JS, {"Cache-Control": "public, max-age=300"}
    )


# Powertools leaves this decorator untyped.
@app.exception_handler(ClientError)  # type: ignore[untyped-decorator]
def client_error(error: ClientError) -> Response[str]:
    metrics.add_metric("RequestsRejected", MetricUnit.Count, 1)
    logger.info("rejected", extra={"status": error.status, "error": error.code, "field": error.field})
    # The error carries CORS headers too (without credentials), so a shop's developer can read it in
    # the browser console; it holds nothing but the reason, and nothing was stored.
    return error_response(error, error_cors_headers(app.current_event.headers.get("origin")))


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return error_response(NOT_FOUND)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


# Init is done: its objects live as long as the execution environment, so collections can skip them.
gc.freeze()
gc.enable()

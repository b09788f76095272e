"""line_webhook: LINE's webhook (POST /line/webhook): follows, unfollows, messages, postbacks, links.

A bad or missing X-Line-Signature gets 401 and nothing is processed; a body nested too deeply or
without an `events` list gets 400; an empty `events` list (LINE's URL verification) gets 200. An
event the SDK cannot read is stored as `line_other` or skipped (and counted), never failing the
others. The rules are in cems.line.webhook.
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused and the lazy Powertools packages are installed before
# the imports below.
import gc

# Cold start, as in collect: init builds many long-lived objects (modules, pydantic models, the
# DynamoDB client) and next to no garbage, so the cyclic collector is off for init and what init
# built is frozen out of its way at the end of this module.
gc.disable()

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
from cems.api_requests import request_body
from cems.errors import ClientError
from cems.logs import function_logger
from cems.responses import NOT_FOUND, error_response, json_response

if TYPE_CHECKING:  # an annotation only: not loaded at init
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()

webhook = wiring.line_webhook()


@app.post("/line/webhook")
def line_webhook() -> Response[str]:
    event = app.current_event
    outcome = webhook.handle(request_body(event.raw_event), event.headers.get("x-line-signature"))
    for name, value in outcome.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    # Counts and kinds only: never a LINE user id, reply token, nonce or message text.
    logger.info(
        "line webhook",
        extra={
            "events": outcome.events,
            "stored": outcome.stored,
            "duplicates": outcome.duplicates,
            "unparsed": outcome.unparsed,
            "skipped": outcome.skipped[:20],
            "without_user": outcome.without_user[:20],
            "replies": outcome.replies,
            "links": outcome.links,
            "link_failures": outcome.link_failures,
        },
    )
    if outcome.reply_failures:
        logger.warning("line replies failed", extra={"failures": outcome.reply_failures})
    return json_response(200, {"success": True})


# Powertools leaves this decorator untyped.
@app.exception_handler(ClientError)  # type: ignore[untyped-decorator]
def client_error(error: ClientError) -> Response[str]:
    metrics.add_metric("LineWebhookRejected", MetricUnit.Count, 1)
    if error.status == 401:  # a wrong channel secret, or someone probing the endpoint (alarmed on)
        metrics.add_metric("LineWebhookSignatureFailures", MetricUnit.Count, 1)
    logger.info(
        "rejected",
        extra={"status": error.status, "error": error.code, "field": error.field, "limit": error.limit},
    )
    return error_response(error)


@app.not_found
def not_found(_: Exception) -> Response[str]:
    return error_response(NOT_FOUND)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)


# Init is done: its objects live as long as the execution environment.
gc.freeze()
gc.enable()

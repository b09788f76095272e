"""engage: the click tracker (GET /r/{token}), the open pixel (GET /o/{token}), unsubscribing
(GET and POST /u/{token}), double opt-in confirmation (GET and POST /c/{token}) and the tag's
reports on on-site messages (POST /v1/web/events).

The rules are in cems.engagement.engage; tokens are never logged (they name the customer and the
dispatch), nor are email addresses. SES events have a function of their own (functions/ses_events).
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start: init builds many long-lived objects and next to no garbage (see functions/collect).
gc.disable()

import os

# Pydantic looks for plugins in every installed distribution's entry points when it builds the first
# model (a few ms of cold start); this function uses none. An explicit setting still wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import clock, wiring
from cems.api_requests import request_body
from cems.engagement import pages
from cems.engagement.engage import ConfirmResult, Recorded, TopicResult, UnsubscribeResult, visitor_network
from cems.engagement.tokens import InvalidToken, is_short_code
from cems.errors import ClientError
from cems.logs import function_logger
from cems.ports import ServiceUnavailable
from cems.responses import NOT_FOUND, error_response, json_response

if TYPE_CHECKING:  # an annotation only: cems.web loads on the first report, not at init
    from cems.web.events import WebEvents

logger = function_logger()
metrics = Metrics()
app = APIGatewayHttpResolver()
UNSUBSCRIBE_METRICS = {
    UnsubscribeResult.UNSUBSCRIBED: "Unsubscribes",
    UnsubscribeResult.ALREADY: "UnsubscribesRepeated",
    UnsubscribeResult.TEST: "UnsubscribesTest",
    UnsubscribeResult.UNKNOWN: "UnsubscribesUnknown",
}

engagement, shop_name = wiring.engage()
# The on-site message events' rules, built on the first report (cems.web stays out of init).
web_events: WebEvents | None = None


@app.get("/r/<token>")
def click(token: str) -> Response[Any]:
    try:
        # Who asks, only to tell a shared LINE link's clickers apart: hashed into a once-marker by
        # the rules, never logged. The network address API Gateway saw, not the User-Agent: a
        # caller picks its User-Agent freely, so with it in the mark one caller could count a
        # click (and write a marker) per made-up header.
        http = app.current_event.raw_event.get("requestContext", {}).get("http", {})
        visitor = visitor_network(http.get("sourceIp"))
        if is_short_code(token):
            # A LINE text's short link: the stored token, then as a tap on the long link.
            found = engagement.short_click(token, visitor=visitor)
            if found is None:
                return _unknown_link()
            verified, recorded = found
        else:
            verified, recorded = engagement.click(token, visitor=visitor)
    except InvalidToken as error:
        return _invalid("click", error)
    except ServiceUnavailable as error:
        return _unavailable(error)
    _recorded("click", "LinkClicks", recorded)
    assert verified.url is not None
    return Response(302, None, "", {**pages.COMMON_HEADERS, "Location": pages.location(verified.url)})


@app.route("/v1/web/events", method=["POST", "OPTIONS"])
def web_event() -> Response[Any]:
    """What the tag reports about an on-site message it showed (cems.web.events): `shown`, `clicked`
    or `dismissed`, with the message's signed token. Sent with sendBeacon as text/plain (no
    preflight); the answer is JSON a developer can read, CORS without credentials."""
    from cems.web.events import read_web_event

    event = app.current_event
    origin = event.headers.get("origin")
    # Readable by the page's developer, without credentials: the token is the proof, not a cookie.
    cors = {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}
    if event.request_context.http.method == "OPTIONS":
        return Response(204, None, "", {**cors, "Access-Control-Allow-Methods": "POST, OPTIONS"})
    global web_events
    try:
        if web_events is None:
            web_events = wiring.web_events()
        recorded = web_events.record(read_web_event(request_body(event.raw_event)), clock.now())
    except ClientError as error:
        metrics.add_metric("WebEventsRejected", MetricUnit.Count, 1)
        logger.info("web event rejected", extra={"error": error.code, "field": error.field})
        return error_response(error, {**_no_store(), **cors})
    except ServiceUnavailable as error:
        logger.warning("web event not recorded", extra={"error": type(error.__cause__ or error).__name__})
        body = {"success": False, "error": "unavailable", "message": "try again", "field": "token"}
        return json_response(503, body, {**_no_store(), **cors, "Retry-After": "5"})
    metrics.add_metric(f"WebMessages{recorded.kind.value.capitalize()}", MetricUnit.Count, 1)
    # What happened, never which customer, dispatch or token.
    logger.info(
        "web event",
        extra={
            "kind": recorded.kind.value,
            "stored": recorded.stored,
            "counted": recorded.counted,
            "test": recorded.test,
            "known": recorded.known,
        },
    )
    return json_response(200, recorded.body(), {**_no_store(), **cors})


@app.get("/o/<token>")
def pixel(token: str) -> Response[Any]:
    try:
        recorded = engagement.open(token)
    except InvalidToken as error:
        return _invalid("open", error)
    _recorded("open", "EmailOpens", recorded)
    return Response(200, pages.GIF, pages.PIXEL_GIF, dict(pages.COMMON_HEADERS))


@app.get("/u/<token>")
def unsubscribe_page(token: str) -> Response[Any]:
    """The preference page: only this mail's topic, everything, each topic's state. It changes
    nothing: mail security scanners open every link (GET)."""
    try:
        prefs = engagement.preferences(token)
    except InvalidToken as error:
        return _invalid("unsubscribe", error)
    metrics.add_metric("UnsubscribePages", MetricUnit.Count, 1)
    if prefs.refused is not None:
        return _page(pages.RESULT_PAGES[prefs.refused])
    page = pages.ALREADY if prefs.email_stopped else pages.PREFERENCES
    return _page(page, button=pages.preference_forms(prefs))


@app.post("/u/<token>")
def unsubscribe(token: str) -> Response[Any]:
    """One-click unsubscribe (RFC 8058): any POST with a valid token stops all marketing email,
    whatever its body (mail clients send `List-Unsubscribe=One-Click`, the page's "everything" the
    same), except the page's topic choices (`action=leave|join&topic=<id>`)."""
    try:
        form = parse_qs(app.current_event.decoded_body or "", max_num_fields=10)
    except ValueError:  # too many fields, or not UTF-8: no topic choice, so the one-click meaning
        form = {}
    action, topic = (form.get("action") or [""])[0], (form.get("topic") or [""])[0]
    if action in ("leave", "join") and topic:
        return _topic_choice(token, topic, subscribed=action == "join")
    try:
        _, result = engagement.unsubscribe(token)
    except InvalidToken as error:
        return _invalid("unsubscribe", error)
    # `Unsubscribes` counts consents withdrawn; replays, test links and unknown customers apart.
    metrics.add_metric(UNSUBSCRIBE_METRICS[result], MetricUnit.Count, 1)
    logger.info("unsubscribe", extra={"result": result.value})
    accept = app.current_event.headers.get("accept")
    if pages.wants_json(accept) and not pages.wants_html(accept):
        if result is UnsubscribeResult.UNKNOWN:
            # The token is ours, but its customer is gone (erased): the token names nobody now.
            body = {"success": False, "result": result.value, "error": "unknown_customer", "field": "token"}
            return json_response(404, body, _no_store())
        return json_response(200, {"success": True, "result": result.value}, _no_store())
    return _page(pages.RESULT_PAGES[result])


def _topic_choice(token: str, topic: str, *, subscribed: bool) -> Response[Any]:
    """The preference page's "only this topic" (or a topic's leave / subscribe-again button)."""
    try:
        _, result = engagement.choose_topic(token, topic, subscribed)
    except InvalidToken as error:
        return _invalid("unsubscribe", error)
    if result in (TopicResult.LEFT, TopicResult.JOINED):
        metric = "TopicsLeft" if result is TopicResult.LEFT else "TopicsJoined"
        metrics.add_metric(metric, MetricUnit.Count, 1)
    logger.info("topic choice", extra={"result": result.value})
    listed = {t.id: t for t in engagement.topics}.get(topic)
    labels = (listed.label_ja, listed.label_en) if listed else (topic, topic)
    page = pages.topic_result_page(result, *labels)
    accept = app.current_event.headers.get("accept")
    if pages.wants_json(accept) and not pages.wants_html(accept):
        body: dict[str, Any] = {"success": page.status == 200, "result": result.value}
        if page.status != 200:
            body.update(error=result.value, field="topic" if result is TopicResult.UNKNOWN_TOPIC else "token")
        return json_response(page.status, body, _no_store())
    return _page(page, button=pages.BACK_LINK if page.status == 200 else None)


@app.get("/c/<token>")
def confirm_page(token: str) -> Response[Any]:
    """Double opt-in: the confirmation mail's link. The page changes nothing (mail scanners open
    every link); its button posts back."""
    try:
        _, state = engagement.confirm_state(token)
    except InvalidToken as error:
        return _invalid("confirm", error)
    metrics.add_metric("ConsentConfirmPages", MetricUnit.Count, 1)
    if state is None:
        return _page(pages.CONFIRM_OPTIN, button=pages.CONFIRM_BUTTON)
    return _page(pages.CONFIRM_PAGES[state])


@app.post("/c/<token>")
def confirm(token: str) -> Response[Any]:
    try:
        _, result = engagement.confirm(token)
    except InvalidToken as error:
        return _invalid("confirm", error)
    if result is ConfirmResult.CONFIRMED:
        metrics.add_metric("ConsentsConfirmed", MetricUnit.Count, 1)
    logger.info("consent confirmation", extra={"result": result.value})
    accept = app.current_event.headers.get("accept")
    if pages.wants_json(accept) and not pages.wants_html(accept):
        page = pages.CONFIRM_PAGES[result]
        body: dict[str, Any] = {"success": page.status == 200, "result": result.value}
        if page.status != 200:
            body.update(error=result.value, field="token")
        return json_response(page.status, body, _no_store())
    return _page(pages.CONFIRM_PAGES[result])


def _no_store() -> dict[str, str]:
    return dict(pages.COMMON_HEADERS)


def _page(page: pages.Page, *, form: bool = False, button: str | None = None) -> Response[Any]:
    return Response(
        page.status,
        pages.HTML,
        pages.render(page, shop=shop_name, form=form, button=button),
        pages.HTML_HEADERS,
    )


def _recorded(action: str, metric: str, recorded: Recorded) -> None:
    metrics.add_metric(metric, MetricUnit.Count, 1)
    if recorded.counted:
        metrics.add_metric(f"{metric}Counted", MetricUnit.Count, 1)
    # What happened, never which customer, dispatch or destination.
    logger.info(
        action,
        extra={
            "stored": recorded.stored,
            "counted": recorded.counted,
            "test": recorded.test,
            "known": recorded.known,
        },
    )


def _invalid(action: str, error: InvalidToken) -> Response[Any]:
    """A token that is not ours answers 400 and goes nowhere (never a redirect). Browsers get a page
    saying so, an image request a transparent GIF (so a mail never shows a broken image), anything
    else JSON; the code is in every answer (`X-CEMS-Error` for the GIF)."""
    metrics.add_metric("InvalidTokens", MetricUnit.Count, 1)
    logger.info("invalid token", extra={"action": action, "error": error.code})
    accept = app.current_event.headers.get("accept")
    if action == "open" and pages.wants_image(accept) and not pages.wants_html(accept):
        return Response(400, pages.GIF, pages.PIXEL_GIF, {**pages.COMMON_HEADERS, "X-CEMS-Error": error.code})
    if pages.wants_html(accept):
        page = pages.render(pages.INVALID)
        return Response(400, pages.HTML, page, {**pages.HTML_HEADERS, "X-CEMS-Error": error.code})
    body = {
        "success": False,
        "error": error.code,
        "code": error.code,
        "message": error.message,
        "field": "token",
    }
    return json_response(400, body, _no_store())


def _unknown_link() -> Response[Any]:
    """A short link that finds nothing (never made, or deleted by its TTL): 404, and nowhere to go.
    Never the code in the log or answer: it is as good as the link."""
    metrics.add_metric("UnknownShortLinks", MetricUnit.Count, 1)
    logger.info("unknown short link")
    return _not_served(pages.LINK_NOT_FOUND, "unknown_link", "the link is unknown or has expired")


def _unavailable(error: ServiceUnavailable) -> Response[Any]:
    """The short link store did not answer: 503 with Retry-After (the visitor may tap again)."""
    metrics.add_metric("ShortLinkLookupsFailed", MetricUnit.Count, 1)
    logger.warning("short link not looked up", extra={"error": type(error.__cause__ or error).__name__})
    return _not_served(pages.LINK_UNAVAILABLE, "unavailable", "the link could not be looked up; try again")


def _not_served(page: pages.Page, code: str, message: str) -> Response[Any]:
    headers = {"X-CEMS-Error": code, **({"Retry-After": "5"} if page.status == 503 else {})}
    if pages.wants_html(app.current_event.headers.get("accept")):
        return Response(page.status, pages.HTML, pages.render(page), {**pages.HTML_HEADERS, **headers})
    body = {"success": False, "error": code, "code": code, "message": message, "field": "token"}
    return json_response(page.status, body, {**_no_store(), **headers})


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

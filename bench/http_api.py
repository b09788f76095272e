"""The HTTP API (payload 2.0) event API Gateway hands a Lambda handler, built for a handler invoked in
process: bench.console times the console function with it, and the admin and console handler tests
(tests/integration) drive their handlers with it, so the three send the same shape of request."""

from __future__ import annotations

import urllib.parse
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

API_ID = "k3x9q2w7bd"
DOMAIN = f"{API_ID}.execute-api.ap-northeast-1.amazonaws.com"


def http_api_event(
    method: str,
    target: str,
    *,
    source_ip: str = "203.0.113.9",
    headers: Mapping[str, str] | None = None,
    body: str | None = None,
    jwt_claims: Any = None,
    iam_user_arn: str | None = None,
) -> dict[str, Any]:
    """An event for `method` on `target` (a path with its query, if any). `jwt_claims` are what the JWT
    authorizer passes on (the console's routes), `iam_user_arn` the IAM-signed caller (the admin API's);
    without either the request came through no authorizer."""
    path, _, query = target.partition("?")
    now = datetime.now(UTC)
    context: dict[str, Any] = {
        "accountId": "123456789012",
        "apiId": API_ID,
        "domainName": DOMAIN,
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": source_ip},
        "requestId": uuid.uuid4().hex,  # API Gateway gives each request its own
        "routeKey": f"{method} {path}",
        "stage": "$default",
        "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(now.timestamp() * 1000),
    }
    if jwt_claims is not None:
        context["authorizer"] = {"jwt": {"claims": jwt_claims, "scopes": None}}
    elif iam_user_arn is not None:
        context["authorizer"] = {"iam": {"userArn": iam_user_arn}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": DOMAIN, **(headers or {})},
        "requestContext": context,
        "body": body,
        "isBase64Encoded": False,
    }
    if query:
        # API Gateway hands the parameters on decoded ("%C2%B2" arrives as "²").
        event["queryStringParameters"] = dict(urllib.parse.parse_qsl(query))
    return event

"""JSON answers for the HTTP functions, one shape everywhere: `{"success": false, "error", ...}`."""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.event_handler import Response

from cems.errors import ClientError

# Every 4xx names what to fix (`field` or `limit`): here the path, or the method.
NOT_FOUND = ClientError(404, "not_found", "no such endpoint", field="path")


def method_not_allowed(allowed: str) -> ClientError:
    """405 for a route that exists with other methods; `allowed` is the Allow header's value."""
    return ClientError(
        405, "method_not_allowed", f"use {allowed}", field="method", headers={"Allow": allowed}
    )


def json_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[str]:
    return Response(status, "application/json", json.dumps(body, ensure_ascii=False), headers or {})


def error_response(error: ClientError, headers: dict[str, str] | None = None) -> Response[str]:
    return json_response(error.status, error.body(), {**(headers or {}), **error.headers})

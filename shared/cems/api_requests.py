"""What the HTTP functions (collect, line_webhook) read of an API Gateway request before their rules
do: a module of its own, so line_webhook reads its body without loading collect's parser."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

from cems.errors import ClientError


def request_body(event: Mapping[str, Any]) -> bytes:
    """The raw body bytes of an API Gateway event. Powertools' decoded_body would turn invalid UTF-8
    into a 500; the Segment parser answers it with a 400 instead."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body)
        except binascii.Error as exc:
            raise ClientError(400, "invalid_body", "the body is not valid base64", field="body") from exc
    return str(body).encode("utf-8")


def request_text(event: Mapping[str, Any]) -> str:
    """The body as text (UTF-8): a body that is not UTF-8 is the caller's mistake, a 400 naming the
    body, where Powertools' decoded_body would raise into a 500."""
    try:
        return request_body(event).decode("utf-8")
    except UnicodeDecodeError:
        message = "本文が UTF-8 ではありません / the body is not UTF-8 text"
        raise ClientError(400, "invalid_body", message, field="body") from None

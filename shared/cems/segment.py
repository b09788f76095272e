"""The Segment HTTP Tracking API wire format: paths, write keys, size limits and message validation."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from cems.config import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from cems.errors import ClientError
from cems.models import ORDER_COMPLETED, LineLinkRequest, MessageType, OrderCompleted, SegmentMessage

# Segment's server libraries use the long paths; analytics-next in the browser uses one letter.
PATH_TYPES: dict[str, MessageType | None] = {
    "identify": MessageType.IDENTIFY,
    "i": MessageType.IDENTIFY,
    "track": MessageType.TRACK,
    "t": MessageType.TRACK,
    "page": MessageType.PAGE,
    "p": MessageType.PAGE,
    "screen": MessageType.SCREEN,
    "s": MessageType.SCREEN,
    "alias": MessageType.ALIAS,
    "a": MessageType.ALIAS,
    "group": MessageType.GROUP,
    "g": MessageType.GROUP,
    "batch": None,
    "b": None,
    "import": None,
}


# Fields of SegmentMessage that only CEMS itself sets (the LINE webhook, from signed LINE events): a
# site sending one is refused, since it would let any page claim to be a LINE user.
INTERNAL_FIELDS = ("lineUserId", "line_user_id")


@dataclass(frozen=True)
class CollectRequest:
    """A validated request: whose write key, and its messages in the order sent."""

    write_key: str
    messages: list[SegmentMessage]


def is_batch_path(kind: str) -> bool:
    return kind in PATH_TYPES and PATH_TYPES[kind] is None


def parse_collect_request(kind: str, body: bytes, authorization: str | None) -> CollectRequest:
    """Validate a whole request before anything is stored: one bad message rejects the batch."""
    if kind not in PATH_TYPES:
        raise ClientError(404, "not_found", f"unknown endpoint /v1/{kind}")
    batch = is_batch_path(kind)
    limit = MAX_BATCH_BYTES if batch else MAX_MESSAGE_BYTES
    if len(body) > limit:
        what = "batch" if batch else "message"
        raise ClientError(413, "payload_too_large", f"a {what} may be at most {limit} bytes", limit=limit)
    document = _json_object(body)
    write_key = _basic_auth_user(authorization) or _write_key_in(document)
    if not write_key:
        raise ClientError(
            401,
            "missing_write_key",
            "send the write key as the HTTP Basic user name or as writeKey in the body",
            field="writeKey",
        )
    if batch:
        messages = _batch_messages(document)
    else:
        path_type = PATH_TYPES[kind]
        assert path_type is not None
        messages = [_message({**document, "type": path_type.value}, field_prefix="", index=None)]
    return CollectRequest(write_key=write_key, messages=messages)


def parse_line_link_request(body: bytes, authorization: str | None) -> LineLinkRequest:
    """POST /v1/line/link: `{"anonymousId", "linkToken"}` with the write key as for the other calls."""
    if len(body) > MAX_MESSAGE_BYTES:
        raise ClientError(
            413,
            "payload_too_large",
            f"a request may be at most {MAX_MESSAGE_BYTES} bytes",
            limit=MAX_MESSAGE_BYTES,
        )
    document = _json_object(body)
    write_key = _basic_auth_user(authorization) or _write_key_in(document)
    if not write_key:
        raise ClientError(
            401,
            "missing_write_key",
            "send the write key as the HTTP Basic user name or as writeKey in the body",
            field="writeKey",
        )
    try:
        request = LineLinkRequest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _loc(first["loc"]) or None
        raise ClientError(400, "invalid_request", f"{field or 'body'}: {first['msg']}", field=field) from exc
    return request.model_copy(update={"write_key": write_key})


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(400, "invalid_json", "the body must be UTF-8 JSON") from exc
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ClientError(
            400, "invalid_json", f"the body is not valid JSON: {exc.msg} at line {exc.lineno}"
        ) from exc
    except ValueError as exc:
        raise ClientError(400, "invalid_json", str(exc)) from exc
    if not isinstance(document, dict):
        raise ClientError(400, "invalid_json", "the body must be a JSON object")
    # JSON allows an escaped lone UTF-16 surrogate (what JavaScript leaves when it cuts a string in
    # the middle of an emoji), but it is not text and DynamoDB refuses it: answer 400, not a 500.
    if "\\ud" in text.lower() and _has_lone_surrogate(document):
        raise ClientError(
            400, "invalid_json", "the body contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)"
        )
    return document


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _reject_constant(name: str) -> Any:
    raise ValueError(f"the body contains {name}, which JSON does not allow")


def _basic_auth_user(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ClientError(
            401, "invalid_write_key", "the Authorization header is not valid Basic auth"
        ) from exc
    return decoded.partition(":")[0] or None


def _write_key_in(document: dict[str, Any]) -> str | None:
    value = document.get("writeKey")
    return value if isinstance(value, str) and value else None


def _batch_messages(document: dict[str, Any]) -> list[SegmentMessage]:
    items = document.get("batch")
    if not isinstance(items, list):
        raise ClientError(400, "invalid_batch", "batch must be a list of messages", field="batch")
    if not items:
        raise ClientError(400, "invalid_batch", "batch is empty", field="batch")
    shared_context = document.get("context")
    if shared_context is not None and not isinstance(shared_context, dict):
        raise ClientError(400, "invalid_batch", "context must be an object", field="context")
    sent_at = document.get("sentAt")
    messages = []
    for index, item in enumerate(items):
        prefix = f"batch[{index}]"
        if not isinstance(item, dict):
            raise ClientError(
                400, "invalid_message", f"{prefix} must be an object", field=prefix, index=index
            )
        size = len(json.dumps(item, separators=(",", ":"), ensure_ascii=False, default=str).encode())
        if size > MAX_MESSAGE_BYTES:
            raise ClientError(
                413,
                "message_too_large",
                f"{prefix} is {size} bytes; a message may be at most {MAX_MESSAGE_BYTES}",
                field=prefix,
                limit=MAX_MESSAGE_BYTES,
                index=index,
            )
        merged = dict(item)
        if shared_context:
            # Segment: batch-level context applies to each message; the message's own keys win.
            item_context = item.get("context")
            merged["context"] = (
                {**shared_context, **item_context}
                if isinstance(item_context, dict)
                else item_context or dict(shared_context)
            )
        if sent_at is not None and "sentAt" not in item:
            merged["sentAt"] = sent_at
        messages.append(_message(merged, field_prefix=prefix + ".", index=index))
    return messages


def _message(document: dict[str, Any], *, field_prefix: str, index: int | None) -> SegmentMessage:
    for name in INTERNAL_FIELDS:
        if name in document:
            raise ClientError(
                400,
                "invalid_message",
                f"{field_prefix}{name} is set by CEMS from LINE's signed webhook; a site cannot send it",
                field=field_prefix + name,
                index=index,
            )
    try:
        message = SegmentMessage.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_prefix + _loc(first["loc"]) if first["loc"] else field_prefix.rstrip(".") or None
        raise ClientError(
            400, "invalid_message", f"{field or 'message'}: {first['msg']}", field=field, index=index
        ) from exc
    missing = message.missing_required_field()
    if missing:
        name, reason = missing
        raise ClientError(400, "invalid_message", reason, field=field_prefix + name, index=index)
    if message.type is MessageType.TRACK and message.event == ORDER_COMPLETED:
        try:
            OrderCompleted.model_validate(message.properties)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = f"{field_prefix}properties.{_loc(first['loc'])}"
            raise ClientError(
                400, "invalid_message", f"{field}: {first['msg']}", field=field, index=index
            ) from exc
    return message


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out

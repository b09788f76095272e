"""The Segment HTTP Tracking API wire format: paths, write keys, size limits and message validation."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cems.config import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from cems.errors import ClientError
from cems.jsonbody import MAX_MESSAGE_DEPTH, check_storable, load_object
from cems.models import ORDER_COMPLETED, LineLinkRequest, MessageType, OrderCompleted, SegmentMessage
from cems.profiles import LIMITS, MAX_TRAIT_KEY_LENGTH, MAX_TRAIT_VALUE_BYTES

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


MISSING_WRITE_KEY = ClientError(
    401,
    "missing_write_key",
    "send the write key as the HTTP Basic user name, as ?writeKey= or as writeKey in the body",
    field="writeKey",
)


def is_batch_path(kind: str) -> bool:
    return kind in PATH_TYPES and PATH_TYPES[kind] is None


def check_collect_path(kind: str) -> None:
    if kind not in PATH_TYPES:
        raise ClientError(404, "not_found", f"unknown endpoint /v1/{kind}", field="path")


def check_collect_size(kind: str, body: bytes) -> None:
    """The body (decoded) is within the size limit of the path's call: 413 naming the limit otherwise."""
    batch = is_batch_path(kind)
    limit = MAX_BATCH_BYTES if batch else MAX_MESSAGE_BYTES
    if len(body) > limit:
        what = "batch" if batch else "message"
        raise ClientError(
            413, "payload_too_large", f"a {what} may be at most {limit} bytes", field="body", limit=limit
        )


def read_collect_body(kind: str, body: bytes) -> dict[str, Any]:
    """The body as JSON, within the nesting DynamoDB can store (a batch adds two levels: the body and
    its list)."""
    depth = MAX_MESSAGE_DEPTH + (2 if is_batch_path(kind) else 0)
    return load_object(body, max_depth=depth)


def collect_messages(kind: str, document: dict[str, Any]) -> list[SegmentMessage]:
    """Validate every message of a request before anything is stored: one bad message rejects all."""
    if is_batch_path(kind):
        return _batch_messages(document)
    path_type = PATH_TYPES[kind]
    assert path_type is not None
    return [_message({**document, "type": path_type.value}, field_prefix="", index=None)]


def parse_collect_request(
    kind: str, body: bytes, authorization: str | None, query_write_key: str | None = None
) -> CollectRequest:
    """The whole request at once, for callers that check the key afterwards (tools and tests);
    the collect endpoint checks the key before it parses (cems.collect)."""
    check_collect_path(kind)
    check_collect_size(kind, body)
    write_key = request_write_key(authorization, query_write_key)
    document = read_collect_body(kind, body)
    write_key = write_key or body_write_key(document)
    if not write_key:
        raise MISSING_WRITE_KEY
    return CollectRequest(write_key=write_key, messages=collect_messages(kind, document))


def read_line_link_body(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_MESSAGE_BYTES:
        raise ClientError(
            413,
            "payload_too_large",
            f"a request may be at most {MAX_MESSAGE_BYTES} bytes",
            field="body",
            limit=MAX_MESSAGE_BYTES,
        )
    return load_object(body, max_depth=MAX_MESSAGE_DEPTH)


def line_link_request(document: dict[str, Any]) -> LineLinkRequest:
    """POST /v1/line/link: `{"anonymousId", "linkToken", "userId", "userHash"}`."""
    try:
        return LineLinkRequest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = _loc(first["loc"]) or "body"
        raise ClientError(400, "invalid_request", f"{field}: {first['msg']}", field=field) from exc


def request_write_key(authorization: str | None, query_write_key: str | None) -> str | None:
    """The write key sent outside the body (Basic auth user name, else `?writeKey=`): known before
    the body is read, so an unknown key is refused without parsing anything."""
    return _basic_auth_user(authorization) or (query_write_key or None)


def body_write_key(document: dict[str, Any]) -> str | None:
    value = document.get("writeKey")
    return value if isinstance(value, str) and value else None


def _basic_auth_user(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ClientError(
            401,
            "invalid_write_key",
            "the Authorization header is not valid Basic auth (base64 of '<writeKey>:')",
            field="Authorization",
        ) from exc
    return decoded.partition(":")[0] or None


def _batch_messages(document: dict[str, Any]) -> list[SegmentMessage]:
    items = document.get("batch")
    if not isinstance(items, list):
        raise ClientError(400, "invalid_batch", "batch must be a list of messages", field="batch")
    if not items:
        raise ClientError(400, "invalid_batch", "batch is empty", field="batch")
    shared_context = document.get("context")
    if shared_context is not None and not isinstance(shared_context, dict):
        raise ClientError(400, "invalid_batch", "context must be an object", field="context")
    if shared_context:
        # It becomes each message's context (level 2 of the message), so it may nest one level less.
        check_storable(shared_context, max_depth=MAX_MESSAGE_DEPTH - 1, prefix="context", check_text=False)
    sent_at = document.get("sentAt")
    messages = []
    for index, item in enumerate(items):
        prefix = f"batch[{index}]"
        if not isinstance(item, dict):
            raise ClientError(
                400, "invalid_message", f"{prefix} must be an object", field=prefix, index=index
            )
        size = json_size(item)
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
        field = field_prefix + _loc(first["loc"]) if first["loc"] else field_prefix.rstrip(".") or "body"
        raise ClientError(
            400, "invalid_message", f"{field}: {first['msg']}", field=field, index=index
        ) from exc
    missing = message.missing_required_field()
    if missing:
        name, reason = missing
        raise ClientError(400, "invalid_message", reason, field=field_prefix + name, index=index)
    if message.type is MessageType.IDENTIFY:
        _check_traits(message.traits, field_prefix, index)
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


def json_size(value: Any) -> int:
    """Bytes of `value` as compact UTF-8 JSON: how Segment's limits (and CEMS's trait limit) count."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str).encode())


def _check_traits(traits: dict[str, Any], field_prefix: str, index: int | None) -> None:
    """Traits within what a profile keeps (cems.profiles): a refused identify names the limit."""
    if len(traits) > LIMITS.traits:
        raise ClientError(
            400,
            "too_many_traits",
            f"{field_prefix}traits has {len(traits)} keys; at most {LIMITS.traits} are kept on a profile",
            field=f"{field_prefix}traits",
            limit=LIMITS.traits,
            index=index,
        )
    for key, value in traits.items():
        field = f"{field_prefix}traits.{key[:MAX_TRAIT_KEY_LENGTH]}"
        if len(key) > MAX_TRAIT_KEY_LENGTH:
            raise ClientError(
                400,
                "trait_name_too_long",
                f"{field}…: a trait name may be at most {MAX_TRAIT_KEY_LENGTH} characters",
                field=field,
                limit=MAX_TRAIT_KEY_LENGTH,
                index=index,
            )
        size = json_size(value)
        if size > MAX_TRAIT_VALUE_BYTES:
            raise ClientError(
                400,
                "trait_too_large",
                f"{field} is {size} bytes as JSON; a trait value may be at most {MAX_TRAIT_VALUE_BYTES}",
                field=field,
                limit=MAX_TRAIT_VALUE_BYTES,
                index=index,
            )


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out

"""Untrusted JSON bodies, read within what Python and DynamoDB can hold: a 400 naming the place, never a 500.

`json.loads` recurses once per nesting level and raises RecursionError near Python's limit (about
1,000 levels), with a traceback hundreds of kilobytes long; DynamoDB refuses items nested deeper than
32 levels, numbers beyond 38 significant digits or outside 1E-130 .. 1E+126, and empty map keys;
and JSON may carry an escaped lone UTF-16 surrogate, which is not text and which DynamoDB also
refuses. Each of those is a client's mistake (or an attack), so each is answered here, before anything
is stored, with the path of the offending value. The walk is iterative: it holds whatever depth the
parser accepted.
"""

from __future__ import annotations

import json
from decimal import Context, Decimal, DecimalException
from typing import Any

from cems.adapters.dynamodb.items import DYNAMODB_CONTEXT
from cems.errors import ClientError

# Nesting a stored message may have, counted from the message object itself (1) down. An event item
# adds no level above its message's fields and a profile adds one (`traits`), so this keeps every item
# well inside DynamoDB's 32 levels, while Segment's deepest common shape
# (properties.products[0].name) is at level 4.
MAX_MESSAGE_DEPTH = 16
# The longest path an error names: a deep path is cut, the limit says the rest.
_MAX_PATH_CHARS = 200

# boto3 serialises numbers through this context, which traps any rounding and any exponent DynamoDB
# cannot hold; checking with it here means the serializer can never raise later.
_DYNAMODB_NUMBERS: Context = DYNAMODB_CONTEXT.copy()


def load_object(body: bytes, *, max_depth: int, what: str = "body") -> dict[str, Any]:
    """The JSON object in `body`, or a ClientError(400) naming what is wrong and where.

    `max_depth` counts the top-level object as 1. Floats are parsed as Decimal (DynamoDB's number
    type); NaN and Infinity are refused, as JSON itself does not allow them.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ClientError(400, "invalid_json", f"the {what} must be UTF-8 JSON", field=what) from exc
    try:
        document = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except RecursionError:
        # No traceback kept (`from None`): it would be about a thousand frames of the parser.
        raise ClientError(
            400,
            "too_deep",
            f"the {what} is nested too deeply; at most {max_depth} levels are accepted",
            field=what,
            limit=max_depth,
        ) from None
    except json.JSONDecodeError as exc:
        raise ClientError(
            400,
            "invalid_json",
            f"the {what} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
            field=what,
        ) from None
    except ValueError as exc:  # NaN/Infinity, or an integer longer than Python converts (4,300 digits)
        raise ClientError(400, "invalid_json", f"the {what} is not valid JSON: {exc}", field=what) from None
    if not isinstance(document, dict):
        raise ClientError(400, "invalid_json", f"the {what} must be a JSON object", field=what)
    check_storable(document, max_depth=max_depth, check_text="\\ud" in text.lower())
    return document


def check_storable(value: Any, *, max_depth: int, prefix: str = "", check_text: bool = True) -> None:
    """Raises ClientError(400) at the first value DynamoDB could not store: nesting deeper than
    `max_depth` (the value itself is level 1), a number out of DynamoDB's range or precision, or a
    string that is not valid Unicode. `prefix` is the value's own path in error messages."""
    stack: list[tuple[Any, str, int]] = [(value, prefix, 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise ClientError(
                    400,
                    "too_deep",
                    f"{_short(path) or 'the body'} is nested more than {max_depth} levels deep",
                    field=_short(path) or "body",
                    limit=max_depth,
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if check_text and not _is_text(key):
                        raise _not_text(_join(path, "<key>"))
                    if not key:
                        # DynamoDB attribute names (map keys) have at least one character.
                        raise ClientError(
                            400,
                            "empty_key",
                            f"{_short(path) or 'the body'} has a key that is empty; keys need a character",
                            field=_short(path) or "body",
                        )
                    stack.append((child, _join(path, key), depth + 1))
            else:
                stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        elif isinstance(item, str):
            if check_text and not _is_text(item):
                raise _not_text(path)
        elif isinstance(item, int | Decimal) and not isinstance(item, bool) and not storable_number(item):
            raise ClientError(
                400,
                "number_out_of_range",
                f"{_short(path) or 'a number'} cannot be stored: numbers may have at most 38 significant "
                "digits and lie between 1E-130 and 9.99E+125 in magnitude",
                field=_short(path) or "body",
                limit=38,
            )


def storable_number(number: int | Decimal) -> bool:
    """Whether DynamoDB (through boto3's serializer) can hold `number` exactly."""
    try:
        exact = _DYNAMODB_NUMBERS.create_decimal(number)
    except (DecimalException, ValueError, OverflowError):
        return False
    # boto3's context admits exponents up to 126; DynamoDB's documented range ends below 1E+126.
    return exact.is_zero() or -130 <= exact.adjusted() <= 125


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_text(path: str) -> ClientError:
    # What JavaScript leaves when it cuts a string in the middle of an emoji: valid JSON, not text.
    return ClientError(
        400,
        "invalid_json",
        f"{_short(path) or 'the body'} contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff)",
        field=_short(path) or "body",
    )


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _short(path: str) -> str:
    return path if len(path) <= _MAX_PATH_CHARS else path[:_MAX_PATH_CHARS] + "…"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")

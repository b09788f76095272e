"""Untrusted JSON within what Python and DynamoDB hold (cems.jsonbody) and the message rules built on
it (cems.segment): every refusal is a 400 that names the place and, where there is one, the limit."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from cems.errors import ClientError
from cems.jsonbody import MAX_MESSAGE_DEPTH, load_object, storable_number
from cems.segment import parse_collect_request


def refused(body: bytes, max_depth: int = MAX_MESSAGE_DEPTH) -> ClientError:
    with pytest.raises(ClientError) as caught:
        load_object(body, max_depth=max_depth)
    assert caught.value.status == 400
    assert caught.value.field  # every refusal names its place
    return caught.value


@pytest.mark.parametrize("depth", [MAX_MESSAGE_DEPTH + 1, 900, 5_000, 100_000])
def test_nesting_past_the_limit_or_pythons_recursion_limit_is_400_naming_the_limit(depth: int) -> None:
    for opener, closer in (("[", "]"), ('{"a":', "}")):
        body = ('{"p":' + opener * (depth - 1) + "0" + closer * (depth - 1) + "}").encode()
        error = refused(body)
        assert (error.code, error.limit) == ("too_deep", MAX_MESSAGE_DEPTH)
        # The traceback of a RecursionError is not kept (it would be ~300 KB in the logs).
        assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


def test_nesting_up_to_the_limit_is_accepted() -> None:
    body = '{"p":' + "[" * (MAX_MESSAGE_DEPTH - 2) + "1" + "]" * (MAX_MESSAGE_DEPTH - 2) + "}"
    assert load_object(body.encode(), max_depth=MAX_MESSAGE_DEPTH)["p"]


@pytest.mark.parametrize(
    "number",
    [
        "1e400",
        "1e-200",
        "-1e126",
        "123456789012345678901234567890123456789012",
        "0.1234567890123456789012345678901234567890",
    ],
)
def test_numbers_dynamodb_cannot_hold_are_400(number: str) -> None:
    error = refused(f'{{"properties": {{"price": {number}}}}}'.encode())
    assert (error.code, error.field, error.limit) == ("number_out_of_range", "properties.price", 38)


@pytest.mark.parametrize(
    "number", ["0", "-0", "1e125", "1e-130", "12345678901234567890123456789012345678", "3.14"]
)
def test_numbers_dynamodb_holds_are_kept(number: str) -> None:
    assert load_object(f'{{"n": {number}}}'.encode(), max_depth=2)["n"] is not None
    assert storable_number(Decimal(number))


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        (b'{"a": "\\ud83d"}', "invalid_json", "a"),
        (b'{"\\udc00": 1}', "invalid_json", "<key>"),
        (b'{"a": {"": 1}}', "empty_key", "a"),
        (b'{"a": NaN}', "invalid_json", "body"),
        (b'{"a": ' + b"1" * 5000 + b"}", "invalid_json", "body"),
        (b"\xff\xfe", "invalid_json", "body"),
        (b"[1]", "invalid_json", "body"),
    ],
)
def test_what_is_not_storable_text_or_json_is_400_naming_its_place(
    body: bytes, code: str, field: str
) -> None:
    error = refused(body)
    assert (error.code, error.field) == (code, field)


def message(**fields: object) -> bytes:
    return json.dumps({"anonymousId": "a1", "event": "Viewed", **fields}).encode()


@pytest.mark.parametrize(
    "timestamp",
    [
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "1969-12-31T23:59:59Z",
        "2200-01-01T00:00:00Z",
    ],
)
def test_times_outside_what_cems_keeps_are_400_naming_the_field(timestamp: str) -> None:
    for field in ("timestamp", "sentAt", "originalTimestamp"):
        with pytest.raises(ClientError) as caught:
            parse_collect_request("track", message(**{field: timestamp}), None, "wk")
        assert (caught.value.status, caught.value.field) == (400, field)


def test_trait_limits_name_the_trait_and_the_limit() -> None:
    def identify_error(traits: dict[str, object]) -> ClientError:
        with pytest.raises(ClientError) as caught:
            parse_collect_request(
                "identify", json.dumps({"anonymousId": "a", "traits": traits}).encode(), None, "wk"
            )
        return caught.value

    assert (
        identify_error({f"t{n}": n for n in range(101)}).limit,
        identify_error({f"t{n}": n for n in range(101)}).field,
    ) == (100, "traits")
    big = identify_error({"note": "x" * 2000})
    assert (big.code, big.field, big.limit) == ("trait_too_large", "traits.note", 1024)
    long_name = identify_error({"k" * 200: 1})
    assert (long_name.code, long_name.limit) == ("trait_name_too_long", 128)

"""The Segment wire format: write keys, limits, validation errors that name the field."""

import base64
import json

import pytest
from cems.errors import ClientError
from cems.models import MessageType
from cems.segment import parse_collect_request


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def basic(write_key: str) -> str:
    return "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()


def rejected(kind: str, raw: bytes, authorization: str | None = basic("k")) -> ClientError:
    with pytest.raises(ClientError) as caught:
        parse_collect_request(kind, raw, authorization)
    return caught.value


def test_write_key_is_read_from_basic_auth_user_name():
    request = parse_collect_request("track", body({"event": "Viewed", "anonymousId": "a"}), basic("wk_1"))
    assert request.write_key == "wk_1"
    assert request.messages[0].type is MessageType.TRACK


def test_write_key_is_read_from_the_body_when_there_is_no_authorization():
    request = parse_collect_request("page", body({"anonymousId": "a", "writeKey": "wk_2"}), None)
    assert request.write_key == "wk_2"


def test_a_missing_write_key_is_401_naming_the_field():
    error = rejected("track", body({"event": "x", "anonymousId": "a"}), None)
    assert (error.status, error.code, error.field) == (401, "missing_write_key", "writeKey")


def test_the_path_decides_the_type_including_analytics_next_short_paths():
    assert (
        parse_collect_request("t", body({"event": "x", "userId": "u"}), basic("k")).messages[0].type
        == "track"
    )
    assert parse_collect_request("i", body({"userId": "u"}), basic("k")).messages[0].type == "identify"


def test_unknown_path_is_404():
    assert rejected("nope", body({})).status == 404


def test_malformed_json_is_400_invalid_json():
    error = rejected("track", b'{"event": ')
    assert (error.status, error.code) == (400, "invalid_json")


def test_nan_is_rejected_because_json_does_not_allow_it():
    assert rejected("track", b'{"event": "x", "anonymousId": "a", "properties": {"v": NaN}}').status == 400


def test_a_body_that_is_not_an_object_is_400():
    assert rejected("track", b"[1, 2]").code == "invalid_json"


def test_a_message_over_32_kb_is_413_naming_the_limit():
    error = rejected("track", body({"event": "x", "anonymousId": "a", "properties": {"p": "x" * 33_000}}))
    assert (error.status, error.limit) == (413, 32 * 1024)


def test_a_batch_over_500_kb_is_413_naming_the_limit():
    batch = [{"type": "track", "event": "x", "anonymousId": "a", "properties": {"p": "x" * 20_000}}] * 30
    error = rejected("batch", body({"batch": batch}))
    assert (error.status, error.limit) == (413, 500 * 1024)


def test_one_message_over_32_kb_inside_a_batch_names_its_index():
    batch = [
        {"type": "track", "event": "x", "anonymousId": "a"},
        {"type": "track", "event": "x", "anonymousId": "a", "properties": {"p": "x" * 33_000}},
    ]
    error = rejected("batch", body({"batch": batch}))
    assert (error.status, error.index, error.field) == (413, 1, "batch[1]")


def test_a_message_with_neither_id_names_user_id():
    error = rejected("track", body({"event": "x"}))
    assert (error.status, error.field) == (400, "userId")
    assert "anonymousId" in error.message


def test_track_without_event_names_event():
    assert rejected("track", body({"anonymousId": "a"})).field == "event"


def test_alias_needs_previous_id():
    assert rejected("alias", body({"userId": "u"})).field == "previousId"


def test_wrong_types_name_the_field():
    error = rejected("track", body({"event": "x", "anonymousId": "a", "properties": "not an object"}))
    assert (error.status, error.field) == (400, "properties")


def test_a_message_id_over_100_characters_is_rejected():
    error = rejected("track", body({"event": "x", "anonymousId": "a", "messageId": "m" * 101}))
    assert error.field == "messageId"


def test_one_invalid_message_rejects_the_batch_with_its_index():
    batch = [{"type": "track", "event": "ok", "anonymousId": "a"}, {"type": "track", "anonymousId": "a"}]
    error = rejected("batch", body({"batch": batch}))
    assert (error.status, error.index, error.field) == (400, 1, "batch[1].event")


def test_an_unknown_type_in_a_batch_names_the_type_field():
    error = rejected("batch", body({"batch": [{"type": "explode", "anonymousId": "a"}]}))
    assert error.field == "batch[0].type"


def test_an_empty_or_missing_batch_is_400():
    assert rejected("batch", body({"batch": []})).field == "batch"
    assert rejected("batch", body({})).field == "batch"


def test_order_completed_with_a_wrongly_typed_price_names_the_product_field():
    properties = {"order_id": "o1", "products": [{"product_id": "p", "price": "cheap"}]}
    error = rejected(
        "track", body({"event": "Order Completed", "anonymousId": "a", "properties": properties})
    )
    assert error.field == "properties.products[0].price"


def test_batch_context_merges_into_each_message_and_the_message_wins():
    document = {
        "context": {"library": {"name": "x"}, "ip": "1.2.3.4"},
        "batch": [{"type": "page", "anonymousId": "a", "context": {"ip": "5.6.7.8"}}],
    }
    message = parse_collect_request("batch", body(document), basic("k")).messages[0]
    assert message.context == {"library": {"name": "x"}, "ip": "5.6.7.8"}


def test_batch_sent_at_applies_to_messages_without_their_own():
    document = {"sentAt": "2026-01-01T00:00:10Z", "batch": [{"type": "page", "anonymousId": "a"}]}
    message = parse_collect_request("batch", body(document), basic("k")).messages[0]
    assert message.sent_at is not None and message.sent_at.second == 10


def test_numeric_user_ids_are_kept_as_strings_like_segment_does():
    message = parse_collect_request("identify", body({"userId": 42}), basic("k")).messages[0]
    assert message.user_id == "42"


def test_decimals_survive_parsing_exactly():
    message = parse_collect_request(
        "track", body({"event": "x", "anonymousId": "a", "properties": {"v": 0.1}}), basic("k")
    ).messages[0]
    assert str(message.properties["v"]) == "0.1"

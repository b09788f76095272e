"""The collect Lambda handler end to end under moto, driven by the sample events in events/collect/.

Each test imports functions/collect/app.py afresh inside mock_aws, so its module-level boto3 client
talks to moto, and invokes lambda_handler the way API Gateway's HTTP API would (payload v2).
"""

from __future__ import annotations

import base64
import copy
import gzip
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.sites import SiteStore
from cems.config import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES
from cems.local.stack import DEFAULT_IDENTITY_SECRET, DEFAULT_SECRET_KEY
from cems.models import Site

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
EVENTS = ROOT / "events" / "collect"
APP = ROOT / "functions" / "collect" / "app.py"
WRITE_KEY = "local-write-key"
ALLOWED_ORIGINS = ["http://localhost:3000", "http://127.0.0.1:3000"]
DATA_TABLES = ("EventsTable", "CustomersTable", "IdempotencyTable")


FakeLambdaContext = partial(FakeContext, "cems-dev-CollectFunction")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


Invoke = Callable[[dict[str, Any]], Answer]


def load_event(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def body_of(event: dict[str, Any]) -> dict[str, Any]:
    raw = event["body"]
    text = base64.b64decode(raw).decode() if event.get("isBase64Encoded") else raw
    document: dict[str, Any] = json.loads(text)
    return document


def with_body(event: dict[str, Any], body: dict[str, Any] | str | bytes) -> dict[str, Any]:
    """A copy of `event` carrying another body (kept base64 when the original was)."""
    changed = copy.deepcopy(event)
    if isinstance(body, dict):
        body = json.dumps(body, ensure_ascii=False)
    raw = body.encode() if isinstance(body, str) else body
    changed["headers"]["content-length"] = str(len(raw))
    if changed.get("isBase64Encoded"):
        changed["body"] = base64.b64encode(raw).decode()
    else:
        changed["body"] = raw.decode()
    return changed


def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(page["Items"])
    return items


def snapshot(client: Any) -> dict[str, list[dict[str, Any]]]:
    return {table: scan_all(client, table) for table in DATA_TABLES}


def stored_message_ids(client: Any) -> list[str]:
    return sorted(item["message_id"]["S"] for item in scan_all(client, "EventsTable"))


@pytest.fixture
def site(dynamodb: Any) -> Site:
    # The local stack's documented keys: the samples from servers use the secret key, the browser
    # identify carries a user hash made with the identity secret.
    return (
        SiteStore("SitesTable", dynamodb)
        .add(
            "local-shop",
            ALLOWED_ORIGINS,
            write_key=WRITE_KEY,
            secret_key=DEFAULT_SECRET_KEY,
            identity_secret=DEFAULT_IDENTITY_SECRET,
        )
        .site
    )


@pytest.fixture
def invoke(site: Site, monkeypatch: pytest.MonkeyPatch) -> Iterator[Invoke]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cems")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CEMS")
    # The module builds its DynamoDB client at import; a cached one could predate mock_aws.
    aws.dynamodb.cache_clear()
    name = "cems_collect_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    def call(event: dict[str, Any]) -> Answer:
        response = module.lambda_handler(copy.deepcopy(event), FakeLambdaContext())
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        return Answer(response["statusCode"], headers, body)

    yield call
    sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()


# Accepted requests ---------------------------------------------------------------------------------

ACCEPTED = {
    "track.json": 1,
    "track_text_plain.json": 1,
    "track_base64.json": 1,
    "identify.json": 1,
    "alias.json": 1,
    "page.json": 1,
    "batch.json": 4,
}


@pytest.mark.parametrize(("name", "messages"), ACCEPTED.items())
def test_each_sample_request_is_accepted_and_stored(
    invoke: Invoke, dynamodb: Any, name: str, messages: int
) -> None:
    event = load_event(name)
    answer = invoke(event)
    assert (answer.status, answer.json) == (200, {"success": True})
    assert answer.headers["content-type"] == "application/json"
    sent = body_of(event).get("batch") or [body_of(event)]
    assert stored_message_ids(dynamodb) == sorted(m["messageId"] for m in sent)
    assert len(scan_all(dynamodb, "IdempotencyTable")) == messages


def test_every_sample_request_sent_in_turn_is_stored_once(invoke: Invoke, dynamodb: Any) -> None:
    for name in ACCEPTED:
        assert invoke(load_event(name)).status == 200
    assert len(stored_message_ids(dynamodb)) == sum(ACCEPTED.values())


def test_a_browser_from_an_allowed_origin_gets_its_origin_echoed_with_credentials(invoke: Invoke) -> None:
    for name, origin in [("track.json", "http://localhost:3000"), ("page.json", "http://127.0.0.1:3000")]:
        answer = invoke(load_event(name))
        assert answer.status == 200
        assert answer.headers["access-control-allow-origin"] == origin
        assert answer.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in answer.headers["vary"]


def test_a_server_client_without_origin_gets_no_cors_headers(invoke: Invoke) -> None:
    answer = invoke(load_event("batch.json"))
    assert answer.status == 200
    assert not any(h.startswith("access-control-") for h in answer.headers)


def test_a_send_beacon_text_plain_body_with_the_write_key_inside_is_accepted(
    invoke: Invoke, dynamodb: Any, site: Site
) -> None:
    event = load_event("track_text_plain.json")
    assert event["headers"]["content-type"].startswith("text/plain")
    assert "authorization" not in event["headers"]
    assert invoke(event).status == 200
    [item] = scan_all(dynamodb, "EventsTable")
    assert item["site_id"]["S"] == site.site_id
    assert item["event"]["S"] == "Product Added"
    assert item["properties"]["M"]["name"]["S"] == "宇治抹茶 濃茶用 30g缶"
    # The write key is a credential of the request, not part of the event.
    assert WRITE_KEY not in json.dumps(item, ensure_ascii=False)


def test_a_base64_encoded_body_is_decoded(invoke: Invoke, dynamodb: Any, stores: Stores) -> None:
    event = load_event("track_base64.json")
    assert event["isBase64Encoded"] is True
    assert invoke(event).status == 200
    customer = stores.customers.customer_for_user_id("user-104829")
    assert customer is not None
    [stored] = stores.events.events_of(customer)
    assert stored.event == "Coupon Applied"
    assert stored.properties["coupon_name"] == "冬の新茶フェア 10%オフ"


def test_a_body_that_is_not_base64_is_a_400(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("track_base64.json")
    event["body"] = "%%% not base64 %%%"
    answer = invoke(event)
    assert answer.status == 400
    assert answer.json["error"] == "invalid_body"
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


def test_the_tag_script_is_served_as_cacheable_javascript(invoke: Invoke) -> None:
    answer = invoke(load_event("tag_js.json"))
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/javascript")
    assert "charset=utf-8" in answer.headers["content-type"].lower()
    cache_control = answer.headers["cache-control"]
    assert "public" in cache_control and "max-age=" in cache_control
    assert int(cache_control.split("max-age=")[1].split(",")[0]) > 0
    assert answer.text == (ROOT / "shared" / "cems" / "static" / "tag.js").read_text(encoding="utf-8")


def test_a_preflight_from_an_allowed_origin_is_answered_without_storing(
    invoke: Invoke, dynamodb: Any
) -> None:
    answer = invoke(load_event("preflight.json"))
    assert answer.status == 204
    assert answer.text == ""
    assert answer.headers["access-control-allow-origin"] == "http://localhost:3000"
    # A preflight names no site, so it cannot vouch for the origin: never with credentials.
    assert "access-control-allow-credentials" not in answer.headers
    methods = {m.strip() for m in answer.headers["access-control-allow-methods"].split(",")}
    assert {"POST", "OPTIONS"} <= methods
    allowed_headers = {h.strip().lower() for h in answer.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "authorization"} <= allowed_headers
    assert int(answer.headers["access-control-max-age"]) > 0
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


# Rejected requests ---------------------------------------------------------------------------------

# file -> (status, error code, what the body must name)
REJECTED: dict[str, tuple[int, str, dict[str, Any]]] = {
    "malformed_json.json": (400, "invalid_json", {"field": "body"}),
    "missing_ids.json": (400, "invalid_message", {"field": "userId"}),
    "wrong_type.json": (400, "invalid_message", {"field": "properties"}),
    "unknown_write_key.json": (401, "invalid_write_key", {"field": "writeKey"}),
    "no_write_key.json": (401, "missing_write_key", {"field": "writeKey"}),
    "disallowed_origin.json": (403, "origin_not_allowed", {"field": "Origin"}),
    "unknown_path.json": (404, "not_found", {"field": "path"}),
    "unknown_kind.json": (404, "not_found", {"field": "path"}),
    "wrong_method.json": (405, "method_not_allowed", {"field": "method"}),
    "batch_one_invalid.json": (400, "invalid_message", {"field": "batch[2].event", "index": 2}),
}


@pytest.mark.parametrize(("name", "expected"), REJECTED.items())
def test_each_bad_request_gets_a_json_error_and_stores_nothing(
    invoke: Invoke, dynamodb: Any, name: str, expected: tuple[int, str, dict[str, Any]]
) -> None:
    status, code, named = expected
    answer = invoke(load_event(name))
    assert answer.status == status
    assert answer.headers["content-type"] == "application/json"
    body = answer.json
    assert body["success"] is False
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    for key, value in named.items():
        assert body[key] == value
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}
    origin = load_event(name)["headers"].get("origin")
    if origin:
        # The page can read why its request was refused, but without credentials: the origin may
        # not be one the site allows.
        assert answer.headers["access-control-allow-origin"] == origin
        assert "access-control-allow-credentials" not in answer.headers
    else:
        assert "access-control-allow-origin" not in answer.headers


def test_a_wrong_method_names_the_allowed_ones(invoke: Invoke) -> None:
    answer = invoke(load_event("wrong_method.json"))
    assert answer.status == 405
    assert {m.strip() for m in answer.headers["allow"].split(",")} >= {"POST"}


def test_the_unknown_kind_is_named_in_the_404(invoke: Invoke) -> None:
    assert "unknownkind" in invoke(load_event("unknown_kind.json")).json["message"]


def test_a_bad_request_leaves_earlier_data_untouched(invoke: Invoke, dynamodb: Any) -> None:
    assert invoke(load_event("identify.json")).status == 200
    before = snapshot(dynamodb)
    for name in REJECTED:
        assert invoke(load_event(name)).status >= 400
    assert snapshot(dynamodb) == before


def test_a_retired_write_key_is_refused_after_its_grace_period(invoke: Invoke, dynamodb: Any) -> None:
    new, retired = SiteStore("SitesTable", dynamodb).rotate("local-shop", timedelta(0))
    assert [r.write_key for r in retired] == [WRITE_KEY]
    answer = invoke(load_event("track.json"))
    assert (answer.status, answer.json["error"]) == (401, "invalid_write_key")
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}
    with_new_key = load_event("track_text_plain.json")
    document = body_of(with_new_key)
    document["writeKey"] = new.write_key
    assert invoke(with_body(with_new_key, document)).status == 200


# Duplicates and batches ----------------------------------------------------------------------------


def test_the_same_event_delivered_twice_is_stored_once(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("track.json")
    first, again = invoke(event), invoke(event)
    assert (first.status, again.status) == (200, 200)
    assert again.json == {"success": True}
    assert stored_message_ids(dynamodb) == [body_of(event)["messageId"]]
    assert len(scan_all(dynamodb, "IdempotencyTable")) == 1


def test_a_batch_resent_whole_is_stored_once_with_one_order(
    invoke: Invoke, dynamodb: Any, stores: Stores
) -> None:
    event = load_event("batch.json")
    assert invoke(event).status == 200
    assert invoke(event).status == 200
    sent = body_of(event)["batch"]
    assert stored_message_ids(dynamodb) == sorted(m["messageId"] for m in sent)

    # identify in the batch joined the anonymous visitor to user-205531: one profile holds it all.
    anonymous = stores.customers.customer_for_anonymous_id(sent[0]["anonymousId"])
    known = stores.customers.customer_for_user_id("user-205531")
    assert anonymous is not None and anonymous == known
    profile = stores.customers.profile(known)
    assert profile is not None
    assert profile.traits["name"] == "鈴木 健太"
    assert [e.message_id for e in stores.events.history(profile)] == [m["messageId"] for m in sent]
    assert profile.purchase_count == 1
    assert profile.monetary_total == Decimal(9730)
    order = profile.orders["ORD-2026-000153"]
    assert order.currency == "JPY"
    # The order's products are kept once, in the purchase sets (bounded profiles, cems.profiles).
    assert order.product_ids == []
    assert profile.products_bought == {"P-1001", "P-2003", "P-5012"}
    assert profile.skus_bought == {"SEN-FK-100", "MAT-UJ-30", "YUN-HS-01"}
    assert profile.categories_bought == {"日本茶", "抹茶", "茶器"}


def test_a_batch_with_one_invalid_message_is_rejected_whole_then_the_fixed_retry_stores_each_once(
    invoke: Invoke, dynamodb: Any, stores: Stores
) -> None:
    event = load_event("batch_one_invalid.json")
    rejected = invoke(event)
    assert rejected.status == 400
    assert (rejected.json["index"], rejected.json["field"]) == (2, "batch[2].event")
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}

    document = body_of(event)
    document["batch"][2]["event"] = "Order Completed"
    fixed = with_body(event, document)
    assert invoke(fixed).status == 200
    assert invoke(fixed).status == 200
    assert stored_message_ids(dynamodb) == sorted(m["messageId"] for m in document["batch"])
    profile = stores.customers.profile(stores.customers.customer_for_user_id("user-318840") or "")
    assert profile is not None
    assert (profile.purchase_count, profile.monetary_total) == (1, Decimal(3250))


def test_a_duplicate_inside_one_batch_is_stored_once(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("batch.json")
    document = body_of(event)
    document["batch"].append(copy.deepcopy(document["batch"][0]))
    assert invoke(with_body(event, document)).status == 200
    assert len(stored_message_ids(dynamodb)) == 4


# Size limits ---------------------------------------------------------------------------------------


def _padded_to(document: dict[str, Any], size: int) -> bytes:
    """`document` as JSON of exactly `size` bytes, padded with a 3-byte-per-character Japanese note."""
    document = copy.deepcopy(document)
    document["properties"]["note"] = ""
    base = len(json.dumps(document, ensure_ascii=False).encode())
    room = size - base
    document["properties"]["note"] = "茶" * (room // 3) + "x" * (room % 3)
    raw = json.dumps(document, ensure_ascii=False).encode()
    assert len(raw) == size
    return raw


def test_a_message_of_exactly_32_kb_is_accepted(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("track.json")
    assert invoke(with_body(event, _padded_to(body_of(event), MAX_MESSAGE_BYTES))).status == 200
    assert len(stored_message_ids(dynamodb)) == 1


def test_a_message_over_32_kb_is_a_413_naming_the_limit(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("track.json")
    answer = invoke(with_body(event, _padded_to(body_of(event), MAX_MESSAGE_BYTES + 1)))
    assert answer.status == 413
    assert answer.json["limit"] == MAX_MESSAGE_BYTES == 32 * 1024
    assert str(MAX_MESSAGE_BYTES) in answer.json["message"]
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


def test_an_oversize_base64_message_is_measured_after_decoding(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("track_base64.json")
    answer = invoke(with_body(event, _padded_to(body_of(event), MAX_MESSAGE_BYTES + 1)))
    assert (answer.status, answer.json["limit"]) == (413, MAX_MESSAGE_BYTES)
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


def test_one_message_over_32_kb_inside_a_batch_is_a_413_with_its_index(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("batch.json")
    document = body_of(event)
    big = json.loads(_padded_to({**document["batch"][1]}, MAX_MESSAGE_BYTES + 100))
    document["batch"][1] = big
    answer = invoke(with_body(event, document))
    assert answer.status == 413
    body = answer.json
    assert (body["index"], body["field"], body["limit"]) == (1, "batch[1]", MAX_MESSAGE_BYTES)
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


def test_a_batch_over_500_kb_is_a_413_naming_the_limit(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("batch.json")
    template = body_of(event)["batch"][0]
    messages = []
    for i in range(20):  # 20 messages of 26 KB: each within the message limit, together over 500 KB
        message = json.loads(_padded_to(template, 26 * 1024))
        message["messageId"] = f"oversize-batch-{i:02d}"
        messages.append(message)
    raw = json.dumps({"batch": messages}, ensure_ascii=False).encode()
    assert len(raw) > MAX_BATCH_BYTES
    answer = invoke(with_body(event, raw))
    assert answer.status == 413
    assert answer.json["limit"] == MAX_BATCH_BYTES == 500 * 1024
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


# Gzip bodies and unpaired surrogates ----------------------------------------------------------


def test_a_gzip_body_from_a_segment_library_is_accepted(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("batch.json")
    compressed = gzip.compress(event["body"].encode())
    event["headers"]["content-encoding"] = "gzip"
    event["isBase64Encoded"] = True
    event = with_body(event, compressed)
    answer = invoke(event)
    assert (answer.status, answer.text) == (200, json.dumps({"success": True}))
    assert len(stored_message_ids(dynamodb)) == 4


def test_a_gzip_bomb_is_refused_at_the_batch_limit_without_inflating_it(
    invoke: Invoke, dynamodb: Any
) -> None:
    event = load_event("batch.json")
    bomb = gzip.compress(b'{"batch": [' + b" " * (50 * 1024 * 1024) + b"]}")
    event["headers"]["content-encoding"] = "gzip"
    event["isBase64Encoded"] = True
    answer = invoke(with_body(event, bomb))
    assert answer.status == 413
    assert answer.json["limit"] == MAX_BATCH_BYTES
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


def test_an_unknown_content_encoding_or_corrupt_gzip_is_refused(invoke: Invoke, dynamodb: Any) -> None:
    event = load_event("batch.json")
    event["headers"]["content-encoding"] = "br"
    answer = invoke(event)
    assert (answer.status, answer.json["field"]) == (415, "Content-Encoding")
    event["headers"]["content-encoding"] = "gzip"
    event["isBase64Encoded"] = True
    answer = invoke(with_body(event, b"\x1f\x8b not really gzip"))
    assert (answer.status, answer.json["error"]) == (400, "invalid_body")
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}


def test_a_lone_surrogate_escape_is_refused_as_bad_input_not_a_server_error(
    invoke: Invoke, dynamodb: Any
) -> None:
    event = load_event("track.json")
    # What a browser's JSON.stringify sends for "抹茶ラテ🍵" cut by String.slice in the middle of the emoji.
    text = event["body"].replace('"name": "静岡県産 深蒸し煎茶 100g"', '"name": "抹茶ラテ\\ud83c"')
    assert text != event["body"]
    answer = invoke(with_body(event, text))
    assert answer.status == 400
    assert answer.json["error"] in ("invalid_json", "invalid_message")
    assert snapshot(dynamodb) == {table: [] for table in DATA_TABLES}

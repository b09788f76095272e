"""The collect endpoint over plain HTTP (urllib) on the running local stack.

Requests are rebuilt from the sample events in events/collect/, so the HTTP tests and the handler
tests speak the same requests; browser origins are moved to the stack's own port (the origins the
local site allows) and ids are made unique, since one stack serves the whole test session.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import HANG, LocalStackClient

pytestmark = pytest.mark.e2e

EVENTS = Path(__file__).parents[2] / "events" / "collect"
SAMPLE_ORIGIN_PORT = ":3000"
# Headers API Gateway adds or the HTTP client computes; not part of what the caller chose to send.
GATEWAY_HEADERS = {"host", "content-length", "x-amzn-trace-id", "x-forwarded-for", "x-forwarded-port"}
GATEWAY_HEADERS |= {"x-forwarded-proto", "accept-encoding"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def send(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=HANG) as response:
            return Answer(
                response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
            )
    except urllib.error.HTTPError as error:
        return Answer(error.code, {k.lower(): v for k, v in error.headers.items()}, error.read())


def local_origin(stack: LocalStackClient, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{stack.http_port}"


def sample(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def sample_document(event: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    document: dict[str, Any] = json.loads(raw)
    return document


def unique(document: dict[str, Any], run: str) -> dict[str, Any]:
    """The document with this run's messageIds and ids, so it is new to the session's stack."""
    text = json.dumps(document, ensure_ascii=False)
    for message in document.get("batch") or [document]:
        for key in ("messageId", "anonymousId", "userId", "previousId"):
            if key in message:
                text = text.replace(json.dumps(message[key]), json.dumps(f"{message[key]}-{run}"))
    changed: dict[str, Any] = json.loads(text)
    return changed


def replay(
    stack: LocalStackClient,
    name: str,
    *,
    document: dict[str, Any] | None = None,
    raw: bytes | None = None,
    origin_host: str = "127.0.0.1",
    authorization: str | None = None,
) -> Answer:
    """Send a sample event's request to the stack (its method, path, query, headers and body), with
    `authorization` instead of the sample's when given."""
    event = sample(name)
    headers = {k: v for k, v in event["headers"].items() if k not in GATEWAY_HEADERS}
    if authorization is not None:
        headers["authorization"] = authorization
    for key in ("origin", "referer"):
        if key in headers and SAMPLE_ORIGIN_PORT in headers[key]:
            scheme_host = headers[key].split(SAMPLE_ORIGIN_PORT)[0]
            if scheme_host.endswith(("localhost", "127.0.0.1")):
                origin = local_origin(stack, origin_host)
                headers[key] = origin + headers[key].split(SAMPLE_ORIGIN_PORT, 1)[1]
    body: bytes | None = raw
    if body is None and document is not None:
        body = json.dumps(document, ensure_ascii=False).encode()
    if body is None and event.get("body") is not None:
        body = base64.b64decode(event["body"]) if event["isBase64Encoded"] else event["body"].encode()
    path = event["rawPath"] + (f"?{event['rawQueryString']}" if event["rawQueryString"] else "")
    return send(stack.http_url + path, event["requestContext"]["http"]["method"], body, headers)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def customer_of(stack: LocalStackClient, kind: str, value: str) -> str | None:
    item = stack.dynamodb.get_item(
        TableName="CustomersTable",
        Key={"pk": {"S": f"ID#{kind}#{value}"}, "sk": {"S": "ID"}},
        ConsistentRead=True,
    ).get("Item")
    return item["customer_id"]["S"] if item else None


def message_ids_of(stack: LocalStackClient, customer_id: str) -> list[str]:
    items = stack.dynamodb.query(
        TableName="EventsTable",
        KeyConditionExpression="customer_id = :c",
        ExpressionAttributeValues={":c": {"S": customer_id}},
        ConsistentRead=True,
    )["Items"]
    return sorted(item["message_id"]["S"] for item in items)


def stored_event(stack: LocalStackClient, customer_id: str, message_id: str) -> dict[str, Any]:
    """The raw item of one stored event of this customer."""
    items = stack.dynamodb.query(
        TableName="EventsTable",
        KeyConditionExpression="customer_id = :c",
        ExpressionAttributeValues={":c": {"S": customer_id}},
        ConsistentRead=True,
    )["Items"]
    found: list[dict[str, Any]] = [i for i in items if i["message_id"]["S"] == message_id]
    [item] = found
    return item


def ledger_has(stack: LocalStackClient, message_id: str) -> bool:
    """Whether any site's de-duplication marker for this messageId exists (see MessageLedger)."""
    items = stack.dynamodb.scan(
        TableName="IdempotencyTable",
        FilterExpression="contains(id, :m)",
        ExpressionAttributeValues={":m": {"S": f"#{message_id}"}},
        ConsistentRead=True,
    )["Items"]
    return bool(items)


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:10]


# Accepted ------------------------------------------------------------------------------------------


def test_a_track_with_basic_auth_is_stored(local_stack: LocalStackClient, run: str) -> None:
    document = unique(sample_document(sample("track.json")), run)
    answer = replay(local_stack, "track.json", document=document)
    assert (answer.status, answer.json) == (200, {"success": True})
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.headers["access-control-allow-origin"] == local_origin(local_stack)
    assert answer.headers["access-control-allow-credentials"] == "true"
    customer = customer_of(local_stack, "anon", document["anonymousId"])
    assert customer is not None
    assert message_ids_of(local_stack, customer) == [document["messageId"]]


def test_the_same_request_twice_is_stored_once(local_stack: LocalStackClient, run: str) -> None:
    document = unique(sample_document(sample("identify.json")), run)
    # A browser's identify of a signed-in customer: the user hash the shop rendered for this run's user.
    document["context"]["userHash"] = local_stack.user_hash(document["userId"])
    for _ in range(2):
        assert replay(local_stack, "identify.json", document=document).json == {"success": True}
    customer = customer_of(local_stack, "user", document["userId"])
    assert customer is not None
    assert message_ids_of(local_stack, customer) == [document["messageId"]]
    stored = stored_event(local_stack, customer, document["messageId"])
    assert stored["proof"] == {"S": "verified"}
    assert "userHash" not in stored["context"]["M"], "the user hash is a credential: never stored"


def test_a_text_plain_beacon_with_the_write_key_in_the_body_is_stored(
    local_stack: LocalStackClient, run: str
) -> None:
    event = sample("track_text_plain.json")
    assert event["headers"]["content-type"].startswith("text/plain")
    document = unique(sample_document(event), run)
    answer = replay(local_stack, "track_text_plain.json", document=document, origin_host="localhost")
    assert (answer.status, answer.json) == (200, {"success": True})
    assert answer.headers["access-control-allow-origin"] == local_origin(local_stack, "localhost")
    customer = customer_of(local_stack, "anon", document["anonymousId"])
    assert customer is not None
    assert message_ids_of(local_stack, customer) == [document["messageId"]]


def test_a_batch_is_stored_whole(local_stack: LocalStackClient, run: str) -> None:
    document = unique(sample_document(sample("batch.json")), run)
    answer = replay(local_stack, "batch.json", document=document)
    assert (answer.status, answer.json) == (200, {"success": True})
    assert "access-control-allow-origin" not in answer.headers
    customer = customer_of(local_stack, "user", document["batch"][2]["userId"])
    assert customer is not None
    assert message_ids_of(local_stack, customer) == sorted(m["messageId"] for m in document["batch"])


def test_a_cors_preflight_from_an_allowed_origin(local_stack: LocalStackClient) -> None:
    answer = replay(local_stack, "preflight.json")
    assert answer.status == 204
    assert answer.body == b""
    assert answer.headers["access-control-allow-origin"] == local_origin(local_stack)
    # A preflight names no site, so it cannot vouch for the origin: never with credentials.
    assert "access-control-allow-credentials" not in answer.headers
    assert "POST" in answer.headers["access-control-allow-methods"]
    allowed = answer.headers["access-control-allow-headers"].lower()
    assert "content-type" in allowed and "authorization" in allowed
    assert int(answer.headers["access-control-max-age"]) > 0


def test_the_tag_script(local_stack: LocalStackClient) -> None:
    answer = replay(local_stack, "tag_js.json")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/javascript")
    assert "max-age=" in answer.headers["cache-control"]
    assert b"cems" in answer.body and b"writeKey" in answer.body


def test_a_browser_user_id_without_its_hash_stays_the_visitors_claim(
    local_stack: LocalStackClient, run: str
) -> None:
    document = unique(sample_document(sample("track.json")), run)
    document["userId"] = f"user-claimed-{run}"
    answer = replay(local_stack, "track.json", document=document)
    assert answer.status == 200
    assert answer.json["success"] is True
    assert [w["code"] for w in answer.json["warnings"]] == ["user_not_verified"]
    assert customer_of(local_stack, "user", document["userId"]) is None
    customer = customer_of(local_stack, "anon", document["anonymousId"])
    assert customer is not None
    stored = stored_event(local_stack, customer, document["messageId"])
    assert stored["proof"] == {"S": "claimed"}
    assert stored["claimed_user_id"] == {"S": document["userId"]}
    assert "user_id" not in stored


# Rejected ------------------------------------------------------------------------------------------


def test_a_wrong_user_hash_is_refused_and_stores_nothing(local_stack: LocalStackClient, run: str) -> None:
    document = unique(sample_document(sample("identify.json")), run)
    document["context"]["userHash"] = local_stack.user_hash(f"someone-else-{run}")
    answer = replay(local_stack, "identify.json", document=document)
    assert answer.status == 401
    assert (answer.json["error"], answer.json["field"]) == ("invalid_user_hash", "context.userHash")
    assert "access-control-allow-credentials" not in answer.headers
    assert not ledger_has(local_stack, document["messageId"])
    assert customer_of(local_stack, "user", document["userId"]) is None


def test_the_secret_key_sent_from_a_page_is_refused(local_stack: LocalStackClient, run: str) -> None:
    document = unique(sample_document(sample("track.json")), run)
    answer = replay(local_stack, "track.json", document=document, authorization=basic(local_stack.secret_key))
    assert answer.status == 403
    assert (answer.json["error"], answer.json["field"]) == ("secret_key_in_browser", "writeKey")
    assert answer.headers["access-control-allow-origin"] == local_origin(local_stack)
    assert "access-control-allow-credentials" not in answer.headers
    assert not ledger_has(local_stack, document["messageId"])


@pytest.mark.parametrize(
    ("name", "status", "error", "field"),
    [
        ("malformed_json.json", 400, "invalid_json", "body"),
        ("missing_ids.json", 400, "invalid_message", "userId"),
        ("wrong_type.json", 400, "invalid_message", "properties"),
        ("batch_one_invalid.json", 400, "invalid_message", "batch[2].event"),
        ("no_write_key.json", 401, "missing_write_key", "writeKey"),
        ("unknown_write_key.json", 401, "invalid_write_key", "writeKey"),
        ("disallowed_origin.json", 403, "origin_not_allowed", "Origin"),
        ("unknown_kind.json", 404, "not_found", "path"),
        ("wrong_method.json", 405, "method_not_allowed", "method"),
    ],
)
def test_a_bad_request_gets_a_json_error_and_stores_nothing(
    local_stack: LocalStackClient, name: str, status: int, error: str, field: str | None
) -> None:
    event = sample(name)
    try:
        document = sample_document(event) if event.get("body") else {}
    except json.JSONDecodeError:
        document = {}  # malformed_json.json: nothing to look up
    answer = replay(local_stack, name)
    assert answer.status == status
    assert answer.headers["content-type"].startswith("application/json")
    body = answer.json
    assert (body["success"], body["error"]) == (False, error)
    assert body["message"]
    assert body.get("field") == field
    # The page's developer can read why, but an error never carries credentials.
    assert "access-control-allow-credentials" not in answer.headers
    for message in document.get("batch") or [document]:
        if "messageId" in message:
            assert not ledger_has(local_stack, message["messageId"]), message["messageId"]
    if status == 405:
        assert "POST" in answer.headers["allow"]


def test_a_path_outside_the_api_gets_api_gateways_404(local_stack: LocalStackClient) -> None:
    answer = replay(local_stack, "unknown_path.json")
    assert answer.status == 404
    assert answer.headers["content-type"].startswith("application/json")
    assert answer.json == {"message": "Not Found"}


def test_a_message_over_32_kb_is_a_413(local_stack: LocalStackClient, run: str) -> None:
    document = unique(sample_document(sample("track.json")), run)
    document["properties"]["note"] = "茶" * 11_000
    answer = replay(local_stack, "track.json", document=document)
    assert answer.status == 413
    assert answer.json["limit"] == 32 * 1024
    assert customer_of(local_stack, "anon", document["anonymousId"]) is None

"""The line_webhook handler (and collect's POST /v1/line/link) under moto, with signed API Gateway
events built from the sample bodies in events/line_webhook/ and a small fake LINE Messaging API
(link tokens and replies) on a local port.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.link_nonces import NonceStore
from cems.adapters.dynamodb.sites import SiteStore
from cems.identity import IdentityKey, IdentityKind
from cems.line.config import LOCAL_CHANNEL_SECRET
from cems.line.webhook import MAX_BODY_DEPTH, sign
from cems.logs import MAX_LINE_BYTES, BoundedFormatter
from cems.models import Channel, Profile, Site, StoredEvent
from cems.trust import user_hash

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
BODIES = ROOT / "events" / "line_webhook"
WEBHOOK_APP = ROOT / "functions" / "line_webhook" / "app.py"
COLLECT_APP = ROOT / "functions" / "collect" / "app.py"
WRITE_KEY = "local-write-key"
SHOP = "http://localhost:3000"
IDENTITY_SECRET = "is_test-identity-secret"
SECRET_KEY = "sk_test-secret-key"
# The signed-in shop customer whose browser completes the link flow.
MEMBER = "member-2041"
LINK_PAGE = "https://shop.example.jp/line-link?from=line"
ACCOUNT_LINK = "https://access.line.me/dialog/bot/accountLink"
DATA_TABLES = ("EventsTable", "CustomersTable", "IdempotencyTable")
FRIEND = "U7b3e9c1a5f2d4e6b8a0c2e4f6a8b0c2d"


FakeLambdaContext = partial(FakeContext, "cems-dev-LineWebhookFunction")


@dataclass
class FakeLine:
    """Answers linkToken and reply as LINE does and records every call."""

    url: str = ""
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    issued: int = 0
    fail_replies: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def replies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for _, path, body in self.calls if path == "/v2/bot/message/reply"]

    def link_tokens(self) -> list[str]:
        with self.lock:
            return [path for _, path, _ in self.calls if path.endswith("/linkToken")]


@pytest.fixture
def fake_line() -> Iterator[FakeLine]:
    fake = FakeLine()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            assert self.headers["Authorization"] == "Bearer test-access-token"
            with fake.lock:
                fake.calls.append(("POST", self.path, body))
            if self.path.endswith("/linkToken"):
                with fake.lock:
                    fake.issued += 1
                    answer: dict[str, Any] = {"linkToken": f"LinkTok{fake.issued:04d}aBcDeFgHiJkLmNoPq"}
            elif self.path == "/v2/bot/message/reply" and not fake.fail_replies:
                answer = {"sentMessages": [{"id": f"46135{i}"} for i, _ in enumerate(body["messages"])]}
            else:
                self.send_response(400)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"message": "Invalid reply token"}')
                return
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    json: Any


@dataclass
class Apps:
    webhook: ModuleType
    collect: ModuleType

    def call(self, module: ModuleType, event: dict[str, Any]) -> Answer:
        response = module.lambda_handler(copy.deepcopy(event), FakeLambdaContext())
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return Answer(response["statusCode"], headers, json.loads(body) if body else None)

    def post_webhook(self, body: bytes, signature: str | None = "sign") -> Answer:
        return self.call(self.webhook, webhook_event(body, signature))

    def start_link(
        self, document: dict[str, Any], origin: str | None = SHOP, member: str | None = MEMBER
    ) -> Answer:
        """POST /v1/line/link from the shop's link page, where `member` is signed in (the shop's
        server rendered their user hash into the page), or nobody (None)."""
        if member is not None:
            document = {"userId": member, "userHash": user_hash(IDENTITY_SECRET, member), **document}
        return self.call(self.collect, link_event(document, origin))


@pytest.fixture
def site(dynamodb: Any) -> Site:
    store = SiteStore("SitesTable", dynamodb)
    return store.add(
        "local-shop", [SHOP], write_key=WRITE_KEY, secret_key=SECRET_KEY, identity_secret=IDENTITY_SECRET
    ).site


@pytest.fixture
def apps(site: Site, fake_line: FakeLine, monkeypatch: pytest.MonkeyPatch) -> Iterator[Apps]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cems")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CEMS")
    monkeypatch.setenv("CEMS_LINE_API_URL", fake_line.url)
    monkeypatch.setenv("CEMS_LINE_CHANNEL_SECRET", LOCAL_CHANNEL_SECRET)
    monkeypatch.setenv("CEMS_LINE_CHANNEL_ACCESS_TOKEN", "test-access-token")
    monkeypatch.setenv("CEMS_LINE_LINK_PAGE_URL", LINK_PAGE)
    monkeypatch.setenv("CEMS_LINE_ACCOUNT_LINK_URL", ACCOUNT_LINK)
    aws.dynamodb.cache_clear()
    apps = Apps(
        webhook=_load(WEBHOOK_APP, "cems_line_webhook_app_under_test"),
        collect=_load(COLLECT_APP, "cems_collect_app_for_line_link"),
    )
    yield apps
    sys.modules.pop("cems_line_webhook_app_under_test", None)
    sys.modules.pop("cems_collect_app_for_line_link", None)
    aws.dynamodb.cache_clear()


# Building requests -----------------------------------------------------------------------------------


def body_of(name: str, **changes: Any) -> bytes:
    """A sample body, with changes to its first event (e.g. nonce=..., user=...), as LINE sends it."""
    document = json.loads((BODIES / name).read_text(encoding="utf-8"))
    for key, value in changes.items():
        event = document["events"][0]
        if key == "nonce":
            event["link"]["nonce"] = value
        elif key == "user":
            event["source"]["userId"] = value
        else:
            event[key] = value
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def webhook_event(
    body: bytes, signature: str | None = "sign", *, base64_body: bool = False
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event of LINE posting `body`; signature "sign" signs it
    with the local channel secret."""
    headers = {
        "content-type": "application/json; charset=utf-8",
        "content-length": str(len(body)),
        "host": "k3x9q2w7bd.execute-api.ap-northeast-1.amazonaws.com",
        "user-agent": "LineBotWebhook/2.0",
        "x-forwarded-proto": "https",
    }
    if signature is not None:
        headers["x-line-signature"] = sign(body, LOCAL_CHANNEL_SECRET) if signature == "sign" else signature
    return {
        "version": "2.0",
        "routeKey": "POST /line/webhook",
        "rawPath": "/line/webhook",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "k3x9q2w7bd",
            "domainName": "k3x9q2w7bd.execute-api.ap-northeast-1.amazonaws.com",
            "domainPrefix": "k3x9q2w7bd",
            "http": {
                "method": "POST",
                "path": "/line/webhook",
                "protocol": "HTTP/1.1",
                "sourceIp": "203.104.146.152",
                "userAgent": "LineBotWebhook/2.0",
            },
            "requestId": "Dq2Lk0006joAMEbw=",
            "routeKey": "POST /line/webhook",
            "stage": "$default",
            "time": "23/Nov/2026:02:15:07 +0000",
            "timeEpoch": 1795400107005,
        },
        "body": base64.b64encode(body).decode() if base64_body else body.decode(),
        "isBase64Encoded": base64_body,
    }


def link_event(document: dict[str, Any], origin: str | None, method: str = "POST") -> dict[str, Any]:
    raw = json.dumps(document).encode()
    headers = {"content-type": "text/plain;charset=UTF-8", "content-length": str(len(raw))}
    if origin:
        headers["origin"] = origin
    return {
        "version": "2.0",
        "routeKey": "ANY /v1/line/link",
        "rawPath": "/v1/line/link",
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "k3x9q2w7bd",
            "http": {
                "method": method,
                "path": "/v1/line/link",
                "protocol": "HTTP/1.1",
                "sourceIp": "198.51.100.7",
                "userAgent": "Mozilla/5.0",
            },
            "requestId": "Dq2Lk0007joAMEbw=",
            "routeKey": "ANY /v1/line/link",
            "stage": "$default",
            "time": "23/Nov/2026:02:16:07 +0000",
            "timeEpoch": 1795400167005,
        },
        "body": raw.decode(),
        "isBase64Encoded": False,
    }


# Reading what was stored -------------------------------------------------------------------------------


def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    return client.scan(TableName=table, ConsistentRead=True)["Items"]  # type: ignore[no-any-return]


def data_items(client: Any) -> dict[str, list[dict[str, Any]]]:
    return {table: scan_all(client, table) for table in DATA_TABLES}


def profile_of_line_user(stores: Stores, line_user_id: str = FRIEND) -> Profile:
    customer = stores.customers.customer_for(IdentityKey(IdentityKind.LINE, line_user_id))
    assert customer is not None
    profile = stores.customers.profile(customer)
    assert profile is not None
    return profile


def events_named(stores: Stores, profile: Profile, name: str) -> list[StoredEvent]:
    return [e for e in stores.events.history(profile) if e.event == name]


def visitor_journey(apps: Apps, anonymous_id: str, member: str | None = MEMBER) -> None:
    """A site visitor, signed in as `member` (the tag then sends the user id and its hash with every
    message): a page view and Product Added, through the real collect handler."""
    signed_in = (
        {"userId": member, "context": {"userHash": user_hash(IDENTITY_SECRET, member)}} if member else {}
    )
    for kind, fields in [
        ("page", {"name": "有機緑茶", "properties": {"path": "/demo"}}),
        ("track", {"event": "Product Added", "properties": {"product_id": "tea-001", "price": 1200}}),
    ]:
        message = {
            "anonymousId": anonymous_id,
            "writeKey": WRITE_KEY,
            "messageId": f"m-{kind}-{anonymous_id}",
            **signed_in,
            **fields,
        }
        event = link_event(message, SHOP)
        event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/{kind}"
        event["routeKey"] = event["requestContext"]["routeKey"] = "ANY /v1/{kind}"
        event["pathParameters"] = {"kind": kind}
        assert apps.call(apps.collect, event).status == 200


def nonce_of(redirect_url: str) -> str:
    query = parse_qs(urlsplit(redirect_url).query)
    return query["nonce"][0]


# Signatures and the URL verification -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signature", "error"),
    [
        (None, "missing_signature"),
        ("", "missing_signature"),
        ("bm90IHRoZSBzaWduYXR1cmU=", "invalid_signature"),
        (sign(b"another body", LOCAL_CHANNEL_SECRET), "invalid_signature"),
    ],
)
def test_a_bad_or_missing_signature_gets_401_and_nothing_is_processed(
    apps: Apps, dynamodb: Any, fake_line: FakeLine, signature: str | None, error: str
) -> None:
    before = data_items(dynamodb)
    answer = apps.post_webhook(body_of("follow.json"), signature)
    assert answer.status == 401
    assert answer.json["error"] == error
    assert answer.json["field"] == "X-Line-Signature"
    assert data_items(dynamodb) == before
    assert fake_line.calls == []


def test_a_body_signed_with_another_channel_secret_is_refused(apps: Apps, dynamodb: Any) -> None:
    body = body_of("follow.json")
    answer = apps.post_webhook(body, sign(body, "someone-elses-secret"))
    assert (answer.status, answer.json["error"]) == (401, "invalid_signature")
    assert scan_all(dynamodb, "EventsTable") == []


def test_the_url_verification_with_no_events_gets_200(apps: Apps, dynamodb: Any) -> None:
    answer = apps.post_webhook(body_of("url_verification.json"))
    assert (answer.status, answer.json) == (200, {"success": True})
    assert scan_all(dynamodb, "EventsTable") == []


def test_a_base64_body_is_verified_after_decoding(apps: Apps, stores: Stores) -> None:
    answer = apps.call(apps.webhook, webhook_event(body_of("follow.json"), base64_body=True))
    assert answer.status == 200
    assert profile_of_line_user(stores).line_user_id == FRIEND


def test_a_signed_body_that_is_not_a_webhook_request_gets_400(apps: Apps, dynamodb: Any) -> None:
    for body in (b'{"destination": "x"}', b"[1, 2]", b'{"events": [{"type": "follow"'):
        answer = apps.post_webhook(body)
        assert (answer.status, answer.json["error"]) == (400, "invalid_body"), body
    assert scan_all(dynamodb, "EventsTable") == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"events":[' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"events":[' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}",
        b'{"events":[' + b'{"a":' * 100 + b"1" + b"}" * 100 + b"]}",
    ],
    ids=["arrays-5000", "objects-5000", "objects-100"],
)
def test_a_deeply_nested_signed_body_gets_400_naming_the_limit_without_a_traceback(
    apps: Apps, dynamodb: Any, caplog: pytest.LogCaptureFixture, body: bytes
) -> None:
    answer = apps.post_webhook(body)
    assert (answer.status, answer.json["error"]) == (400, "too_deep")
    assert (answer.json["field"], answer.json["limit"]) == ("body", MAX_BODY_DEPTH)
    assert scan_all(dynamodb, "EventsTable") == []
    # Refused before any parser saw it: no exception, no traceback, one short line.
    assert all(record.exc_info is None for record in caplog.records)
    [rejected] = [r for r in caplog.records if r.getMessage() == "rejected"]
    assert len(BoundedFormatter().format(rejected).encode()) <= MAX_LINE_BYTES


def test_a_body_that_is_not_base64_gets_400_naming_the_body(apps: Apps, dynamodb: Any) -> None:
    event = webhook_event(body_of("follow.json"))
    event["body"], event["isBase64Encoded"] = "abc", True  # what API Gateway never sends
    answer = apps.call(apps.webhook, event)
    assert (answer.status, answer.json["field"]) == (400, "body")
    assert scan_all(dynamodb, "EventsTable") == []


def test_odd_events_are_kept_or_skipped_and_never_cost_the_others(
    apps: Apps, stores: Stores, fake_line: FakeLine, caplog: pytest.LogCaptureFixture
) -> None:
    [follow] = json.loads(body_of("follow.json"))["events"]
    [message] = json.loads(body_of("message_text.json"))["events"]

    def odd(number: int, base: dict[str, Any], **changes: Any) -> dict[str, Any]:
        event = {**copy.deepcopy(base), "webhookEventId": f"01JDA7ODD0000000000000{number:04d}", **changes}
        return {k: v for k, v in event.items() if v is not None}

    events = [
        follow,
        odd(1, follow, replyToken=None),  # the SDK cannot type it: line_other, never answered
        odd(2, follow, type="storyReaction"),  # a type nobody knows: line_other
        {k: v for k, v in odd(3, follow).items() if k != "webhookEventId"},  # skipped
        odd(4, follow, timestamp=None),  # skipped
        odd(5, follow, timestamp=10**20),  # past year 9999: skipped
        odd(6, follow, source=None),  # nobody to record it on
        odd(7, message, message={**message["message"], "text": "half an emoji \ud83c"}),  # skipped
        odd(8, message, message={**message["message"], "text": "長" * 40_000}),  # over 32 KB: skipped
        odd(9, follow, type=["follow"]),  # skipped
        "not an event",  # skipped
        message,
    ]
    raw = json.dumps({"destination": "U1", "events": events}).encode()  # the surrogate as an escape
    answer = apps.post_webhook(raw)
    assert (answer.status, answer.json) == (200, {"success": True})
    profile = profile_of_line_user(stores)
    stored = sorted(
        (e.event or "", str(e.properties.get("line_type"))) for e in stores.events.history(profile)
    )
    assert stored == [
        ("line_follow", "None"),
        ("line_message", "None"),
        ("line_other", "follow"),
        ("line_other", "storyReaction"),
    ]
    # Only the real follow is answered (with the welcome).
    assert len(fake_line.replies()) == 1
    [record] = [r.__dict__ for r in caplog.records if r.getMessage() == "line webhook"]
    assert (record["events"], record["stored"], record["unparsed"]) == (12, 4, 2)
    assert len(record["skipped"]) == 7 and record["without_user"] == ["follow"]
    assert "長長" not in str(record["skipped"])  # why, never what


# Each event type ---------------------------------------------------------------------------------------


def test_follow_makes_a_reachable_line_contact_and_replies_with_the_link_button(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    assert apps.post_webhook(body_of("follow.json")).status == 200
    profile = profile_of_line_user(stores)
    assert profile.line_user_id == FRIEND
    state = profile.channels[Channel.LINE]
    assert (state.reachable, state.consent, state.reason) == (True, True, "line_follow")
    assert profile.line_contact() == FRIEND
    [event] = events_named(stores, profile, "line_follow")
    assert event.site_id == "line"
    assert event.message_id == "line:01JDA6ZQ4X8K3M9N2P5R7T0V1W"
    assert event.line_user_id == FRIEND
    assert event.timestamp == datetime(2026, 11, 23, 2, 15, 7, 5000, tzinfo=UTC)
    assert event.properties == {"is_unblocked": False}

    assert fake_line.link_tokens() == [f"/v2/bot/user/{FRIEND}/linkToken"]
    [reply] = fake_line.replies()
    assert reply["replyToken"] == "b60d432864f44d079f6d8efe86cf404b"
    welcome, button = reply["messages"]
    assert welcome["type"] == "text" and "友だち追加" in welcome["text"] and "Thank you" in welcome["text"]
    assert button["type"] == "template"
    [action] = button["template"]["actions"]
    assert action["type"] == "uri"
    assert (
        action["uri"] == "https://shop.example.jp/line-link?from=line&linkToken=LinkTok0001aBcDeFgHiJkLmNoPq"
    )


def test_a_redelivered_follow_has_no_second_effect(apps: Apps, stores: Stores, fake_line: FakeLine) -> None:
    assert apps.post_webhook(body_of("follow.json")).status == 200
    profile = profile_of_line_user(stores)
    answer = apps.post_webhook(body_of("follow_redelivery.json"))
    assert answer.status == 200
    again = profile_of_line_user(stores)
    assert again.customer_id == profile.customer_id
    assert again.version == profile.version
    assert len(events_named(stores, again, "line_follow")) == 1
    assert len(fake_line.replies()) == 1
    assert len(fake_line.link_tokens()) == 1


def test_unfollow_opts_out_of_line_and_a_follow_after_unblocking_opts_back_in(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    apps.post_webhook(body_of("follow.json"))
    apps.post_webhook(body_of("unfollow.json"))
    profile = profile_of_line_user(stores)
    state = profile.channels[Channel.LINE]
    assert (state.reachable, state.consent, state.reason) == (False, False, "line_unfollow")
    assert profile.line_contact() is None
    assert len(events_named(stores, profile, "line_unfollow")) == 1

    apps.post_webhook(body_of("follow_unblocked.json"))
    profile = profile_of_line_user(stores)
    assert profile.line_contact() == FRIEND
    [_, rejoined] = sorted(events_named(stores, profile, "line_follow"), key=lambda e: e.timestamp)
    assert rejoined.properties == {"is_unblocked": True}


def test_an_older_event_later_in_the_same_request_does_not_undo_a_newer_state(
    apps: Apps, stores: Stores
) -> None:
    follow = json.loads(body_of("follow.json"))
    unfollow = json.loads(body_of("unfollow.json"))
    body = {"destination": follow["destination"], "events": unfollow["events"] + follow["events"]}
    assert apps.post_webhook(json.dumps(body).encode()).status == 200
    state = profile_of_line_user(stores).channels[Channel.LINE]
    assert state.reason == "line_unfollow"  # the unfollow is 30 minutes after the follow


def test_a_text_message_is_recorded_and_gets_no_reply(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    assert apps.post_webhook(body_of("message_text.json")).status == 200
    profile = profile_of_line_user(stores)
    [event] = events_named(stores, profile, "line_message")
    assert event.properties["text"] == "新茶はいつ届きますか？"
    assert event.properties["message_type"] == "text"
    assert Channel.LINE not in profile.channels  # only follow and unfollow change the channel state
    assert fake_line.calls == []


def test_asking_for_the_link_gets_the_link_button(apps: Apps, fake_line: FakeLine) -> None:
    assert apps.post_webhook(body_of("message_link_request.json")).status == 200
    [reply] = fake_line.replies()
    [button] = reply["messages"]
    assert "linkToken=" in button["template"]["actions"][0]["uri"]


def test_a_survey_postback_stores_the_answer_as_a_trait(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    assert apps.post_webhook(body_of("postback_survey.json")).status == 200
    profile = profile_of_line_user(stores)
    assert profile.traits["survey.tea_preference"] == "sencha"
    [event] = events_named(stores, profile, "line_postback")
    assert event.properties["survey"] == {"question": "tea_preference", "answer": "sencha"}
    [reply] = fake_line.replies()
    assert "ご回答ありがとうございます" in reply["messages"][0]["text"]


def test_an_unknown_event_type_is_recorded_never_a_500(apps: Apps, stores: Stores) -> None:
    answer = apps.post_webhook(body_of("unknown_type.json"))
    assert answer.status == 200
    [event] = events_named(stores, profile_of_line_user(stores), "line_other")
    assert event.properties == {"line_type": "storyReaction", "unparsed": True}


def test_a_group_event_without_a_user_is_answered_and_stores_nothing(apps: Apps, dynamodb: Any) -> None:
    assert apps.post_webhook(body_of("group_join.json")).status == 200
    assert scan_all(dynamodb, "EventsTable") == []


def test_a_failed_reply_does_not_fail_the_webhook(apps: Apps, stores: Stores, fake_line: FakeLine) -> None:
    fake_line.fail_replies = True
    assert apps.post_webhook(body_of("follow.json")).status == 200
    assert profile_of_line_user(stores).line_contact() == FRIEND


# Linking -------------------------------------------------------------------------------------------------


def test_the_link_flow_makes_one_customer_with_the_site_events_and_the_line_id(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    visitor = "5b1f0c2e-8d3a-4f6b-9e7c-1a2b3c4d5e6f"
    visitor_journey(apps, visitor)
    site_customer = stores.customers.customer_for_anonymous_id(visitor)
    assert apps.post_webhook(body_of("follow.json")).status == 200
    line_customer = profile_of_line_user(stores).customer_id
    assert line_customer != site_customer

    started = apps.start_link(
        {"anonymousId": visitor, "linkToken": "LinkTok0001aBcDeFgHiJkLmNoPq", "writeKey": WRITE_KEY}
    )
    assert started.status == 200
    assert started.headers["access-control-allow-origin"] == SHOP
    redirect = urlsplit(started.json["redirectUrl"])
    assert f"{redirect.scheme}://{redirect.netloc}{redirect.path}" == ACCOUNT_LINK
    query = parse_qs(redirect.query)
    assert query["linkToken"] == ["LinkTok0001aBcDeFgHiJkLmNoPq"]
    nonce = query["nonce"][0]
    assert len(nonce) >= 40

    assert apps.post_webhook(body_of("account_link_ok.json", nonce=nonce)).status == 200
    profile = profile_of_line_user(stores)
    assert profile.customer_id == site_customer
    assert stores.customers.customer_for_anonymous_id(visitor) == site_customer
    assert profile.line_user_id == FRIEND
    assert visitor in profile.anonymous_ids
    assert line_customer in profile.merged_ids
    assert profile.line_contact() == FRIEND  # the follow's consent came along
    names = {e.event or e.type.value for e in stores.events.history(profile)}
    assert names >= {"page", "Product Added", "line_follow", "line_linked"}
    [linked] = events_named(stores, profile, "line_linked")
    assert linked.user_id == MEMBER and linked.properties["site_id"] == stores_site_id(stores)
    assert "連携が完了" in fake_line.replies()[-1]["messages"][0]["text"]

    # A replay of the same nonce under another event links nothing more and gets a fresh button.
    replay = body_of("account_link_ok.json", nonce=nonce, webhookEventId="01JDA79ZZZZZZZZZZZZZZZZZZZ")
    assert apps.post_webhook(replay).status == 200
    [failed] = events_named(stores, profile_of_line_user(stores), "line_link_failed")
    assert failed.properties == {"result": "ok", "reason": "nonce_invalid"}
    assert "linkToken=" in fake_line.replies()[-1]["messages"][1]["template"]["actions"][0]["uri"]


def stores_site_id(stores: Stores) -> str:
    site = SiteStore("SitesTable", stores.customers.client).get(WRITE_KEY)
    assert site is not None
    return site.site_id


def test_a_redelivered_account_link_finishes_once(apps: Apps, stores: Stores, fake_line: FakeLine) -> None:
    visitor = "9c8b7a6f-5e4d-4c3b-8a29-1f0e9d8c7b6a"
    visitor_journey(apps, visitor)
    nonce = nonce_of(
        apps.start_link({"anonymousId": visitor, "linkToken": "tok-1", "writeKey": WRITE_KEY}).json[
            "redirectUrl"
        ]
    )
    body = body_of("account_link_ok.json", nonce=nonce)
    apps.post_webhook(body)
    redelivered = json.loads(body)
    redelivered["events"][0]["deliveryContext"]["isRedelivery"] = True
    assert apps.post_webhook(json.dumps(redelivered).encode()).status == 200
    profile = profile_of_line_user(stores)
    assert len(events_named(stores, profile, "line_linked")) == 1
    assert len(fake_line.replies()) == 1


@pytest.mark.parametrize("case", ["unknown", "expired"])
def test_an_unknown_or_expired_nonce_links_nothing(apps: Apps, stores: Stores, case: str) -> None:
    visitor = "1d2c3b4a-5f6e-4d7c-8b9a-0f1e2d3c4b5a"
    visitor_journey(apps, visitor)
    if case == "unknown":
        nonce = "Tm90QU5vbmNlV2VJc3N1ZWRfX19fX19fX19fX19fX19fX18"
    else:
        nonce = nonce_of(
            apps.start_link({"anonymousId": visitor, "linkToken": "tok-2", "writeKey": WRITE_KEY}).json[
                "redirectUrl"
            ]
        )
        clock.freeze(clock.now() + timedelta(minutes=11))
    assert apps.post_webhook(body_of("account_link_ok.json", nonce=nonce)).status == 200
    profile = profile_of_line_user(stores)
    assert profile.anonymous_ids == set()
    assert stores.customers.customer_for_anonymous_id(visitor) != profile.customer_id
    assert [e.properties["reason"] for e in events_named(stores, profile, "line_link_failed")] == [
        "nonce_invalid"
    ]


def test_line_reporting_a_failed_link_links_nothing_and_cannot_be_replied_to(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    assert apps.post_webhook(body_of("account_link_failed.json")).status == 200
    [event] = events_named(stores, profile_of_line_user(stores), "line_link_failed")
    assert event.properties == {"result": "failed", "reason": "line_failed"}
    assert fake_line.calls == []


def test_a_nonce_is_single_use_even_for_a_second_line_user(apps: Apps, stores: Stores) -> None:
    visitor = "77aa88bb-99cc-4ddd-8eee-ff0011223344"
    visitor_journey(apps, visitor)
    nonce = nonce_of(
        apps.start_link({"anonymousId": visitor, "linkToken": "tok-3", "writeKey": WRITE_KEY}).json[
            "redirectUrl"
        ]
    )
    apps.post_webhook(body_of("account_link_ok.json", nonce=nonce))
    other = "U0000000000000000000000000000beef"
    apps.post_webhook(
        body_of("account_link_ok.json", nonce=nonce, user=other, webhookEventId="01JDA7AAAAAAAAAAAAAAAAAAAA")
    )
    assert profile_of_line_user(stores, other).anonymous_ids == set()
    assert profile_of_line_user(stores, FRIEND).anonymous_ids == {visitor}


def test_nonces_are_stored_hashed_with_an_expiry(apps: Apps, dynamodb: Any) -> None:
    redirect = apps.start_link({"anonymousId": "a-1", "linkToken": "tok-4", "writeKey": WRITE_KEY}).json[
        "redirectUrl"
    ]
    nonce = nonce_of(redirect)
    [item] = [i for i in scan_all(dynamodb, "CustomersTable") if i["pk"]["S"].startswith("NONCE#")]
    assert nonce not in json.dumps(item)
    assert item["anonymous_id"]["S"] == "a-1"
    assert int(item["expires_at"]["N"]) > clock.now().timestamp()
    assert NonceStore("CustomersTable", dynamodb).consume(nonce, "ev-1") is not None
    assert NonceStore("CustomersTable", dynamodb).consume(nonce, "ev-1") is not None  # the same event again
    assert NonceStore("CustomersTable", dynamodb).consume(nonce, "ev-2") is None


# POST /v1/line/link errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "status", "error", "field_name"),
    [
        ({"linkToken": "tok", "writeKey": WRITE_KEY}, 400, "invalid_request", "anonymousId"),
        ({"anonymousId": "a-1", "writeKey": WRITE_KEY}, 400, "invalid_request", "linkToken"),
        (
            {"anonymousId": "a-1", "linkToken": "x" * 257, "writeKey": WRITE_KEY},
            400,
            "invalid_request",
            "linkToken",
        ),
        (
            {"anonymousId": "a-1", "linkToken": "tok&nonce=mine", "writeKey": WRITE_KEY},
            400,
            "invalid_request",
            "linkToken",
        ),
        (
            {"anonymousId": "a" * 256, "linkToken": "tok", "writeKey": WRITE_KEY},
            400,
            "invalid_request",
            "anonymousId",
        ),
        (
            {"anonymousId": ["a-1"], "linkToken": "tok", "writeKey": WRITE_KEY},
            400,
            "invalid_request",
            "anonymousId",
        ),
        ({"anonymousId": "a-1", "linkToken": "tok"}, 401, "missing_write_key", "writeKey"),
        (
            {"anonymousId": "a-1", "linkToken": "tok", "writeKey": "wk_unknown"},
            401,
            "invalid_write_key",
            "writeKey",
        ),
    ],
)
def test_a_bad_link_request_gets_a_clear_error_and_stores_nothing(
    apps: Apps, dynamodb: Any, document: dict[str, Any], status: int, error: str, field_name: str
) -> None:
    answer = apps.start_link(document)
    assert (answer.status, answer.json["error"], answer.json["field"]) == (status, error, field_name)
    assert scan_all(dynamodb, "CustomersTable") == []


def test_a_link_request_from_another_origin_is_refused(apps: Apps, dynamodb: Any) -> None:
    answer = apps.start_link(
        {"anonymousId": "a-1", "linkToken": "tok", "writeKey": WRITE_KEY}, "https://evil.example"
    )
    assert (answer.status, answer.json["error"]) == (403, "origin_not_allowed")
    assert "access-control-allow-credentials" not in answer.headers
    assert scan_all(dynamodb, "CustomersTable") == []


def test_link_preflight_and_wrong_method(apps: Apps) -> None:
    preflight = apps.call(apps.collect, link_event({}, SHOP, method="OPTIONS"))
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == SHOP
    wrong = apps.call(apps.collect, link_event({}, SHOP, method="GET"))
    assert (wrong.status, wrong.json["error"]) == (405, "method_not_allowed")


def test_a_site_cannot_claim_a_line_user_id(apps: Apps, dynamodb: Any) -> None:
    for name in ("lineUserId", "line_user_id"):
        message = {"anonymousId": "a-1", "writeKey": WRITE_KEY, "event": "x", name: FRIEND}
        event = link_event(message, SHOP)
        event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/track"
        event["routeKey"] = event["requestContext"]["routeKey"] = "ANY /v1/{kind}"
        event["pathParameters"] = {"kind": "track"}
        answer = apps.call(apps.collect, event)
        assert (answer.status, answer.json["field"]) == (400, name)
    assert scan_all(dynamodb, "CustomersTable") == []


def test_no_line_user_id_token_or_nonce_reaches_the_logs(
    apps: Apps, fake_line: FakeLine, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    visitor = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    apps.post_webhook(body_of("follow.json"))
    redirect = apps.start_link(
        {"anonymousId": visitor, "linkToken": "LinkTok0001aBcDeFgHiJkLmNoPq", "writeKey": WRITE_KEY}
    )
    nonce = nonce_of(redirect.json["redirectUrl"])
    apps.post_webhook(body_of("account_link_ok.json", nonce=nonce))
    fake_line.fail_replies = True
    apps.post_webhook(body_of("message_link_request.json"))
    apps.post_webhook(body_of("follow.json"), "bm90IHRoZSBzaWduYXR1cmU=")
    captured = capsys.readouterr()
    logs = captured.out + captured.err + caplog.text
    assert '"line webhook"' in logs or "line webhook" in logs
    for secret in (
        FRIEND,
        nonce,
        "b60d432864f44d079f6d8efe86cf404b",
        "LinkTok0001",
        "test-access-token",
        LOCAL_CHANNEL_SECRET,
        "bm90IHRoZSBzaWduYXR1cmU=",
    ):
        assert secret not in logs


def test_a_linked_friend_who_follows_again_is_welcomed_back_without_a_link_button(
    apps: Apps, stores: Stores, fake_line: FakeLine
) -> None:
    visitor = "3e4f5a6b-7c8d-4e9f-8a0b-1c2d3e4f5a6b"
    visitor_journey(apps, visitor)
    apps.post_webhook(body_of("follow.json"))
    redirect = apps.start_link({"anonymousId": visitor, "linkToken": "tok-5", "writeKey": WRITE_KEY})
    apps.post_webhook(body_of("account_link_ok.json", nonce=nonce_of(redirect.json["redirectUrl"])))
    apps.post_webhook(body_of("unfollow.json"))
    tokens_before = len(fake_line.link_tokens())
    apps.post_webhook(body_of("follow_unblocked.json"))
    [message] = fake_line.replies()[-1]["messages"]
    assert "おかえりなさい" in message["text"]
    assert len(fake_line.link_tokens()) == tokens_before
    assert profile_of_line_user(stores).line_contact() == FRIEND


# What an outsider holding only the public write key tried (issue 9) ------------------------------------

VICTIM = "member-victim"
VICTIM_EMAIL = "victim@example.jp"
ATTACKER_LINE = "U0000000000000000000000000000a77a"


def v1(
    apps: Apps,
    kind: str,
    document: dict[str, Any],
    origin: str | None = SHOP,
    authorization: str | None = None,
) -> Answer:
    """POST /v1/<kind> through the real collect handler: by default as a browser would send it (the
    public write key in the body, the shop's Origin); with `authorization` as a server does."""
    if authorization is None:
        document = {"writeKey": WRITE_KEY, **document}
    event = link_event(document, origin)
    event["rawPath"] = event["requestContext"]["http"]["path"] = f"/v1/{kind}"
    event["routeKey"] = event["requestContext"]["routeKey"] = "ANY /v1/{kind}"
    event["pathParameters"] = {"kind": kind}
    if authorization is not None:
        event["headers"]["authorization"] = authorization
    return apps.call(apps.collect, event)


def server_key() -> str:
    return "Basic " + base64.b64encode(f"{SECRET_KEY}:".encode()).decode()


@pytest.fixture
def victim(apps: Apps, stores: Stores) -> Profile:
    """A customer the shop's server registered with their email consent, whose LINE is linked."""
    answer = v1(
        apps,
        "identify",
        {
            "userId": VICTIM,
            "anonymousId": "victim-browser",
            "messageId": "victim-signup",
            "traits": {"email": VICTIM_EMAIL, "email_opt_in": True, "name": "被害 太郎"},
        },
        origin=None,
        authorization=server_key(),
    )
    assert answer.status == 200
    assert apps.post_webhook(body_of("follow.json")).status == 200
    nonce = nonce_of(
        apps.start_link(
            {"writeKey": WRITE_KEY, "anonymousId": "victim-browser", "linkToken": "tok-victim"}, member=VICTIM
        ).json["redirectUrl"]
    )
    assert apps.post_webhook(body_of("account_link_ok.json", nonce=nonce)).status == 200
    customer = stores.customers.customer_for_user_id(VICTIM)
    assert customer is not None
    profile = stores.customers.profile(customer)
    assert profile is not None and profile.line_contact() == FRIEND
    assert profile.channels[Channel.EMAIL].consents_for(VICTIM_EMAIL)
    return profile


def assert_untouched(stores: Stores, before: Profile) -> None:
    after = stores.customers.profile(before.customer_id)
    assert after is not None
    assert after.traits == before.traits
    assert after.anonymous_ids == before.anonymous_ids
    assert after.channels == before.channels
    assert (after.user_id, after.line_user_id, after.merged_ids) == (
        before.user_id,
        before.line_user_id,
        before.merged_ids,
    )


@pytest.mark.parametrize("origin", [SHOP, None])
def test_a_claimed_user_id_takes_over_nobody(
    apps: Apps, stores: Stores, victim: Profile, origin: str | None
) -> None:
    answer = v1(
        apps,
        "identify",
        {
            "userId": VICTIM,
            "anonymousId": "attacker-browser",
            "messageId": f"takeover-{origin}",
            "traits": {"email": "attacker@evil.example", "email_opt_in": True},
        },
        origin=origin,
    )
    # Accepted as the attacker's own visit, with a warning a developer can read; believed in nothing.
    assert answer.status == 200
    assert answer.json["warnings"][0]["code"] == "user_not_verified"
    assert_untouched(stores, victim)
    attacker = stores.customers.customer_for_anonymous_id("attacker-browser")
    assert attacker is not None and attacker != victim.customer_id
    attacker_profile = stores.customers.profile(attacker)
    assert attacker_profile is not None
    assert attacker_profile.user_id is None and "email" not in attacker_profile.traits
    [event] = stores.events.events_of(attacker)
    assert (event.claimed_user_id, event.user_id, event.proof) == (VICTIM, None, "claimed")


@pytest.mark.parametrize(
    ("document", "error", "field_name"),
    [
        (
            {"userId": VICTIM, "anonymousId": "a", "context": {"userHash": "00" * 32}},
            "invalid_user_hash",
            "context.userHash",
        ),
        (
            {"userId": VICTIM, "anonymousId": "a", "context": {"userHash": 42}},
            "invalid_user_hash",
            "context.userHash",
        ),
        (
            {"userId": VICTIM, "event": "Order Completed", "properties": {"order_id": "x"}},
            "user_hash_required",
            "context.userHash",
        ),
    ],
)
def test_a_forged_or_missing_proof_is_refused_and_nothing_is_stored(
    apps: Apps, dynamodb: Any, victim: Profile, document: dict[str, Any], error: str, field_name: str
) -> None:
    before = data_items(dynamodb)
    kind = "track" if "event" in document else "identify"
    answer = v1(apps, kind, {"messageId": "forged", "traits": {"email": "attacker@evil.example"}, **document})
    assert (answer.status, answer.json["error"], answer.json["field"]) == (401, error, field_name)
    assert data_items(dynamodb) == before


def test_a_browser_alias_never_joins_another_user(apps: Apps, stores: Stores, victim: Profile) -> None:
    attacker = "member-attacker"
    answer = v1(
        apps,
        "alias",
        {
            "previousId": VICTIM,
            "userId": attacker,
            "anonymousId": "attacker-browser",
            "messageId": "alias-takeover",
            "context": {"userHash": user_hash(IDENTITY_SECRET, attacker)},
        },
    )
    assert answer.status == 200
    assert_untouched(stores, victim)
    assert stores.customers.customer_for_user_id(attacker) != victim.customer_id


def test_a_secret_key_used_from_a_browser_is_refused(apps: Apps, dynamodb: Any) -> None:
    before = data_items(dynamodb)
    answer = v1(apps, "track", {"anonymousId": "a", "event": "x"}, origin=SHOP, authorization=server_key())
    assert (answer.status, answer.json["error"]) == (403, "secret_key_in_browser")
    assert data_items(dynamodb) == before


@pytest.mark.parametrize(
    "proof",
    [{}, {"userId": VICTIM}, {"userId": VICTIM, "userHash": "ab" * 32}],
    ids=["anonymous", "claimed", "forged"],
)
def test_the_line_link_needs_a_proven_signed_in_customer(
    apps: Apps, dynamodb: Any, victim: Profile, proof: dict[str, str]
) -> None:
    apps.post_webhook(body_of("follow.json", user=ATTACKER_LINE, webhookEventId="01JDA7BBBBBBBBBBBBBBBBBBBB"))
    before = data_items(dynamodb)
    answer = apps.start_link(
        {"writeKey": WRITE_KEY, "anonymousId": "attacker-browser", "linkToken": "tok-attacker", **proof},
        member=None,
    )
    assert answer.status == 401
    assert answer.json["field"] in ("userId", "userHash")
    assert data_items(dynamodb) == before  # no nonce


def test_linking_ones_own_line_never_moves_anothers_and_a_linked_line_keeps_getting_its_messages(
    apps: Apps, stores: Stores, victim: Profile
) -> None:
    attacker = "member-attacker"
    apps.post_webhook(body_of("follow.json", user=ATTACKER_LINE, webhookEventId="01JDA7CCCCCCCCCCCCCCCCCCCC"))
    # The attacker signs in to their own account and links their own LINE: that is all they get.
    own = nonce_of(
        apps.start_link(
            {"writeKey": WRITE_KEY, "anonymousId": "attacker-browser", "linkToken": "tok-a"}, member=attacker
        ).json["redirectUrl"]
    )
    apps.post_webhook(
        body_of(
            "account_link_ok.json", nonce=own, user=ATTACKER_LINE, webhookEventId="01JDA7DDDDDDDDDDDDDDDDDDDD"
        )
    )
    assert profile_of_line_user(stores, ATTACKER_LINE).user_id == attacker
    assert_untouched(stores, victim)
    # A nonce for the victim's account completed by the attacker's LINE (LINE itself refuses a link
    # token used by anyone but its LINE user; if it did not): the victim's LINE link never moves.
    victims = nonce_of(
        apps.start_link(
            {"writeKey": WRITE_KEY, "anonymousId": "victim-browser", "linkToken": "tok-v2"}, member=VICTIM
        ).json["redirectUrl"]
    )
    apps.post_webhook(
        body_of(
            "account_link_ok.json",
            nonce=victims,
            user=ATTACKER_LINE,
            webhookEventId="01JDA7EEEEEEEEEEEEEEEEEEEE",
        )
    )
    after = stores.customers.profile(victim.customer_id)
    assert after is not None and after.line_contact() == FRIEND
    assert profile_of_line_user(stores, ATTACKER_LINE).customer_id != victim.customer_id


def test_a_verified_sign_in_from_a_new_device_joins_that_device_to_the_customer(
    apps: Apps, stores: Stores, victim: Profile
) -> None:
    # Browsing on a new phone before signing in, then signing in there (the shop's page renders the hash).
    assert (
        v1(
            apps, "track", {"anonymousId": "new-phone", "messageId": "cart-1", "event": "Product Added"}
        ).status
        == 200
    )
    signed_in = {"userId": VICTIM, "context": {"userHash": user_hash(IDENTITY_SECRET, VICTIM)}}
    answer = v1(apps, "identify", {"anonymousId": "new-phone", "messageId": "login-1", **signed_in})
    assert (answer.status, answer.json) == (200, {"success": True})
    assert stores.customers.customer_for_anonymous_id("new-phone") == victim.customer_id
    profile = stores.customers.profile(victim.customer_id)
    assert profile is not None and "new-phone" in profile.anonymous_ids
    assert {e.message_id for e in stores.events.history(profile)} >= {"cart-1", "login-1"}
    assert profile.line_contact() == FRIEND and profile.channels[Channel.EMAIL].consents_for(VICTIM_EMAIL)

"""On-site messages through the handlers under moto: the tag's fetch on collect
(GET /v1/web/messages) and its reports on engage (POST /v1/web/events). A due message is answered
once per fetch with private, short-lived caching; a user id reads nothing; a preview token reads its
preview; shown and clicked count once; a dismissed message never comes back; a forged token stores
nothing; the customer's export holds the inbox. Nothing personal reaches the answers."""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode

import pytest
from cems import clock
from cems.adapters import aws
from cems.adapters.dynamodb.customer_records import CustomerRecordsStore
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.dynamodb.sites import SiteStore
from cems.adapters.dynamodb.web_inbox import WebInboxStore
from cems.console.customers import CustomerDirectory
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.ingest import Ingestor
from cems.models import SegmentMessage, Site
from cems.web.dispatch import WebMessage
from cems.web.inbox import InboxItem, InboxOwner
from cems.web.tokens import WebTokenSigner

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
COLLECT_APP = ROOT / "functions" / "collect" / "app.py"
ENGAGE_APP = ROOT / "functions" / "engage" / "app.py"
WRITE_KEY = "wk_web_routes"
ORIGIN = "https://shop.example.jp"
NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
ANON = "0b6c3c5e-8f73-4d0c-9a64-1f0d1c1e2a77"
PREVIEW = "Pv" * 16
PAGE = "https://shop.example.jp/products/tea"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    @property
    def json(self) -> Any:
        return json.loads(self.text)


def http_event(
    method: str, path: str, query: dict[str, str] | None = None, body: str | None = None, **headers: str
) -> dict[str, Any]:
    raw_query = urlencode(query or {})
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"ANY {path}",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": {"host": "api.example.com", "origin": ORIGIN, **headers},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.example.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.24",
                "userAgent": "test",
            },
            "requestId": "r",
            "routeKey": f"ANY {path}",
            "stage": "$default",
            "time": "04/Dec/2026:09:00:00 +0000",
            "timeEpoch": 1796374800000,
        },
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if body is not None:
        event["body"] = base64.b64encode(body.encode()).decode()
        event["isBase64Encoded"] = True
    return event


def load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class Stack:
    def __init__(
        self, collect: ModuleType, engage: ModuleType, stores: Stores, dynamodb: Any, customer: str
    ) -> None:
        self.collect = collect
        self.engage = engage
        self.stores = stores
        self.dynamodb = dynamodb
        self.customer = customer
        self.inbox = WebInboxStore("CustomersTable", dynamodb)
        self.counters = ReportCounters("JourneysTable", dynamodb)

    def _call(self, module: ModuleType, event: dict[str, Any], function: str) -> Answer:
        response = module.lambda_handler(copy.deepcopy(event), FakeContext(f"cems-dev-{function}"))
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        body = response.get("body") or ""
        if response.get("isBase64Encoded"):
            body = base64.b64decode(body).decode()
        return Answer(response["statusCode"], headers, body)

    def fetch(self, query: dict[str, str] | None = None, **headers: str) -> Answer:
        query = {"writeKey": WRITE_KEY, "anonymousId": ANON, "url": PAGE} if query is None else query
        return self._call(
            self.collect, http_event("GET", "/v1/web/messages", query, **headers), "CollectFunction"
        )

    def report(self, token: str, kind: str, **extra: Any) -> Answer:
        body = json.dumps({"token": token, "kind": kind, **extra})
        event = http_event(
            "POST", "/v1/web/events", body=body, **{"content-type": "text/plain;charset=UTF-8"}
        )
        return self._call(self.engage, event, "EngageFunction")

    def put(self, key: str, owner: InboxOwner | None = None, **changes: Any) -> None:
        fields: dict[str, Any] = {
            "owner": owner or InboxOwner.customer(self.customer),
            "dispatch_key": key,
            "customer_id": self.customer,
            "message": WebMessage(
                kind="banner",
                title="カートに商品が残っています",
                buttons=[{"label": "カートを見る", "url": "https://shop.example.jp/cart"}],
                pages=["/products/*"],
                expires_seconds=86400,
            ),
            "written_at": NOW - timedelta(hours=1),
            "expires_at": NOW + timedelta(days=1),
            "scenario_id": "cart-web",
            "version": 1,
            "step_id": "remind",
        }
        assert self.inbox.put(InboxItem.model_validate({**fields, **changes}))

    def counts(self) -> dict[str, int]:
        return {k: int(v) for _, counts in self.counters.cells("cart-web") for k, v in counts.items()}

    def events(self, name: str) -> list[Any]:
        return [e for e in self.stores.events.events_of(self.customer) if e.event == name]


@pytest.fixture
def stack(dynamodb: Any, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cems")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CEMS")
    monkeypatch.setenv("CEMS_TRACKING_SECRET", LOCAL_TRACKING_SECRET)
    clock.freeze(NOW)
    SiteStore("SitesTable", dynamodb).add("shop", [ORIGIN], write_key=WRITE_KEY)
    site = Site(write_key="x", site_id="site_shop", name="shop", origins=["*"], created_at=NOW)
    seen = SegmentMessage.model_validate(
        {"type": "page", "messageId": "p1", "anonymousId": ANON, "timestamp": NOW.isoformat()}
    )
    Ingestor(stores.ingest).ingest(site, [seen], NOW)
    customer = stores.customers.customer_for_anonymous_id(ANON)
    assert customer is not None
    aws.dynamodb.cache_clear()
    collect = load("cems_collect_app_web_under_test", COLLECT_APP)
    engage = load("cems_engage_app_web_under_test", ENGAGE_APP)
    yield Stack(collect, engage, stores, dynamodb, customer)
    for name in ("cems_collect_app_web_under_test", "cems_engage_app_web_under_test"):
        sys.modules.pop(name, None)
    aws.dynamodb.cache_clear()
    clock.reset()


def test_a_due_message_is_answered_on_every_fetch_with_private_short_caching(stack: Stack) -> None:
    stack.put("k1")
    for _ in range(2):
        answer = stack.fetch()
        assert answer.status == 200
        assert answer.json["message"] == {
            "kind": "banner",
            "title": "カートに商品が残っています",
            "buttons": [{"label": "カートを見る", "url": "https://shop.example.jp/cart"}],
        }
        assert answer.headers["cache-control"] == "private, max-age=10"
        assert answer.headers["access-control-allow-origin"] == ORIGIN
        assert "Origin" in answer.headers["vary"]
        assert answer.headers["etag"].startswith('"')
    # The browser's copy is still good: 304, no body.
    again = stack.fetch(**{"if-none-match": answer.headers["etag"]})
    assert (again.status, again.text) == (304, "")
    # Another page than its patterns: nothing due, cacheable too.
    other = stack.fetch({"writeKey": WRITE_KEY, "anonymousId": ANON, "url": "https://shop.example.jp/cart"})
    assert (other.status, other.text, other.headers["cache-control"]) == (204, "", "private, max-age=10")


def test_a_user_id_claim_reads_nothing(stack: Stack) -> None:
    stack.put("k1")
    answer = stack.fetch({"writeKey": WRITE_KEY, "userId": "member-1001", "url": PAGE})
    assert (answer.status, answer.json["field"]) == (400, "anonymousId")
    stranger = stack.fetch(
        {"writeKey": WRITE_KEY, "anonymousId": "someone-else", "userId": stack.customer, "url": PAGE}
    )
    assert stranger.status == 204


def test_a_strangers_url_is_no_page_and_the_preflight_allows_the_get(stack: Stack) -> None:
    stack.put("k1")  # a message with page patterns: the URL is matched against them
    for url in ("http://[", "https://shop.example.jp" + "/" * 2000):
        answer = stack.fetch({"writeKey": WRITE_KEY, "anonymousId": ANON, "url": url})
        assert answer.status == 204, (url[:30], answer.status)
    event = http_event("OPTIONS", "/v1/web/messages", **{"access-control-request-method": "GET"})
    preflight = stack._call(stack.collect, event, "CollectFunction")
    assert preflight.status == 204 and preflight.headers["access-control-allow-methods"] == "GET, OPTIONS"


def test_a_fetch_needs_the_sites_key_and_an_allowed_origin(stack: Stack) -> None:
    stack.put("k1")
    assert stack.fetch({"anonymousId": ANON}).status == 401
    assert stack.fetch({"writeKey": "wk_nope", "anonymousId": ANON}).status == 401
    refused = stack.fetch(origin="https://evil.example")
    assert (refused.status, refused.json["field"]) == (403, "Origin")


def test_a_preview_token_reads_its_preview_and_its_events_record_nothing(stack: Stack) -> None:
    stack.put("t1", owner=InboxOwner.of_preview(PREVIEW), test=True)
    answer = stack.fetch({"writeKey": WRITE_KEY, "preview": PREVIEW})
    assert answer.status == 200 and answer.json["preview"] is True
    assert stack.report(answer.json["token"], "shown").json == {
        "success": True,
        "kind": "shown",
        "recorded": False,
    }
    assert stack.counts() == {} and stack.events("Web Message Shown") == []


def test_shown_and_clicked_count_once_and_are_stored_from_engage(stack: Stack) -> None:
    stack.put("k1")
    token = stack.fetch().json["token"]
    for _ in range(2):
        assert stack.report(token, "shown").status == 200
        assert stack.report(token, "clicked", button=0).status == 200
    assert stack.counts() == {"sent": 1, "clicked": 1}
    [shown] = stack.events("Web Message Shown")
    [clicked] = stack.events("Web Message Clicked")
    assert shown.site_id == clicked.site_id == "engage"
    assert clicked.properties["dispatch_key"] == "k1" and clicked.properties["button"] == 0
    [item] = stack.inbox.items(InboxOwner.customer(stack.customer), 10)
    assert item.shown_at == NOW


def test_a_dismissed_message_is_never_answered_again(stack: Stack) -> None:
    stack.put("k1")
    token = stack.fetch().json["token"]
    answer = stack.report(token, "dismissed")
    assert answer.json == {"success": True, "kind": "dismissed", "recorded": True}
    assert stack.fetch().status == 204
    assert len(stack.events("Web Message Dismissed")) == 1
    assert stack.report(token, "dismissed").json["recorded"] is False


def test_a_forged_or_expired_token_is_refused_naming_the_field_and_stores_nothing(stack: Stack) -> None:
    stack.put("k1", expires_at=NOW + timedelta(minutes=1))
    token = stack.fetch().json["token"]
    verified = WebTokenSigner(lambda: LOCAL_TRACKING_SECRET.encode()).verify(token, NOW)
    forged = WebTokenSigner(lambda: b"guessed").sign(verified.model_copy(update={"dispatch_key": "k1"}))
    refused = stack.report(forged, "dismissed")
    assert (refused.status, refused.json["field"], refused.json["error"]) == (
        403,
        "token",
        "invalid_signature",
    )
    assert stack.report("not-a-token", "shown").status == 400
    bad_kind = stack.report(token, "opened")
    assert (bad_kind.status, bad_kind.json["field"]) == (400, "kind")
    clock.freeze(NOW + timedelta(minutes=1))
    expired = stack.report(token, "shown")
    assert (expired.status, expired.json["error"]) == (403, "expired_token")
    assert stack.counts() == {} and stack.events("Web Message Dismissed") == []
    assert stack.events("Web Message Shown") == []


def test_the_customers_export_holds_their_inbox(stack: Stack) -> None:
    stack.put("k1")
    records = CustomerRecordsStore(stack.stores.customers, stack.stores.events, "JourneysTable")
    document = CustomerDirectory(records).export(stack.customer)
    assert document is not None
    [record] = document["web_messages"][stack.customer]
    assert record["dispatch_key"] == "k1" and record["message"]["title"] == "カートに商品が残っています"

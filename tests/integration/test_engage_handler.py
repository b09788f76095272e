"""The engage handler under moto, driven by the samples in events/engage/: clicks redirect and count
once per dispatch, the pixel answers a GIF, one-click unsubscribe withdraws consent once, SES
bounces and complaints suppress, and tampered tokens, replays and unknown customers get clear
answers and change nothing. Nothing personal reaches the logs."""

from __future__ import annotations

import base64
import copy
import importlib.util
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cems import clock
from cems import ingest as ingest_module
from cems.adapters import aws
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.adapters.dynamodb.suppression import SuppressionStore
from cems.engagement.config import LOCAL_TRACKING_SECRET
from cems.engagement.ses_events import (
    TAG_CUSTOMER,
    TAG_DISPATCH,
    TAG_TEST,
    email_tags,
    simulated_ses_event,
    sns_envelope,
)
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken
from cems.ingest import Ingestor
from cems.models import Channel, ChannelState, Profile, SegmentMessage, Site, StoredEvent, Trust

from tests.lambda_context import FakeContext

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "events" / "engage"
APP = ROOT / "functions" / "engage" / "app.py"
SES_EVENTS_APP = ROOT / "functions" / "ses_events" / "app.py"
CUSTOMER = "cus_0f3a9c2e7b1d4e5f8a6b9c0d1e2f3a4b"  # the customer of every sample
USER = "user-104829"
ADDRESS = "sato.hanako@example.jp"
DISPATCH = f"{CUSTOMER}#welcome_mail#v2#mail_1#e1"
DESTINATION = "https://shop.example.jp/items/sencha-premium?utm_source=cems&utm_medium=email"
NOW = datetime(2026, 11, 23, 2, 15, tzinfo=UTC)
SHOP = Site(
    write_key="wk", site_id="site_shop", name="shop", origins=["*"], created_at=NOW, trust=Trust.SERVER
)
SIGNER = TokenSigner(lambda: LOCAL_TRACKING_SECRET.encode())
BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
IMAGE = "image/webp,image/avif,image/*;q=0.8,*/*;q=0.5"


FakeLambdaContext = partial(FakeContext, "cems-dev-EngageFunction")
SesEventsContext = partial(FakeContext, "cems-dev-SesEventsFunction")


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def sample(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def http_event(method: str, path: str, accept: str = "*/*", body: str | None = None) -> dict[str, Any]:
    """A sample HTTP API event re-aimed at `path` (method and Accept changed)."""
    event = sample("unsubscribe_post.json" if method == "POST" else "click.json")
    kind = path.split("/")[1]
    event["rawPath"] = path
    event["routeKey"] = f"{method} /{kind}/{{token}}"
    event["requestContext"]["http"].update(method=method, path=path)
    event["requestContext"]["routeKey"] = event["routeKey"]
    event["pathParameters"] = {"token": path.split("/", 2)[2]}
    event["headers"]["accept"] = accept
    if body is not None:
        event["body"] = base64.b64encode(body.encode()).decode()
        event["isBase64Encoded"] = True
    return event


def token(kind: TokenKind, **changes: Any) -> str:
    fields: dict[str, Any] = {
        "kind": kind,
        "dispatch_key": DISPATCH,
        "customer_id": CUSTOMER,
        "channel": "email",
        "scenario_id": "welcome_mail",
        "version": 2,
        "step_id": "mail_1",
        "variant": "A",
        "url": DESTINATION if kind is TokenKind.CLICK else None,
    }
    return SIGNER.sign(TrackingToken(**{**fields, **changes}))


def sns_event(name: str, **mail_changes: Any) -> dict[str, Any]:
    """An SNS-wrapped SES event sample, with changes to its `mail` (e.g. tags=...)."""
    event = sample(name)
    message = json.loads(event["Records"][0]["Sns"]["Message"])
    message["mail"].update(mail_changes)
    event["Records"][0]["Sns"]["Message"] = json.dumps(message, ensure_ascii=False)
    return event


@dataclass
class Engage:
    """The engage function (HTTP) and the ses_events function (SES events through SNS)."""

    module: ModuleType
    ses_module: ModuleType
    stores: Stores
    counters: ReportCounters
    suppressions: SuppressionStore

    def call(self, event: dict[str, Any]) -> Answer:
        response = self.module.lambda_handler(copy.deepcopy(event), FakeLambdaContext())
        body = response.get("body") or ""
        raw = base64.b64decode(body) if response.get("isBase64Encoded") else body.encode()
        headers = {k.lower(): v for k, v in (response.get("headers") or {}).items()}
        return Answer(response["statusCode"], headers, raw)

    def get(self, path: str, accept: str = "*/*") -> Answer:
        return self.call(http_event("GET", path, accept))

    def post(self, path: str, accept: str = "*/*", body: str = "List-Unsubscribe=One-Click") -> Answer:
        return self.call(http_event("POST", path, accept, body))

    def sns(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.ses_module.lambda_handler(copy.deepcopy(event), SesEventsContext())
        return result

    def profile(self, customer_id: str = CUSTOMER) -> Profile:
        profile = self.stores.customers.profile(customer_id)
        assert profile is not None
        return profile

    def email_state(self) -> ChannelState | None:
        return self.profile().channels.get(Channel.EMAIL)

    def events(self, name: str | None = None) -> list[StoredEvent]:
        events = self.stores.events.history(self.profile())
        return [e for e in events if name is None or e.event == name]

    def counts(self) -> dict[str, int]:
        cells = self.counters.cells("welcome_mail")
        assert all(c.step_id == "mail_1" and c.variant == "A" and c.version == 2 for c, _ in cells)
        return {k: int(v) for _, counts in cells for k, v in counts.items()}


@pytest.fixture
def engage(dynamodb: Any, stores: Stores, monkeypatch: pytest.MonkeyPatch) -> Iterator[Engage]:
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "cems")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "CEMS")
    monkeypatch.setenv("CEMS_TRACKING_SECRET", LOCAL_TRACKING_SECRET)
    monkeypatch.setenv("EMAIL_FROM_NAME", "茶寮みどり")
    clock.freeze(NOW)
    aws.dynamodb.cache_clear()
    modules = []
    for name, path in (
        ("cems_engage_app_under_test", APP),
        ("cems_ses_events_app_under_test", SES_EVENTS_APP),
    ):
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    yield Engage(
        *modules,
        stores,
        ReportCounters("JourneysTable", dynamodb),
        SuppressionStore("CustomersTable", dynamodb),
    )
    sys.modules.pop("cems_engage_app_under_test", None)
    sys.modules.pop("cems_ses_events_app_under_test", None)
    aws.dynamodb.cache_clear()


@pytest.fixture
def customer(engage: Engage, monkeypatch: pytest.MonkeyPatch) -> Profile:
    """The samples' customer, signed in on the shop with an address and email consent."""
    monkeypatch.setattr(ingest_module, "new_customer_id", lambda: CUSTOMER)
    identify = SegmentMessage.model_validate(
        {
            "type": "identify",
            "messageId": "identify-1",
            "userId": USER,
            "traits": {"email": ADDRESS, "email_opt_in": True, "name": "佐藤花子"},
            "timestamp": (NOW - timedelta(days=3)).isoformat(),
        }
    )
    Ingestor(engage.stores.ingest).ingest(SHOP, [identify], NOW - timedelta(days=3))
    return engage.profile()


# --- clicks -------------------------------------------------------------------------------------------


def test_a_click_redirects_records_and_counts_once_per_dispatch(engage: Engage, customer: Profile) -> None:
    answer = engage.call(sample("click.json"))
    assert answer.status == 302
    assert answer.headers["location"] == DESTINATION
    assert answer.headers["cache-control"].startswith("no-store")
    assert answer.headers["referrer-policy"] == "no-referrer"
    [clicked] = engage.events("Link Clicked")
    assert clicked.site_id == "engage" and clicked.customer_id == CUSTOMER
    assert clicked.properties == {
        "channel": "email",
        "dispatch_key": DISPATCH,
        "scenario_id": "welcome_mail",
        "version": 2,
        "step_id": "mail_1",
        "variant": "A",
        "url": DESTINATION,
    }
    assert engage.counts() == {"clicked": 1}

    # Clicked again, and another link of the same mail: one more event, still one click counted.
    assert engage.call(sample("click.json")).status == 302
    other = token(TokenKind.CLICK, url="https://shop.example.jp/campaign/autumn")
    assert engage.get(f"/r/{other}").headers["location"] == "https://shop.example.jp/campaign/autumn"
    assert {e.properties["url"] for e in engage.events("Link Clicked")} == {
        DESTINATION,
        "https://shop.example.jp/campaign/autumn",
    }
    assert engage.counts() == {"clicked": 1}


def test_a_shared_line_links_clicks_count_once_per_visitor_and_store_no_event(
    engage: Engage, customer: Profile
) -> None:
    # The link of a multicast (cems.line.multicast): the shared dispatch, no customer.
    shared = token(
        TokenKind.CLICK, dispatch_key="spring#r1#announce#0a1b#0000", customer_id="", channel="line"
    )
    event = http_event("GET", f"/r/{shared}")
    assert engage.call(event).headers["location"] == DESTINATION
    assert engage.events("Link Clicked") == []
    assert engage.counts() == {"clicked": 1}
    # The same phone again (a reload, another link of the message): counted already.
    other = token(
        TokenKind.CLICK,
        dispatch_key="spring#r1#announce#0a1b#0000",
        customer_id="",
        channel="line",
        url="https://shop.example.jp/campaign/autumn",
    )
    assert engage.call(http_event("GET", f"/r/{other}")).status == 302
    assert engage.call(event).status == 302
    assert engage.counts() == {"clicked": 1}
    # A made-up User-Agent from the same address is no new clicker (the caller picks the header).
    event["requestContext"]["http"]["userAgent"] = "forged/1.0"
    assert engage.call(event).status == 302
    assert engage.counts() == {"clicked": 1}
    # Another recipient's phone: one more.
    event["requestContext"]["http"]["sourceIp"] = "198.51.100.7"
    assert engage.call(event).status == 302
    assert engage.counts() == {"clicked": 2}


def test_a_non_ascii_destination_is_percent_encoded_in_location(engage: Engage, customer: Profile) -> None:
    answer = engage.get(f"/r/{token(TokenKind.CLICK, url='https://shop.example.jp/商品/煎茶?q=新茶')}")
    assert answer.status == 302
    location = answer.headers["location"]
    assert location.isascii()
    assert location == "https://shop.example.jp/%E5%95%86%E5%93%81/%E7%85%8E%E8%8C%B6?q=%E6%96%B0%E8%8C%B6"


@pytest.mark.parametrize("accept", ["*/*", "application/json"])
def test_a_tampered_click_never_redirects(engage: Engage, customer: Profile, accept: str) -> None:
    good = token(TokenKind.CLICK)
    payload, mac = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["u"] = "https://evil.example/phish"
    forged_payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
    for bad in (f"{forged_payload}.{mac}", payload, f"{payload}.", good[:-3], "not-a-token"):
        answer = engage.get(f"/r/{bad}", accept)
        assert answer.status == 400
        assert "location" not in answer.headers
        body = answer.json()
        assert body["success"] is False and body["error"] in ("invalid_signature", "malformed_token")
        assert body["message"]
    assert engage.events("Link Clicked") == []
    assert engage.counts() == {}


def test_a_browser_gets_a_readable_page_for_a_bad_link(engage: Engage, customer: Profile) -> None:
    answer = engage.get("/r/bogus.token", BROWSER)
    assert answer.status == 400
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.headers["x-cems-error"] == "malformed_token"
    assert "リンクが正しくありません" in answer.text and "This link is not valid" in answer.text
    assert "location" not in answer.headers


def test_a_token_of_another_kind_is_refused_on_each_route(engage: Engage, customer: Profile) -> None:
    opened = token(TokenKind.OPEN)
    assert engage.get(f"/r/{opened}").json()["error"] == "wrong_kind"
    assert engage.get(f"/u/{opened}").json()["error"] == "wrong_kind"
    assert engage.post(f"/u/{token(TokenKind.CLICK)}").status == 400
    assert engage.get(f"/o/{token(TokenKind.UNSUBSCRIBE)}").status == 400
    assert engage.email_state() == customer.channels[Channel.EMAIL]
    assert [e.type for e in engage.events()] == ["identify"]


def test_a_test_click_redirects_and_changes_nothing(engage: Engage, customer: Profile) -> None:
    answer = engage.get(f"/r/{token(TokenKind.CLICK, test=True)}")
    assert (answer.status, answer.headers["location"]) == (302, DESTINATION)
    assert engage.events("Link Clicked") == [] and engage.counts() == {}


def test_an_erased_customers_click_still_redirects_and_records_nothing(engage: Engage) -> None:
    answer = engage.call(sample("click.json"))
    assert (answer.status, answer.headers["location"]) == (302, DESTINATION)
    assert engage.counts() == {}


def test_a_line_click_lands_on_the_line_friend(engage: Engage, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "new_customer_id", lambda: "cus_line_only")
    friend = SegmentMessage.model_validate(
        {
            "type": "track",
            "messageId": "line:1",
            "event": "line_follow",
            "lineUserId": "U7b3e9c1a5f2d4e6b8a0c2e4f6a8b0c2d",
        }
    )
    Ingestor(engage.stores.ingest).ingest(
        Site(write_key="", site_id="line", name="LINE", created_at=NOW), [friend], NOW
    )
    click = token(
        TokenKind.CLICK,
        customer_id="cus_line_only",
        dispatch_key="cus_line_only#welcome_mail#v2#line_1#e1",
        channel="line",
        step_id="line_1",
    )
    assert engage.get(f"/r/{click}").status == 302
    [event] = [
        e for e in engage.stores.events.history(engage.profile("cus_line_only")) if e.event == "Link Clicked"
    ]
    assert event.properties["channel"] == "line" and event.site_id == "engage"


# --- opens --------------------------------------------------------------------------------------------


def test_the_pixel_answers_a_gif_and_counts_the_open_once(engage: Engage, customer: Profile) -> None:
    for _ in range(3):
        answer = engage.call(sample("open.json"))
        assert answer.status == 200
        assert answer.headers["content-type"] == "image/gif"
        assert answer.body.startswith(b"GIF89a") and len(answer.body) == 42
        assert "no-store" in answer.headers["cache-control"] and "no-cache" in answer.headers["cache-control"]
        assert answer.headers["pragma"] == "no-cache"
    [opened] = engage.events("Email Opened")
    assert opened.properties["dispatch_key"] == DISPATCH and "url" not in opened.properties
    assert engage.counts() == {"opened": 1}


def test_a_bad_pixel_is_still_an_image_for_mail_clients(engage: Engage, customer: Profile) -> None:
    answer = engage.get("/o/bogus.token", IMAGE)
    assert answer.status == 400
    assert answer.headers["content-type"] == "image/gif" and answer.body.startswith(b"GIF89a")
    assert answer.headers["x-cems-error"] == "malformed_token"
    as_json = engage.get("/o/bogus.token")
    assert as_json.status == 400 and as_json.json()["error"] == "malformed_token"
    assert engage.events("Email Opened") == [] and engage.counts() == {}


# --- unsubscribing ------------------------------------------------------------------------------------


def test_the_confirmation_page_changes_nothing(engage: Engage, customer: Profile) -> None:
    for _ in range(2):  # a link scanner, then the customer
        answer = engage.call(sample("unsubscribe_get.json"))
        assert answer.status == 200
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert "配信停止の確認" in answer.text and "Confirm unsubscribe" in answer.text
        assert (
            '<form method="post">' in answer.text
            and 'name="List-Unsubscribe" value="One-Click"' in answer.text
        )
        assert "茶寮みどり" in answer.text
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    state = engage.email_state()
    assert state is not None and state.consent is True
    assert engage.events("Email Unsubscribed") == []


def test_one_click_unsubscribes_and_a_replay_changes_nothing(engage: Engage, customer: Profile) -> None:
    answer = engage.call(sample("unsubscribe_post.json"))
    assert answer.status == 200
    assert "配信を停止しました" in answer.text and "You have been unsubscribed" in answer.text
    assert engage.email_state() == ChannelState(
        reachable=True, consent=False, updated_at=NOW, reason="unsubscribed"
    )
    [event] = engage.events("Email Unsubscribed")
    assert event.message_id.startswith(f"unsub:{DISPATCH}") and event.site_id == "engage"
    profile_version = engage.profile().version

    clock.advance(60)
    again = engage.call(sample("unsubscribe_post.json"))
    assert again.status == 200 and "配信は停止済みです" in again.text
    assert len(engage.events("Email Unsubscribed")) == 1
    assert engage.profile().version == profile_version
    # The page now says so too, without the "everything" button (its topics still apply to LINE and
    # on-site messages, so they stay listed).
    page = engage.call(sample("unsubscribe_get.json"))
    assert page.status == 200 and "配信は停止済みです" in page.text and 'value="all"' not in page.text


def test_any_post_body_unsubscribes_and_json_callers_get_json(engage: Engage, customer: Profile) -> None:
    answer = engage.post(f"/u/{token(TokenKind.UNSUBSCRIBE)}", "application/json", body="")
    assert answer.status == 200 and answer.json() == {"success": True, "result": "unsubscribed"}
    assert engage.post(f"/u/{token(TokenKind.UNSUBSCRIBE)}", "application/json").json()["result"] == "already"


def test_consent_given_again_can_be_withdrawn_again_with_the_same_link(
    engage: Engage, customer: Profile
) -> None:
    engage.call(sample("unsubscribe_post.json"))
    clock.advance(3600)
    opt_in = SegmentMessage.model_validate(
        {"type": "identify", "messageId": "identify-2", "userId": USER, "traits": {"email_opt_in": True}}
    )
    Ingestor(engage.stores.ingest).ingest(SHOP, [opt_in], clock.now())
    assert engage.email_state().consent is True  # type: ignore[union-attr]
    clock.advance(3600)
    answer = engage.call(sample("unsubscribe_post.json"))
    assert "配信を停止しました" in answer.text
    assert engage.email_state().consent is False  # type: ignore[union-attr]
    assert len(engage.events("Email Unsubscribed")) == 2


def test_a_tampered_unsubscribe_answers_clearly_and_changes_nothing(
    engage: Engage, customer: Profile
) -> None:
    good = token(TokenKind.UNSUBSCRIBE)
    bad = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for answer in (engage.post(f"/u/{bad}", BROWSER), engage.get(f"/u/{bad}", BROWSER)):
        assert answer.status == 400 and "リンクが正しくありません" in answer.text
        assert answer.headers["x-cems-error"] == "invalid_signature"
    assert engage.post(f"/u/{bad}").json()["error"] == "invalid_signature"
    assert engage.post(f"/u/{bad}").json()["field"] == "token"
    state = engage.email_state()
    assert state is not None and state.consent is True
    assert engage.events("Email Unsubscribed") == []


def test_an_unknown_customer_gets_404_and_nothing_is_stored(engage: Engage) -> None:
    for answer in (engage.call(sample("unsubscribe_get.json")), engage.call(sample("unsubscribe_post.json"))):
        assert answer.status == 404
        assert "お客様情報が見つかりません" in answer.text and "We could not find you" in answer.text
    assert engage.post(f"/u/{token(TokenKind.UNSUBSCRIBE)}", "application/json").json() == {
        "success": False,
        "result": "unknown",
        "error": "unknown_customer",
        "field": "token",
    }
    assert engage.stores.customers.profile(CUSTOMER) is None


def test_a_test_mails_unsubscribe_link_changes_nothing(engage: Engage, customer: Profile) -> None:
    answer = engage.post(f"/u/{token(TokenKind.UNSUBSCRIBE, test=True)}", BROWSER)
    assert answer.status == 200 and "テスト送信" in answer.text
    state = engage.email_state()
    assert state is not None and state.consent is True


# --- SES events ---------------------------------------------------------------------------------------


def test_a_hard_bounce_suppresses_once_however_often_sns_delivers_it(
    engage: Engage, customer: Profile
) -> None:
    for _ in range(2):
        assert engage.sns(sample("ses_bounce.json")) == {"records": 1}
    assert engage.suppressions.reason(ADDRESS) == "bounce"
    assert engage.suppressions.reason(ADDRESS.upper()) == "bounce"
    [bounced] = engage.events("Email Bounced")
    assert bounced.site_id == "engage"
    assert bounced.properties["bounce_type"] == "Permanent"
    assert bounced.properties["dispatch_key"] == DISPATCH and bounced.properties["step_id"] == "mail_1"
    assert ADDRESS not in json.dumps(bounced.model_dump(mode="json"))
    state = engage.email_state()
    assert state is not None and (state.reachable, state.consent, state.reason) == (False, False, "bounced")


def test_a_transient_bounce_is_only_counted(engage: Engage, customer: Profile) -> None:
    engage.sns(sample("ses_bounce_transient.json"))
    assert engage.suppressions.reason(ADDRESS) is None
    assert engage.events("Email Bounced") == []
    assert engage.email_state().consent is True  # type: ignore[union-attr]


def test_a_complaint_suppresses_and_withdraws_consent(engage: Engage, customer: Profile) -> None:
    for _ in range(2):
        engage.sns(sample("ses_complaint.json"))
    assert engage.suppressions.reason(ADDRESS) == "complaint"
    assert len(engage.events("Email Complained")) == 1
    state = engage.email_state()
    assert state is not None and (state.reachable, state.consent, state.reason) == (
        False,
        False,
        "complained",
    )


def test_a_delivery_counts_once_per_dispatch(engage: Engage, customer: Profile) -> None:
    for _ in range(2):
        engage.sns(sample("ses_delivery.json"))
    assert engage.counts() == {"delivered": 1}


def test_a_mail_without_cems_tags_only_suppresses(engage: Engage, customer: Profile) -> None:
    engage.sns(sns_event("ses_bounce.json", tags={"ses:configuration-set": ["cems-dev"]}))
    assert engage.suppressions.reason(ADDRESS) == "bounce"
    assert engage.events("Email Bounced") == []


def test_a_test_mails_bounce_suppresses_but_records_nothing(engage: Engage, customer: Profile) -> None:
    tags = {TAG_DISPATCH: ["test_3Aabc"], TAG_CUSTOMER: [CUSTOMER], TAG_TEST: ["1"]}
    engage.sns(sns_event("ses_bounce.json", tags=tags))
    engage.sns(sns_event("ses_delivery.json", tags=tags))
    assert engage.suppressions.reason(ADDRESS) == "bounce"
    assert engage.events("Email Bounced") == [] and engage.counts() == {}


def test_an_erased_customers_bounce_still_suppresses(engage: Engage) -> None:
    engage.sns(sample("ses_bounce.json"))
    assert engage.suppressions.reason(ADDRESS) == "bounce"
    assert engage.stores.customers.profile(CUSTOMER) is None


def test_simulated_events_for_a_sent_mail_work_end_to_end(engage: Engage, customer: Profile) -> None:
    # What the local stack does for a mail SES (moto) accepted: its EmailTags come back on the events.
    tags = email_tags(
        dispatch_key=DISPATCH,
        customer_id=CUSTOMER,
        scenario_id="welcome_mail",
        version=2,
        step_id="mail_1",
        variant="A",
    )
    events = [
        simulated_ses_event(kind, message_id="local-1", address=ADDRESS, tags=tags, at=NOW)
        for kind in ("Delivery", "Bounce")
    ]
    assert engage.sns(sns_envelope(*events)) == {"records": 2}
    assert engage.counts() == {"delivered": 1}
    assert engage.suppressions.reason(ADDRESS) == "bounce"
    [bounced] = engage.events("Email Bounced")
    assert bounced.properties["dispatch_key"] == DISPATCH


def test_a_record_that_is_not_an_ses_event_is_dropped(engage: Engage, customer: Profile) -> None:
    event = sample("ses_bounce.json")
    event["Records"][0]["Sns"]["Message"] = '{"hello": "world"}'
    assert engage.sns(event) == {"records": 1}
    assert engage.suppressions.reason(ADDRESS) is None


def test_a_failing_record_fails_the_invocation_for_a_retry(
    engage: Engage, customer: Profile, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("DynamoDB is down")

    monkeypatch.setattr(engage.ses_module.engagement.suppressions, "suppress", broken)
    with pytest.raises(RuntimeError, match="1 of 1 SES events failed"):
        engage.sns(sample("ses_bounce.json"))
    monkeypatch.undo()


# --- logs ---------------------------------------------------------------------------------------------


def test_no_address_token_or_customer_reaches_the_logs(
    engage: Engage, customer: Profile, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    # Every JSON log line as Lambda would ship it (Powertools' handler, with all `extra` fields).
    buffer = io.StringIO()
    engage.module.logger.registered_handler.setStream(buffer)
    engage.ses_module.logger.registered_handler.setStream(buffer)
    names = sorted(p.name for p in SAMPLES.glob("*.json"))
    for name in names:
        event = sample(name)
        if "Records" in event:
            engage.sns(event)
        else:
            engage.call(event)
    engage.get("/r/bogus.token")
    engage.post(f"/u/{token(TokenKind.UNSUBSCRIBE)}")
    logs = buffer.getvalue() + capsys.readouterr().out + caplog.text
    for message in ("click", "open", "ses event", "unsubscribe", "invalid token"):
        assert f'"message":"{message}"' in logs
    secrets = [ADDRESS, "sato.hanako", CUSTOMER, USER, DISPATCH, DESTINATION, "bogus.token"]
    secrets += [LOCAL_TRACKING_SECRET, "佐藤"]
    for name in names:
        event = sample(name)
        if "rawPath" in event:
            secrets.append(event["rawPath"].split("/")[2])
    for secret in secrets:
        assert secret not in logs


def test_the_dashboards_metrics_are_emitted(
    engage: Engage, customer: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    for name in ("click.json", "open.json", "unsubscribe_post.json", "ses_bounce.json", "ses_complaint.json"):
        event = sample(name)
        engage.sns(event) if "Records" in event else engage.call(event)
    emitted = {
        metric["Name"]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith('{"_aws"')
        for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]
        for metric in directive["Metrics"]
    }
    # template.yaml's dashboard, Engagement / 反応.
    assert {"LinkClicks", "EmailOpens", "Unsubscribes", "EmailBounces", "EmailComplaints"} <= emitted


def test_a_click_is_an_event_a_scenario_goal_can_use(
    engage: Engage, customer: Profile, dynamodb: Any
) -> None:
    """The click engage stores reaches the scenario engine like any event: here it is the goal."""
    import boto3
    from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
    from cems.adapters.sqs_dispatch import QueueDispatchSink
    from cems.scenario import engine as scenario_engine
    from cems.scenario.model import Scenario
    from cems.scenario.records import ScenarioSource
    from cems.scenario.runner import ScenarioRunner

    document = {
        "id": "welcome_mail",
        "name": "ようこそメール",
        "trigger": {"type": "event", "event": "Signed Up"},
        "goal": {
            "event": "Link Clicked",
            "where": [{"property": "channel", "op": "eq", "value": "email"}],
            "within": "7d",
        },
        "steps": [{"id": "wait", "type": "wait", "duration": "3d"}, {"id": "done", "type": "end"}],
    }
    scenarios = ScenarioStore("JourneysTable", dynamodb)
    scenarios.put_version(Scenario.model_validate(document), document, ScenarioSource("s.json", "e"))
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    enrolments = EnrolmentStore("JourneysTable", dynamodb, 4, model=scenario_engine.Enrolment)
    runner = ScenarioRunner(
        scenarios,
        enrolments,
        CapStore("JourneysTable", dynamodb),
        engage.stores.customers,
        engage.stores.events,
        QueueDispatchSink(sqs, {Channel.LINE: sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]}),
        counters=engage.counters,
    )
    signed_up = SegmentMessage.model_validate(
        {
            "type": "track",
            "messageId": "signup-1",
            "userId": USER,
            "event": "Signed Up",
            "timestamp": NOW.isoformat(),
        }
    )
    Ingestor(engage.stores.ingest).ingest(SHOP, [signed_up], NOW)
    [stored_signup] = engage.events("Signed Up")
    assert runner.on_stored_event(stored_signup).enrolled == 1

    clock.advance(3600)
    assert engage.get(f"/r/{token(TokenKind.CLICK)}").status == 302
    [click] = engage.events("Link Clicked")
    runner.on_stored_event(click)
    journey = enrolments.get(CUSTOMER, "welcome_mail")
    assert journey is not None and journey.state is scenario_engine.EnrolmentState.CONVERTED

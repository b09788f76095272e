"""A fake of LINE's account-link page, for the local stack: the last hop of the link flow.

On LINE, `https://access.line.me/dialog/bot/accountLink?linkToken=...&nonce=...` is opened in the
user's LINE app; LINE checks the link token and sends the bot an `accountLink` webhook event with the
nonce. Here the stack serves `/_fake_line/dialog/bot/accountLink` (CEMS_LINE_ACCOUNT_LINK_URL points
there locally): it finds the LINE user the fake Messaging API issued the link token to
(cems.local.fake_line), posts the signed `accountLink` event to the stack's own `/line/webhook`, as
LINE would, and shows a done page. A link token works once; an unknown or used one gets an error
page and no event, as on LINE.
"""

from __future__ import annotations

import html
import json
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from cems import clock
from cems.line.webhook import sign
from cems.local.fake_line import FAKE_LINE_PREFIX, FakeLine
from cems.local.http import LocalRequest, LocalResponse, LocalRoute

ACCOUNT_LINK_PATH = f"{FAKE_LINE_PREFIX}/dialog/bot/accountLink"
# The bot's own user id in `destination` (any LINE-shaped id will do locally).
FAKE_BOT_USER_ID = "U00000000000000000000000000000cem"
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def webhook_event_id() -> str:
    """A ULID-shaped id, as LINE's webhookEventId is: 48 bits of time, then randomness."""
    value = (int(clock.now().timestamp() * 1000) << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def account_link_body(line_user_id: str, nonce: str, result: str = "ok") -> bytes:
    """A webhook body with one accountLink event, as LINE sends it."""
    event: dict[str, object] = {
        "type": "accountLink",
        "timestamp": int(clock.now().timestamp() * 1000),
        "source": {"type": "user", "userId": line_user_id},
        "mode": "active",
        "webhookEventId": webhook_event_id(),
        "deliveryContext": {"isRedelivery": False},
        "link": {"result": result, "nonce": nonce},
    }
    if result == "ok":
        event["replyToken"] = secrets.token_hex(16)
    return json.dumps({"destination": FAKE_BOT_USER_ID, "events": [event]}).encode("utf-8")


@dataclass
class FakeAccountLinkPage:
    fake_line: FakeLine
    webhook_url: str
    channel_secret: Callable[[], str]
    used_tokens: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def routes(self) -> list[LocalRoute]:
        return [LocalRoute("GET", rf"{ACCOUNT_LINK_PATH}/?", self._account_link)]

    def _account_link(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        query = dict(parse_qsl(request.query))
        token, nonce = query.get("linkToken", ""), query.get("nonce", "")
        with self._lock:
            issued = next((t for t in self.fake_line.link_tokens if t["link_token"] == token), None)
            if issued is None or token in self.used_tokens or not nonce:
                return _page(
                    400,
                    "連携できませんでした / Linking failed",
                    "リンクが無効か、すでに使われています。/ The link is invalid or was already used.",
                )
            self.used_tokens.add(token)
        body = account_link_body(str(issued["user_id"]), nonce)
        post = urllib.request.Request(  # noqa: S310 - the stack's own URL
            self.webhook_url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "X-Line-Signature": sign(body, self.channel_secret()),
            },
        )
        try:
            with urllib.request.urlopen(post, timeout=15) as answer:  # noqa: S310
                status = answer.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        if status != 200:
            return _page(502, "連携できませんでした / Linking failed", f"webhook HTTP {status}")
        return _page(
            200,
            "連携が完了しました / Account linked",
            "LINE のトーク画面に戻ってください。/ You can go back to the LINE chat.",
            element_id="linked",
        )


def _page(status: int, title: str, text: str, element_id: str = "failed") -> LocalResponse:
    body = (
        '<!doctype html><html lang="ja"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} | LINE (local fake)</title></head>"
        f'<body><main id="{element_id}"><h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>'
        "<p><small>CEMS local stack: a stand-in for LINE's account-link page.</small></p>"
        "</main></body></html>"
    )
    return LocalResponse(status, body.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})


def account_link_routes(fake_line: FakeLine | None, http_url: str) -> list[LocalRoute]:
    """The fake account-link page's routes, posting to this stack's webhook (none without the fake)."""
    if fake_line is None:
        return []
    from cems.line.config import LineSettings
    from cems.settings import Settings

    def channel_secret() -> str:
        return Settings.from_environ().area(LineSettings).channel_secret()

    page = FakeAccountLinkPage(fake_line, f"{http_url}/line/webhook", channel_secret)
    return page.routes()

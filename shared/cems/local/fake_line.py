"""A fake LINE Messaging API for the local stack and tests, checked with the SDK's own models.

Served by the local stack under `/_fake_line` (CEMS_LINE_API_URL points there unless set), or by
`FakeLineServer` on its own port in tests. It answers as LINE does, as far as CEMS relies on it:

- `POST /v2/bot/message/push`, `/multicast`, `/reply`: the body must parse with the SDK's
  PushMessageRequest / MulticastRequest / ReplyMessageRequest (1-5 messages, 1-500 multicast
  recipients) and every text must be at most 5,000 characters, else 400 with LINE's error shape;
  `to` must look like a LINE user id. `X-Line-Retry-Key` must be a UUID; a key accepted in the last
  24 hours gets 409 and nothing is sent again.
- `POST /v2/bot/user/{userId}/linkToken` (a random link token), `GET /v2/bot/profile/{userId}`,
  `POST /v2/bot/user/{userId}/richmenu/{richMenuId}` and `DELETE /v2/bot/user/{userId}/richmenu`
  (link and unlink a rich menu; `rich_menus` holds each user's linked menu).
- Every request needs `Authorization: Bearer <the channel access token>`, else 401.

For people and tests (under `/_local/line`): `POST /fail` {"status": 429|500|400|..., "count": N,
"message": "..."} makes the next N sending calls fail so; `POST /reset` forgets everything;
`GET /messages` is JSON of every call and every message accepted, per recipient; `GET /_local/line`
is the same as a small page.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cems import clock
from cems.line.api import lazy_linebot_packages
from cems.line.dispatch import MAX_TEXT_LENGTH
from cems.local.http import LocalRequest, LocalResponse, LocalRoute

FAKE_LINE_PREFIX = "/_fake_line"
RETRY_KEY_TTL = timedelta(hours=24)
MONTHLY_LIMIT_MESSAGE = "You have reached your monthly limit."
_LINE_USER_ID = re.compile(r"^U[0-9a-f]{32}$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DEFAULT_FAILURE_MESSAGES = {
    400: "The request body has 1 error(s)",
    401: "Authentication failed. Confirm that the access token in the authorization header is valid.",
    403: "Access to this API is not available for your account",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


class _Reject(Exception):
    def __init__(self, status: int, message: str, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message}
        if details:
            self.body["details"] = details


@dataclass
class _Failure:
    status: int
    remaining: int
    message: str


@dataclass
class FakeLine:
    """The fake's state and rules; `routes()` serves it through the local stack's HTTP server."""

    access_token: str | Callable[[], str]
    calls: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    link_tokens: list[dict[str, Any]] = field(default_factory=list)
    rich_menus: dict[str, str] = field(default_factory=dict)
    _retry_keys: dict[str, tuple[datetime, str]] = field(default_factory=dict)
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- routes -------------------------------------------------------------------------------

    def routes(self, prefix: str = FAKE_LINE_PREFIX) -> list[LocalRoute]:
        p = re.escape(prefix)
        return [
            LocalRoute("POST", rf"{p}/v2/bot/message/(?P<endpoint>push|multicast|reply)", self._send),
            LocalRoute("POST", rf"{p}/v2/bot/user/(?P<user_id>[^/]+)/linkToken", self._link_token),
            LocalRoute("GET", rf"{p}/v2/bot/profile/(?P<user_id>[^/]+)", self._profile),
            LocalRoute(
                "POST",
                rf"{p}/v2/bot/user/(?P<user_id>[^/]+)/richmenu/(?P<rich_menu_id>[^/]+)",
                self._rich_menu,
            ),
            LocalRoute("DELETE", rf"{p}/v2/bot/user/(?P<user_id>[^/]+)/richmenu", self._unlink_rich_menu),
            LocalRoute("POST", r"/_local/line/fail", self._fail),
            LocalRoute("POST", r"/_local/line/reset", self._reset),
            LocalRoute("GET", r"/_local/line/messages", self._messages_json),
            LocalRoute("GET", r"/_local/line/?", self._page),
        ]

    # --- the Messaging API --------------------------------------------------------------------

    def _send(self, request: LocalRequest, params: dict[str, str]) -> LocalResponse:
        endpoint = params["endpoint"]
        request_id = uuid.uuid4().hex
        retry_key = request.headers.get("x-line-retry-key")
        call: dict[str, Any] = {"endpoint": endpoint, "at": clock.iso(clock.now()), "request_id": request_id}
        if retry_key:
            call["retry_key"] = retry_key
        with self._lock:
            try:
                self._authorise(request)
                body = self._parse(endpoint, request.body)
                call["recipients"] = len(body["to"]) if endpoint == "multicast" else 1
                call["messages"] = len(body["messages"])
                if retry_key is not None:
                    if endpoint == "reply" or not _UUID.match(retry_key):
                        raise _Reject(400, "The value for the 'X-Line-Retry-Key' header is invalid")
                    self._forget_old_retry_keys()
                    accepted = self._retry_keys.get(retry_key)
                    if accepted is not None:
                        call["status"] = 409
                        self.calls.append(call)
                        answer = LocalResponse.json(409, {"message": "The retry key is already accepted"})
                        answer.headers["x-line-request-id"] = request_id
                        answer.headers["x-line-accepted-request-id"] = accepted[1]
                        return answer
                self._injected_failure()
                if retry_key is not None:
                    self._retry_keys[retry_key] = (clock.now(), request_id)
                recipients = body["to"] if endpoint == "multicast" else [body.get("to") or "reply"]
                sent = []
                for to in recipients:
                    for message in body["messages"]:
                        entry = {
                            "to": to,
                            "endpoint": endpoint,
                            "message": message,
                            "request_id": request_id,
                            "at": call["at"],
                        }
                        if endpoint == "reply":
                            entry["reply_token"] = body["replyToken"]
                        self.messages.append(entry)
                for _ in body["messages"]:
                    sent.append(
                        {"id": str(secrets.randbelow(10**18)), "quoteToken": secrets.token_urlsafe(16)}
                    )
            except _Reject as reject:
                call["status"] = reject.status
                call["error"] = reject.body["message"]
                self.calls.append(call)
                answer = LocalResponse.json(reject.status, reject.body)
                answer.headers["x-line-request-id"] = request_id
                return answer
            call["status"] = 200
            self.calls.append(call)
        answer = LocalResponse.json(200, {} if endpoint == "multicast" else {"sentMessages": sent})
        answer.headers["x-line-request-id"] = request_id
        return answer

    def _authorise(self, request: LocalRequest) -> None:
        token = self.access_token() if callable(self.access_token) else self.access_token
        if request.headers.get("authorization") != f"Bearer {token}":
            raise _Reject(401, _DEFAULT_FAILURE_MESSAGES[401])

    def _parse(self, endpoint: str, raw: bytes) -> dict[str, Any]:
        lazy_linebot_packages()
        from linebot.v3.messaging.models.multicast_request import (  # type: ignore[import-untyped,unused-ignore]
            MulticastRequest,
        )
        from linebot.v3.messaging.models.push_message_request import (  # type: ignore[import-untyped,unused-ignore]
            PushMessageRequest,
        )
        from linebot.v3.messaging.models.reply_message_request import (  # type: ignore[import-untyped,unused-ignore]
            ReplyMessageRequest,
        )

        model: Any = {
            "push": PushMessageRequest,
            "multicast": MulticastRequest,
            "reply": ReplyMessageRequest,
        }[endpoint]
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise _Reject(400, "The request body could not be parsed as JSON") from None
        if not isinstance(data, dict):
            raise _Reject(
                400, "The request body has 1 error(s)", [{"message": "must be an object", "property": ""}]
            )
        try:
            model.from_dict(data)
        except Exception as exc:
            raise _Reject(400, "The request body has 1 error(s)", _details(exc)) from None
        details = []
        for i, message in enumerate(data["messages"]):
            text = message.get("text") if isinstance(message, dict) else None
            if isinstance(text, str) and len(text) > MAX_TEXT_LENGTH:
                details.append(
                    {
                        "message": f"Length must be between 0 and {MAX_TEXT_LENGTH}",
                        "property": f"messages[{i}].text",
                    }
                )
        for i, to in enumerate(
            data["to"] if endpoint == "multicast" else [data.get("to")] if endpoint == "push" else []
        ):
            if not isinstance(to, str) or not _LINE_USER_ID.match(to):
                prop = f"to[{i}]" if endpoint == "multicast" else "to"
                details.append(
                    {"message": "The property, 'to', in the request body is invalid", "property": prop}
                )
        if details:
            raise _Reject(400, f"The request body has {len(details)} error(s)", details)
        return data

    def _forget_old_retry_keys(self) -> None:
        oldest = clock.now() - RETRY_KEY_TTL
        for key in [k for k, (at, _) in self._retry_keys.items() if at < oldest]:
            del self._retry_keys[key]

    def _injected_failure(self) -> None:
        if not self._failures:
            return
        failure = self._failures[0]
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failures.pop(0)
        raise _Reject(failure.status, failure.message)

    def _link_token(self, request: LocalRequest, params: dict[str, str]) -> LocalResponse:
        with self._lock:
            try:
                self._authorise(request)
            except _Reject as reject:
                return LocalResponse.json(reject.status, reject.body)
            token = secrets.token_urlsafe(24)
            self.link_tokens.append(
                {"user_id": params["user_id"], "link_token": token, "at": clock.iso(clock.now())}
            )
        return LocalResponse.json(200, {"linkToken": token})

    def _profile(self, request: LocalRequest, params: dict[str, str]) -> LocalResponse:
        try:
            self._authorise(request)
        except _Reject as reject:
            return LocalResponse.json(reject.status, reject.body)
        user_id = params["user_id"]
        if not _LINE_USER_ID.match(user_id):
            return LocalResponse.json(404, {"message": "Not found"})
        return LocalResponse.json(
            200, {"userId": user_id, "displayName": f"LINEユーザー {user_id[-4:]}", "language": "ja"}
        )

    def _rich_menu(self, request: LocalRequest, params: dict[str, str]) -> LocalResponse:
        with self._lock:
            try:
                self._authorise(request)
            except _Reject as reject:
                return LocalResponse.json(reject.status, reject.body)
            self.rich_menus[params["user_id"]] = params["rich_menu_id"]
        return LocalResponse.json(200, {})

    def _unlink_rich_menu(self, request: LocalRequest, params: dict[str, str]) -> LocalResponse:
        with self._lock:
            try:
                self._authorise(request)
            except _Reject as reject:
                return LocalResponse.json(reject.status, reject.body)
            self.rich_menus.pop(params["user_id"], None)
        return LocalResponse.json(200, {})

    # --- for people and tests -----------------------------------------------------------------

    def fail(self, status: int, count: int = 1, message: str | None = None) -> None:
        """The next `count` sending calls answer `status` (queued after any failures already set)."""
        with self._lock:
            self._failures.append(
                _Failure(status, count, message or _DEFAULT_FAILURE_MESSAGES.get(status, f"HTTP {status}"))
            )

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.messages.clear()
            self.link_tokens.clear()
            self.rich_menus.clear()
            self._retry_keys.clear()
            self._failures.clear()

    def snapshot(self, to: str | None = None) -> dict[str, Any]:
        with self._lock:
            messages = [m for m in self.messages if to is None or m["to"] == to]
            by_recipient: dict[str, list[dict[str, Any]]] = {}
            for m in messages:
                by_recipient.setdefault(m["to"], []).append(m["message"])
            return {
                "calls": list(self.calls),
                "messages": messages,
                "by_recipient": by_recipient,
                "link_tokens": list(self.link_tokens),
                "rich_menus": dict(self.rich_menus),
                "pending_failures": [{"status": f.status, "count": f.remaining} for f in self._failures],
            }

    def _fail(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        try:
            spec = json.loads(request.body or b"{}")
            status = int(spec["status"])
            count = int(spec.get("count", 1))
            message = spec.get("message")
            if (
                not 400 <= status <= 599
                or count < 1
                or (message is not None and not isinstance(message, str))
            ):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return LocalResponse.json(
                400,
                {"error": "bad_request", "message": 'send {"status": 400-599, "count": N, "message": "..."}'},
            )
        self.fail(status, count, message)
        return LocalResponse.json(200, {"status": status, "count": count})

    def _reset(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        self.reset()
        return LocalResponse.json(200, {"reset": True})

    def _messages_json(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        to = dict(parse_qsl(request.query)).get("to")
        return LocalResponse.json(200, self.snapshot(to))

    def _page(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        snapshot = self.snapshot()
        rows = []
        for to, messages in snapshot["by_recipient"].items():
            for message in messages:
                shown = (
                    message.get("text") or message.get("altText") or json.dumps(message, ensure_ascii=False)
                )
                rows.append(
                    f"<tr><td><code>{html.escape(to)}</code></td><td>{html.escape(str(message.get('type')))}</td>"
                    f"<td>{html.escape(str(shown))}</td></tr>"
                )
        calls = "".join(
            f"<tr><td>{html.escape(str(c.get('at')))}</td><td>{html.escape(c['endpoint'])}</td>"
            f"<td>{c.get('status')}</td><td>{c.get('recipients', '')}</td>"
            f"<td>{html.escape(str(c.get('error', '')))}</td></tr>"
            for c in reversed(snapshot["calls"])
        )
        page = f"""<!doctype html>
<html lang="ja"><head><meta charset="utf-8"><title>LINE 送信メッセージ / LINE messages sent</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}</style></head>
<body>
<h1>LINE 送信メッセージ / LINE messages sent (local fake)</h1>
<p>ローカルの擬似 LINE API が受け付けたメッセージです。実際には送信されません。<br>
Messages the local fake LINE API accepted; nothing left this machine.
JSON: <a href="/_local/line/messages">/_local/line/messages</a></p>
<h2>受信者ごと / Per recipient</h2>
<table><tr><th>宛先 / To</th><th>種類 / Type</th><th>内容 / Content</th></tr>{"".join(rows)}</table>
<h2>API 呼び出し / API calls</h2>
<table><tr><th>日時 / At</th><th>エンドポイント / Endpoint</th><th>ステータス / Status</th>
<th>宛先数 / Recipients</th><th>エラー / Error</th></tr>{calls}</table>
</body></html>
"""
        return LocalResponse(200, page.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})


def _details(exc: Exception) -> list[dict[str, str]]:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            return [
                {"message": str(e.get("msg", "")), "property": _property(e.get("loc", ()))}
                for e in errors()[:10]
            ]
        except Exception:  # noqa: S110 - fall back to the exception text below
            pass
    return [{"message": str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__, "property": ""}]


def _property(loc: Any) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


class FakeLineServer(ThreadingHTTPServer):
    """The fake on its own port (tests): `FakeLineServer(fake).start()`, then `.url`, `.stop()`."""

    daemon_threads = True

    def __init__(self, fake: FakeLine, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        self.local_routes = fake.routes(prefix="")
        super().__init__((host, port), _FakeLineHandler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeLineServer:
        self._thread = threading.Thread(target=self.serve_forever, name="fake-line", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _FakeLineHandler(BaseHTTPRequestHandler):
    server: FakeLineServer
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        request = LocalRequest(
            method=self.command,
            path=parts.path,
            query=parts.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=self.rfile.read(length) if length else b"",
            source_ip=self.client_address[0],
        )
        answer = LocalResponse.json(404, {"message": "Not found"})
        for route in self.server.local_routes:
            found = re.fullmatch(route.pattern, request.path)
            if found and route.method == request.method:
                answer = route.handler(request, found.groupdict())
                break
        self.send_response(answer.status)
        for name, value in answer.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.body)))
        self.end_headers()
        self.wfile.write(answer.body)

    do_GET = _handle
    do_POST = _handle
    do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass

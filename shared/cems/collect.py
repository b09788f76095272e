"""The collect endpoint's rules: write key and origin checks, CORS answers, then ingestion."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any

from cems import clock
from cems.api_requests import request_body as request_body  # collect/app.py reads it from here
from cems.config import MAX_BATCH_BYTES
from cems.errors import ClientError
from cems.ingest import Ingestor, IngestResult
from cems.line.config import LineSettings
from cems.line.linking import account_link_url
from cems.models import LineLinkRequest, Site, Trust
from cems.ports import NoncePort
from cems.segment import (
    MISSING_WRITE_KEY,
    body_write_key,
    check_collect_path,
    check_collect_size,
    collect_messages,
    line_link_request,
    read_collect_body,
    read_line_link_body,
    request_write_key,
)
from cems.sites import SiteDirectory
from cems.trust import USER_HASH_FIELD, judge

if TYPE_CHECKING:
    from cems.web.fetch import WebFetch

ALLOWED_METHODS = "POST, OPTIONS"
# How long a browser may reuse a CORS preflight answer.
PREFLIGHT_MAX_AGE = "600"


def decode_content(body: bytes, content_encoding: str | None) -> bytes:
    """The body without its Content-Encoding (Segment's libraries can gzip their batches).

    Decompression stops just past the batch limit, so a small gzip bomb cannot exhaust memory; the
    parser then answers the oversized body with 413.
    """
    encoding = (content_encoding or "identity").strip().lower()
    if encoding in ("identity", ""):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise ClientError(
            415,
            "unsupported_content_encoding",
            "send the body plain or gzip-compressed",
            field="Content-Encoding",
        )
    inflater = zlib.decompressobj(wbits=47)  # 32 + 15: gzip or zlib header, detected
    try:
        decoded = inflater.decompress(body, MAX_BATCH_BYTES + 1)
    except zlib.error as exc:
        raise ClientError(
            400, "invalid_body", f"the body is not valid {encoding} data", field="Content-Encoding"
        ) from exc
    return decoded


def tag_script() -> str:
    return resources.files("cems").joinpath("static/tag.js").read_text(encoding="utf-8")


def cors_headers(origin: str | None) -> dict[str, str]:
    """CORS for an origin the site allows. Beacons carry credentials, so the origin is echoed, never
    `*`; callers pass only an origin they have checked against the site's list."""
    if not origin:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def error_cors_headers(origin: str | None) -> dict[str, str]:
    """CORS on a refusal: readable by the page's developer (the body holds only the reason), but
    without credentials, since the origin may not be one the site allows."""
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}


def preflight_headers(origin: str | None, methods: str = ALLOWED_METHODS) -> dict[str, str]:
    """A preflight carries no write key, so it cannot be checked against a site: it may proceed
    (the POST that follows is checked, and a refused origin stores nothing), but without credentials
    and only for the headers a Segment call needs. The tag's own beacons need no preflight."""
    if not origin:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Vary": "Origin",
        "Access-Control-Allow-Methods": methods,
        "Access-Control-Allow-Headers": "Content-Type, Authorization",
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }


@dataclass(frozen=True)
class Collected:
    result: IngestResult
    headers: dict[str, str]

    def body(self) -> dict[str, object]:
        """`{"success": true}`, with a warning a developer can read when userIds came without proof."""
        body: dict[str, object] = {"success": True}
        if self.result.unverified:
            body["warnings"] = [
                {
                    "code": "user_not_verified",
                    "field": f"context.{USER_HASH_FIELD}",
                    "count": self.result.unverified,
                    "message": "userId without a user hash: stored as the anonymous visitor's claim "
                    "(see docs/tag.md, identity verification)",
                }
            ]
        return body


# How long a browser may reuse the answer to a web message fetch, and the tag its "nothing due": an
# answer a few seconds old is as good as a fresh one for a visitor clicking through pages, and a
# message sent meanwhile shows that much later at most.
WEB_FETCH_MAX_AGE = 10


@dataclass(frozen=True)
class WebAnswer:
    """The answer to GET /v1/web/messages: 200 with the message, 204 with nothing due, or 304 when
    the browser's copy (If-None-Match) is the same. Cacheable privately for WEB_FETCH_MAX_AGE
    seconds either way; `Vary: Origin` with the CORS headers."""

    status: int
    body: str
    headers: dict[str, str]


def web_answer(body: dict[str, Any] | None, origin: str | None, if_none_match: str | None) -> WebAnswer:
    headers = {**cors_headers(origin), "Cache-Control": f"private, max-age={WEB_FETCH_MAX_AGE}"}
    if body is None:
        return WebAnswer(204, "", headers)
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    etag = '"' + hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + '"'
    headers["ETag"] = etag
    seen = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}
    if etag in seen:
        return WebAnswer(304, "", headers)
    return WebAnswer(200, text, headers)


@dataclass(frozen=True)
class LineLinkStarted:
    """The answer to POST /v1/line/link: where the tag sends the visitor next."""

    redirect_url: str
    headers: dict[str, str]


class Collector:
    def __init__(
        self,
        sites: SiteDirectory,
        ingestor: Ingestor,
        nonces: NoncePort | None = None,
        line: LineSettings | None = None,
        web: Callable[[], WebFetch] | None = None,
    ) -> None:
        self.sites = sites
        self.ingestor = ingestor
        self.nonces = nonces
        self.line = line
        # Built on the first fetch: the web channel's modules stay out of collect's cold start.
        self._web_factory = web
        self._web: WebFetch | None = None

    def collect(
        self,
        kind: str,
        body: bytes,
        authorization: str | None,
        origin: str | None,
        query_write_key: str | None = None,
        content_encoding: str | None = None,
    ) -> Collected:
        """A Segment call: the key checked, the body read and validated whole, then ingested."""
        check_collect_path(kind)

        def read() -> dict[str, Any]:
            decoded = decode_content(body, content_encoding)
            check_collect_size(kind, decoded)
            return read_collect_body(kind, decoded)

        site, document = self._site_and_body(authorization, query_write_key, origin, read)
        messages = collect_messages(kind, document)
        result = self.ingestor.ingest(site, messages, clock.now())
        return Collected(result=result, headers=cors_headers(origin))

    def start_line_link(
        self, body: bytes, authorization: str | None, origin: str | None, query_write_key: str | None = None
    ) -> LineLinkStarted:
        """Step 2 of LINE account linking (cems.line.linking): a nonce for the signed-in customer whose
        browser asks, and LINE's account-link URL carrying it with the link token. Nothing is stored
        for a refused request."""
        if self.nonces is None or self.line is None:
            raise ClientError(404, "not_found", "LINE account linking is not configured", field="path")
        site, document = self._site_and_body(
            authorization, query_write_key, origin, lambda: read_line_link_body(body)
        )
        request = line_link_request(document)
        user_id = linking_user(site, request, clock.now())
        nonce = self.nonces.issue(request.anonymous_id, site.site_id, user_id)
        return LineLinkStarted(
            redirect_url=account_link_url(self.line, request.link_token, nonce), headers=cors_headers(origin)
        )

    def web_messages(
        self,
        authorization: str | None,
        origin: str | None,
        query: dict[str, str],
        if_none_match: str | None = None,
    ) -> WebAnswer:
        """GET /v1/web/messages: the message due for this browser on this page (or a preview's),
        for a site's key from an origin it allows. The browser is known by its anonymous id alone
        (cems.web.fetch); a userId in the query is not read."""
        if self._web_factory is None:
            raise ClientError(404, "not_found", "on-site messages are not configured", field="path")
        from cems.web.fetch import WebFetchRequest

        key = request_write_key(authorization, query.get("writeKey"))
        if not key:
            raise MISSING_WRITE_KEY
        self._site(key, origin)
        request = WebFetchRequest.of(query.get("anonymousId"), query.get("url"), query.get("preview"))
        if self._web is None:
            self._web = self._web_factory()
        due = self._web.due_message(request, clock.now())
        return web_answer(None if due is None else due.body(), origin, if_none_match)

    def _site_and_body(
        self,
        authorization: str | None,
        query_write_key: str | None,
        origin: str | None,
        read: Callable[[], dict[str, Any]],
    ) -> tuple[Site, dict[str, Any]]:
        """The site of the request's key and its body. A key outside the body (Basic auth,
        `?writeKey=`) is checked before `read` parses anything, so an unknown key costs no parsing; a
        key in the body (Segment's browser library puts it there) is read by the depth-limited parser
        first."""
        key = request_write_key(authorization, query_write_key)
        site = self._site(key, origin) if key else None
        document = read()
        if site is None:
            key = body_write_key(document)
            if not key:
                raise MISSING_WRITE_KEY
            site = self._site(key, origin)
        return site, document

    def _site(self, write_key: str, origin: str | None) -> Site:
        site = self.sites.active_site(write_key)
        if site is None:
            raise ClientError(401, "invalid_write_key", "unknown or retired write key", field="writeKey")
        if origin and site.trust is Trust.SERVER:
            # A secret key sent by a web page is no longer secret: refuse it, so the leak is noticed.
            raise ClientError(
                403,
                "secret_key_in_browser",
                "a secret server key must never be used from a browser; use the site's write key and "
                "rotate the secret key (`cems site add NAME --rotate-secrets`)",
                field="writeKey",
            )
        if origin and not site.allows_origin(origin):
            raise ClientError(
                403,
                "origin_not_allowed",
                f"origin {origin} is not allowed for this write key; add it with `cems site add`",
                field="Origin",
            )
        return site


def linking_user(site: Site, request: LineLinkRequest, at: datetime) -> str:
    """The customer a LINE account may be linked to: the signed-in user the request proves (a user
    hash, or a server's word), never an anonymous visitor (see cems.line.linking on fixation)."""
    if request.user_id is None:
        raise ClientError(
            401,
            "login_required",
            "LINE linking needs a signed-in customer: userId with its userHash",
            field="userId",
        )
    judged = judge(site, request.user_id, request.user_hash, at, has_anonymous_id=False, field="userHash")
    assert judged.knows_user
    return request.user_id

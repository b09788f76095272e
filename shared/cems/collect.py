"""The collect endpoint's rules: write key and origin checks, CORS answers, then ingestion."""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from cems import clock
from cems.config import MAX_BATCH_BYTES
from cems.errors import ClientError
from cems.ingest import Ingestor, IngestResult
from cems.line.config import LineSettings
from cems.line.linking import NonceStore, account_link_url
from cems.models import Site
from cems.segment import parse_collect_request, parse_line_link_request
from cems.sites import SiteDirectory

ALLOWED_METHODS = "POST, OPTIONS"
# How long a browser may reuse a CORS preflight answer.
PREFLIGHT_MAX_AGE = "600"


def request_body(event: Mapping[str, Any]) -> bytes:
    """The raw body bytes of an API Gateway event. Powertools' decoded_body would turn invalid UTF-8
    into a 500; the Segment parser answers it with a 400 instead."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body)
        except binascii.Error as exc:
            raise ClientError(400, "invalid_body", "the body is not valid base64") from exc
    return str(body).encode("utf-8")


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
    """CORS for an allowed origin. Beacons carry credentials, so the origin is echoed, never `*`."""
    if not origin:
        return {}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight_headers(origin: str | None) -> dict[str, str]:
    # A preflight carries no write key, so it cannot be checked against a site; the POST that
    # follows is (see Collector.collect), and a refused origin stores nothing.
    return {
        **cors_headers(origin),
        "Access-Control-Allow-Methods": ALLOWED_METHODS,
        "Access-Control-Allow-Headers": "Content-Type, Authorization",
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
    }


@dataclass(frozen=True)
class Collected:
    result: IngestResult
    headers: dict[str, str]


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
        nonces: NonceStore | None = None,
        line: LineSettings | None = None,
    ) -> None:
        self.sites = sites
        self.ingestor = ingestor
        self.nonces = nonces
        self.line = line

    def collect(self, kind: str, body: bytes, authorization: str | None, origin: str | None) -> Collected:
        request = parse_collect_request(kind, body, authorization)
        site = self._site(request.write_key, origin)
        result = self.ingestor.ingest(site, request.messages, clock.now())
        return Collected(result=result, headers=cors_headers(origin))

    def start_line_link(self, body: bytes, authorization: str | None, origin: str | None) -> LineLinkStarted:
        """Step 2 of LINE account linking (cems.line.linking): a nonce for this visitor, and LINE's
        account-link URL carrying it with the link token. Nothing is stored for a refused request."""
        if self.nonces is None or self.line is None:
            raise ClientError(404, "not_found", "LINE account linking is not configured")
        request = parse_line_link_request(body, authorization)
        assert request.write_key is not None
        site = self._site(request.write_key, origin)
        nonce = self.nonces.issue(request.anonymous_id, site.site_id)
        return LineLinkStarted(
            redirect_url=account_link_url(self.line, request.link_token, nonce), headers=cors_headers(origin)
        )

    def _site(self, write_key: str, origin: str | None) -> Site:
        site = self.sites.active_site(write_key)
        if site is None:
            raise ClientError(401, "invalid_write_key", "unknown or retired write key", field="writeKey")
        if origin and not site.allows_origin(origin):
            raise ClientError(
                403,
                "origin_not_allowed",
                f"origin {origin} is not allowed for this write key; add it with `cems site add`",
                field="Origin",
            )
        return site

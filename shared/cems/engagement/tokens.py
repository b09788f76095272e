"""Signed tracking tokens: what a click, open or unsubscribe link says about its dispatch.

A token is `<payload>.<mac>`, both base64url without padding (so only `A-Z a-z 0-9 - _ .`, nothing
a URL path needs to escape, never a `/`):

- payload: the token's fields as compact JSON under one- or two-letter keys, defaults left out;
- mac: the first 16 bytes of HMAC-SHA256(secret, DOMAIN + payload), compared in constant time.

The token is signed, not encrypted: anyone holding the link can read the dispatch key, customer id
(none in a shared LINE multicast's link) and destination, but nobody without the secret can change a
byte of them. That is what stops the click tracker from becoming an open redirect: only a
destination CEMS itself signed is ever followed, and only an http(s) one. Unsubscribe tokens carry
no expiry (a mail read a year later still unsubscribes); click and open tokens carry one
(TRACKING_LIFETIME), after which a click still goes to its signed destination but nothing is
recorded; a confirmation token (double opt-in) expires after CONFIRMATION_LIFETIME, since consent
must be fresh. The secret can be rotated to retire all.

Short links (LINE text, issue 13): a URL written in a LINE text is shown to the customer, so the
long signed token would make the message unreadable. There the link is `/r/<code>`: a code of
SHORT_CODE_LENGTH base62 characters derived from the token's dispatch, customer and destination
under the secret (`TokenSigner.short_code`), which the LINE sender stores with the signed token
(cems.ports.ShortLinkWriter) before the message goes out and the click tracker looks up
(ShortLinkReader). The code is a pointer, not a proof: what is followed is still the stored token,
verified as a long link's is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Self
from urllib.parse import quote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cems.models import Channel
from cems.topics import TOPIC_ID_PATTERN

# Prefixed to what is signed, so a MAC made for something else with the same secret never verifies.
DOMAIN = b"cems-tracking-token-v1\x00"
# The same for short link codes, so a code is never a token's MAC (nor the other way round).
SHORT_DOMAIN = b"cems-short-link-v1\x00"
# 16 base62 characters, 95 bits. Guessing: with a billion live links, one guess in 2**65 finds one
# (API Gateway's throttling allows 100 a second). Collisions matter more: codes are derived, not
# drawn, so a code taken by another link cannot be drawn again once the text is made; among 2**30
# live links two collide with odds of about 2**-36 (12 characters, 71 bits, would be 2**-12).
# Letters and digits only: LINE's linkifier ends a URL at none of them.
SHORT_CODE_LENGTH = 16
SHORT_CODE_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHORT_CODE_PATTERN = rf"^[0-9A-Za-z]{{{SHORT_CODE_LENGTH}}}$"
_SHORT_CODE = re.compile(SHORT_CODE_PATTERN)
MAC_BYTES = 16  # 128 bits: plenty against forgery, and it keeps links short
MAX_TOKEN_LENGTH = 4096
MAX_URL_LENGTH = 2048
# The payload key of a dispatch key written as what follows the customer id.
_DISPATCH_SUFFIX = "D"
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
# Whitespace, control characters and backslashes have no place in a destination we put into a
# Location header: they split headers or are read differently by different browsers.
_UNSAFE_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
# What a refused token is told (as `code` and message); never the token itself.
MALFORMED = "malformed_token", "the link is malformed (not a CEMS tracking token)"
BAD_SIGNATURE = "invalid_signature", "the link's signature does not match (altered, or not signed by CEMS)"
BAD_CONTENTS = "malformed_token", "the link's contents are not a valid tracking token"
WRONG_KIND = "wrong_kind", "the link is a tracking token of another kind"


class TokenKind(StrEnum):
    CLICK = "c"
    OPEN = "o"
    UNSUBSCRIBE = "u"
    CONFIRM = "f"  # double opt-in: the click that gives email consent (cems.consent)


# How long a click or open is recorded after the mail was made; the link keeps working after it.
TRACKING_LIFETIME = timedelta(days=400)
# How long a confirmation link gives consent: a week, as a mailbox may be read late.
CONFIRMATION_LIFETIME = timedelta(days=7)


def tracking_expiry(now: datetime) -> int:
    """`expires_at` of a click or open token made now."""
    return int((now + TRACKING_LIFETIME).timestamp())


class InvalidToken(Exception):
    """A token that is malformed, unsigned, tampered with or of the wrong kind. `code` names the
    problem for the answer; the message never repeats the token."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TrackingToken(BaseModel):
    """What a tracking link is about. Field aliases are the short keys of the signed payload."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    kind: TokenKind = Field(alias="k")
    dispatch_key: str = Field(alias="d", min_length=1, max_length=512)  # the dispatch's idempotency key
    # Empty for a link of a shared (multicast) LINE dispatch: LINE sends every recipient of a
    # multicast the same bytes, so its links cannot say who clicked (`shared`).
    customer_id: str = Field(default="", alias="c", max_length=255)
    channel: Channel = Field(alias="n")
    scenario_id: str | None = Field(default=None, alias="s", max_length=255)
    version: int | None = Field(default=None, alias="v")
    step_id: str | None = Field(default=None, alias="p", max_length=255)
    variant: str | None = Field(default=None, alias="a", max_length=255)
    holdout: bool = Field(default=False, alias="h")  # always False for sends; kept for report cells
    url: str | None = Field(default=None, alias="u", max_length=MAX_URL_LENGTH)  # CLICK only
    test: bool = Field(default=False, alias="t")  # test sends: answered normally, never recorded
    # CONFIRM only: the address (its SHA-256) the consent is for; the customer's address must still be it.
    address_hash: str | None = Field(default=None, alias="e", pattern=r"^[0-9a-f]{64}$")
    # Unix seconds after which the token records nothing (CLICK, OPEN) or confirms nothing (CONFIRM).
    expires_at: int | None = Field(default=None, alias="x", ge=0)
    # UNSUBSCRIBE only: the topic of the mail's scenario (cems.topics), which its page offers to leave
    # alone. Tokens made before topics (or for a scenario of none) have none: everything, as before.
    topic: str | None = Field(default=None, alias="o", pattern=TOPIC_ID_PATTERN)

    @property
    def shared(self) -> bool:
        """A click link of a shared dispatch: it names the dispatch and its report cell, no customer."""
        return not self.customer_id

    def expired(self, at: datetime) -> bool:
        return self.expires_at is not None and at.timestamp() >= self.expires_at

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _UNSAFE_URL_CHARS.search(value):
            raise ValueError("url must not contain whitespace, control characters or backslashes")
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise ValueError("url must be an absolute http or https URL")
        return value

    @model_validator(mode="after")
    def _url_for_clicks_only(self) -> Self:
        if self.kind is TokenKind.CLICK and self.url is None:
            raise ValueError("a click token needs url (the destination)")
        if self.kind is not TokenKind.CLICK and self.url is not None:
            raise ValueError("only a click token carries url")
        if (self.kind is TokenKind.CONFIRM) != (self.address_hash is not None):
            raise ValueError("a confirmation token, and only it, carries address_hash")
        if self.kind is TokenKind.CONFIRM and self.expires_at is None:
            raise ValueError("a confirmation token expires")
        if self.topic is not None and self.kind is not TokenKind.UNSUBSCRIBE:
            raise ValueError("only an unsubscribe token carries topic")
        if self.shared and self.kind is not TokenKind.CLICK:
            raise ValueError("only a click token may name no customer (a shared dispatch's link)")
        return self


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _BASE64URL.match(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    # One encoding per token: a last character differing only in unused bits is not the same token.
    if _b64encode(data) != text:
        raise ValueError("not canonical base64url")
    return data


class TokenSigner:
    """Signs and verifies tokens with the secret `secret()` returns (read on use, so a handler can be
    built before the secret is fetched, and a rotated secret is picked up)."""

    def __init__(self, secret: Callable[[], bytes]) -> None:
        self._secret = secret

    def _mac(self, payload: str) -> bytes:
        digest = hmac.new(self._secret(), DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()
        return digest[:MAC_BYTES]

    def sign(self, token: TrackingToken) -> str:
        document = token.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        # Dispatch keys begin with the customer id (cems.scenario.engine.dispatch_key): said once.
        if token.customer_id and token.dispatch_key.startswith(token.customer_id):
            document[_DISPATCH_SUFFIX] = token.dispatch_key[len(token.customer_id) :]
            del document["d"]
        # `kind` and `channel` have no default, so they are always present.
        payload = _b64encode(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return f"{payload}.{_b64encode(self._mac(payload))}"

    def short_code(self, token: TrackingToken) -> str:
        """The short link code of a click token: HMAC-SHA256 under the secret of what names the link
        (dispatch, customer, destination), in base62. Derived, not random, so the same link of the
        same dispatch (a redone batch, a redelivered message) always gets the same code and its
        stored item is written once; a push's links differ per customer (their dispatch keys do),
        a multicast's are one per link of the shared dispatch. Not the expiry: a redo made a moment
        later must find the same code."""
        assert token.kind is TokenKind.CLICK and token.url is not None
        named = json.dumps([token.dispatch_key, token.customer_id, token.url], ensure_ascii=False)
        digest = hmac.new(self._secret(), SHORT_DOMAIN + named.encode("utf-8"), hashlib.sha256).digest()
        number = int.from_bytes(digest, "big")  # 256 bits reduced to 62**16: no measurable bias
        code = []
        for _ in range(SHORT_CODE_LENGTH):
            number, digit = divmod(number, len(SHORT_CODE_ALPHABET))
            code.append(SHORT_CODE_ALPHABET[digit])
        return "".join(code)

    def verify(self, value: str, kind: TokenKind) -> TrackingToken:
        """The token `value` stands for, if CEMS signed it and it is of `kind`; else InvalidToken."""
        if not value or len(value) > MAX_TOKEN_LENGTH or value.count(".") != 1:
            raise InvalidToken(*MALFORMED)
        payload, mac_text = value.split(".")
        try:
            mac = _b64decode(mac_text)
            raw = _b64decode(payload)
        except (ValueError, binascii.Error):
            raise InvalidToken(*MALFORMED) from None
        if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken(*BAD_SIGNATURE)
        try:
            token = TrackingToken.model_validate(_expand(json.loads(raw.decode("utf-8"))))
        except (ValueError, ValidationError):
            # Signed by us yet unreadable: only a secret shared with an incompatible signer does that.
            raise InvalidToken(*BAD_CONTENTS) from None
        if token.kind is not kind:
            raise InvalidToken(*WRONG_KIND)
        return token


def _expand(document: Any) -> Any:
    """The payload with a dispatch key given as a suffix of the customer id written out in full."""
    if isinstance(document, dict) and _DISPATCH_SUFFIX in document and "d" not in document:
        suffix, customer_id = document.pop(_DISPATCH_SUFFIX), document.get("c")
        if isinstance(suffix, str) and isinstance(customer_id, str):
            document["d"] = customer_id + suffix
    return document


# Characters a destination keeps as they are: the URL's own syntax (and existing %-escapes).
URL_SAFE_CHARS = "!#$%&'()*+,-./:;=?@[]~_"
_TAB_OR_NEWLINE = re.compile(r"[\t\r\n]")


def trackable_url(href: str) -> str | None:
    """The destination a click token may carry for a link as written in a mail or message: trimmed,
    tabs and newlines dropped and spaces and non-ASCII percent-encoded (as browsers do when following
    it); None when it is no absolute http(s) URL (javascript:, mailto:, relative, ...) or holds a
    control character or backslash. The sender leaves a None link as it is, untracked."""
    cleaned = _TAB_OR_NEWLINE.sub("", href.strip())
    if re.search(r"[\x00-\x1f\x7f\\]", cleaned):
        return None
    encoded = quote(cleaned, safe=URL_SAFE_CHARS)
    parts = urlsplit(encoded)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or len(encoded) > MAX_URL_LENGTH:
        return None
    return encoded


def click_url(base_url: str, signer: TokenSigner, token: TrackingToken) -> str:
    return f"{base_url}/r/{signer.sign(token)}"


def short_click_url(base_url: str, code: str) -> str:
    """The short form of a click link (LINE text): `{base_url}/r/<code>`, resolved by a lookup."""
    return f"{base_url}/r/{code}"


def is_short_code(value: str) -> bool:
    """Whether a `/r/` path parameter is a short link code rather than a signed token (a token always
    holds a `.`, a code never)."""
    return bool(_SHORT_CODE.match(value))


# What click_url makes, by shape: `/r/` and a signed token (a payload of a JSON object, so `eyJ`, and a
# 16-byte MAC, 22 base64url characters), nothing after it; or short_click_url's `/r/` and a code.
_CLICK_PATH = re.compile(rf"/r/(?:eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{{22}}|[0-9A-Za-z]{{{SHORT_CODE_LENGTH}}})")


def is_click_url(url: str) -> bool:
    """Whether `url` looks like a click_url or a short_click_url (a link already through a click
    tracker; a shop page at `/r/` and exactly 16 letters and digits looks like one too, and stays as
    written, uncounted, rather than risk a redirect wrapped in another). Senders leave
    such a link as it is: tracking it again would only wrap one redirect in another and count the
    click under the outer dispatch. Judged by shape, not by ENGAGE_BASE_URL, as the base may have
    changed since the link was made."""
    parts = urlsplit(url)
    tail = parts.path.rsplit("/r/", 1)
    return (
        len(tail) == 2
        and not parts.query
        and not parts.fragment
        and bool(_CLICK_PATH.fullmatch("/r/" + tail[1]))
    )


def open_url(base_url: str, signer: TokenSigner, token: TrackingToken) -> str:
    return f"{base_url}/o/{signer.sign(token)}"


def unsubscribe_url(base_url: str, signer: TokenSigner, token: TrackingToken) -> str:
    return f"{base_url}/u/{signer.sign(token)}"


def confirm_url(base_url: str, signer: TokenSigner, token: TrackingToken) -> str:
    return f"{base_url}/c/{signer.sign(token)}"

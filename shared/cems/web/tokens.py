"""Signed web message tokens: what the tag sends back when a message was shown, clicked or dismissed.

The fetch (cems.web.fetch) answers each message with a token naming its inbox item (owner and
dispatch key), the report cell it counts in and when the message expires; the events route
(cems.web.events) believes nothing else the browser says. A token is `<payload>.<mac>` in base64url,
as the tracking tokens (cems.engagement.tokens), signed with the same secret under a domain of its
own (DOMAIN), so a web token never verifies as a click, open or unsubscribe link, nor one of those as
a web token. Signed, not encrypted: it names the customer id and the dispatch, never an address.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import datetime

from cems.engagement.tokens import (
    BAD_CONTENTS,
    BAD_SIGNATURE,
    MAC_BYTES,
    MALFORMED,
    InvalidToken,
    _b64decode,
    _b64encode,
)
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# Prefixed to what is signed: no MAC made for another purpose with the same secret verifies here.
DOMAIN = b"cems-web-message-v1\x00"
MAX_WEB_TOKEN_LENGTH = 2048
EXPIRED = "expired_token", "the message has expired; nothing was recorded"


class WebToken(BaseModel):
    """One message of one inbox, as its token says. Field aliases are the payload's short keys."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    # The inbox owner: the customer id the message was written for (never a preview's hash: a
    # preview's token is `test` and names no inbox to change).
    owner_id: str = Field(alias="o", min_length=1, max_length=128)
    dispatch_key: str = Field(alias="d", min_length=1, max_length=256)
    # Unix seconds: the message's own expiry; after it no event counts.
    expires_at: int = Field(alias="x", ge=0)
    scenario_id: str | None = Field(default=None, alias="s", max_length=255)
    version: int | None = Field(default=None, alias="v")
    step_id: str | None = Field(default=None, alias="p", max_length=255)
    variant: str | None = Field(default=None, alias="a", max_length=255)
    test: bool = Field(default=False, alias="t")

    def expired(self, at: datetime) -> bool:
        return at.timestamp() >= self.expires_at


class WebTokenSigner:
    """Signs and verifies web tokens with the secret `secret()` returns (read on use, as the
    tracking signer does: the fetch that answers nothing due never reads it)."""

    def __init__(self, secret: Callable[[], bytes]) -> None:
        self._secret = secret

    def _mac(self, payload: str) -> bytes:
        digest = hmac.new(self._secret(), DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()
        return digest[:MAC_BYTES]

    def sign(self, token: WebToken) -> str:
        document = token.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        payload = _b64encode(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
        return f"{payload}.{_b64encode(self._mac(payload))}"

    def verify(self, value: str, now: datetime) -> WebToken:
        """The token `value` stands for, if CEMS signed it and the message has not expired; else
        InvalidToken (its code names the problem, never the token)."""
        if not value or len(value) > MAX_WEB_TOKEN_LENGTH or value.count(".") != 1:
            raise InvalidToken(*MALFORMED)
        payload, mac_text = value.split(".")
        try:
            mac = _b64decode(mac_text)
            raw = _b64decode(payload)
        except ValueError:
            raise InvalidToken(*MALFORMED) from None
        if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, self._mac(payload)):
            raise InvalidToken(*BAD_SIGNATURE)
        try:
            token = WebToken.model_validate(json.loads(raw.decode("utf-8")))
        except (ValueError, ValidationError):
            raise InvalidToken(*BAD_CONTENTS) from None
        if token.expired(now):
            raise InvalidToken(*EXPIRED)
        return token

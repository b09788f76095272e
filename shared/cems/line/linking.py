"""LINE account linking: one customer across the shop's site and LINE.

LINE's documented flow (https://developers.line.biz/en/docs/messaging-api/linking-accounts/):

1. CEMS issues a link token for the LINE user (`POST /v2/bot/user/{userId}/linkToken`, valid 10
   minutes, single use) and replies with a button to the shop's link page carrying `linkToken`.
2. On that page (where the customer is signed in to the shop) the tag asks the customer to confirm,
   then calls `POST /v1/line/link` with the link token, the visitor's anonymous id and the signed-in
   customer's userId with its user hash (cems.trust). CEMS stores a fresh nonce bound to that proven
   user (and the site, and the browser's anonymous id) and answers with LINE's account-link URL
   carrying `linkToken` and `nonce`.
3. LINE sends an `accountLink` event with the nonce. LINE keeps no mapping: the nonce is the only
   thing that ties the LINE user to the customer, so it is unpredictable, single use and expires.

Why this defeats link fixation: the nonce is bound to the customer whose browser completes the flow,
proven by what only that browser holds (the user hash the shop's server rendered into the page of a
signed-in customer), never to an id the request merely names. Whoever started the flow (obtained the
link token, sent the link) cannot choose whom it binds to: a request with no proven user gets no
nonce (401), so an attacker can bind a nonce only to an account they are signed in to. A nonce the
attacker obtained for their own account and sends to a victim (LINE's URL with it) links the victim's
LINE only if the link token is the victim's own, and then to the attacker's account, where the
victim's LINE would receive the attacker's messages, not the other way round; and a LINE user already
linked to another customer is never moved (identity.may_merge). The tag asks the customer before it
redirects, so a link page opened from someone else's message does nothing silently.

Nonces live in the Customers table under the SHA-256 of the nonce (a leaked table row is no usable
nonce), with DynamoDB TTL on `expires_at`, and the expiry checked in every condition, since TTL
deletes items only eventually.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from cems.line.config import LineSettings

# As long as LINE's link token lives: a nonce outliving it could never be used.
NONCE_TTL = timedelta(minutes=10)
# LINE accepts nonces of 10 to 255 characters; ours are 43 (32 random bytes, URL-safe base64).
_NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_\-+/=]{10,255}$")


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def plausible_nonce(nonce: str) -> bool:
    """What LINE may send back as a nonce; anything else is not looked up."""
    return bool(_NONCE_PATTERN.match(nonce))


@dataclass(frozen=True)
class LinkNonce:
    """Who asked to be linked: the proven, signed-in customer (user id) whose browser (anonymous id)
    asked, and the site whose tag asked."""

    anonymous_id: str
    site_id: str
    created_at: datetime
    expires_at: int
    # Nonces issued before links needed a signed-in customer have none: they link nothing.
    user_id: str | None = None


def with_query(url: str, **params: str) -> str:
    """`url` with these query parameters added (replacing any of the same name), others kept."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def link_page_url(settings: LineSettings, link_token: str) -> str:
    """The shop's link page (with the tag) for this link token."""
    return with_query(settings.link_page_url, linkToken=link_token)


def account_link_url(settings: LineSettings, link_token: str, nonce: str) -> str:
    """LINE's account-link endpoint, where the tag sends the visitor."""
    return with_query(settings.account_link_url, linkToken=link_token, nonce=nonce)

"""A visitor's on-site inbox: the messages sent to a customer on the web channel, waiting for their
next page view, and which one a page view shows.

send_web writes one item per customer and dispatch (cems.web.sender); the tag's fetch reads the
customer's items and shows at most one (`due`): the oldest one not dismissed and not expired whose
pages match the page. Items are deleted by the table's TTL after they expire; TTL deletes late (up
to about two days), so expiry is always checked here, never left to the TTL.

A test send's item lives in a preview inbox keyed by the SHA-256 of its preview token, so the token
(the link's secret) is stored nowhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime
from urllib.parse import urlsplit

from cems.web.dispatch import WebMessage
from pydantic import BaseModel, ConfigDict

# A visitor's inbox holds few items (the web cap is per day and week, expiry at most 30 days); a
# fetch reads at most this many, so a flood of sends can never make the fetch slow or large.
MAX_INBOX_READ = 50


class InboxOwner(BaseModel):
    """Whose inbox: a customer's, or a test send's preview (the hash of its token)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    preview: bool = False

    @classmethod
    def customer(cls, customer_id: str) -> InboxOwner:
        return cls(id=customer_id)

    @classmethod
    def of_preview(cls, token: str) -> InboxOwner:
        return cls(id=preview_hash(token), preview=True)


def preview_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class InboxItem(BaseModel):
    """One message in an inbox."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: InboxOwner
    dispatch_key: str
    # The customer the message is for (the owner's id, or the customer whose profile a test used).
    customer_id: str
    message: WebMessage
    written_at: datetime
    expires_at: datetime
    scenario_id: str | None = None
    version: int | None = None
    step_id: str | None = None
    variant: str | None = None
    test: bool = False
    # The first impression and the dismissal (a dismissed message never shows again).
    shown_at: datetime | None = None
    dismissed_at: datetime | None = None


def page_matches(patterns: Iterable[str] | None, url: str) -> bool:
    """Whether the page `url` is one of `patterns` (None: every page). A pattern starting with `/`
    is matched against the path (and the query when the pattern has a `?`); one starting with a
    scheme against the whole URL without its fragment. `*` matches any run of characters."""
    if patterns is None:
        return True
    try:
        parts = urlsplit(url)
    except ValueError:  # a URL the tag could not have sent (`http://[`): no page of the shop's
        return False
    whole = url.split("#", 1)[0]
    for pattern in patterns:
        if pattern.startswith("/"):
            target = parts.path + (f"?{parts.query}" if "?" in pattern else "")
        else:
            target = whole
        if glob_matches(pattern, target):
            return True
    return False


def glob_matches(pattern: str, text: str) -> bool:
    """Whether `text` is `pattern` with each `*` standing for any run of characters. Linear in the
    text (the URL comes from a stranger): the literal pieces are found left to right, each as early
    as it can be, which is all a `*`-only pattern needs; a regular expression of lazy `.*?`s
    backtracks combinatorially on a failing URL (seconds for three stars and a 2,000-character URL)."""
    pieces = pattern.split("*")
    if len(pieces) == 1:
        return text == pattern
    first, *middle, last = pieces
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in middle:
        found = text.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def due(items: Iterable[InboxItem], url: str | None, now: datetime) -> InboxItem | None:
    """The one message to show on `url` now: not dismissed, not expired, for this page; the oldest
    first (the one waiting longest), then by dispatch key so the answer is stable. A preview ignores
    its pages: the staff member chose the page to open it on."""
    candidates = [
        item
        for item in items
        if item.dismissed_at is None
        and item.expires_at > now
        and (item.owner.preview or page_matches(item.message.pages, url or ""))
    ]
    return min(candidates, key=lambda i: (i.written_at, i.dispatch_key), default=None)

"""The tag's fetch of what is due (GET /v1/web/messages): which message, if any, a page view shows.

A browser is known by its anonymous id only: the identity item of that id names the customer whose
inbox it reads (one GetItem), then one Query of that inbox. A user id is never a way in: the write
key is public, so anyone can claim one, and a message may be personalised. A preview link's token
reads its preview inbox instead (cems.web.inbox.InboxOwner.of_preview).

Merged-away inboxes are not read. A message is written into the inbox of the customer the profile
was at send time (send_web follows merges then); only a merge after the send and before the visit
leaves it in the old inbox, where it waits out its expiry. Reading the merged ids would take the
profile (a GetItem that costs with the profile's size) on every page view of every visitor, for
that rare case.

The answer is the message as the tag renders it (no page patterns, no expiry), a signed token for
its events (cems.web.tokens) and a short id the tag uses to remember a dismissal until the cached
answer runs out.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cems.errors import ClientError
from cems.ports import BrowserOwners, WebInbox
from cems.web.dispatch import PREVIEW_TOKEN_PATTERN
from cems.web.inbox import MAX_INBOX_READ, InboxItem, InboxOwner, due
from cems.web.tokens import WebToken, WebTokenSigner

# The tag's anonymous id is a UUID; Segment clients may send other ids (at most 100 characters, as
# a messageId). Printable ASCII only: it goes into a key.
ANONYMOUS_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,100}$")
MAX_PAGE_URL = 2048
_PREVIEW_TOKEN = re.compile(PREVIEW_TOKEN_PATTERN)
# What of the message the tag needs: never the page patterns or the scenario.
SHOWN_FIELDS = {"kind", "position", "slot", "title", "body", "image", "buttons"}


@dataclass(frozen=True)
class WebFetchRequest:
    """A fetch's query, checked: an anonymous id and the page, or a preview token."""

    anonymous_id: str | None
    url: str | None
    preview: str | None

    @classmethod
    def of(cls, anonymous_id: str | None, url: str | None, preview: str | None) -> WebFetchRequest:
        if preview is not None:
            if not _PREVIEW_TOKEN.match(preview):
                raise ClientError(400, "invalid_preview", "the preview token is malformed", field="preview")
            return cls(None, None, preview)
        if not anonymous_id or not ANONYMOUS_ID_PATTERN.match(anonymous_id):
            raise ClientError(
                400,
                "invalid_anonymous_id",
                "anonymousId is required: 1 to 100 printable ASCII characters",
                field="anonymousId",
            )
        if url is not None and len(url) > MAX_PAGE_URL:
            raise ClientError(
                400,
                "url_too_long",
                f"url is longer than {MAX_PAGE_URL} characters",
                field="url",
                limit=MAX_PAGE_URL,
            )
        return cls(anonymous_id, url, None)


@dataclass(frozen=True)
class DueMessage:
    """The one message a page view shows, as the tag receives it."""

    id: str
    token: str
    message: dict[str, Any]
    preview: bool = False

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "token": self.token, "message": self.message}
        if self.preview:
            body["preview"] = True
        return body


class WebFetch:
    def __init__(self, owners: BrowserOwners, inbox: WebInbox, signer: WebTokenSigner) -> None:
        self.owners = owners
        self.inbox = inbox
        self.signer = signer

    def due_message(self, request: WebFetchRequest, now: datetime) -> DueMessage | None:
        """The message for this page view, or None when nothing is due (no such browser, an empty
        inbox, nothing for this page, everything dismissed or expired)."""
        if request.preview is not None:
            owner = InboxOwner.of_preview(request.preview)
        else:
            assert request.anonymous_id is not None
            customer_id = self.owners.owner_of_browser(request.anonymous_id)
            if customer_id is None:
                return None
            owner = InboxOwner.customer(customer_id)
        item = due(self.inbox.items(owner, MAX_INBOX_READ), request.url, now)
        return None if item is None else self._shown(item)

    def _shown(self, item: InboxItem) -> DueMessage:
        # A preview's token is `test`: its events answer as usual and record nothing. It names the
        # customer whose profile rendered it, never the preview's hash (the link's secret's image).
        token = WebToken(
            owner_id=item.customer_id,
            dispatch_key=item.dispatch_key,
            expires_at=int(item.expires_at.timestamp()),
            scenario_id=item.scenario_id,
            version=item.version,
            step_id=item.step_id,
            variant=item.variant,
            test=item.owner.preview or item.test,
        )
        shown = item.message.model_dump(mode="json", include=SHOWN_FIELDS, exclude_none=True)
        if not shown.get("buttons"):
            shown.pop("buttons", None)
        return DueMessage(
            id=hashlib.sha256(item.dispatch_key.encode("utf-8")).hexdigest()[:16],
            token=self.signer.sign(token),
            message=shown,
            preview=item.owner.preview,
        )

"""The web dispatch: one SQS message asking `send_web` to put one on-site message into one visitor's
inbox once, and the rendered message it carries (what the tag shows).

A dispatch names a customer, not a browser: the inbox is the customer's, and each of their browsers
(anonymous ids) fetches it (cems.web.inbox). A test send names a preview token instead, whose link a
staff member opens on the shop's page (docs/web.md, "Test send").
"""

from __future__ import annotations

from typing import Annotated

from cems.web.content import (
    MAX_BODY,
    MAX_BUTTONS,
    MAX_EXPIRY,
    MAX_LABEL,
    MAX_PAGES,
    MAX_PATTERN,
    MAX_TITLE,
    MIN_EXPIRY,
    SLOT_PATTERN,
    Kind,
    Position,
    checked_url,
)
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

# A preview token: 32 url-safe characters (secrets.token_urlsafe(24), 192 bits): whoever holds the
# link sees the message, which may be rendered with a real customer's profile.
PREVIEW_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{32}$"  # noqa: S105 - a pattern, not a secret


class RenderedButton(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    label: Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL)]
    url: str

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        return checked_url(value)


class WebMessage(BaseModel):
    """A send step's on-site message rendered for one customer: what the tag shows, as text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    position: Position | None = None
    slot: Annotated[str, StringConstraints(pattern=SLOT_PATTERN)] | None = None
    # Checked again after rendering: a value filled in can make a text too long.
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE)] | None = None
    body: Annotated[str, StringConstraints(max_length=MAX_BODY)] | None = None
    image: str | None = None
    buttons: Annotated[list[RenderedButton], Field(max_length=MAX_BUTTONS)] = Field(default_factory=list)
    # None: every page.
    pages: (
        Annotated[
            list[Annotated[str, StringConstraints(max_length=MAX_PATTERN)]], Field(max_length=MAX_PAGES)
        ]
        | None
    ) = None
    expires_seconds: Annotated[
        int, Field(ge=int(MIN_EXPIRY.total_seconds()), le=int(MAX_EXPIRY.total_seconds()))
    ]

    @field_validator("image")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        return None if value is None else checked_url(value, https_only=True)

    @model_validator(mode="after")
    def _something_to_show(self) -> WebMessage:
        if not (self.title or self.body or self.image):
            raise ValueError("an on-site message needs a title, a body or an image after rendering")
        return self


class WebDispatch(BaseModel):
    """Put `message` into `customer_id`'s on-site inbox (or a test's preview inbox), once, however
    often the queue delivers this dispatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Names the dispatch for good (logged, so never an address): `<scenario>#<step>#<enrolment>`.
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
    message: WebMessage
    scenario_id: str | None = None
    version: int | None = None
    step_id: str | None = None
    variant: str | None = None
    track_clicks: bool = True
    # A staff preview: written to the preview inbox of `preview_token` only, never counted.
    test: bool = False
    preview_token: Annotated[str, StringConstraints(pattern=PREVIEW_TOKEN_PATTERN)] | None = None
    # The shop page the preview link opens (test sends only).
    preview_page: str | None = None

    @model_validator(mode="after")
    def _preview_only_for_tests(self) -> WebDispatch:
        if self.test != (self.preview_token is not None) or self.test != (self.preview_page is not None):
            raise ValueError("a test web dispatch has a preview token and page, and only a test has them")
        if self.preview_page is not None:
            checked_url(self.preview_page)
        return self

    def to_sqs_body(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    def __repr__(self) -> str:  # keeps a preview token out of tracebacks and debug output
        return f"WebDispatch(idempotency_key={self.idempotency_key!r}, test={self.test!r})"


def preview_link(dispatch: WebDispatch) -> str | None:
    """The link a staff member opens to see a test message on the shop's page: the page with
    `#cems-preview=<token>`, which the tag reads (a fragment never reaches the shop's server or its
    analytics). None for a dispatch that is no test."""
    if dispatch.preview_page is None or dispatch.preview_token is None:
        return None
    page = dispatch.preview_page.split("#", 1)[0]
    return f"{page}#cems-preview={dispatch.preview_token}"

"""The email dispatch: one SQS message asking `send_email` to mail one customer once.

A dispatch names a customer, not an address: the sender reads the profile when it sends, so an
address changed, an unsubscribe or an erasure since the dispatch was made is respected. Only a test
send may name an address (`to_address`). See docs/email.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

# SES accepts a message of up to 40 MB, but an SQS body holds 256 KB: a dispatch is at most that.
MAX_SUBJECT_LENGTH = 998  # RFC 5322's line limit; mail clients show far less
# Header values must not carry a line break (header injection); the email package refuses them too.
_SINGLE_LINE = r"^[^\r\n]*$"
# SES message tags: names and values of ASCII letters, digits, `_` and `-`, at most 256 characters.
_TAG_SAFE = re.compile(r"[A-Za-z0-9_-]{1,256}")
TAG_PREFIX = "cems_"
# A value that is not tag-safe is sent base64url-encoded under `<name>_b64`.
B64_SUFFIX = "_b64"


class EmailDispatch(BaseModel):
    """Mail `subject` with `html` and/or `text` to `customer_id`, once, however often the queue
    delivers this dispatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Names the dispatch for good (logged, so never an address): `<scenario>#<step>#<enrolment>`.
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    customer_id: Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
    subject: Annotated[
        str, StringConstraints(min_length=1, max_length=MAX_SUBJECT_LENGTH, pattern=_SINGLE_LINE)
    ]
    html: str | None = None
    text: str | None = None
    scenario_id: str | None = None
    version: int | None = None
    step_id: str | None = None
    variant: str | None = None
    # Each can be turned off per scenario (spec: clicks and opens tracking are optional).
    track_clicks: bool = True
    track_opens: bool = True
    # A staff preview: marked in the subject and a header, never counted in the reports.
    test: bool = False
    # Test sends only: the staff member's own address (the customer's consent does not apply to it).
    to_address: (
        Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=_SINGLE_LINE)] | None
    ) = None

    @model_validator(mode="after")
    def _content_and_recipient(self) -> EmailDispatch:
        if not (self.html and self.html.strip()) and not (self.text and self.text.strip()):
            raise ValueError("an email dispatch needs html or text content")
        if self.to_address is not None and not self.test:
            raise ValueError("to_address is for test sends only (test: true)")
        return self

    def to_sqs_body(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    def key_hash(self) -> str:
        return dispatch_key_hash(self.idempotency_key)

    def ses_tags(self) -> list[dict[str, str]]:
        """SES message tags (EmailTags): SES hands them back on delivery, bounce and complaint
        events, so `engage` knows which dispatch, customer and report cell an event is about."""
        values: dict[str, str | None] = {
            "dispatch": self.idempotency_key,
            "customer": self.customer_id,
            "scenario": self.scenario_id,
            "version": None if self.version is None else str(self.version),
            "step": self.step_id,
            "variant": self.variant,
            "test": "1" if self.test else None,
        }
        tags = [{"Name": f"{TAG_PREFIX}dispatch_hash", "Value": self.key_hash()}]
        for name, value in values.items():
            if value is None or value == "":
                continue
            if _TAG_SAFE.fullmatch(value):
                tags.append({"Name": TAG_PREFIX + name, "Value": value})
                continue
            encoded = base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=")
            if len(encoded) <= 256:
                tags.append({"Name": TAG_PREFIX + name + B64_SUFFIX, "Value": encoded})
            # A longer value is left out; `dispatch_hash` still names the dispatch.
        return tags


def dispatch_key_hash(idempotency_key: str) -> str:
    """A short, stable name for a dispatch key (SES tags, metrics): 32 hex digits of its SHA-256."""
    return hashlib.sha256(idempotency_key.encode("utf-8")).hexdigest()[:32]


def tags_from_ses(tags: Mapping[str, Sequence[str] | str] | Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """The CEMS values in SES's tags, as `EmailDispatch.ses_tags` wrote them: `dispatch`, `customer`,
    `scenario`, `version` (int), `step`, `variant`, `test` (bool), `dispatch_hash`.

    Takes an SES event's `mail.tags` (name -> list of values) or the EmailTags list itself."""
    pairs: list[tuple[str, str]] = []
    if isinstance(tags, Mapping):
        for name, value in tags.items():
            first = value if isinstance(value, str) else (value[0] if value else "")
            pairs.append((str(name), str(first)))
    else:
        pairs = [(str(t.get("Name", "")), str(t.get("Value", ""))) for t in tags]
    found: dict[str, Any] = {}
    for name, value in pairs:
        if not name.startswith(TAG_PREFIX):
            continue
        field = name.removeprefix(TAG_PREFIX)
        if field.endswith(B64_SUFFIX):
            field = field.removesuffix(B64_SUFFIX)
            try:
                value = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                continue
        found[field] = value
    if "version" in found:
        try:
            found["version"] = int(found["version"])
        except ValueError:
            del found["version"]
    found["test"] = found.get("test") == "1"
    return found

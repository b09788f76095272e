"""The LINE dispatch: one SQS message asking `send_line` to deliver LINE messages to customers.

A dispatch names customers, not LINE user ids: the sender looks each one up at send time and sends
only to those who follow the account and agreed to messages. See docs/line-dispatch.md.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

# LINE's limits (https://developers.line.biz/en/reference/messaging-api/).
MAX_MESSAGES_PER_REQUEST = 5
MAX_MULTICAST_RECIPIENTS = 500
MAX_TEXT_LENGTH = 5000
# The sender keeps a dispatch's frozen plan (its customer ids) in one DynamoDB item of at most 400 KB,
# and the SQS body is at most 256 KB: a larger audience is several dispatches.
MAX_RECIPIENTS = 5000

CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
# A LINE user id as the Messaging API gives it: `U` and 32 lowercase hex digits.
LineUserId = Annotated[str, StringConstraints(pattern=r"^U[0-9a-f]{32}$")]
LineMessage = dict[str, Any]
# A short link's code (cems.engagement.tokens.SHORT_CODE_PATTERN, written out: this module is read by
# every function that queues or sends LINE, and the tokens module is not needed to check a pattern).
ShortCode = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z]{16}$")]


class ShortLink(BaseModel):
    """What a short link in a text stands for (cems.line.links, issue 13): the signed click token
    the click tracker follows, and when it stops being a click (its TTL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    token: Annotated[str, StringConstraints(min_length=1, max_length=4096)]  # tokens.MAX_TOKEN_LENGTH
    expires_at: int = Field(ge=0)  # Unix seconds, the token's own expiry


def validate_line_message(message: Any) -> LineMessage:
    """One LINE message object, checked by the SDK's own model and LINE's text limit; returned in
    the SDK's normal form (camelCase, no nulls), so equal content has an equal fingerprint."""
    from cems.line.api import message_from_dict

    if not isinstance(message, dict):
        raise ValueError("a LINE message is a JSON object")
    if not isinstance(message.get("type"), str):
        raise ValueError("a LINE message needs a string `type`")
    try:
        parsed = message_from_dict(message)
    except Exception as exc:
        raise ValueError(f"not a valid LINE {message['type']} message: {_first_line(exc)}") from None
    text = getattr(parsed, "text", None)
    if isinstance(text, str) and len(text) > MAX_TEXT_LENGTH:
        raise ValueError(f"text is {len(text)} characters; LINE accepts at most {MAX_TEXT_LENGTH}")
    normal: LineMessage = parsed.to_dict()
    return normal


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:3])[:300] or type(exc).__name__


def _validate_messages(messages: Any) -> list[LineMessage]:
    if not isinstance(messages, list):
        raise ValueError("messages is a list of LINE message objects")
    if len(messages) > MAX_MESSAGES_PER_REQUEST:
        raise ValueError(f"{len(messages)} messages; LINE sends at most {MAX_MESSAGES_PER_REQUEST} at a time")
    return [validate_line_message(m) for m in messages]


class LineDispatch(BaseModel):
    """Send `messages` (or a recipient's own `personalised` messages) to each customer in
    `recipients`, once, whatever number of times the queue delivers this dispatch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Names the dispatch for good: a dispatch seen again under the same key is not sent again.
    # The scenario engine uses e.g. `<scenario>#<step>#<customer or segment run>`.
    idempotency_key: Annotated[str, StringConstraints(min_length=1, max_length=256)]
    recipients: list[CustomerId] = Field(min_length=1, max_length=MAX_RECIPIENTS)
    # The content every recipient without personalised content gets (multicast); may be empty only
    # when every recipient has personalised content.
    messages: list[LineMessage] = Field(default_factory=list)
    # customer_id -> that customer's own messages (one push each).
    personalised: dict[CustomerId, list[LineMessage]] = Field(default_factory=dict)
    scenario_id: str | None = None
    version: int | None = None  # the scenario version (report counters are kept per version)
    step_id: str | None = None
    variant: str | None = None
    # A test send (a staff member previewing a step): recorded as such, kept out of the reports.
    test: bool = False
    # Test sends only (`cems scenario test-send`): push to this LINE user id (a staff member's own
    # account) instead of the recipient's; the one recipient's profile is not read (no reachability
    # or consent check). Never logged (left out of repr); not written to the Deliveries table.
    test_line_user_id: LineUserId | None = Field(default=None, repr=False)
    # Delivered without a sound or notification (LINE's notificationDisabled).
    notification_disabled: bool = False
    # Set by cems.line.multicast.group only: a shared dispatch holding every recipient its batch has
    # for its content (the content's only chunk, under the same key on every attempt of the batch).
    # A customer it names that the key's frozen plan never had was therefore under no other key of
    # that content, and the sender adds them to the plan rather than leave them out (a redone
    # broadcast page that found a profile created in its key range since the first attempt).
    sole_chunk: bool = False
    # The short links the texts of `messages` and `personalised` carry (code -> what it stands for):
    # the sender stores them before LINE is called, so a tap never finds its code missing. Made
    # with the messages (cems.line.links), so a redelivered body stores the very same items.
    short_links: dict[ShortCode, ShortLink] = Field(default_factory=dict)

    @field_validator("messages", mode="before")
    @classmethod
    def _messages(cls, value: Any) -> list[LineMessage]:
        return _validate_messages(value)

    @field_validator("personalised", mode="before")
    @classmethod
    def _personalised(cls, value: Any) -> dict[str, list[LineMessage]]:
        if not isinstance(value, dict):
            raise ValueError("personalised maps customer ids to lists of LINE messages")
        checked: dict[str, list[LineMessage]] = {}
        for customer_id, messages in value.items():
            content = _validate_messages(messages)
            if not content:
                raise ValueError(f"personalised content for {customer_id} is empty")
            checked[str(customer_id)] = content
        return checked

    @field_validator("recipients")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _content_for_everyone(self) -> LineDispatch:
        unknown = set(self.personalised) - set(self.recipients)
        if unknown:
            raise ValueError(f"personalised content for {len(unknown)} customer(s) not in recipients")
        if not self.messages and any(r not in self.personalised for r in self.recipients):
            raise ValueError("messages is empty but some recipients have no personalised content")
        if self.test_line_user_id is not None and (not self.test or len(self.recipients) != 1):
            raise ValueError("test_line_user_id is for test sends (test: true) to exactly one recipient")
        if self.sole_chunk and (self.test or len(self.recipients) > MAX_MULTICAST_RECIPIENTS):
            raise ValueError(
                f"a sole chunk is a shared dispatch of at most {MAX_MULTICAST_RECIPIENTS} recipients"
            )
        return self

    def content_for(self, customer_id: str) -> list[LineMessage]:
        return self.personalised.get(customer_id) or self.messages

    def shared_recipients(self) -> list[str]:
        """Recipients who get the common `messages` (multicast), in dispatch order."""
        return [r for r in self.recipients if r not in self.personalised]

    def fingerprint(self) -> str:
        """A digest of what is sent to whom: a key reused for different content is refused."""
        content = {
            "recipients": self.recipients,
            "messages": self.messages,
            "personalised": self.personalised,
            "notification_disabled": self.notification_disabled,
        }
        if self.test_line_user_id is not None:  # only when set: other fingerprints stay as they were
            content["test_line_user_id"] = self.test_line_user_id
        canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def to_sqs_body(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

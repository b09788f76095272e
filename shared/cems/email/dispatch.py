"""The email dispatch: one SQS message asking `send_email` to mail one customer once.

A dispatch names a customer, not an address: the sender reads the profile when it sends, so an
address changed, an unsubscribe or an erasure since the dispatch was made is respected. Only a test
send may name an address (`to_address`). See docs/email.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints, model_validator

from cems.topics import TOPIC_ID_PATTERN

if TYPE_CHECKING:
    from cems.ports import MessageTag

# SES accepts a message of up to 40 MB, but an SQS body holds 256 KB: a dispatch is at most that.
MAX_SUBJECT_LENGTH = 998  # RFC 5322's line limit; mail clients show far less
# Header values must not carry a line break (header injection); the email package refuses them too.
_SINGLE_LINE = r"^[^\r\n]*$"


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
    # The scenario's topic (cems.topics): the unsubscribe link offers to leave just it, and a customer
    # who left it by the time the mail goes is not mailed.
    topic: Annotated[str, StringConstraints(pattern=TOPIC_ID_PATTERN)] | None = None
    # Each can be turned off per scenario (spec: clicks and opens tracking are optional).
    track_clicks: bool = True
    track_opens: bool = True
    # A staff preview: marked in the subject and a header, never counted in the reports.
    test: bool = False
    # `confirmation`: the double opt-in mail (cems.consent), whose content send_email writes itself; it
    # asks for consent, so consent is not needed to send it, but the address must still be the one
    # the customer gave (address_hash) and not suppressed.
    purpose: Literal["marketing", "confirmation"] = "marketing"
    address_hash: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")] | None = None
    # Test sends only: the staff member's own address (the customer's consent does not apply to it).
    to_address: (
        Annotated[str, StringConstraints(min_length=3, max_length=320, pattern=_SINGLE_LINE)] | None
    ) = None

    @model_validator(mode="after")
    def _content_and_recipient(self) -> EmailDispatch:
        if self.purpose == "confirmation":
            if self.address_hash is None or self.test:
                raise ValueError("a confirmation names the address it confirms (address_hash) and is no test")
            return self
        if self.address_hash is not None:
            raise ValueError("address_hash is for confirmations only")
        if not (self.html and self.html.strip()) and not (self.text and self.text.strip()):
            raise ValueError("an email dispatch needs html or text content")
        if self.to_address is not None and not self.test:
            raise ValueError("to_address is for test sends only (test: true)")
        return self

    def to_sqs_body(self) -> str:
        return self.model_dump_json(exclude_defaults=True)

    def ses_tags(self) -> list[MessageTag]:
        """SES message tags (EmailTags): SES hands them back on delivery, bounce and complaint events,
        so `engage` knows the dispatch, customer and report cell (cems.engagement.ses_events writes
        and reads them: one encoding for both sides)."""
        # Imported here: the scenario runner builds dispatches and never needs the tags.
        from cems.engagement.ses_events import email_tags

        return email_tags(
            dispatch_key=self.idempotency_key,
            customer_id=self.customer_id,
            scenario_id=self.scenario_id,
            version=self.version,
            step_id=self.step_id,
            variant=self.variant,
            test=self.test,
        )

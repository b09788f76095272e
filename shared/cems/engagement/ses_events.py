"""SES event publishing: the message tags CEMS puts on each mail, and the events SES sends back.

The configuration set publishes Send, Delivery, Bounce, Complaint, ... events to an SNS topic that
`engage` subscribes to; each SNS record's `Message` is one event in SES's event publishing format
(https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html).

Which dispatch a mail belonged to travels in the mail's tags (SES v2 `EmailTags`), set by
send_email through `email_tags` and read back by `DispatchTags.from_mail`. SES allows only
`A-Z a-z 0-9 _ -` in tag names and values, at most 256 characters
(https://docs.aws.amazon.com/ses/latest/APIReference-V2/API_MessageTag.html), so every value goes
through `tag_value`: `_` is the escape character, and every character other than `A-Z a-z 0-9 -`
(`_` itself included) becomes `_XX`, the upper-case hex of each of its UTF-8 bytes (`#` → `_23`,
`_` → `_5F`), which reads back exactly; kebab-case ids stay as they are. A value that would still
be longer than 256 characters becomes `__` + its SHA-256 (hex): stable, but not readable back
(no escaped value starts with `__`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from cems.ports import MessageTag

# The tag names CEMS sets on every mail it sends (and reads back from SES events).
TAG_CUSTOMER = "cems_customer"
TAG_DISPATCH = "cems_dispatch"  # the dispatch's idempotency key, through tag_value
TAG_SCENARIO = "cems_scenario"
TAG_VERSION = "cems_version"
TAG_STEP = "cems_step"
TAG_VARIANT = "cems_variant"
TAG_TEST = "cems_test"  # "1" on test sends: their events suppress a bad address but record nothing
MAX_TAG_VALUE = 256
HASHED_PREFIX = "__"
_PLAIN = re.compile(r"[A-Za-z0-9-]")
_ESCAPED = re.compile(r"(?:_[0-9A-F]{2})+")


def tag_value(text: str) -> str:
    """`text` as an SES tag value: reversible escaping, or `__<sha256>` when that is too long."""
    escaped = "".join(
        char if _PLAIN.fullmatch(char) else "".join(f"_{byte:02X}" for byte in char.encode("utf-8"))
        for char in text
    )
    if escaped and len(escaped) <= MAX_TAG_VALUE:
        return escaped
    return HASHED_PREFIX + hashlib.sha256(text.encode("utf-8")).hexdigest()


def from_tag_value(value: str) -> str | None:
    """The text a `tag_value` stands for; None for a hashed (too long) one."""
    if value.startswith(HASHED_PREFIX):
        return None
    return _ESCAPED.sub(lambda m: bytes.fromhex(m.group(0).replace("_", "")).decode("utf-8"), value)


def email_tags(
    *,
    dispatch_key: str,
    customer_id: str,
    scenario_id: str | None = None,
    version: int | None = None,
    step_id: str | None = None,
    variant: str | None = None,
    test: bool = False,
) -> list[MessageTag]:
    """The SES v2 `EmailTags` of one dispatch's mail (send_email passes them to SendEmail)."""
    values = {
        TAG_DISPATCH: dispatch_key,
        TAG_CUSTOMER: customer_id,
        TAG_SCENARIO: scenario_id,
        TAG_VERSION: None if version is None else str(version),
        TAG_STEP: step_id,
        TAG_VARIANT: variant,
        TAG_TEST: "1" if test else None,
    }
    return [{"Name": name, "Value": tag_value(value)} for name, value in values.items() if value]


@dataclass(frozen=True)
class DispatchTags:
    """What a mail's tags say about its dispatch (None where a tag is missing)."""

    dispatch: str  # the raw tag value: stable per dispatch even when hashed
    dispatch_key: str | None  # the idempotency key itself; None when the tag had to be hashed
    customer_id: str | None
    scenario_id: str | None
    version: int | None
    step_id: str | None
    variant: str | None
    test: bool

    @classmethod
    def from_mail(cls, tags: dict[str, list[str]]) -> DispatchTags | None:
        """The dispatch of a mail CEMS sent, or None for a mail without CEMS's tags."""

        def first(name: str) -> str | None:
            values = tags.get(name) or [""]
            return from_tag_value(values[0]) if values[0] else None

        raw_dispatch = (tags.get(TAG_DISPATCH) or [""])[0]
        if not raw_dispatch:
            return None
        version = first(TAG_VERSION)
        return cls(
            dispatch=raw_dispatch,
            dispatch_key=from_tag_value(raw_dispatch),
            customer_id=first(TAG_CUSTOMER),
            scenario_id=first(TAG_SCENARIO),
            version=int(version) if version and version.isdigit() else None,
            step_id=first(TAG_STEP),
            variant=first(TAG_VARIANT),
            test=first(TAG_TEST) == "1",
        )


# --- SES event publishing format (only the fields CEMS uses; the rest is ignored) ------------------


class _SesModel(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


class SesMail(_SesModel):
    message_id: str = Field(alias="messageId", min_length=1)
    timestamp: datetime | None = None
    destination: list[str] = Field(default_factory=list)
    # SES adds its own (`ses:configuration-set`, `ses:from-domain`, ...) beside ours.
    tags: dict[str, list[str]] = Field(default_factory=dict)


class BouncedRecipient(_SesModel):
    email_address: str = Field(alias="emailAddress")
    action: str | None = None
    status: str | None = None


class SesBounce(_SesModel):
    bounce_type: str = Field(alias="bounceType")  # Permanent, Transient or Undetermined
    bounce_sub_type: str | None = Field(default=None, alias="bounceSubType")
    bounced_recipients: list[BouncedRecipient] = Field(default_factory=list, alias="bouncedRecipients")
    timestamp: datetime | None = None
    feedback_id: str | None = Field(default=None, alias="feedbackId")


class ComplainedRecipient(_SesModel):
    email_address: str = Field(alias="emailAddress")


class SesComplaint(_SesModel):
    complained_recipients: list[ComplainedRecipient] = Field(
        default_factory=list, alias="complainedRecipients"
    )
    complaint_feedback_type: str | None = Field(default=None, alias="complaintFeedbackType")
    timestamp: datetime | None = None
    feedback_id: str | None = Field(default=None, alias="feedbackId")


class SesDelivery(_SesModel):
    timestamp: datetime | None = None
    recipients: list[str] = Field(default_factory=list)


class SesEvent(_SesModel):
    """One SES event. Event publishing names its kind `eventType`; the older identity notifications
    name it `notificationType`: both are read."""

    event_type: str = Field(validation_alias=AliasChoices("eventType", "notificationType"))
    mail: SesMail
    bounce: SesBounce | None = None
    complaint: SesComplaint | None = None
    delivery: SesDelivery | None = None

    @property
    def is_permanent_bounce(self) -> bool:
        return (
            self.event_type == "Bounce" and self.bounce is not None and self.bounce.bounce_type == "Permanent"
        )

    def dispatch(self) -> DispatchTags | None:
        return DispatchTags.from_mail(self.mail.tags)

    def bounced_addresses(self) -> list[str]:
        return [r.email_address for r in self.bounce.bounced_recipients] if self.bounce else []

    def complained_addresses(self) -> list[str]:
        """Who complained; some feedback loops name nobody, and then it is whoever the mail went to."""
        if self.complaint is None:
            return []
        named = [r.email_address for r in self.complaint.complained_recipients]
        return named or list(self.mail.destination)


def parse_ses_event(message: str) -> SesEvent:
    """The SES event an SNS record's Message holds (pydantic.ValidationError if it is not one)."""
    return SesEvent.model_validate_json(message)


# --- simulated events (the local stack and tests: SES in moto publishes nothing) ---------------------


def simulated_ses_event(
    event_type: Literal["Bounce", "Complaint", "Delivery"],
    *,
    message_id: str,
    address: str,
    tags: Sequence[MessageTag],
    at: datetime,
    bounce_type: Literal["Permanent", "Transient"] = "Permanent",
) -> dict[str, Any]:
    """An SES event as the configuration set publishes it, for a mail sent to `address` with the
    SendEmail `EmailTags` `tags` (e.g. what moto recorded of a send_email call)."""
    stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    event: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "timestamp": stamp,
            "messageId": message_id,
            "destination": [address],
            "tags": {tag["Name"]: [tag["Value"]] for tag in tags},
        },
    }
    if event_type == "Bounce":
        event["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General" if bounce_type == "Permanent" else "MailboxFull",
            "bouncedRecipients": [{"emailAddress": address, "action": "failed"}],
            "timestamp": stamp,
            "feedbackId": f"{message_id}-bounce",
        }
    elif event_type == "Complaint":
        event["complaint"] = {
            "complainedRecipients": [{"emailAddress": address}],
            "complaintFeedbackType": "abuse",
            "timestamp": stamp,
            "feedbackId": f"{message_id}-complaint",
        }
    else:
        event["delivery"] = {"timestamp": stamp, "recipients": [address]}
    return event


def sns_envelope(
    *ses_events: dict[str, Any], topic_arn: str = "arn:aws:sns:ap-northeast-1:000000000000:cems-ses"
) -> dict[str, Any]:
    """The Lambda event SNS delivers for `ses_events` (one record each), for engage's handler."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic_arn}:local",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()[:36],
                    "TopicArn": topic_arn,
                    "Subject": None,
                    "Message": json.dumps(event, ensure_ascii=False),
                    "Timestamp": event["mail"]["timestamp"],
                    "MessageAttributes": {},
                },
            }
            for event in ses_events
        ]
    }

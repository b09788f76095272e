"""LINE's webhook: verify, map each event to an internal message, ingest, then reply.

Every LINE event with a user becomes a `track` message through the same ingest pipeline as the
site's events, so LINE users get identity resolution (`ID#line#<userId>`), de-duplication and merges
for free:

- messageId `line:<webhookEventId>`, site id `line`: LINE redelivering an event (or replaying it)
  hits the existing de-dupe marker and has no second effect, replies included;
- event names `line_follow`, `line_unfollow`, `line_message`, `line_postback`, `line_linked`,
  `line_link_failed` and `line_other` (models.LineEvent), for scenarios to trigger on;
- the message carries the LINE user id in `line_user_id`, which only this module sets;
- an `accountLink` whose nonce is valid also carries the anonymous id the nonce was issued for:
  identity rules then merge the LINE-only profile into the site visitor's customer.

Replies are decided after ingest, for newly stored events only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from cems import clock
from cems.errors import ClientError
from cems.ingest import Ingestor
from cems.line.config import LINE_REQUEST_TIMEOUT, LineSettings
from cems.line.linking import LinkNonce, NonceStore, issue_link_token, link_page_url
from cems.line.replies import LINK_KEYWORDS, Reply, messages_for, offers_link
from cems.models import LINE_SOURCE_ID, LineEvent, MessageType, SegmentMessage, Site
from cems.store import CustomerStore, IdentityKey, IdentityKind

if TYPE_CHECKING:
    from linebot.v3.messaging import MessagingApi  # type: ignore[import-untyped,unused-ignore]

# The "site" LINE events are stored under (no write key: LINE proves itself by the signature).
LINE_SOURCE = Site(
    write_key="",
    site_id=LINE_SOURCE_ID,
    name="LINE",
    origins=[],
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)
# Postback data CEMS's own survey buttons and quick replies carry: `survey=<question>&answer=<value>`.
SURVEY_QUESTION = re.compile(r"^[\w.-]{1,64}$")
MAX_SURVEY_ANSWER = 300  # LINE's own limit on postback data
# Postback data of a "link my account" button.
LINK_POSTBACK = "action=link"


class WebhookError(ClientError):
    """A webhook request refused before anything was processed."""


def sign(body: bytes, channel_secret: str) -> str:
    """X-Line-Signature as LINE computes it: base64(HMAC-SHA256(channel secret, raw body)). For the
    CLI, the local stack's fake LINE and tests; the webhook itself verifies with the SDK."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def message_id_of(webhook_event_id: str) -> str:
    return f"line:{webhook_event_id}"


def parse_events(body: bytes, signature: str | None, channel_secret: str) -> list[tuple[Any, dict[str, Any]]]:
    """The events of a webhook body, each as the SDK's model and as sent, after verifying
    X-Line-Signature with the SDK's own WebhookParser (HMAC-SHA256 of the raw body)."""
    from linebot.v3.exceptions import InvalidSignatureError  # type: ignore[import-untyped,unused-ignore]
    from linebot.v3.webhook import WebhookParser  # type: ignore[import-untyped,unused-ignore]

    if not signature:
        raise WebhookError(
            401, "missing_signature", "the X-Line-Signature header is missing", field="X-Line-Signature"
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        # LINE signs UTF-8 JSON; other bytes cannot carry a signature the SDK can check.
        raise WebhookError(
            401, "invalid_signature", "the signature does not match the body", field="X-Line-Signature"
        ) from None
    try:
        events = WebhookParser(channel_secret).parse(text, signature)
    except InvalidSignatureError:
        # The SDK's message repeats the signature; the answer does not.
        raise WebhookError(
            401, "invalid_signature", "the signature does not match the body", field="X-Line-Signature"
        ) from None
    except (ValueError, KeyError, TypeError) as exc:
        raise WebhookError(400, "invalid_body", "the body is not a LINE webhook request") from exc
    raw = json.loads(text)["events"]
    if not isinstance(raw, list) or len(raw) != len(events):
        raise WebhookError(400, "invalid_body", "the body is not a LINE webhook request")
    return list(zip(events, raw, strict=True))


def line_user_of(event: Any, raw: dict[str, Any]) -> str | None:
    """The LINE user an event is about (also for event types the SDK does not know)."""
    user_id = getattr(event.source, "user_id", None)
    if user_id is None:
        source = raw.get("source")
        user_id = source.get("userId") if isinstance(source, dict) else None
    return user_id if isinstance(user_id, str) and user_id else None


def survey_answer(data: str) -> tuple[str, str] | None:
    """(question, answer) of postback data `survey=<question>&answer=<value>`, else None."""
    fields = dict(parse_qsl(data, keep_blank_values=True))
    question, answer = fields.get("survey"), fields.get("answer")
    if question is None or answer is None or not SURVEY_QUESTION.match(question):
        return None
    if len(answer) > MAX_SURVEY_ANSWER:
        return None
    return question, answer


@dataclass(frozen=True)
class Mapped:
    """One LINE event as CEMS stores it, and the reply it would get if newly stored."""

    message: SegmentMessage
    reply: Reply | None
    reply_token: str | None


def map_event(event: Any, raw: dict[str, Any], user_id: str, nonce: LinkNonce | None) -> Mapped:
    """The internal message for one LINE event of `user_id`; `nonce` is what an accountLink's nonce
    resolved to (None when unknown, used or expired)."""
    kind = raw.get("type")
    properties: dict[str, Any] = {}
    reply: Reply | None = None
    anonymous_id: str | None = None
    if kind == "follow":
        name = LineEvent.FOLLOW
        properties["is_unblocked"] = bool(event.follow.is_unblocked)
        reply = Reply.WELCOME
    elif kind == "unfollow":
        name = LineEvent.UNFOLLOW
    elif kind == "message":
        name = LineEvent.MESSAGE
        content = event.message
        properties["message_type"] = content.type
        properties["line_message_id"] = content.id
        text = getattr(content, "text", None)
        if isinstance(text, str):
            properties["text"] = text
            if text.strip().lower() in LINK_KEYWORDS:
                reply = Reply.LINK
    elif kind == "postback":
        name = LineEvent.POSTBACK
        data = event.postback.data
        properties["data"] = data
        if event.postback.params:
            properties["params"] = dict(event.postback.params)
        answer = survey_answer(data)
        if answer is not None:
            properties["survey"] = {"question": answer[0], "answer": answer[1]}
            reply = Reply.SURVEY_THANKS
        elif data == LINK_POSTBACK:
            reply = Reply.LINK
    elif kind == "accountLink":
        result = event.link.result
        properties["result"] = result
        if result == "ok" and nonce is not None:
            name = LineEvent.LINKED
            anonymous_id = nonce.anonymous_id
            properties["site_id"] = nonce.site_id
            reply = Reply.LINKED
        else:
            name = LineEvent.LINK_FAILED
            properties["reason"] = "nonce_invalid" if result == "ok" else "line_failed"
            reply = Reply.LINK_FAILED if result == "ok" else None
    else:
        name = LineEvent.OTHER
        properties["line_type"] = str(kind)
    message = SegmentMessage.model_validate(
        {
            "type": MessageType.TRACK,
            "messageId": message_id_of(event.webhook_event_id),
            "event": name.value,
            "anonymousId": anonymous_id,
            "lineUserId": user_id,
            "timestamp": datetime.fromtimestamp(event.timestamp / 1000, tz=UTC),
            "properties": properties,
            "context": {
                "library": {"name": "cems-line-webhook"},
                "line": {
                    "mode": str(raw.get("mode")),
                    "source_type": str((raw.get("source") or {}).get("type")),
                    "is_redelivery": bool((raw.get("deliveryContext") or {}).get("isRedelivery")),
                },
            },
        }
    )
    reply_token = raw.get("replyToken") if raw.get("mode") != "standby" else None
    return Mapped(message, reply, reply_token if isinstance(reply_token, str) and reply_token else None)


@dataclass
class WebhookOutcome:
    """What one webhook request did, for the answer, logs and metrics (no user ids or tokens)."""

    events: int = 0
    stored: int = 0
    duplicates: int = 0
    without_user: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    reply_failures: list[str] = field(default_factory=list)
    links: int = 0
    link_failures: int = 0


class LineWebhook:
    """Processes one verified webhook request."""

    def __init__(
        self,
        settings: LineSettings,
        ingestor: Ingestor,
        nonces: NonceStore,
        customers: CustomerStore,
        api: Callable[[], MessagingApi],
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.nonces = nonces
        self.customers = customers
        self.api = api

    def handle(self, body: bytes, signature: str | None) -> WebhookOutcome:
        events = parse_events(body, signature, self.settings.channel_secret())
        outcome = WebhookOutcome(events=len(events))
        mapped: list[Mapped] = []
        for event, raw in events:
            user_id = line_user_of(event, raw)
            if user_id is None:
                # Group and room events without a user: nobody to record them on.
                outcome.without_user.append(str(raw.get("type")))
                continue
            nonce = None
            if raw.get("type") == "accountLink" and event.link.result == "ok":
                nonce = self.nonces.consume(event.link.nonce, event.webhook_event_id)
            mapped.append(map_event(event, raw, user_id, nonce))
        if not mapped:
            return outcome
        result = self.ingestor.ingest(LINE_SOURCE, [m.message for m in mapped], clock.now())
        outcome.stored, outcome.duplicates = result.stored, result.duplicates
        for item in mapped:
            if item.message.message_id not in result.stored_ids:
                continue  # a duplicate: its effects, replies included, happened the first time
            if item.message.event == LineEvent.LINKED:
                outcome.links += 1
            elif item.message.event == LineEvent.LINK_FAILED:
                outcome.link_failures += 1
            if item.reply is not None and item.reply_token is not None:
                self._reply(item, outcome)
        return outcome

    def _reply(self, item: Mapped, outcome: WebhookOutcome) -> None:
        assert item.message.line_user_id is not None and item.reply is not None
        reply = item.reply
        if reply in (Reply.WELCOME, Reply.LINK) and self._is_linked(item.message.line_user_id):
            reply = Reply.WELCOME_BACK if reply is Reply.WELCOME else Reply.ALREADY_LINKED
        try:
            api = self.api()
        except Exception as exc:  # the access token could not be read: the event is stored anyway
            outcome.reply_failures.append(f"{reply.value}: {type(exc).__name__}")
            return
        page_url = None
        if offers_link(reply):
            try:
                page_url = link_page_url(self.settings, issue_link_token(api, item.message.line_user_id))
            except Exception as exc:  # the reply still goes, without the button
                outcome.reply_failures.append(f"link_token: {_failure(exc)}")
        try:
            from linebot.v3.messaging import ReplyMessageRequest  # type: ignore[import-untyped,unused-ignore]

            api.reply_message(
                ReplyMessageRequest(reply_token=item.reply_token, messages=messages_for(reply, page_url)),
                _request_timeout=LINE_REQUEST_TIMEOUT,
            )
        except Exception as exc:  # LINE down or the reply token expired: the event stays stored
            outcome.reply_failures.append(f"{reply.value}: {_failure(exc)}")
            return
        outcome.replies.append(reply.value)

    def _is_linked(self, line_user_id: str) -> bool:
        """Whether this LINE user's customer is known on the site (an anonymous id or user id)."""
        customer_id = self.customers.customer_for(IdentityKey(IdentityKind.LINE, line_user_id))
        profile = self.customers.profile(customer_id) if customer_id else None
        return profile is not None and bool(profile.anonymous_ids or profile.user_id)


def _failure(exc: Exception) -> str:
    """A failure in words safe to log: the exception type and HTTP status, never its message (the
    SDK's messages can hold the request, with the user id and token)."""
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}" + (f" {status}" if status else "")

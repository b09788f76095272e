"""LINE's webhook: verify, map each event to an internal message, ingest, then reply.

Every LINE event with a user becomes a `track` message through the same ingest pipeline as the
site's events, so LINE users get identity resolution (`ID#line#<userId>`), de-duplication and merges
for free:

- messageId `line:<webhookEventId>`, site id `line`: LINE redelivering an event (or replaying it)
  hits the existing de-dupe marker and has no second effect, replies included;
- event names `line_follow`, `line_unfollow`, `line_message`, `line_postback`, `line_linked`,
  `line_link_failed` and `line_other` (models.LineEvent), for scenarios to trigger on;
- the message carries the LINE user id in `line_user_id`, which only this module sets;
- an `accountLink` whose nonce is valid also carries the user id of the signed-in customer the nonce
  was issued for (cems.line.linking): identity rules then merge the LINE-only profile into that
  customer, unless the customer is linked to another LINE user already (identity.may_merge).

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
from functools import cache
from itertools import accumulate
from typing import Any
from urllib.parse import parse_qsl

from cems import clock
from cems.config import MAX_MESSAGE_BYTES
from cems.errors import ClientError
from cems.identity import IdentityKey, IdentityKind
from cems.ingest import Ingestor
from cems.line.config import LineSettings
from cems.line.linking import LinkNonce, link_page_url
from cems.line.replies import LINK_KEYWORDS, Reply, messages_for, offers_link
from cems.models import LINE_SOURCE_ID, LineEvent, MessageType, SegmentMessage, Site, Trust
from cems.ports import CustomerDirectory, LineReplies, NoncePort

# The "site" LINE events are stored under (no write key: LINE proves itself by the signature).
LINE_SOURCE = Site(
    write_key="",
    site_id=LINE_SOURCE_ID,
    name="LINE",
    origins=[],
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    # LINE proves itself by the signature: what it says of its users is believed.
    trust=Trust.SERVER,
)
# Postback data CEMS's own survey buttons and quick replies carry: `survey=<question>&answer=<value>`.
SURVEY_QUESTION = re.compile(r"^[\w.-]{1,64}$")
MAX_SURVEY_ANSWER = 300  # LINE's own limit on postback data
# Postback data of a "link my account" button.
LINK_POSTBACK = "action=link"
# Nesting a webhook body may have. LINE's deepest events (a message with mentionees or emojis) nest 7
# levels; anything past this is not from LINE, whoever signed it.
MAX_BODY_DEPTH = 32
# A JSON string (escapes included), and anything that is not a bracket: for nesting_depth.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
# Longest `line_type` recorded for an event type CEMS does not know.
MAX_LINE_TYPE = 64


class WebhookError(ClientError):
    """A webhook request refused before anything was processed."""


def sign(body: bytes, channel_secret: str) -> str:
    """X-Line-Signature as LINE computes it: base64(HMAC-SHA256(channel secret, raw body)). For the
    CLI, the local stack's fake LINE and tests; the webhook itself verifies with the SDK."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def message_id_of(webhook_event_id: str) -> str:
    return f"line:{webhook_event_id}"


@dataclass(frozen=True)
class WebhookBody:
    """A verified webhook body: the events the SDK could read (its model and the event as sent), and
    why the others were skipped (field names and the SDK's words, never a value)."""

    events: list[tuple[Any, dict[str, Any]]]
    skipped: list[str]


def nesting_depth(text: str) -> int:
    """How deeply the JSON in `text` nests arrays and objects, found without parsing it (a parser
    recurses once per level); brackets inside strings do not count."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)


def parse_events(body: bytes, signature: str | None, channel_secret: str) -> WebhookBody:
    """The events of a webhook body, after verifying X-Line-Signature with the SDK's WebhookParser.

    Each event is parsed on its own, so one the SDK cannot read never costs the others: the SDK's
    parser reads a body all or nothing (an event without `webhookEventId` raises for the whole request,
    LINE would redeliver it, and every good event beside it would be lost). An event of a type the SDK
    does not know, or of a known type it cannot validate (a follow without replyToken), becomes the
    SDK's UnknownEvent, recorded as `line_other`; an event missing what every event has (type,
    timestamp, webhookEventId, mode, deliveryContext) is skipped and counted.
    """
    from linebot.v3.webhook import WebhookParser  # type: ignore[import-untyped,unused-ignore]
    from pydantic.v1 import ValidationError  # the SDK's models are pydantic v1 models

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
    if not WebhookParser(channel_secret).signature_validator.validate(text, signature):
        # The SDK's own exception message would repeat the signature; the answer does not.
        raise WebhookError(
            401, "invalid_signature", "the signature does not match the body", field="X-Line-Signature"
        )
    # Checked before any parser sees the text: json.loads raises RecursionError near a thousand
    # levels, and nothing LINE sends comes near this.
    if nesting_depth(text) > MAX_BODY_DEPTH:
        raise WebhookError(
            400,
            "too_deep",
            f"the body is nested more than {MAX_BODY_DEPTH} levels deep",
            field="body",
            limit=MAX_BODY_DEPTH,
        )
    try:
        document = json.loads(text)
    except ValueError:  # not JSON, or an integer longer than Python reads (4,300 digits)
        raise WebhookError(
            400, "invalid_body", "the body is not a LINE webhook request", field="body"
        ) from None
    raw_events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(raw_events, list):
        raise WebhookError(400, "invalid_body", "the body has no `events` list", field="events")
    events: list[tuple[Any, dict[str, Any]]] = []
    skipped: list[str] = []
    for index, raw in enumerate(raw_events):
        if not isinstance(raw, dict):
            skipped.append(f"events[{index}]: not an object")
            continue
        try:
            [event] = _event_parser().parse(json.dumps({"events": [raw]}), "")
        except ValidationError as exc:
            skipped.append(f"events[{index}]: {_problem(exc)}")
            continue
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # The SDK's own failures on a malformed event (a missing or non-text `type`, a field of the
            # wrong shape); its messages can repeat the event, so only the exception's type is kept.
            skipped.append(f"events[{index}]: unreadable ({type(exc).__name__})")
            continue
        events.append((event, raw))
    return WebhookBody(events, skipped)


@cache
def _event_parser() -> Any:
    """The SDK's parser for one event at a time; the whole body's signature was verified already."""
    from linebot.v3.webhook import WebhookParser  # type: ignore[import-untyped,unused-ignore]

    return WebhookParser("", skip_signature_verification=lambda: True)


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


def _is_unknown(event: Any) -> bool:
    from linebot.v3.models.events import UnknownEvent  # type: ignore[import-untyped,unused-ignore]

    return isinstance(event, UnknownEvent)


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
    user_id_of_site: str | None = None
    if _is_unknown(event):
        # The SDK could not read it as a type it knows: a new LINE event type, or a known type with
        # fields missing or of the wrong kind (a follow without replyToken). Kept, marked, never
        # answered: nothing in it can be trusted to be what its type says.
        name = LineEvent.OTHER
        properties["line_type"] = str(kind)[:MAX_LINE_TYPE]
        properties["unparsed"] = True
    elif kind == "follow":
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
        # LINE's own keys (date, time, datetime, newRichMenuAliasId, status); an empty key is no
        # attribute name DynamoDB can hold.
        params = {key: value for key, value in (event.postback.params or {}).items() if key}
        if params:
            properties["params"] = params
        answer = survey_answer(data)
        if answer is not None:
            properties["survey"] = {"question": answer[0], "answer": answer[1]}
            reply = Reply.SURVEY_THANKS
        elif data == LINK_POSTBACK:
            reply = Reply.LINK
    elif kind == "accountLink":
        result = event.link.result
        properties["result"] = result
        if result == "ok" and nonce is not None and nonce.user_id is not None:
            name = LineEvent.LINKED
            # The link joins the LINE user to the proven customer only. The browser's anonymous id
            # in the nonce is a claim of the request, so it joins nothing: the customer's browser is
            # theirs already through its own proven messages.
            user_id_of_site = nonce.user_id
            properties["site_id"] = nonce.site_id
            reply = Reply.LINKED
        else:
            name = LineEvent.LINK_FAILED
            properties["reason"] = "nonce_invalid" if result == "ok" else "line_failed"
            reply = Reply.LINK_FAILED if result == "ok" else None
    else:
        name = LineEvent.OTHER
        properties["line_type"] = str(kind)[:MAX_LINE_TYPE]
    source = raw.get("source")
    delivery = raw.get("deliveryContext")
    message = SegmentMessage.model_validate(
        {
            "type": MessageType.TRACK,
            "messageId": message_id_of(event.webhook_event_id),
            "event": name.value,
            "userId": user_id_of_site,
            "lineUserId": user_id,
            "timestamp": datetime.fromtimestamp(event.timestamp / 1000, tz=UTC),
            "properties": properties,
            "context": {
                "library": {"name": "cems-line-webhook"},
                "line": {
                    "mode": str(raw.get("mode")),
                    "source_type": str(source.get("type") if isinstance(source, dict) else None)[:32],
                    "is_redelivery": isinstance(delivery, dict) and delivery.get("isRedelivery") is True,
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
    # Events the SDK could not read as their type, stored as `line_other` with `unparsed`.
    unparsed: int = 0
    # Events not stored at all, each with why (field names and codes, never a value).
    skipped: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, int]:
        """The counts this request adds to CloudWatch, by metric name."""
        return {
            "LineEventsReceived": self.events,
            "LineEventsStored": self.stored,
            "LineEventsDuplicate": self.duplicates,
            "LineEventsUnparsed": self.unparsed,
            "LineEventsSkipped": len(self.skipped),
            "LineLinks": self.links,
            "LineLinkFailures": self.link_failures,
            "LineRepliesSent": len(self.replies),
            "LineReplyFailures": len(self.reply_failures),
        }


class LineWebhook:
    """Processes one verified webhook request."""

    def __init__(
        self,
        settings: LineSettings,
        ingestor: Ingestor,
        nonces: NoncePort,
        customers: CustomerDirectory,
        api: Callable[[], LineReplies],
    ) -> None:
        self.settings = settings
        self.ingestor = ingestor
        self.nonces = nonces
        self.customers = customers
        self.api = api

    def handle(self, body: bytes, signature: str | None) -> WebhookOutcome:
        parsed = parse_events(body, signature, self.settings.channel_secret())
        outcome = WebhookOutcome(
            events=len(parsed.events) + len(parsed.skipped), skipped=list(parsed.skipped)
        )
        mapped: list[Mapped] = []
        for event, raw in parsed.events:
            user_id = line_user_of(event, raw)
            if user_id is None:
                # Group and room events without a user: nobody to record them on.
                outcome.without_user.append(str(raw.get("type"))[:MAX_LINE_TYPE])
                continue
            item = self._mapped(event, raw, user_id, outcome)
            if item is not None:
                outcome.unparsed += bool(item.message.properties.get("unparsed"))
                mapped.append(item)
        if not mapped:
            return outcome
        stored_ids = self._ingest(mapped, outcome)
        for item in mapped:
            if item.message.message_id not in stored_ids:
                continue  # a duplicate: its effects, replies included, happened the first time
            if item.message.event == LineEvent.LINKED:
                outcome.links += 1
            elif item.message.event == LineEvent.LINK_FAILED:
                outcome.link_failures += 1
            if item.reply is not None and item.reply_token is not None:
                self._reply(item, outcome)
        return outcome

    def _mapped(
        self, event: Any, raw: dict[str, Any], user_id: str, outcome: WebhookOutcome
    ) -> Mapped | None:
        """The event as CEMS stores it, or None (skipped and counted) when a value the SDK accepted
        cannot be stored: a timestamp out of datetime's range, an id longer than CEMS keeps, text
        that is not Unicode, an event larger than any stored event may be."""
        where = f"event {raw.get('webhookEventId')!s:.40}"
        try:
            item = map_event(event, raw, user_id, None)
            # Raises (a ValueError) on a lone surrogate escape, which DynamoDB refuses.
            size = len(item.message.model_dump_json(by_alias=True).encode("utf-8"))
        except (ValueError, TypeError, AttributeError, OverflowError, OSError) as exc:
            # pydantic's ValidationError is a ValueError; its message holds the values, so only the
            # fields it names are kept.
            outcome.skipped.append(f"{where}: {_problem(exc)}")
            return None
        if size > MAX_MESSAGE_BYTES:  # the limit of every stored event (LINE's own stay far below)
            outcome.skipped.append(f"{where}: larger than {MAX_MESSAGE_BYTES} bytes")
            return None
        if raw.get("type") == "accountLink" and not _is_unknown(event) and event.link.result == "ok":
            # Only now, so an event that cannot be stored never uses up the nonce of its link; the
            # nonce changes nothing but ids CEMS issued itself.
            nonce = self.nonces.consume(event.link.nonce, event.webhook_event_id)
            item = map_event(event, raw, user_id, nonce)
        return item

    def _ingest(self, mapped: list[Mapped], outcome: WebhookOutcome) -> frozenset[str]:
        """Stores the events together; when the ingest pipeline refuses the request for one of them,
        each alone, so the refused one is skipped and the others still stored."""
        try:
            result = self.ingestor.ingest(LINE_SOURCE, [m.message for m in mapped], clock.now())
        except ClientError as error:
            if error.status >= 500 or len(mapped) == 1:
                raise
            stored: set[str] = set()
            for item in mapped:
                try:
                    alone = self.ingestor.ingest(LINE_SOURCE, [item.message], clock.now())
                except ClientError as refused:
                    if refused.status >= 500:
                        raise
                    outcome.skipped.append(f"{item.message.message_id}: refused ({refused.code})")
                    continue
                outcome.stored += alone.stored
                outcome.duplicates += alone.duplicates
                stored |= alone.stored_ids
            return frozenset(stored)
        outcome.stored, outcome.duplicates = result.stored, result.duplicates
        return result.stored_ids

    def _reply(self, item: Mapped, outcome: WebhookOutcome) -> None:
        assert item.message.line_user_id is not None and item.reply is not None
        assert item.reply_token is not None  # handle() replies only to events that carry one
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
                page_url = link_page_url(self.settings, api.issue_link_token(item.message.line_user_id))
            except Exception as exc:  # the reply still goes, without the button
                outcome.reply_failures.append(f"link_token: {_failure(exc)}")
        try:
            api.reply(item.reply_token, messages_for(reply, page_url))
        except Exception as exc:  # LINE down or the reply token expired: the event stays stored
            outcome.reply_failures.append(f"{reply.value}: {_failure(exc)}")
            return
        outcome.replies.append(reply.value)

    def _is_linked(self, line_user_id: str) -> bool:
        """Whether this LINE user's customer is known on the site (an anonymous id or user id)."""
        customer_id = self.customers.customer_for(IdentityKey(IdentityKind.LINE, line_user_id))
        profile = self.customers.profile(customer_id) if customer_id else None
        return profile is not None and bool(profile.anonymous_ids or profile.user_id)


def _problem(exc: Exception) -> str:
    """Why an event could not be mapped, in words safe to log."""
    if hasattr(exc, "errors") and callable(exc.errors):
        try:
            return "; ".join(
                ".".join(str(part) for part in e["loc"]) + f" {e['type']}" for e in exc.errors()[:5]
            )[:300]
        except (TypeError, KeyError):
            pass
    return type(exc).__name__


def _failure(exc: Exception) -> str:
    """A failure in words safe to log: the exception type and HTTP status, never its message (the
    SDK's messages can hold the request, with the user id and token)."""
    status = getattr(exc, "status", None)
    return f"{type(exc).__name__}" + (f" {status}" if status else "")

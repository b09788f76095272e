"""What the tag reports about an on-site message (POST /v1/web/events): shown, clicked, dismissed.

Every report carries the signed token the fetch answered with (cems.web.tokens), so it names the
inbox item, the report cell and the expiry; nothing else in the body is believed. A forged,
malformed or expired token is refused and nothing is stored. Then:

- `shown` (the message entered the viewport): the web channel's impression, counted `sent` once per
  dispatch (ReportCounters `once=`), the first impression written on the inbox item, and
  "Web Message Shown" stored once per dispatch;
- `clicked` (a button; the tag navigates itself): counted `clicked` once per dispatch and
  "Web Message Clicked" stored once per dispatch, with the button's index;
- `dismissed`: `dismissed_at` set on the inbox item (a conditional update: the first dismissal wins,
  and the fetch never answers the item again) and "Web Message Dismissed" stored once per dispatch.

Events are stored through cems.ingest under the site id `engage`, as clicks and opens are, so a
site's write key cannot forge them (cems.scenario.conditions.RESERVED_EVENT_SOURCES) and goals,
waits and branches can use them. Message ids are derived from the dispatch, so a repeated report
stores and counts nothing again. A test (preview) token answers the same and records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from cems.engagement import EngagementEvent
from cems.engagement.engage import ENGAGE_SOURCE, LIBRARY, identity_of, message_id, report_cell
from cems.engagement.tokens import BAD_SIGNATURE, InvalidToken
from cems.errors import ClientError
from cems.ingest import Ingestor
from cems.jsonbody import load_object
from cems.models import Channel, MessageType, SegmentMessage
from cems.ports import CounterPort, CustomerReader, WebInbox
from cems.reports.counters import Metric
from cems.web.inbox import InboxOwner
from cems.web.tokens import MAX_WEB_TOKEN_LENGTH, WebToken, WebTokenSigner
from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_EVENT_BODY = 4096


class WebEventKind(StrEnum):
    SHOWN = "shown"
    CLICKED = "clicked"
    DISMISSED = "dismissed"


EVENT_NAMES = {
    WebEventKind.SHOWN: EngagementEvent.WEB_SHOWN,
    WebEventKind.CLICKED: EngagementEvent.WEB_CLICKED,
    WebEventKind.DISMISSED: EngagementEvent.WEB_DISMISSED,
}


class WebEventRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    token: str = Field(min_length=1, max_length=MAX_WEB_TOKEN_LENGTH)
    kind: WebEventKind
    # Which button was clicked (0 or 1), for `clicked` only; anything else is ignored.
    button: int | None = Field(default=None, ge=0, le=1)


def read_web_event(body: bytes) -> WebEventRequest:
    """The report in `body` (JSON, sent as text/plain by sendBeacon), or a 400 naming the field."""
    if len(body) > MAX_EVENT_BODY:
        raise ClientError(
            413, "body_too_large", f"at most {MAX_EVENT_BODY} bytes", field="body", limit=MAX_EVENT_BODY
        )
    document = load_object(body, max_depth=2)
    try:
        return WebEventRequest.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "body"
        raise ClientError(
            400,
            "invalid_field",
            f"{field}: {first['msg']} (kind is shown, clicked or dismissed)",
            field=field,
        ) from None


def refused(error: InvalidToken) -> ClientError:
    """A refused token as an answer: 403 for a bad signature or an expired message (the token is
    well formed but not honoured), 400 for one that is no token at all."""
    status = 403 if error.code in (BAD_SIGNATURE[0], "expired_token") else 400
    return ClientError(status, error.code, error.message, field="token")


@dataclass(frozen=True)
class WebRecorded:
    """What one report did, for the answer, logs and metrics (no ids, no token)."""

    kind: WebEventKind
    stored: bool = False  # a new event was stored
    counted: bool = False  # a report counter moved
    dismissed: bool = False  # this report dismissed the message (the first dismissal)
    test: bool = False
    known: bool = True  # the customer exists

    def body(self) -> dict[str, Any]:
        return {
            "success": True,
            "kind": self.kind.value,
            "recorded": self.stored or self.counted or self.dismissed,
        }


class WebEvents:
    def __init__(
        self,
        signer: WebTokenSigner,
        ingestor: Ingestor,
        customers: CustomerReader,
        counters: CounterPort,
        inbox: WebInbox,
    ) -> None:
        self.signer = signer
        self.ingestor = ingestor
        self.customers = customers
        self.counters = counters
        self.inbox = inbox

    def record(self, request: WebEventRequest, now: datetime) -> WebRecorded:
        """Apply one report. Raises ClientError (400/403, field `token`) for a token CEMS did not
        sign or whose message has expired: nothing is stored then."""
        try:
            token = self.signer.verify(request.token, now)
        except InvalidToken as error:
            raise refused(error) from None
        kind = request.kind
        if token.test:
            return WebRecorded(kind, test=True)
        profile = self.customers.profile(token.owner_id)
        if profile is None or not identity_of(profile):
            return WebRecorded(kind, known=False)  # erased meanwhile: nothing to record it on
        owner = InboxOwner.customer(token.owner_id)
        dismissed = False
        if kind is WebEventKind.DISMISSED:
            # Whatever happens to the event below, the message is hidden for good first.
            dismissed = self.inbox.mark(owner, token.dispatch_key, "dismissed_at", now)
        extra: dict[str, Any] = {}
        if kind is WebEventKind.CLICKED and request.button is not None:
            extra["button"] = request.button
        stored = self._store(
            profile_identity=identity_of(profile), token=token, kind=kind, extra=extra, now=now
        )
        counted = False
        metric = {WebEventKind.SHOWN: Metric.SENT, WebEventKind.CLICKED: Metric.CLICKED}.get(kind)
        cell = report_cell(token.scenario_id, token.version, token.step_id, token.variant, Channel.WEB)
        if metric is not None and cell is not None:
            # Counted whether or not the event was new: `once` makes a repeat count nothing, and an
            # attempt that stored the event but failed before counting is completed by the next.
            counted = self.counters.add(cell, metric, once=f"web{kind.value}#{token.dispatch_key}")
        if kind is WebEventKind.SHOWN and (counted or stored):
            # The first impression, on the item (the console's export shows it); only when this
            # report was the first, so a page that shows the message on every view costs no write.
            self.inbox.mark(owner, token.dispatch_key, "shown_at", now)
        return WebRecorded(kind, stored=stored, counted=counted, dismissed=dismissed)

    def _store(
        self,
        *,
        profile_identity: dict[str, str],
        token: WebToken,
        kind: WebEventKind,
        extra: dict[str, Any],
        now: datetime,
    ) -> bool:
        message = SegmentMessage.model_validate(
            {
                "type": MessageType.TRACK,
                # Once per dispatch and kind: a repeat is the same fact for goals and branches.
                "messageId": message_id(f"web{kind.value}", token.dispatch_key),
                "event": EVENT_NAMES[kind].value,
                **profile_identity,
                "timestamp": now,
                "properties": {
                    "channel": Channel.WEB.value,
                    "dispatch_key": token.dispatch_key,
                    "scenario_id": token.scenario_id,
                    "version": token.version,
                    "step_id": token.step_id,
                    "variant": token.variant,
                    **extra,
                },
                "context": {"library": LIBRARY},
            }
        )
        return self.ingestor.ingest(ENGAGE_SOURCE, [message], now).stored > 0

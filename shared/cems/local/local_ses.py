"""Email on the local stack: the mail moto's SES accepted, and SES's feedback played on demand.

moto keeps sent mail in its server process (read here through the route cems.local.moto_server
adds) and publishes no SES events, so the local stack plays them: `POST /_local/ses/<kind>` with
`{"to": "<address>"}` builds the event SES would publish for the latest mail to that address
(Bounce, Complaint or Delivery, in SES's event publishing format, tags included) and delivers it to
the function subscribed to the SES events topic, wrapped in an SNS record as Lambda receives it.

Routes:
  GET  /_local/email            a page of the mail sent (subject, headers, text; newest first)
  GET  /_local/email/messages   the same as JSON (raw MIME included)
  POST /_local/ses/bounce       {"to": address, "type": "Permanent"|"Transient"}
  POST /_local/ses/complaint    {"to": address}
  POST /_local/ses/delivery     {"to": address}

The mail's tags are rebuilt from its unsubscribe link, whose signed token names the dispatch (moto
does not keep the tags SendEmail was given).
"""

from __future__ import annotations

import html
import json
import re
import urllib.request
from collections.abc import Callable
from email import message_from_string
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import TYPE_CHECKING, Any, Literal

from cems import clock
from cems.engagement.config import EngagementSettings
from cems.engagement.ses_events import email_tags, simulated_ses_event, sns_envelope
from cems.engagement.tokens import InvalidToken, TokenKind, TokenSigner
from cems.local.http import LocalRequest, LocalResponse, LocalRoute
from cems.local.moto_server import SENT_MAIL_PATH
from cems.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_sesv2.type_defs import MessageTagTypeDef

FeedbackKind = Literal["Bounce", "Complaint", "Delivery"]
FEEDBACK_KINDS: dict[str, FeedbackKind] = {
    "bounce": "Bounce",
    "complaint": "Complaint",
    "delivery": "Delivery",
}
_UNSUBSCRIBE_TOKEN = re.compile(r"/u/([A-Za-z0-9_.\-]+)")


class LocalSes:
    def __init__(self, aws_url: str, deliver: Callable[[dict[str, Any]], Any]) -> None:
        self.aws_url = aws_url
        self.deliver = deliver  # invokes the SES events topic's subscriber with an SNS event

    def routes(self) -> list[LocalRoute]:
        return [
            LocalRoute("GET", r"/_local/email/?", self._page),
            LocalRoute("GET", r"/_local/email/messages", self._messages),
            LocalRoute("POST", r"/_local/ses/(?P<kind>bounce|complaint|delivery)", self._feedback),
        ]

    # --- sent mail -----------------------------------------------------------------------------------

    def sent(self) -> list[dict[str, Any]]:
        """Every mail SES accepted, oldest first, with its headers and parts decoded."""
        url = f"{self.aws_url}{SENT_MAIL_PATH}"
        with urllib.request.urlopen(url, timeout=10) as answer:  # noqa: S310 - the local moto server
            raw_mails: list[dict[str, Any]] = json.load(answer)
        return [_decoded(mail) for mail in raw_mails]

    def _messages(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        return LocalResponse.json(200, {"mails": self.sent()})

    def _page(self, request: LocalRequest, _: dict[str, str]) -> LocalResponse:
        rows = []
        for mail in reversed(self.sent()):
            headers = "".join(
                f"<div><b>{html.escape(name)}:</b> {html.escape(str(mail.get(key) or ''))}</div>"
                for name, key in (
                    ("To", "to"),
                    ("From", "from"),
                    ("List-Unsubscribe", "list_unsubscribe"),
                    ("List-Unsubscribe-Post", "list_unsubscribe_post"),
                )
            )
            rows.append(
                f"<article><h2>{html.escape(mail.get('subject') or '')}</h2>{headers}"
                f"<pre>{html.escape(mail.get('text') or '')}</pre></article>"
            )
        page = (
            "<!doctype html><html lang=ja><meta charset=utf-8><title>送信メール / Sent email</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:auto}article{border:1px solid #ccc;"
            "margin:1em 0;padding:.5em 1em}pre{white-space:pre-wrap}</style>"
            f"<h1>送信メール / Sent email ({len(rows)})</h1>"
            '<p>JSON: <a href="/_local/email/messages">/_local/email/messages</a> · '
            'LINE: <a href="/_local/line">/_local/line</a></p>' + "".join(rows) + "</html>"
        )
        return LocalResponse(200, page.encode("utf-8"), {"Content-Type": "text/html; charset=utf-8"})

    # --- feedback ------------------------------------------------------------------------------------

    def _feedback(self, request: LocalRequest, params: dict[str, str]) -> LocalResponse:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("to"), str):
            return LocalResponse.json(
                400, {"error": "invalid_request", "message": 'send {"to": "<address>"}', "field": "to"}
            )
        kind = FEEDBACK_KINDS[params["kind"]]
        bounce_type = str(body.get("type") or "Permanent")
        try:
            event = self.event_for(body["to"], kind, bounce_type)
        except LookupError as exc:
            return LocalResponse.json(404, {"error": "no_mail", "message": str(exc)})
        result = self.deliver(sns_envelope(event))
        return LocalResponse.json(200, {"delivered": kind, "result": result})

    def event_for(self, address: str, kind: FeedbackKind, bounce_type: str = "Permanent") -> dict[str, Any]:
        """SES's event for the latest mail to `address` (LookupError if none was sent)."""
        wanted = address.strip().lower()
        mails = [m for m in self.sent() if wanted in [d.lower() for d in m["destinations"]]]
        if not mails:
            raise LookupError("no mail was sent to that address")
        mail = mails[-1]
        return simulated_ses_event(
            kind,
            message_id=mail["id"],
            address=address,
            tags=self._tags(mail),
            at=clock.now(),
            bounce_type="Transient" if bounce_type == "Transient" else "Permanent",
        )

    def _tags(self, mail: dict[str, Any]) -> list[MessageTagTypeDef]:
        """The CEMS tags SendEmail was given, read back from the mail's signed unsubscribe link."""
        found = _UNSUBSCRIBE_TOKEN.search(mail.get("list_unsubscribe") or "")
        if found is None:
            return []
        settings = Settings.from_environ().area(EngagementSettings)
        try:
            token = TokenSigner(settings.secret).verify(found.group(1), TokenKind.UNSUBSCRIBE)
        except InvalidToken:
            return []
        return email_tags(
            dispatch_key=token.dispatch_key,
            customer_id=token.customer_id,
            scenario_id=token.scenario_id,
            version=token.version,
            step_id=token.step_id,
            variant=token.variant,
            test=token.test,
        )


def _decoded(mail: dict[str, Any]) -> dict[str, Any]:
    # moto adds the raw message's To: address to the destinations SendEmail named (SES does not).
    mail = {**mail, "destinations": list(dict.fromkeys(mail.get("destinations", [])))}
    if "raw" not in mail:
        return {**mail, "to": ", ".join(mail.get("destinations", [])), "text": mail.get("body")}
    message = message_from_string(mail["raw"], policy=default_policy)
    assert isinstance(message, EmailMessage)
    text = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return {
        "id": mail["id"],
        "source": mail["source"],
        "destinations": mail["destinations"],
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "subject": str(message.get("Subject", "")),
        "list_unsubscribe": str(message.get("List-Unsubscribe", "")),
        "list_unsubscribe_post": str(message.get("List-Unsubscribe-Post", "")),
        "test": str(message.get("X-CEMS-Test", "")) == "1",
        "text": text.get_content() if text is not None else None,
        "html": html_part.get_content() if html_part is not None else None,
        "raw": mail["raw"],
    }

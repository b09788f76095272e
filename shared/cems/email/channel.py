"""The email channel's plugin: an address with consent that covers it; mail on EmailSendQueue."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from cems.channels.plugin import ChannelPlugin, LinkTracker, SendContext
from cems.email.dispatch import EmailDispatch
from cems.models import Channel, ChannelState, Profile

if TYPE_CHECKING:
    from cems.scenario.engine import Dispatch
    from cems.scenario.model import SendStep
    from cems.scenario.problems import Path, Problem


class EmailMessage(BaseModel):
    """A send step's email rendered for one customer."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str
    html: str | None = None
    text: str | None = None


def reachable(profile: Profile) -> bool:
    """An `email` trait and an email channel state that is reachable with consent for that address."""
    address = profile.traits.get("email")
    state = profile.channels.get(Channel.EMAIL)
    return isinstance(address, str) and bool(address) and state is not None and state.consents_for(address)


def content_problems(email: Any, path: Path) -> list[Problem]:
    """Each part's Liquid (the HTML part as HTML, escaping)."""
    from cems.scenario.liquid_checks import liquid_problems

    if not isinstance(email, dict):
        return []
    return [
        problem
        for part in ("subject", "html", "text")
        if isinstance(email.get(part), str)
        for problem in liquid_problems(email[part], (*path, part), html=part == "html")
    ]


def content_type() -> Any:
    from cems.email.content import EmailContent

    return EmailContent


def make_reachable(profile: Profile) -> Profile:
    address = profile.traits.get("email") or f"{profile.customer_id}@example.jp"
    state = ChannelState(reachable=True, consent=True, updated_at=profile.first_seen_at, reason="simulation")
    return profile.model_copy(
        update={
            "traits": {**profile.traits, "email": address},
            "channels": {**profile.channels, Channel.EMAIL: state},
        }
    )


def render(step: SendStep, scope: dict[str, Any], send: SendContext) -> EmailMessage:
    """The step's email rendered, all or nothing (RenderError says why)."""
    from cems.templates import render_email

    email = step.content(Channel.EMAIL)
    if email is None:  # the model requires email content for email channels
        raise ValueError(f"step {step.id} has no email content")
    rendered = render_email(email.subject, email.html, email.text, scope)
    return EmailMessage(subject=rendered.subject, html=rendered.html, text=rendered.text)


def email_dispatch(message: EmailMessage, send: SendContext) -> EmailDispatch:
    """The send_email message for a rendered email."""
    return EmailDispatch(
        idempotency_key=send.key,
        customer_id=send.customer_id,
        subject=message.subject,
        html=message.html,
        text=message.text,
        scenario_id=send.scenario_id,
        version=send.version,
        step_id=send.step_id,
        variant=send.variant,
        track_clicks=send.track_clicks,
        track_opens=send.track_opens,
        topic=send.topic,
    )


def queue_body(dispatch: Dispatch, links: LinkTracker | None) -> str:
    # `links` is for channels whose links are rewritten before queueing; send_email rewrites a mail's
    # links itself, when it composes the message.
    return email_dispatch(dispatch.messages[Channel.EMAIL], dispatch.send_context()).to_sqs_body()


def summary(message: EmailMessage) -> str:
    return message.subject


def test_address(value: str) -> str:
    from cems.email.sender import valid_address

    if not valid_address(value):
        raise ValueError("email: needs an address such as staff@shop.example.jp (ASCII only)")
    return value


def test_message(message: EmailMessage, send: SendContext, step: SendStep, address: str) -> EmailDispatch:
    """The rendered mail to the staff member's own address only, marked as a test."""
    fields = email_dispatch(message, send).model_dump()
    return EmailDispatch(**{**fields, "test": True, "to_address": address})


PLUGIN = ChannelPlugin(
    channel=Channel.EMAIL,
    title="email",
    reachable=reachable,
    make_reachable=make_reachable,
    # An unsubscribe is recorded by engage as the channel state; a journey carries on to its other
    # steps (and exits at a send that can no longer reach the customer).
    opt_out_event=None,
    content_label=("`email` の本文", "`email` content"),
    content_type=content_type,
    content_problems=content_problems,
    render=render,
    queue_body=queue_body,
    dispatch_model=EmailDispatch,
    summary=summary,
    test_address=test_address,
    test_address_help="email:<address>",
    test_message=test_message,
    queue="email_send",
    sender="send_email",
    queue_resource="EmailSendQueue",
    label="メール Email",
    preview_fields=("subject", "text", "html"),
    # SES reports each mail's Delivery event; opens come from the tracking pixel: nothing unmeasured.
    imp_definition="SES が受け付けた通数 (SendEmail 成功) / accepted by SES (SendEmail succeeded)",
)

"""The web channel's plugin: on-site messages for customers seen on the site; inbox writes on
WebSendQueue, shown by the tag on the customer's next page view (docs/web.md)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from cems.channels.plugin import ChannelPlugin, LinkTracker, SendContext
from cems.models import Channel, ChannelState, Profile
from cems.web.dispatch import WebDispatch, WebMessage, preview_link

if TYPE_CHECKING:
    from cems.scenario.engine import Dispatch
    from cems.scenario.model import SendStep
    from cems.scenario.problems import Path, Problem

SUMMARY_LENGTH = 80


def reachable(profile: Profile) -> bool:
    """Seen on the site, and not opted out of on-site messages.

    Seen: the profile holds an anonymous id, the random id the tag keeps in the visitor's browser.
    The tag fetches a visitor's messages by that id and by nothing else (a user id is a guessable
    claim), so a customer without one (a LINE friend never seen on the site, a customer known only
    from a server's calls) could never be shown the message. An anonymous visitor qualifies: that is
    what lets an abandoned cart be reminded on the site with no LINE and no email.

    No opt-in is asked: an on-site message is part of the site the visitor is browsing, like any
    banner, not a message sent to them. A refusal counts, though: a web channel state without
    consent (a refusal of on-site messages, or of everything CEMS sends) stops them. The blacklist
    and the holdout are the engine's (a holdout journey sends nothing on any channel)."""
    state = profile.channels.get(Channel.WEB)
    if state is not None and not state.consent:
        return False
    return bool(profile.anonymous_ids)


def make_reachable(profile: Profile) -> Profile:
    anonymous = profile.anonymous_ids or {f"anon-{profile.customer_id}"}
    channels: dict[Channel, ChannelState] = dict(profile.channels)
    if Channel.WEB in channels:
        channels[Channel.WEB] = ChannelState(
            reachable=True, consent=True, updated_at=profile.first_seen_at, reason="simulation"
        )
    return profile.model_copy(update={"anonymous_ids": anonymous, "channels": channels})


def content_type() -> Any:
    from cems.web.content import WebContent

    return WebContent


def content_problems(web: Any, path: Path) -> list[Problem]:
    """Each text's and URL's Liquid (as text: the tag never reads them as HTML)."""
    from cems.scenario.liquid_checks import liquid_problems

    if not isinstance(web, dict):
        return []
    problems: list[Problem] = []
    for name in ("title", "body", "image", "buttons"):
        if name in web:
            problems += liquid_problems(web[name], (*path, name))
    return problems


def render(step: SendStep, scope: dict[str, Any], send: SendContext) -> WebMessage:
    """The step's on-site message rendered and checked again, all or nothing (RenderError, or
    ValidationError when a filled-in value breaks a limit: a text too long, a URL no longer http(s))."""
    from cems.templates import render_strings

    web = step.content(Channel.WEB)
    if web is None:  # the model requires web content for web steps
        raise ValueError(f"step {step.id} has no web content")
    rendered = render_strings(web.template_fields(), scope)
    return WebMessage.model_validate(
        {
            "kind": web.kind,
            "position": web.position,
            "slot": web.slot,
            **{name: value for name, value in rendered.items() if value is not None},
            "pages": web.pages,
            "expires_seconds": int(web.expires.total_seconds()),
        }
    )


def web_dispatch(message: WebMessage, send: SendContext) -> WebDispatch:
    return WebDispatch(
        idempotency_key=send.key,
        customer_id=send.customer_id,
        message=message,
        scenario_id=send.scenario_id,
        version=send.version,
        step_id=send.step_id,
        variant=send.variant,
        track_clicks=send.track_clicks,
    )


def queue_body(dispatch: Dispatch, links: LinkTracker | None) -> str:
    # No link is rewritten: the tag reports a click itself (with the message's signed token) before
    # it follows the button's own URL, so the shop's page never goes through a redirect.
    return web_dispatch(dispatch.messages[Channel.WEB], dispatch.send_context()).to_sqs_body()


def summary(message: WebMessage) -> str:
    text = message.title or message.body or "[image]"
    line = " ".join(text.split())
    return line if len(line) <= SUMMARY_LENGTH else line[: SUMMARY_LENGTH - 1] + "…"


def test_address(value: str) -> str:
    from cems.web.content import checked_url

    try:
        return checked_url(value)
    except ValueError:
        raise ValueError(
            "web: needs the shop page to preview on, an http(s) URL such as https://shop.example.jp/"
        ) from None


def test_message(message: WebMessage, send: SendContext, step: SendStep, address: str) -> WebDispatch:
    """The rendered message for a preview inbox of its own, under a new secret token; the preview
    link (`test_link`) opens `address` with it. No customer's inbox is written."""
    fields = web_dispatch(message, send).model_dump()
    return WebDispatch(
        **{**fields, "test": True, "preview_token": secrets.token_urlsafe(24), "preview_page": address}
    )


def test_link(dispatch: Any) -> str | None:
    return preview_link(dispatch) if isinstance(dispatch, WebDispatch) else None


PLUGIN = ChannelPlugin(
    channel=Channel.WEB,
    title="web",
    reachable=reachable,
    make_reachable=make_reachable,
    # A visitor leaves on-site messages by dismissing them one by one; a refusal of them all is the
    # channel state (`reachable`), not an event.
    opt_out_event=None,
    content_label=("`web` のサイト内メッセージ", "on-site message in `web`"),
    content_type=content_type,
    content_problems=content_problems,
    render=render,
    queue_body=queue_body,
    dispatch_model=WebDispatch,
    summary=summary,
    test_address=test_address,
    test_address_help="web:<shop page URL to preview on>",
    test_message=test_message,
    test_link=test_link,
    queue="web_send",
    sender="send_web",
    queue_resource="WebSendQueue",
    label="サイト内 Web",
    imp_definition=(
        "サイト上で実際に表示された (画面内に入った) 通数 / shown on the site (the message entered the "
        "visitor's viewport), once per dispatch"
    ),
    # An impression is the send on this channel: a message waiting in the inbox has reached nobody
    # yet, and once shown it has been both delivered and seen, so no separate figure exists.
    not_measured={
        figure: (
            f"計測なし / not measured: サイト内メッセージは表示 (IMP) が送信数で、その後の{ja}はない / an "
            f"on-site message counts as sent when shown; there is no separate {en}"
        )
        for figure, ja, en in (("delivered", "到達", "delivery"), ("opened", "開封", "open"))
    },
)

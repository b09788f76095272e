"""The LINE channel's plugin: a linked, following, consenting friend; LINE messages on LineSendQueue."""

from __future__ import annotations

import re
from functools import partial
from typing import TYPE_CHECKING, Any

from cems.channels.plugin import ChannelPlugin, LinkTracker, SendContext
from cems.line.dispatch import LineDispatch, LineMessage, ShortLink
from cems.models import Channel, ChannelState, LineEvent, Profile

if TYPE_CHECKING:
    from cems.scenario.engine import Dispatch
    from cems.scenario.model import SendStep
    from cems.scenario.problems import Path, Problem

_LINE_USER_ID = re.compile(r"U[0-9a-f]{32}")


def reachable(profile: Profile) -> bool:
    return profile.line_contact() is not None


def content_type() -> Any:
    """A list of LINE message objects, each checked by `content_problems`."""
    return list[LineMessage]


def make_reachable(profile: Profile) -> Profile:
    state = ChannelState(reachable=True, consent=True, updated_at=profile.first_seen_at, reason="simulation")
    return profile.model_copy(
        update={
            "line_user_id": profile.line_user_id or f"U{profile.customer_id}",
            "channels": {**profile.channels, Channel.LINE: state},
        }
    )


def content_problems(messages: Any, path: Path) -> list[Problem]:
    # Imported here: the checks load line-bot-sdk's models, which only validation needs.
    from cems.line.content import line_content_problems

    return line_content_problems(messages, path)


def render(step: SendStep, scope: dict[str, Any], send: SendContext) -> LineDispatch:
    """The step's LINE messages rendered and checked, all or nothing (RenderError says why), as the
    dispatch send_line takes."""
    from cems.templates import render_line_messages

    return LineDispatch(
        idempotency_key=send.key,
        recipients=[send.customer_id],
        messages=render_line_messages(step.content(Channel.LINE) or [], scope),
        scenario_id=send.scenario_id,
        version=send.version,
        step_id=send.step_id,
        variant=send.variant,
        notification_disabled=step.notification_disabled,
    )


def queue_body(dispatch: Dispatch, links: LinkTracker | None) -> str:
    """The LINE dispatch for LineSendQueue; with a link tracker, its http(s) links go through the
    click tracker unless the scenario turned click tracking off."""
    from cems.line.links import carried, text_tracker, track_links

    line: LineDispatch = dispatch.messages[Channel.LINE]
    if links is not None and dispatch.track_clicks:
        tracked = partial(links, dispatch)
        made: dict[str, ShortLink] = {}
        in_text = text_tracker(links, dispatch, None, made)
        messages = track_links(line.messages, tracked, in_text)
        personalised = {c: track_links(m, tracked, in_text) for c, m in line.personalised.items()}
        line = line.model_copy(
            update={
                "messages": messages,
                "personalised": personalised,
                # What the sender stores before it calls LINE (the texts' short links).
                "short_links": carried(made, messages, *personalised.values()),
            }
        )
    return line.to_sqs_body()


def summary(line: LineDispatch) -> str:
    """The first message's text (a template's text, else its altText)."""
    first = line.messages[0] if line.messages else {}
    template = first.get("template")
    inner = template.get("text") if isinstance(template, dict) else None
    return str(first.get("text") or inner or first.get("altText") or f"[{first.get('type', '?')}]")


def test_address(value: str) -> str:
    if not _LINE_USER_ID.fullmatch(value):
        raise ValueError("line: needs a LINE user id: U and 32 hex digits (0-9, a-f)")
    return value


def test_message(line: LineDispatch, send: SendContext, step: SendStep, address: str) -> LineDispatch:
    """The rendered dispatch pushed to the staff member's own LINE user id only, marked as a test."""
    return LineDispatch(
        idempotency_key=send.key,
        recipients=line.recipients,
        messages=line.messages,
        scenario_id=send.scenario_id,
        version=send.version,
        step_id=send.step_id,
        test=True,
        test_line_user_id=address,
        notification_disabled=step.notification_disabled,
    )


PLUGIN = ChannelPlugin(
    channel=Channel.LINE,
    title="LINE",
    reachable=reachable,
    make_reachable=make_reachable,
    opt_out_event=LineEvent.UNFOLLOW.value,
    content_label=("`line` の LINE メッセージ", "LINE messages in `line`"),
    content_type=content_type,
    content_problems=content_problems,
    render=render,
    queue_body=queue_body,
    dispatch_model=LineDispatch,
    summary=summary,
    test_address=test_address,
    test_address_help="line:<LINE user id> (U and 32 hex digits)",
    test_message=test_message,
    queue="line_send",
    sender="send_line",
    queue_resource="LineSendQueue",
    label="LINE",
    preview_fields=("messages", "notification_disabled"),
    imp_definition=(
        "LINE の push / multicast API がその受信者宛てに受け付けた通数 / accepted by LINE's push or "
        "multicast API for that recipient"
    ),
    # LINE's Messaging API tells delivery and opens ("unique impressions") only as aggregates (per
    # narrowcast/broadcast request, per custom aggregation unit, per day), never for one recipient or
    # one push, so no counter can hold them.
    not_measured={
        figure: f"計測なし / not measured: LINE は受信者ごとの{ja}を返さない (集計値のみ) / "
        f"LINE reports no per-recipient {en}, only aggregate insight figures"
        for figure, ja, en in (("delivered", "到達", "delivery"), ("opened", "開封", "open"))
    },
)

"""Engagement: signed tracking tokens, the click / open / unsubscribe endpoints and SES events.

The names below are shared with cems.ingest (which lets only `engage` change the email channel)
and the scenario engine (goals, exits and branches name these events); this module imports nothing.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

# Where engagement events come from: the site id on their stored events and de-duplication markers.
# Sites get generated ids (`site_<hex>`), so no site can send as `engage`.
ENGAGE_SOURCE_ID = "engage"


class EngagementEvent(StrEnum):
    """Names of the events `engage` stores (type track, site id `engage`), for scenarios."""

    OPENED = "Email Opened"
    CLICKED = "Link Clicked"
    UNSUBSCRIBED = "Email Unsubscribed"
    BOUNCED = "Email Bounced"  # permanent bounces only; transient ones are only counted
    COMPLAINED = "Email Complained"
    # Double opt-in: the customer pressed the button behind a confirmation mail's link (cems.consent).
    CONSENT_CONFIRMED = "Email Consent Confirmed"
    # The preference centre (cems.topics): the customer left, or came back to, one topic (`topic`).
    TOPIC_LEFT = "Topic Left"
    TOPIC_JOINED = "Topic Joined"
    # On-site messages (cems.web.events): reported by the tag with the message's signed token.
    WEB_SHOWN = "Web Message Shown"  # it entered the viewport: the web channel's impression
    WEB_CLICKED = "Web Message Clicked"
    WEB_DISMISSED = "Web Message Dismissed"


def uses_link_clicks(scenario: Any) -> bool:
    """Whether anything in the scenario (its trigger, goal, a wait, a branch or exit condition) names
    the link-click event, or its exit counts responses (any event): then its LINE links must say who
    clicked, and its LINE dispatches are not
    shared. A walk of the whole scenario, so no condition kind is missed; remembered per scenario
    object, since the engine asks at every send."""
    known = _USES_CLICKS.get(id(scenario))
    if known is not None and known[0] is scenario:
        return known[1]
    # `exit.no_response_after_sends` takes any event after a send as a response, a click included.
    no_response = getattr(getattr(scenario, "exit", None), "no_response_after_sends", None)
    answer = no_response is not None or _names_click(scenario)
    if len(_USES_CLICKS) >= _REMEMBERED:
        _USES_CLICKS.clear()
    # The scenario is kept with its answer, so its id cannot name another object meanwhile.
    _USES_CLICKS[id(scenario)] = (scenario, answer)
    return answer


_REMEMBERED = 64
_USES_CLICKS: dict[int, tuple[Any, bool]] = {}


def _names_click(value: Any) -> bool:
    if isinstance(value, str):
        return False
    if isinstance(value, dict):
        return any(_names_click(v) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(_names_click(v) for v in value)
    fields = getattr(type(value), "model_fields", None)
    if fields is None:
        return False
    if getattr(value, "event", None) == EngagementEvent.CLICKED.value:
        return True
    return any(_names_click(getattr(value, name, None)) for name in fields)

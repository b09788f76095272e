"""The audience/channel check, on a scenario's JSON: an audience that lets in customers none of the
scenario's send channels can reach is accepted with a warning (they enrol, then leave at their first
send as unreachable, counted suppressed: probably not what was meant).

An audience assures reach when it requires `reachable` on one of the channels the scenario sends on:
`{"kind": "reachable", "channel": "email"}` for an email scenario, either of two such conditions
under `any` for a `line_or_email` one, one of them among the conditions of `all`. `reachable` on
`any` channel assures it only for a scenario that sends on every channel (a customer reachable on
the site alone is not reachable by mail). Triggers whose customers reach a channel by triggering
(a LINE follow) assure that channel (cems.channels.registry.TRIGGER_CHANNELS).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from cems.channels.registry import BEST, SEND_OPTIONS, TRIGGER_CHANNELS, plugins
from cems.scenario.condition_models import ANY_CHANNEL
from cems.scenario.problems import Problem, bilingual


def reach_warnings(document: dict[str, Any]) -> list[Problem]:
    """A warning at `audience` (or at `trigger` when there is none) when the audience does not
    require that the customer be reachable on one of the scenario's send channels."""
    channels = _send_channels(document.get("steps"))
    if not channels:
        return []  # sends nothing (or its steps are malformed: the field checks say so)
    trigger = document.get("trigger")
    trigger_type = trigger.get("type") if isinstance(trigger, dict) else None
    if isinstance(trigger_type, str) and set(TRIGGER_CHANNELS.get(trigger_type, ())) & channels:
        return []
    audience = document.get("audience")
    if audience is not None and _assures(audience, channels):
        return []
    names = " / ".join(sorted(channels))
    hint = " / ".join(f'{{"kind": "reachable", "channel": "{c}"}}' for c in sorted(channels))
    where = "audience" if audience is not None else "trigger"
    return [
        Problem(
            (where,),
            bilingual(
                f"対象者に、このシナリオの送信チャネル（{names}）のどれにも届かない顧客が含まれます。"
                f"その顧客は最初の送信で離脱します。対象者に {hint} を入れてください",
                f"the audience lets in customers none of this scenario's channels ({names}) can reach: "
                f"they leave at their first send. Require one of {hint} in the audience",
            ),
            "audience_unreachable",
        )
    ]


def _send_channels(steps: Any) -> set[str]:
    out: set[str] = set()
    for step in steps if isinstance(steps, list) else []:
        if not isinstance(step, dict) or step.get("type") != "send":
            continue
        channel = step.get("channel")
        if channel == BEST:
            out.update(p.channel.value for p in plugins() if step.get(p.channel.value) not in (None, []))
        elif isinstance(channel, str) and channel in SEND_OPTIONS:
            out.update(c.value for c in SEND_OPTIONS[channel])
        elif isinstance(channel, list):
            out.update(c for c in channel if isinstance(c, str))
    return out


def _assures(condition: Any, channels: Collection[str]) -> bool:
    """Whether every customer `condition` admits is reachable on one of `channels`."""
    if not isinstance(condition, dict):
        return True  # malformed: the field checks report it; no second message about it
    kind = condition.get("kind")
    if kind == "reachable":
        wanted = condition.get("channel")
        if wanted == ANY_CHANNEL:
            return all(p.channel.value in channels for p in plugins())
        return wanted in channels
    parts = condition.get("conditions")
    if kind == "all" and isinstance(parts, list):
        return any(_assures(c, channels) for c in parts)
    if kind == "any" and isinstance(parts, list):
        return bool(parts) and all(_assures(c, channels) for c in parts)
    return False

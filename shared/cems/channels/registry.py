"""The channel registry: every channel's plugin, and what a send step's `channel` option means.

The engine, caps, conditions, scenario checks, test sends and wiring ask here; only each channel's
own package (cems.line, cems.email) knows its rules. A new channel is a package with its plugin, a
member of `cems.models.Channel` and one entry in `_PLUGINS` here (the whole list of its files:
docs/architecture.md, "Adding a channel").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cems.channels.plugin import ChannelPlugin
from cems.email.channel import PLUGIN as EMAIL
from cems.line.channel import PLUGIN as LINE
from cems.models import Channel, Profile
from cems.web.channel import PLUGIN as WEB

# In the order a step that offers several channels prefers them.
_PLUGINS: tuple[ChannelPlugin, ...] = (LINE, EMAIL, WEB)
_BY_CHANNEL: Mapping[Channel, ChannelPlugin] = {p.channel: p for p in _PLUGINS}

# A send step's `channel`: one channel, or a preference (the first reachable one is sent to and the
# reachable ones after it are its fallbacks). `line_or_email` is the scenario files' own word for it.
# The web channel is in no preference: a fallback is for a customer the first channel cannot reach,
# and an on-site message is no stand-in for a message sent to someone (it waits for a visit, and
# reaches anonymous visitors no other channel can); a step that wants both has a step for each.
SEND_OPTIONS: Mapping[str, tuple[Channel, ...]] = {
    **{p.channel.value: (p.channel,) for p in _PLUGINS},
    "line_or_email": (LINE.channel, EMAIL.channel),
}


# Triggers whose customers are reachable on a channel by the way they trigger: a LINE follow, and a
# survey answer (a postback in the LINE chat). The audience check (cems.scenario.reach) takes them
# as assuring that channel.
TRIGGER_CHANNELS: Mapping[str, tuple[Channel, ...]] = {
    "line_follow": (LINE.channel,),
    "survey_answer": (LINE.channel,),
}

# A send step's `channel` may also be a list of channels in the step's own order of preference (sent
# like a preference above), or `best`: the channel chosen per customer from where they engage
# (cems.scenario.engagement). `best` may choose any channel the step has content for.
BEST = "best"


def plugins() -> tuple[ChannelPlugin, ...]:
    """Every registered channel's plugin, in order of preference."""
    return _PLUGINS


def plugin(channel: Channel | str) -> ChannelPlugin:
    """The plugin of `channel` (ValueError for a name that is no channel)."""
    return _BY_CHANNEL[Channel(channel)]


def channels_of(option: str | Sequence[str]) -> tuple[Channel, ...]:
    """The channels a send step's `channel` option may send on, in order of preference: a named
    option, or a list of channels. `best` may send on any channel here; a step's own content narrows
    it (`SendStep.channels()`), so callers that hold the step ask it instead."""
    if isinstance(option, str):
        if option == BEST:
            return tuple(p.channel for p in _PLUGINS)
        return SEND_OPTIONS[option]
    return tuple(Channel(c) for c in option)


def option_text(option: str | Sequence[str]) -> str:
    """A send step's `channel` option as one word for logs and reasons: `line`, `line,email`, `best`."""
    return option if isinstance(option, str) else ",".join(option)


def route(option: str | Sequence[Channel | str], profile: Profile) -> tuple[Channel, ...]:
    """Where a send with this option goes for this customer now: the reachable channels of the
    option in order (the first is sent to, the rest are its fallbacks); empty when none reaches."""
    channels = channels_of(option) if isinstance(option, str) else tuple(Channel(c) for c in option)
    return tuple(c for c in channels if plugin(c).reachable(profile))

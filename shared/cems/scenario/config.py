"""Scenario engine settings: the sharded due index, the broadcast fan-out and the global frequency
caps. Read from the environment by `cems.settings` (the one place that reads it).
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from typing import Any

from pydantic import Field, model_validator

from cems.settings import AtLeastOne, SettingsArea, variables

# Also the stores' own defaults (cems.adapters.dynamodb.journeys, cems.scenario.broadcast).
DEFAULT_DUE_SHARDS = 16
DEFAULT_BROADCAST_SEGMENTS = 16  # a starter given no table size (tests, tools)
# A broadcast's fan-out sized to CustomersTable (issue 11): one segment per this many items of the
# table (DescribeTable's ItemCount, which counts identities and other items beside profiles, so a
# segment holds fewer customers than this: more parallel, never less), at least 1, at most the max.
DEFAULT_SEGMENT_CUSTOMERS = 10_000
DEFAULT_MAX_SEGMENTS = 1_000
PERIODS = ("day", "week")
# Where the caps' variables are gathered (a name no variable has): errors name it, then the variable.
CAP_VARIABLES = "CEMS_CAP_<CHANNEL>_PER_<DAY|WEEK>"


class EngineSettings(SettingsArea):
    """The scenario engine: the due index, broadcast fan-out and the global frequency caps."""

    model_config = variables(
        due_shards="CEMS_DUE_SHARDS",
        broadcast_segments="CEMS_BROADCAST_SEGMENTS",
        broadcast_segment_customers="CEMS_BROADCAST_SEGMENT_CUSTOMERS",
        broadcast_max_segments="CEMS_BROADCAST_MAX_SEGMENTS",
        cap_settings=CAP_VARIABLES,
    )
    # Raise only: an enrolment keeps the shard it was written with, and tick reads shards 0..N-1.
    due_shards: AtLeastOne = DEFAULT_DUE_SHARDS
    # Set: every run has exactly this many segments. Unset: sized to the table (the two below).
    broadcast_segments: AtLeastOne | None = None
    broadcast_segment_customers: AtLeastOne = DEFAULT_SEGMENT_CUSTOMERS
    broadcast_max_segments: AtLeastOne = DEFAULT_MAX_SEGMENTS
    # Sends per customer per Tokyo day / ISO week across all scenarios, by variable name
    # (`cap_variable`), one pair per registered channel; unset keeps the default of
    # cems.scenario.model.ChannelCap (the one place those defaults are written).
    cap_settings: dict[str, AtLeastOne] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _caps_of_every_channel(cls, values: Any) -> Any:
        """Gathers CEMS_CAP_<CHANNEL>_PER_<DAY|WEEK> of each registered channel: the registry says
        which channels there are, so a new channel's caps need no new field here."""
        if not isinstance(values, dict) or "cap_settings" in values:
            return values
        names = {cap_variable(channel, period) for channel in _channel_names() for period in PERIODS}
        return {**values, CAP_VARIABLES: {name: values[name] for name in names if name in values}}

    def caps(self) -> dict[str, dict[str, int]]:
        """The caps set, by channel and period (`per_day`, `per_week`); an unset one is left out."""
        caps: dict[str, dict[str, int]] = {}
        for channel in _channel_names():
            for period in PERIODS:
                value = self.cap_settings.get(cap_variable(channel, period))
                if value is not None:
                    caps.setdefault(channel, {})[f"per_{period}"] = value
        return caps


def cap_variable(channel: str, period: str) -> str:
    """`CEMS_CAP_LINE_PER_DAY`, ...: the variable of one channel's cap for one period."""
    return f"CEMS_CAP_{channel.upper()}_PER_{period.upper()}"


def _channel_names() -> list[str]:
    # Imported here: the registry loads each channel's plugin, which only the engine's functions need.
    from cems.channels.registry import plugins

    return [p.channel.value for p in plugins()]

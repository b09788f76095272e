"""Scenario engine settings: the sharded due index, the broadcast fan-out, the global frequency
caps (per channel and in total) and the quiet hours. Read from the environment by `cems.settings`
(the one place that reads it).
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from cems.settings import AtLeastOne, SettingsArea, variables

if TYPE_CHECKING:
    from cems.scenario.model import QuietHours

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
# The total cap's name among the caps: CEMS_CAP_TOTAL_PER_DAY|WEEK (cems.scenario.caps.TOTAL's value;
# not imported, so reading settings loads no rule module).
TOTAL_CAP = "total"
# No quiet hours unless the deployment sets them: a deployment that predates them keeps sending when
# its scenarios' own windows say (a scenario without one: 09:00-21:00).
NO_QUIET_HOURS = "none"


class EngineSettings(SettingsArea):
    """The scenario engine: the due index, broadcast fan-out and the global frequency caps."""

    model_config = variables(
        due_shards="CEMS_DUE_SHARDS",
        broadcast_segments="CEMS_BROADCAST_SEGMENTS",
        broadcast_segment_customers="CEMS_BROADCAST_SEGMENT_CUSTOMERS",
        broadcast_max_segments="CEMS_BROADCAST_MAX_SEGMENTS",
        cap_settings=CAP_VARIABLES,
        quiet_hours="CEMS_QUIET_HOURS",
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
    # "HH:MM-HH:MM" in Asia/Tokyo, every day (across midnight when the end is earlier: "21:00-09:00"),
    # or "none". No scenario sends in them; a scenario's send_window only narrows what they leave.
    quiet_hours: str = NO_QUIET_HOURS

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        # Checked by the one parser the engine's value comes from, so a bad value stops the function
        # at init naming CEMS_QUIET_HOURS (imported here: only the engine's functions ask for this area).
        from cems.scenario.model import QuietHours

        quiet = QuietHours.parse(value)
        return NO_QUIET_HOURS if quiet is None else str(quiet)

    @model_validator(mode="before")
    @classmethod
    def _caps_of_every_channel(cls, values: Any) -> Any:
        """Gathers CEMS_CAP_<CHANNEL>_PER_<DAY|WEEK> of each registered channel: the registry says
        which channels there are, so a new channel's caps need no new field here."""
        if not isinstance(values, dict) or "cap_settings" in values:
            return values
        scopes = [*_channel_names(), TOTAL_CAP]
        names = {cap_variable(channel, period) for channel in scopes for period in PERIODS}
        return {**values, CAP_VARIABLES: {name: values[name] for name in names if name in values}}

    def caps(self) -> dict[str, dict[str, int | None]]:
        """The caps set, by channel and period (`per_day`, `per_week`); an unset one is left out. The
        total's (`total`), when either is set, names both: an unset period of it limits nothing (a
        channel's unset period keeps ChannelCap's default instead)."""
        caps: dict[str, dict[str, int | None]] = {}
        for channel in _channel_names():
            for period in PERIODS:
                value = self.cap_settings.get(cap_variable(channel, period))
                if value is not None:
                    caps.setdefault(channel, {})[f"per_{period}"] = value
        total = {
            f"per_{period}": self.cap_settings.get(cap_variable(TOTAL_CAP, period)) for period in PERIODS
        }
        if any(value is not None for value in total.values()):
            caps[TOTAL_CAP] = total
        return caps

    def quiet(self) -> "QuietHours | None":
        """The quiet hours as the engine takes them (None: none set)."""
        from cems.scenario.model import QuietHours

        return QuietHours.parse(self.quiet_hours)


def cap_variable(channel: str, period: str) -> str:
    """`CEMS_CAP_LINE_PER_DAY`, ...: the variable of one channel's cap for one period."""
    return f"CEMS_CAP_{channel.upper()}_PER_{period.upper()}"


def _channel_names() -> list[str]:
    # Imported here: the registry loads each channel's plugin, which only the engine's functions need.
    from cems.channels.registry import plugins

    return [p.channel.value for p in plugins()]

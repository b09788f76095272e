"""Scenario engine settings: the sharded due index, the broadcast fan-out and the global frequency
caps. Read from the environment by `cems.settings` (the one place that reads it).
"""

# No `from __future__ import annotations`: pydantic would compile each annotation (see cems.settings).
from cems.settings import AtLeastOne, SettingsArea, variables

# Also the stores' own defaults (cems.adapters.dynamodb.journeys, cems.scenario.broadcast).
DEFAULT_DUE_SHARDS = 16
DEFAULT_BROADCAST_SEGMENTS = 16


class EngineSettings(SettingsArea):
    """The scenario engine: the due index, broadcast fan-out and the global frequency caps."""

    model_config = variables(
        due_shards="CEMS_DUE_SHARDS",
        broadcast_segments="CEMS_BROADCAST_SEGMENTS",
        line_cap_per_day="CEMS_CAP_LINE_PER_DAY",
        line_cap_per_week="CEMS_CAP_LINE_PER_WEEK",
        email_cap_per_day="CEMS_CAP_EMAIL_PER_DAY",
        email_cap_per_week="CEMS_CAP_EMAIL_PER_WEEK",
    )
    # Raise only: an enrolment keeps the shard it was written with, and tick reads shards 0..N-1.
    due_shards: AtLeastOne = DEFAULT_DUE_SHARDS
    broadcast_segments: AtLeastOne = DEFAULT_BROADCAST_SEGMENTS
    # Sends per customer per Tokyo day / ISO week across all scenarios; unset keeps the default of
    # cems.scenario.model.ChannelCap (the one place those defaults are written).
    line_cap_per_day: AtLeastOne | None = None
    line_cap_per_week: AtLeastOne | None = None
    email_cap_per_day: AtLeastOne | None = None
    email_cap_per_week: AtLeastOne | None = None

    def caps(self) -> dict[str, dict[str, int]]:
        """The caps set, by channel and period (`per_day`, `per_week`); an unset one is left out."""
        caps: dict[str, dict[str, int]] = {}
        for channel in ("line", "email"):
            for period in ("day", "week"):
                value = getattr(self, f"{channel}_cap_per_{period}")
                if value is not None:
                    caps.setdefault(channel, {})[f"per_{period}"] = value
        return caps

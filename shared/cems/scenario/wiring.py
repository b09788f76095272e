"""Builds the ScenarioRunner the `trigger` and `tick` functions share, from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cems.config import Settings
from cems.line.config import LineSettings
from cems.line.rich_menu import LineRichMenus
from cems.scenario import engine
from cems.scenario.model import ChannelCap, FrequencyCaps
from cems.scenario.runner import QueueDispatchSink, ScenarioRunner
from cems.scenario.store import CapStore, EnrolmentStore, JourneySettings, ScenarioStore
from cems.store import Stores

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient

# Environment variable -> (channel, period); unset or empty keeps FrequencyCaps' default.
CAP_VARIABLES = {
    "CEMS_CAP_LINE_PER_DAY": ("line", "per_day"),
    "CEMS_CAP_LINE_PER_WEEK": ("line", "per_week"),
    "CEMS_CAP_EMAIL_PER_DAY": ("email", "per_day"),
    "CEMS_CAP_EMAIL_PER_WEEK": ("email", "per_week"),
}


def caps_from_env(env: Mapping[str, str] | None = None) -> FrequencyCaps:
    """The global frequency caps: CEMS_CAP_{LINE,EMAIL}_PER_{DAY,WEEK}, each a whole number >= 1
    (sends per customer per Tokyo day / ISO week, across all scenarios). A bad value stops the
    function at start rather than sending under a cap nobody set."""
    env = os.environ if env is None else env
    defaults = FrequencyCaps()
    limits: dict[str, dict[str, int | None]] = {
        "line": defaults.line.model_dump(),
        "email": defaults.email.model_dump(),
    }
    for variable, (channel, period) in CAP_VARIABLES.items():
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{variable} must be a whole number >= 1, not {raw!r}") from None
        if value < 1:
            raise ValueError(f"{variable} must be a whole number >= 1, not {raw!r}")
        limits[channel][period] = value
    return FrequencyCaps(line=ChannelCap(**limits["line"]), email=ChannelCap(**limits["email"]))


def runner_from_env(dynamodb: DynamoDBClient, sqs: SQSClient) -> ScenarioRunner:
    """JOURNEYS_TABLE, CEMS_DUE_SHARDS, CUSTOMERS_TABLE, EVENTS_TABLE, LINE_SEND_QUEUE_URL, the caps
    (CEMS_CAP_*) and LINE's API settings (rich menus; the token is read on first use)."""
    journeys = JourneySettings.from_env()
    stores = Stores.from_clients(dynamodb, Settings.from_env())
    return ScenarioRunner(
        ScenarioStore(journeys.table, dynamodb),
        EnrolmentStore(journeys.table, dynamodb, journeys.due_shards, model=engine.Enrolment),
        CapStore(journeys.table, dynamodb),
        stores.customers,
        stores.events,
        QueueDispatchSink(sqs, os.environ.get("LINE_SEND_QUEUE_URL", "")),
        limits=caps_from_env(),
        rich_menus=LineRichMenus(LineSettings.from_env()),
    )

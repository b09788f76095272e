"""Builds the ScenarioRunner the `trigger`, `tick` and `broadcast` functions share (and the broadcast
starter and worker), from the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cems import clock
from cems.config import Settings
from cems.consent import ConfirmationMarkers, ConsentConfirmations
from cems.engagement.config import EngagementSettings
from cems.engagement.tokens import TokenKind, TokenSigner, TrackingToken, click_url, tracking_expiry
from cems.line.config import LineSettings
from cems.line.rich_menu import LineRichMenus
from cems.reports.counters import ReportCounters
from cems.scenario import engine
from cems.scenario.broadcast import BroadcastStarter, BroadcastStore, BroadcastWorker, segments_from_env
from cems.scenario.model import ChannelCap, FrequencyCaps
from cems.scenario.runner import LinkTracker, QueueDispatchSink, ScenarioRunner
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


def line_link_tracker_from_env() -> LinkTracker:
    """Click-tracker URLs for the links of LINE dispatches (ENGAGE_BASE_URL or its SSM parameter,
    and the tracking secret; both read on the first link, not at init)."""
    settings = EngagementSettings.from_env()
    signer = TokenSigner(settings.secret)

    def tracked(dispatch: engine.Dispatch, url: str) -> str:
        token = TrackingToken(
            kind=TokenKind.CLICK,
            dispatch_key=dispatch.key,
            customer_id=dispatch.customer_id,
            channel="line",
            scenario_id=dispatch.scenario_id,
            version=dispatch.version,
            step_id=dispatch.step_id,
            variant=dispatch.variant,
            url=url,
            expires_at=tracking_expiry(clock.now()),
        )
        return click_url(settings.base_url, signer, token)

    return tracked


def runner_from_env(dynamodb: DynamoDBClient, sqs: SQSClient) -> ScenarioRunner:
    """JOURNEYS_TABLE, CEMS_DUE_SHARDS, CUSTOMERS_TABLE, EVENTS_TABLE, LINE_SEND_QUEUE_URL,
    EMAIL_SEND_QUEUE_URL, the caps (CEMS_CAP_*), LINE's API settings (rich menus; the token is read on
    first use) and the engagement settings (click tracking of LINE links)."""
    journeys = JourneySettings.from_env()
    stores = Stores.from_clients(dynamodb, Settings.from_env())
    return ScenarioRunner(
        ScenarioStore(journeys.table, dynamodb),
        EnrolmentStore(journeys.table, dynamodb, journeys.due_shards, model=engine.Enrolment),
        CapStore(journeys.table, dynamodb),
        stores.customers,
        stores.events,
        QueueDispatchSink(
            sqs,
            os.environ.get("LINE_SEND_QUEUE_URL", ""),
            os.environ.get("EMAIL_SEND_QUEUE_URL", ""),
            links=line_link_tracker_from_env(),
        ),
        limits=caps_from_env(),
        rich_menus=LineRichMenus(LineSettings.from_env()),
        counters=ReportCounters(journeys.table, dynamodb),
    )


def consent_confirmations_from_env(dynamodb: DynamoDBClient, sqs: SQSClient) -> ConsentConfirmations:
    """CUSTOMERS_TABLE, EMAIL_SEND_QUEUE_URL and EMAIL_FROM_NAME (the shop's name in the subject)."""
    settings = Settings.from_env()
    return ConsentConfirmations(
        Stores.from_clients(dynamodb, settings).customers,
        ConfirmationMarkers(settings.customers_table, dynamodb),
        sqs,
        os.environ.get("EMAIL_SEND_QUEUE_URL", ""),
        shop_name=os.environ.get("EMAIL_FROM_NAME") or None,
    )


def broadcast_starter_from_env(dynamodb: DynamoDBClient, sqs: SQSClient) -> BroadcastStarter:
    """JOURNEYS_TABLE, BROADCAST_QUEUE_URL and CEMS_BROADCAST_SEGMENTS (default 16)."""
    journeys = JourneySettings.from_env()
    return BroadcastStarter(
        ScenarioStore(journeys.table, dynamodb),
        BroadcastStore(journeys.table, dynamodb),
        sqs,
        os.environ.get("BROADCAST_QUEUE_URL", ""),
        segments_from_env(),
    )


def broadcast_worker_from_env(dynamodb: DynamoDBClient, sqs: SQSClient) -> BroadcastWorker:
    """The runner (runner_from_env), JOURNEYS_TABLE, CUSTOMERS_TABLE and BROADCAST_QUEUE_URL."""
    return BroadcastWorker(
        runner_from_env(dynamodb, sqs),
        BroadcastStore(JourneySettings.from_env().table, dynamodb),
        Settings.from_env().customers_table,
        sqs,
        os.environ.get("BROADCAST_QUEUE_URL", ""),
    )

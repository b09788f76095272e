"""Builds the ScenarioRunner the `trigger` and `tick` functions share, from the environment."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from cems.config import Settings
from cems.scenario import engine
from cems.scenario.runner import QueueDispatchSink, ScenarioRunner
from cems.scenario.store import CapStore, EnrolmentStore, JourneySettings, ScenarioStore
from cems.store import Stores

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sqs import SQSClient


def runner_from_env(dynamodb: DynamoDBClient, sqs: SQSClient) -> ScenarioRunner:
    """JOURNEYS_TABLE, CEMS_DUE_SHARDS, CUSTOMERS_TABLE, EVENTS_TABLE and LINE_SEND_QUEUE_URL."""
    journeys = JourneySettings.from_env()
    stores = Stores.from_clients(dynamodb, Settings.from_env())
    return ScenarioRunner(
        ScenarioStore(journeys.table, dynamodb),
        EnrolmentStore(journeys.table, dynamodb, journeys.due_shards, model=engine.Enrolment),
        CapStore(journeys.table, dynamodb),
        stores.customers,
        stores.events,
        QueueDispatchSink(sqs, os.environ.get("LINE_SEND_QUEUE_URL", "")),
    )

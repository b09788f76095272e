"""tick: every minute, starts the broadcast runs whose time has come (cems.scenario.broadcast: segment
messages on BroadcastQueue), enqueues again a broadcast run or date-trigger backfill whose messages
were not all enqueued, and advances the enrolments the sharded due index lists as due now
(cems.scenario.runner.ScenarioRunner.tick; each one re-read before its conditional write)."""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems.adapters import aws
from cems.logs import function_logger
from cems.scenario.wiring import broadcast_starter_from_env, runner_from_env

logger = function_logger()
metrics = Metrics()
_sqs = boto3.client("sqs", config=aws.CLIENT_CONFIG)
runner = runner_from_env(aws.dynamodb(), _sqs)
broadcasts = broadcast_starter_from_env(aws.dynamodb(), _sqs)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = runner.tick()
    # After the due work, so a broadcast that cannot start (its queue failing) holds up no journey.
    started = broadcasts.start_due()
    if started.started or started.restarted:
        logger.info("broadcasts started", extra=vars(started))
    metrics.add_metric("ScenarioDue", MetricUnit.Count, report.due)
    metrics.add_metric("ScenarioDispatches", MetricUnit.Count, report.dispatched)
    metrics.add_metric("ScenarioWriteConflicts", MetricUnit.Count, report.conflicts)
    metrics.add_metric("ScenarioTraitsSet", MetricUnit.Count, report.traits_set)
    metrics.add_metric("ScenarioTraitFailures", MetricUnit.Count, report.trait_failures)
    metrics.add_metric("ScenarioRichMenusLinked", MetricUnit.Count, report.rich_menus_linked)
    metrics.add_metric("ScenarioRichMenuFailures", MetricUnit.Count, report.rich_menu_failures)
    # Counts only: never a customer's contact, a LINE user id or message content.
    logger.info("tick", extra=report.log_fields())
    return {"due": report.due, "changed": report.changed, "dispatched": report.dispatched}

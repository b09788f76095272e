"""tick: every minute, starts the broadcast runs whose time has come (cems.scenario.broadcast: segment
messages on BroadcastQueue), enqueues again a broadcast run or date-trigger backfill whose messages
were not all enqueued, and advances the enrolments the sharded due index lists as due now
(cems.scenario.runner.ScenarioRunner.tick; each one re-read before its conditional write)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.logs import function_logger

logger = function_logger()
metrics = Metrics()
runner, broadcasts = wiring.tick()
upkeep = wiring.scenario_upkeep()
# Whether this execution environment has written the stopped markers its store lacked (once is enough:
# markers are written on stop since issue 11; this adopts scenarios stopped before).
_upkept = False


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _upkept
    if not _upkept:
        marked = upkeep.mark_stopped_before_markers()
        _upkept = True
        if marked:
            logger.info("stopped markers written", extra={"scenarios": marked})
    report = runner.tick()
    # After the due work, so a broadcast that cannot start (its queue failing) holds up no journey.
    started = broadcasts.start_due()
    if started.started or started.restarted:
        logger.info("broadcasts started", extra=vars(started))
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    # Counts only: never a customer's contact, a LINE user id or message content.
    logger.info("tick", extra=report.log_fields())
    return {"due": report.due, "changed": report.changed, "dispatched": report.dispatched}

"""scenario_loader: S3 notifications for `scenarios/` in ScenarioBucket.

An uploaded `scenarios/<id>.json` that is valid becomes the scenario's next, active version; an
invalid one is refused with a report under `reports/` and the previous version stays live; a deleted
one stops new enrolments. A newly active date-trigger version (new, or its trigger changed) starts a
backfill of the customers who already have the date: segment messages on BroadcastQueue, worked by
the broadcast function. The rules are in cems.scenario.loader; docs/scenario-engine.md has the design.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import S3Event, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.logs import function_logger
from cems.scenario.loader import LoadResult, ObjectEvent

logger = function_logger()
metrics = Metrics()

loader = wiring.scenario_loader()

_METRICS = {
    "activated": "ScenarioVersionsActivated",
    "rejected": "ScenarioFilesRejected",
    "stopped": "ScenariosStopped",
}
# Duplicates, unchanged content, stale events, folder markers, objects changed before they were read.
SKIPPED = "ScenarioEventsSkipped"


def _emit(result: LoadResult) -> None:
    # Keys, ids, versions and error paths/codes only: never the file's content.
    metrics.add_metric(_METRICS.get(result.outcome, SKIPPED), MetricUnit.Count, 1)
    if result.backfill in ("started", "pending"):
        metrics.add_metric("DateBackfillsStarted", MetricUnit.Count, 1)
    log = logger.warning if result.outcome == "rejected" else logger.info
    log(
        "scenario file",
        extra={
            "key": result.key,
            "scenario_id": result.scenario_id,
            "outcome": result.outcome,
            "version": result.version,
            "report": result.report_key,
            "backfill": result.backfill,
            "errors": [f"{e.path}: {e.code}" for e in result.errors[:20]],
        },
    )


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=S3Event)
def lambda_handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    results = [loader.handle(ObjectEvent.from_record(record)) for record in event.records]
    for result in results:
        _emit(result)
    return {"results": [{"key": r.key, "outcome": r.outcome, "version": r.version} for r in results]}

"""ses_events: SES events (bounces, complaints, deliveries) from the configuration set's SNS topic.

A permanent bounce or a complaint suppresses the address; events are stored through the ingest
pipeline (scenarios can use them) and deliveries counted in reports. Which records are dropped and
which make Lambda retry the invocation are cems.engagement.ses_batch's rules; what each event does is
cems.engagement.engage's. Email addresses are never logged.
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start: init builds many long-lived objects and next to no garbage (see functions/collect).
gc.disable()

import os

# Pydantic looks for plugins in every installed distribution's entry points when it builds the first
# model (a few ms of cold start); this function uses none. An explicit setting still wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes import SNSEvent, event_source
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.engagement.ses_batch import SesBatchReport, apply_ses_events
from cems.logs import function_logger

logger = function_logger()
metrics = Metrics()
engagement = wiring.ses_events()


def _log(report: SesBatchReport) -> None:
    # Types and counts only: never an address.
    for errors in report.unreadable:
        logger.warning("not an SES event", extra={"errors": errors})
    for event_type, error in report.failures:
        logger.error("SES event failed", extra={"event_type": event_type}, exc_info=error)
    for outcome in report.outcomes:
        logger.info(
            "ses event",
            extra={
                "event_type": outcome.event_type,
                "bounce_type": outcome.bounce_type,
                "suppressed": outcome.suppressed,
                "stored": outcome.stored,
                "counted": outcome.counted,
                "tagged": outcome.tagged,
                "test": outcome.test,
            },
        )


@logger.inject_lambda_context
@metrics.log_metrics
@event_source(data_class=SNSEvent)
def lambda_handler(event: SNSEvent, context: LambdaContext) -> dict[str, Any]:
    report = apply_ses_events((record.sns.message for record in event.records), engagement)
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    _log(report)
    report.raise_for_failures()
    return {"records": report.records}


# Init is done: its objects live as long as the execution environment, so collections can skip them.
gc.freeze()
gc.enable()

"""trigger: the EventsTable stream (INSERTs only, filtered by the event source mapping).

Each new event goes to the scenario engine (cems.scenario.runner.ScenarioRunner.on_stored_event):
goals, awaited events and opt-outs of the customer's journeys, enrolment in the scenarios it
triggers, and the steps due now. A record that fails is reported as a batch item failure and comes
back; every write is conditional and every send keyed, so a record seen twice changes nothing more.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.adapters.dynamodb.customers import stored_event_from_image
from cems.consent import outcome_metrics
from cems.logs import function_logger
from cems.scenario.runner import RunReport

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
runner, consent = wiring.trigger()
_total = RunReport()
_confirmations: Counter[str] = Counter()


def handle(record: DynamoDBRecord) -> None:
    if record.raw_event.get("eventName") != "INSERT":
        return
    image = record.raw_event.get("dynamodb", {}).get("NewImage")
    if not image:
        return
    event = stored_event_from_image(image)
    # Double opt-in first: a request for email consent gets its confirmation mail (cems.consent).
    _confirmations[consent.on_stored_event(event).value] += 1
    _total.add(runner.on_stored_event(event))


def _emit(report: RunReport) -> None:
    # Counts only: never a customer's contact, a LINE user id or message content.
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    for name, value in outcome_metrics(_confirmations).items():
        metrics.add_metric(name, MetricUnit.Count, value)
    logger.info("trigger batch", extra={**report.log_fields(), "consent": dict(_confirmations)})


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _total, _confirmations
    _total = RunReport()
    _confirmations = Counter()
    response = process_partial_response(
        event=event, record_handler=handle, processor=processor, context=context
    )
    _emit(_total)
    return dict(response)

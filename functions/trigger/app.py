"""trigger: the EventsTable stream (INSERTs only, filtered by the event source mapping).

Each new event goes to the scenario engine (cems.scenario.runner.ScenarioRunner.on_stored_event):
goals, awaited events and opt-outs of the customer's journeys, enrolment in the scenarios it
triggers, and the steps due now. An event no scenario in play can use (cems.scenario.relevance: a
page view, most of the time) goes nowhere and costs no request; the rule looks only at the event,
never at its customer, so one stored under a customer id since merged away is judged like any other
(and the runner follows the merge for a relevant one). A record that fails is reported as a batch
item failure and comes back; every write is conditional and every send keyed, so a record seen twice
changes nothing more.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import clock, wiring
from cems.adapters.dynamodb.customers import stored_event_from_image
from cems.consent import outcome_metrics
from cems.logs import function_logger
from cems.scenario.runner import RunReport

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
runner, consent, in_play = wiring.trigger()
_total = RunReport()
_confirmations: Counter[str] = Counter()
_skipped = 0


def handle(record: DynamoDBRecord) -> None:
    if record.raw_event.get("eventName") != "INSERT":
        return
    image = record.raw_event.get("dynamodb", {}).get("NewImage")
    if not image:
        return
    global _skipped
    event = stored_event_from_image(image)
    # Double opt-in first: a request for email consent gets its confirmation mail (cems.consent; an
    # event that asks nothing costs no request there).
    _confirmations[consent.on_stored_event(event).value] += 1
    now = clock.now()
    # The rule follows the runner's summaries (read once a minute): an upload the runner sees is
    # never filtered out by an older rule.
    if not in_play.current(now, runner.summaries(now)).uses(event):
        _skipped += 1
        return
    _total.add(runner.on_stored_event(event, now))


def _emit(report: RunReport) -> None:
    # Counts only: never a customer's contact, a LINE user id or message content.
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    for name, value in outcome_metrics(_confirmations).items():
        metrics.add_metric(name, MetricUnit.Count, value)
    metrics.add_metric("ScenarioEventsSkipped", MetricUnit.Count, _skipped)
    logger.info(
        "trigger batch",
        extra={**report.log_fields(), "consent": dict(_confirmations), "skipped": _skipped},
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _total, _confirmations, _skipped
    _total = RunReport()
    _confirmations = Counter()
    _skipped = 0
    response = process_partial_response(
        event=event, record_handler=handle, processor=processor, context=context
    )
    _emit(_total)
    return dict(response)

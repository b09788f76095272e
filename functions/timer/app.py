"""timer: advances one due journey (or date entry) per TimerQueue message, at its second
(cems.scenario.runner.ScenarioRunner.on_timer; timers started by tick's look-ahead and by the runner
when it writes a journey due soon, cems.scenario.timers).

Each message is one timer: the item it names is re-read consistently and advanced through its
conditional write only if it is still due at the timer's moment, so a duplicate timer or one racing
the tick changes nothing twice. A timer that came early is sent again for the rest of its wait; one
that cannot be handled is reported as a batch item failure and comes back (after five receives, the
dead-letter queue; the tick advances its journey meanwhile)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import clock, wiring
from cems.logs import function_logger
from cems.scenario.runner import RunReport
from cems.scenario.timers import Timer, TimerOutcome, lateness_ms

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
runner = wiring.timer()
# What this invocation's timers did, logged once at its end: counts and lateness only, no ids.
_outcomes: dict[TimerOutcome, int] = {}
_lateness: list[float] = []
_report = RunReport()


def record_handler(record: SQSRecord) -> None:
    timer = Timer.from_body(record.body)
    now = clock.now()
    outcome, report = runner.on_timer(timer, now)
    _outcomes[outcome] = _outcomes.get(outcome, 0) + 1
    _report.add(report)
    if outcome == "fired":
        late = lateness_ms(timer, now)
        _lateness.append(late)
        metrics.add_metric("TimerLateness", MetricUnit.Milliseconds, late)


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _report
    _outcomes.clear()
    _lateness.clear()
    _report = RunReport()
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    for outcome, count in _outcomes.items():
        metrics.add_metric(f"Timers{outcome.capitalize()}", MetricUnit.Count, count)
    for name, value in _report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    # Counts and lateness only: never a customer's contact, a LINE user id or message content.
    logger.info(
        "timers",
        extra={
            "outcomes": dict(_outcomes),
            "lateness_ms_max": round(max(_lateness), 1) if _lateness else None,
            **_report.log_fields(),
        },
    )
    return dict(response)

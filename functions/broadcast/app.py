"""broadcast: one segment of a broadcast run per BroadcastQueue message (cems.scenario.broadcast).

Each message names a run and a segment of the CustomersTable parallel Scan; the worker enrols the
segment's audience page by page through the runner (or, for a date trigger's `backfill` run,
schedules each profile's pending entry), records its progress after each page (a redelivered message
resumes there) and hands the rest of the segment to a new message when its share of this
invocation's time runs low. An invocation takes several messages (the template's BatchSize): they
run one after another, each free to use the time left less RECORD_FLOOR_MS kept for every message
after it (time one leaves unused goes to the next), so every message gets at least a page and its
hand-on. A failed message is reported as a batch item failure and redelivered."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.logs import function_logger
from cems.scenario.broadcast import SegmentMessage

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
worker = wiring.broadcast()
_context: LambdaContext | None = None
# Kept for each message of the batch not yet started: more than the worker's MIN_REMAINING_MS, so a
# later message can read a page (and hand on the rest) before the invocation times out.
RECORD_FLOOR_MS = 30_000
_later = 0  # messages of this invocation's batch after the one running


def _remaining_ms() -> int:
    left = _context.get_remaining_time_in_millis() if _context is not None else 60_000
    return left - _later * RECORD_FLOOR_MS


def record_handler(record: SQSRecord) -> None:
    global _later
    _later = max(0, _later - 1)
    message = SegmentMessage.model_validate_json(record.body)
    report = worker.run_segment(message, _remaining_ms)
    run = report.run
    for name, value in report.metrics(message.kind).items():
        metrics.add_metric(name, MetricUnit.Count, value)
    # Counts only: never a customer's contact, a LINE user id or message content.
    logger.info(
        "broadcast segment",
        extra={
            "scenario_id": message.scenario_id,
            "run": message.run,
            "kind": message.kind,
            "segment": message.segment,
            "outcome": report.outcome,
            "pages": report.pages,
            "profiles": report.profiles,
            **({} if run is None else run.log_fields()),
        },
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _context, _later
    _context = context
    _later = len(event.get("Records", []))
    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)

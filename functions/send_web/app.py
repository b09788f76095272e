"""send_web: web dispatches from WebSendQueue, each written once into the visitor's on-site inbox.

Each SQS record is one dispatch (cems.web.dispatch.WebDispatch) for one customer (or a test send's
preview). A dispatch whose claim another worker holds, or whose write failed, is made visible again
after a short wait and reported as a batch item failure; the rest of the batch is deleted. The rules
are in cems.web.sender; docs/web.md describes the message, the inbox and the outcomes.
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start, as in send_email: init builds long-lived objects and little garbage, so the cyclic
# collector is off for init and what init built is frozen out of its way at the end of this module.
gc.disable()

from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems import wiring
from cems.adapters.sqs import RemainingTime
from cems.logs import function_logger
from cems.web.sender import WebReport

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
remaining_ms = RemainingTime()
sender, retry = wiring.send_web(logger)


def send(record: SQSRecord) -> None:
    retry.run(record, sender.handle, _emit, remaining_ms)


def _emit(report: WebReport, receive_count: int) -> None:
    # Counts, statuses and keys only: never content, a preview token or an anonymous id.
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    if report.invalid:
        logger.error("invalid web dispatch dropped", extra={"errors": report.failure_reasons})
        return
    log = logger.warning if report.retry_after else logger.info
    log(
        "web dispatch",
        extra={
            "idempotency_key": report.idempotency_key,
            "receive_count": receive_count,
            "test": report.test,
            "status": report.status.value if report.status else None,
            "already_done": report.already_done,
            "skip_reason": report.skip_reason,
            "failures": report.failure_reasons,
            "retry_after": report.retry_after,
        },
    )


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    remaining_ms.context = context
    response = process_partial_response(
        event=event, record_handler=send, processor=processor, context=context
    )
    return dict(response)


# Init is done: its objects live as long as the execution environment.
gc.freeze()
gc.enable()

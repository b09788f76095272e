"""send_email: email dispatches from EmailSendQueue, each mailed at most once through SES v2.

Each SQS record is one dispatch (cems.email.dispatch.EmailDispatch) for one customer. A dispatch
SES throttled is made visible again after its backoff with ChangeMessageVisibility and reported as
a batch item failure; the rest of the batch is deleted. The rules are in cems.email.sender;
docs/email.md describes the message, the mail and its outcomes.
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start, as in send_line: init builds long-lived objects and little garbage, so the cyclic
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
from cems.email.sender import EmailReport
from cems.logs import function_logger

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
remaining_ms = RemainingTime()
sender, retry = wiring.send_email(logger)


def send(record: SQSRecord) -> None:
    retry.run(record, sender.handle, _emit, remaining_ms)


def _emit(report: EmailReport, receive_count: int) -> None:
    # Counts, statuses, keys and SES error codes only: never an address, a token or content.
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    if report.invalid:
        logger.error("invalid email dispatch dropped", extra={"errors": report.failure_reasons})
        return
    log = logger.warning if (report.failed or report.unknown or report.retry_after) else logger.info
    log(
        "email dispatch",
        extra={
            "idempotency_key": report.idempotency_key,
            "receive_count": receive_count,
            "test": report.test,
            "status": report.status.value if report.status else None,
            "already_done": report.already_done,
            "skip_reason": report.skip_reason,
            "error_code": report.error_code,
            "ses_message_id": report.ses_message_id,
            "api_calls": report.api_calls,
            "links_tracked": report.links_tracked,
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

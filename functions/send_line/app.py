"""send_line: LINE dispatches from LineSendQueue, each recipient's message sent at most once.

Each SQS record is one dispatch (cems.line.dispatch.LineDispatch). A dispatch that must be tried
again (429, 5xx, time-out, LINE's monthly limit) is made visible again after its backoff with
ChangeMessageVisibility and reported as a batch item failure; the rest of the batch is deleted.
The rules are in cems.line.sender; docs/line-dispatch.md describes the message and its outcomes.
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start, as in collect: init builds many long-lived objects (the SDK's models and clients) and
# little garbage, so the cyclic collector is off for init and the objects
# init built are frozen out of its way at the end of this module.
gc.disable()

from typing import TYPE_CHECKING, Any

from cems import lazy_packages

# Powertools' data_classes package imports every event class it has in its __init__; this function
# (through the batch utility) uses two or three: only those load (cems.lazy_packages), before the
# Powertools imports below.
lazy_packages.install(lazy_packages.POWERTOOLS)

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from cems import wiring
from cems.adapters.sqs import RemainingTime
from cems.line.sender import DispatchReport
from cems.logs import function_logger

if TYPE_CHECKING:  # an annotation only: not loaded at init
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
remaining_ms = RemainingTime()
sender, retry = wiring.send_line(logger)


def send(record: SQSRecord) -> None:
    retry.run(record, sender.handle, _emit, remaining_ms)


def _emit(report: DispatchReport, receive_count: int) -> None:
    # Counts, statuses and LINE's (scrubbed) error text only: never a LINE user id, token or content.
    for name, value in report.metrics().items():
        metrics.add_metric(name, MetricUnit.Count, value)
    if report.invalid:
        logger.error("invalid LINE dispatch dropped", extra={"errors": report.failure_reasons})
        return
    log = logger.warning if (report.failed or report.retry_after or report.content_mismatch) else logger.info
    log(
        "line dispatch",
        extra={
            "idempotency_key": report.idempotency_key,
            "receive_count": receive_count,
            "test": report.test,
            "plan_created": report.plan_created,
            "api_calls": report.api_calls,
            "sent": report.sent,
            "failed": report.failed,
            "deferred": report.deferred,
            "skipped_unreachable": report.skipped_unreachable,
            "skipped_no_consent": report.skipped_no_consent,
            "already_done": report.already_done,
            "retries": report.retries,
            "retry_after": report.retry_after,
            "monthly_limit": report.monthly_limit_hits > 0,
            "content_mismatch": report.content_mismatch,
            "reasons": report.failure_reasons[:5],
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

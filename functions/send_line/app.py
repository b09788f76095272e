"""send_line: LINE dispatches from LineSendQueue, each recipient's message sent at most once.

Each SQS record is one dispatch (cems.line.dispatch.LineDispatch). A dispatch that must be tried
again (429, 5xx, time-out, LINE's monthly limit) is made visible again after its backoff with
ChangeMessageVisibility and reported as a batch item failure; the rest of the batch is deleted.
The rules are in cems.line.sender; docs/line-dispatch.md describes the message and its outcomes.
"""

from __future__ import annotations

# ruff: noqa: E402 - the collector is paused before the imports below (see gc.disable).
import gc

# Cold start, as in collect: init builds many long-lived objects (pydantic v1 validators of the SDK's
# MessagingApi above all) and little garbage, so the cyclic collector is off for init and the objects
# init built are frozen out of its way at the end of this module.
gc.disable()

import os
from datetime import timedelta
from typing import Any

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from cems.adapters import aws
from cems.adapters.dynamodb.customers import CustomerStore
from cems.config import Settings
from cems.line.api import load_client_modules, messaging_api
from cems.line.config import LineSettings
from cems.line.deliveries import DeliveryStore
from cems.line.sender import RETRY_BASE_SECONDS, DispatchReport, LineGateway, LineSender
from cems.logs import function_logger
from cems.reports.counters import ReportCounters
from cems.sqs_retry import QueueRetry, RemainingTime

logger = function_logger()
metrics = Metrics()
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
remaining_ms = RemainingTime()

settings = Settings.from_env()
line_settings = LineSettings.from_env()
load_client_modules()
retry = QueueRetry(os.environ.get("LINE_SEND_QUEUE_URL", ""), logger)
sender = LineSender(
    CustomerStore(settings.customers_table, aws.dynamodb()),
    DeliveryStore(
        os.environ.get("DELIVERIES_TABLE", "DeliveriesTable"),
        aws.dynamodb(),
        timedelta(days=int(os.environ.get("CEMS_DELIVERY_RETENTION_DAYS", "395"))),
    ),
    # The channel access token is read on the first send, not at init (SSM costs a round trip).
    LineGateway(lambda: messaging_api(line_settings)),
    retry_base_seconds=float(os.environ.get("CEMS_LINE_RETRY_BASE_SECONDS", RETRY_BASE_SECONDS)),
    counters=ReportCounters(os.environ.get("JOURNEYS_TABLE", "JourneysTable"), aws.dynamodb()),
)


def send(record: SQSRecord) -> None:
    retry.run(record, sender.handle, _emit, remaining_ms)


def _emit(report: DispatchReport, receive_count: int) -> None:
    # Counts, statuses and LINE's (scrubbed) error text only: never a LINE user id, token or content.
    if report.invalid:
        metrics.add_metric("LineDispatchesInvalid", MetricUnit.Count, 1)
        logger.error("invalid LINE dispatch dropped", extra={"errors": report.failure_reasons})
        return
    prefix = "LineTest" if report.test else "Line"
    for name, value in (
        ("RecipientsSent", report.sent),
        ("RecipientsFailed", report.failed),
        ("RecipientsDeferred", report.deferred),
        ("RecipientsSkippedUnreachable", report.skipped_unreachable),
        ("RecipientsSkippedNoConsent", report.skipped_no_consent),
        ("ApiCalls", report.api_calls),
        ("ApiRetries", report.retries),
    ):
        metrics.add_metric(prefix + name, MetricUnit.Count, value)
    if report.monthly_limit_hits:
        metrics.add_metric("LineMonthlyLimitReached", MetricUnit.Count, report.monthly_limit_hits)
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

"""SQS adapters: a queue to send to, the timer queue (timers delayed until their due time), and for the
SQS-fed senders (send_line, send_email) a record that must be tried again later.

Lambda's SQS integration retries a batch item failure after the queue's visibility time-out; a
sender that knows better (LINE's Retry-After, SES throttling backoff, a monthly limit) sets the
record's visibility itself first, then reports the failure. The SQS client is built only when a
record must wait, which most invocations never need (building it is most of its cost).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, Protocol, TypeVar

from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.exceptions import BotoCoreError, ClientError

from cems import clock
from cems.adapters import aws
from cems.ports import ServiceUnavailable

if TYPE_CHECKING:
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from mypy_boto3_sqs import SQSClient

    from cems.scenario.timers import Timer


# SendMessageBatch takes at most ten messages.
SQS_BATCH = 10


class Retryable(Protocol):
    @property
    def retry_after(self) -> int | None: ...


Report = TypeVar("Report", bound=Retryable)


class RetryLater(Exception):
    """The record comes back after its visibility time-out (a batch item failure)."""


class QueueRetry:
    def __init__(self, queue_url: str, logger: Logger) -> None:
        self.queue_url = queue_url
        self.logger = logger
        self._sqs: SQSClient | None = None

    def _client(self) -> SQSClient:
        if self._sqs is None:
            self._sqs = aws.client("sqs")
        return self._sqs

    def run(
        self,
        record: SQSRecord,
        handle: Callable[[str, int, Callable[[], int]], Report],
        emit: Callable[[Report, int], None],
        remaining_ms: Callable[[], int],
    ) -> None:
        """One record through a sender's `handle(body, receive count, remaining ms)`; its report
        emitted; made to come back after `retry_after` seconds when the report asks for it."""
        receive_count = int(record.attributes.approximate_receive_count or 1)
        report = handle(record.body, receive_count, remaining_ms)
        emit(report, receive_count)
        if report.retry_after is not None:
            self.later(record, report.retry_after)

    def later(self, record: SQSRecord, seconds: int) -> NoReturn:
        try:
            self._client().change_message_visibility(
                QueueUrl=self.queue_url, ReceiptHandle=record.receipt_handle, VisibilityTimeout=seconds
            )
        except Exception:
            # It still comes back, after the queue's own visibility time-out.
            self.logger.exception(
                "could not set the dispatch's visibility", extra={"message_id": record.message_id}
            )
        raise RetryLater(f"dispatch comes back in {seconds} s")


class RemainingTime:
    """Milliseconds left in the current invocation (60 s when called outside one, e.g. in tests)."""

    def __init__(self) -> None:
        self.context: LambdaContext | None = None

    def __call__(self) -> int:
        if self.context is None:
            return 60_000
        remaining: int = self.context.get_remaining_time_in_millis()
        return remaining


class SqsQueue:
    """One SQS queue (ports.MessageQueue), sent to in batches of ten."""

    def __init__(self, sqs: SQSClient, queue_url: str, setting: str = "the queue URL") -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.setting = setting  # named when the URL is missing

    def send(self, bodies: Sequence[str]) -> None:
        if not self.queue_url:
            raise ValueError(f"{self.setting} is not set")
        for start in range(0, len(bodies), SQS_BATCH):
            chunk = bodies[start : start + SQS_BATCH]
            try:
                answer = self.sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(i), "MessageBody": body} for i, body in enumerate(chunk)],
                )
            except (BotoCoreError, ClientError) as exc:
                raise ServiceUnavailable(f"messages not enqueued: {type(exc).__name__}") from exc
            if answer.get("Failed"):
                raise ServiceUnavailable(f"{len(answer['Failed'])} messages not enqueued")


class SqsTimerQueue:
    """The timer queue (ports.TimerQueue): each timer a message delayed until its due time, sent ten
    to a SendMessageBatch. The delay is taken from the clock when each batch goes out, so time spent
    before sending (a long look-ahead) makes no timer late."""

    def __init__(self, sqs: SQSClient, queue_url: str) -> None:
        if not queue_url:
            raise ValueError("TIMER_QUEUE_URL is not set")
        self.sqs = sqs
        self.queue_url = queue_url

    def start(self, timers: Sequence[Timer]) -> None:
        for begin in range(0, len(timers), SQS_BATCH):
            chunk = timers[begin : begin + SQS_BATCH]
            now = clock.now()
            try:
                answer = self.sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {"Id": str(i), "MessageBody": timer.body(), "DelaySeconds": timer.delay_seconds(now)}
                        for i, timer in enumerate(chunk)
                    ],
                )
            except (BotoCoreError, ClientError) as exc:
                raise ServiceUnavailable(f"timers not enqueued: {type(exc).__name__}") from exc
            if answer.get("Failed"):
                raise ServiceUnavailable(f"{len(answer['Failed'])} timers not enqueued")

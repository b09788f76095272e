"""Pollers that stand in for Lambda's event sources: schedules, DynamoDB streams, SQS and S3.

They are built from the functions' `Events` in the template, so a function a later issue adds with a
`Schedule`, `DynamoDB`, `SQS` or `S3` event runs locally with no change here. Each poller hands the
function the same event shape Lambda would, honours `BatchSize`, `FilterCriteria` and
`ReportBatchItemFailures`, and can be run to idle on demand (`drain`), which tests and the local
clock use to play time forward.

Failures are handled as the template declares, as Lambda would: a stream mapping's
`MaximumRetryAttempts`, `MaximumRecordAgeInSeconds`, `BisectBatchOnFunctionError` and `OnFailure`
destination; for asynchronous invocations (S3 notifications, schedules, SNS) the function's
`EventInvokeConfig` retries and `OnFailure` destination. What is given up on goes to the destination
as Lambda's on-failure record, never silently nowhere. Locally, retries follow at once (Lambda waits
between them), and EventBridge's and SNS's own delivery retries and dead-letter queues never apply:
a local invocation is always accepted.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import traceback
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote_plus

from cems import clock
from cems.local.cfn import ACCOUNT_ID, REGION, Template
from cems.local.functions import LocalFunction
from cems.local.resources import local_client

log = logging.getLogger("cems.local")


class Poller(ABC):
    interval_seconds = 0.5

    def __init__(self, function: LocalFunction, event_name: str) -> None:
        self.function = function
        self.event_name = event_name
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        return f"{type(self).__name__.removesuffix('Poller')} -> {self.function.name}"

    @abstractmethod
    def _poll(self) -> int:
        """Delivers what is waiting; returns how many records or ticks were delivered."""

    def poll(self) -> int:
        # A drain from a request thread and the background loop must not deliver the same records.
        with self._lock:
            return self._poll()

    def drain(self, max_rounds: int = 50) -> int:
        """Polls until nothing is left (for tests and the local clock)."""
        total = 0
        for _ in range(max_rounds):
            delivered = self.poll()
            total += delivered
            if delivered == 0:
                break
        return total

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                delivered = self.poll()
            except Exception:
                log.exception("poller %s failed", self.description)
                delivered = 0
            if not delivered:
                stop.wait(self.interval_seconds)


def _batch_failures(result: Any) -> set[str] | None:
    """The item identifiers a handler reported as failed (ReportBatchItemFailures), or None."""
    if isinstance(result, dict) and "batchItemFailures" in result:
        return {str(f["itemIdentifier"]) for f in result["batchItemFailures"] or []}
    return None


def matches_filters(record: dict[str, Any], filter_criteria: dict[str, Any] | None) -> bool:
    """Lambda event filtering: a record passes when any filter's pattern matches it."""
    filters = (filter_criteria or {}).get("Filters") or []
    if not filters:
        return True
    return any(_matches(json.loads(f["Pattern"]), record) for f in filters)


def _matches(pattern: Any, value: Any) -> bool:
    if isinstance(pattern, dict):
        if not isinstance(value, dict):
            return False
        for key, sub in pattern.items():
            if isinstance(sub, list) and any(isinstance(r, dict) and "exists" in r for r in sub):
                if (key in value) != bool(next(r["exists"] for r in sub if isinstance(r, dict))):
                    return False
                continue
            if key not in value or not _matches(sub, value[key]):
                return False
        return True
    if isinstance(pattern, list):
        return any(_matches_rule(rule, value) for rule in pattern)
    return bool(pattern == value)


def _matches_rule(rule: Any, value: Any) -> bool:
    if isinstance(value, list):
        return any(_matches_rule(rule, v) for v in value)
    if not isinstance(rule, dict):
        return bool(rule == value)
    if "prefix" in rule:
        return isinstance(value, str) and value.startswith(rule["prefix"])
    if "suffix" in rule:
        return isinstance(value, str) and value.endswith(rule["suffix"])
    if "anything-but" in rule:
        excluded = rule["anything-but"]
        return value not in (excluded if isinstance(excluded, list) else [excluded])
    if "numeric" in rule:
        return _numeric(rule["numeric"], value)
    raise ValueError(f"filter rule {rule} is not supported by the local stack")


def _numeric(conditions: list[Any], value: Any) -> bool:
    if not isinstance(value, int | float | Decimal) or isinstance(value, bool):
        return False
    checks = {
        "=": lambda a, b: a == b,
        "<": lambda a, b: a < b,
        "<=": lambda a, b: a <= b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
    }
    return all(checks[op](value, bound) for op, bound in zip(conditions[::2], conditions[1::2], strict=True))


# --- failures: on-failure destinations and asynchronous invocation --------------------------------


def _function_arn(function: LocalFunction) -> str:
    return f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function.name}"


class FailureDestination:
    """An `OnFailure` destination: the SQS queue or SNS topic (by ARN) that gets Lambda's on-failure
    record of what a function gave up on. Other destination types fail the stack at start."""

    def __init__(self, arn: str, endpoint_url: str | None) -> None:
        parts = arn.split(":")
        self.service = parts[2] if len(parts) >= 6 else ""
        if self.service not in ("sqs", "sns"):
            raise ValueError(
                f"on-failure destination {arn!r}: the local stack supports SQS queues and SNS topics"
            )
        self.arn = arn
        self.client = local_client(self.service, endpoint_url)
        self._queue_url: str | None = None

    @property
    def name(self) -> str:
        return self.arn.rsplit(":", 1)[1]

    def send(self, record: dict[str, Any]) -> None:
        body = json.dumps(record, default=str, ensure_ascii=False)
        if self.service == "sns":
            self.client.publish(TopicArn=self.arn, Message=body)
            return
        if self._queue_url is None:
            self._queue_url = self.client.get_queue_url(QueueName=self.name)["QueueUrl"]
        self.client.send_message(QueueUrl=self._queue_url, MessageBody=body)


def failure_destination(config: dict[str, Any] | None, endpoint_url: str | None) -> FailureDestination | None:
    """The `DestinationConfig.OnFailure` of a resolved EventInvokeConfig or stream mapping, if any."""
    on_failure = ((config or {}).get("DestinationConfig") or {}).get("OnFailure") or {}
    arn = on_failure.get("Destination")
    return FailureDestination(str(arn), endpoint_url) if arn else None


def _error_payload(error: BaseException) -> dict[str, Any]:
    """An unhandled error as Lambda reports it in responsePayload."""
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "stackTrace": traceback.format_tb(error.__traceback__),
    }


@dataclass(frozen=True)
class AsyncInvokeConfig:
    """A function's EventInvokeConfig; the defaults are Lambda's when the template sets none."""

    maximum_retry_attempts: int = 2
    maximum_event_age_seconds: int = 21600
    on_failure: FailureDestination | None = None

    @classmethod
    def from_template(cls, resolved: dict[str, Any], endpoint_url: str | None) -> AsyncInvokeConfig:
        return cls(
            maximum_retry_attempts=int(resolved.get("MaximumRetryAttempts", cls.maximum_retry_attempts)),
            maximum_event_age_seconds=int(
                resolved.get("MaximumEventAgeInSeconds", cls.maximum_event_age_seconds)
            ),
            on_failure=failure_destination(resolved, endpoint_url),
        )


@dataclass(frozen=True)
class AsyncOutcome:
    succeeded: bool
    attempts: int
    result: Any = None


class AsyncInvoker:
    """Lambda's asynchronous invocation (what S3 notifications, SNS and EventBridge schedules use): a
    failed invocation is retried up to MaximumRetryAttempts times while the event is younger than
    MaximumEventAgeInSeconds; then the on-failure record (the event and the error) goes to the
    destination and the event is done. Without a destination Lambda drops it; that is logged as an error.
    """

    def __init__(
        self,
        function: LocalFunction,
        config: AsyncInvokeConfig,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.function = function
        self.config = config
        self._monotonic = monotonic

    @classmethod
    def for_function(
        cls, function: LocalFunction, template: Template, endpoint_url: str | None
    ) -> AsyncInvoker:
        resolved = template.resolve(function.spec.event_invoke_config)
        return cls(function, AsyncInvokeConfig.from_template(resolved, endpoint_url))

    def invoke(self, event: dict[str, Any]) -> AsyncOutcome:
        started = self._monotonic()
        attempts = 0
        while True:
            attempts += 1
            try:
                return AsyncOutcome(succeeded=True, attempts=attempts, result=self.function.invoke(event))
            except Exception as exc:
                error = exc
            # The error type only: messages and tracebacks can carry personal data (the traceback is
            # in the on-failure record, and at DEBUG).
            log.debug("%s failed on an asynchronous event", self.function.name, exc_info=error)
            if attempts > self.config.maximum_retry_attempts:
                condition = "RetriesExhausted"
                break
            if self._monotonic() - started >= self.config.maximum_event_age_seconds:
                condition = "EventAgeExceeded"
                break
            log.warning(
                "%s failed on an asynchronous event (%s); retry %d of %d",
                self.function.name,
                type(error).__name__,
                attempts,
                self.config.maximum_retry_attempts,
            )
        self._give_up(event, error, condition, attempts)
        return AsyncOutcome(succeeded=False, attempts=attempts)

    def _give_up(self, event: dict[str, Any], error: Exception, condition: str, attempts: int) -> None:
        destination = self.config.on_failure
        if destination is None:
            log.error(
                "%s gave up on an asynchronous event after %d attempts (%s, %s) and dropped it: "
                "no OnFailure destination",
                self.function.name,
                attempts,
                condition,
                type(error).__name__,
            )
            return
        destination.send(
            {
                "version": "1.0",
                "timestamp": clock.iso(clock.now()),
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"{_function_arn(self.function)}:$LATEST",
                    "condition": condition,
                    "approximateInvokeCount": attempts,
                },
                "requestPayload": event,
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled",
                },
                "responsePayload": _error_payload(error),
            }
        )
        log.error(
            "%s gave up on an asynchronous event after %d attempts (%s, %s); on-failure record sent to %s",
            self.function.name,
            attempts,
            condition,
            type(error).__name__,
            destination.name,
        )


def sns_subscribers(
    template: Template, functions: dict[str, LocalFunction], endpoint_url: str
) -> list[AsyncInvoker]:
    """The functions with an SNS event, each invoked as SNS invokes Lambda: asynchronously."""
    return [
        AsyncInvoker.for_function(function, template, endpoint_url)
        for function in functions.values()
        if any(e.get("Type") == "SNS" for e in function.spec.events.values())
    ]


# --- schedules ------------------------------------------------------------------------------------


class SchedulePoller(Poller):
    """An EventBridge schedule: `rate(...)` or `cron(...)`, evaluated against CEMS's clock."""

    interval_seconds = 1.0

    def __init__(
        self,
        function: LocalFunction,
        event_name: str,
        expression: str,
        input_: str | None,
        invoker: AsyncInvoker | None = None,
    ) -> None:
        super().__init__(function, event_name)
        self.expression = expression
        self.input = input_
        # EventBridge invokes asynchronously: the function's EventInvokeConfig applies.
        self.invoker = invoker or AsyncInvoker(function, AsyncInvokeConfig())
        self._next_due = self._after(clock.now())

    def _after(self, moment: datetime) -> datetime:
        rate = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", self.expression)
        if rate:
            amount, unit = int(rate.group(1)), rate.group(2).rstrip("s")
            return moment + timedelta(**{f"{unit}s": amount})
        cron = re.fullmatch(r"cron\((.+)\)", self.expression)
        if cron:
            return next_cron_time(cron.group(1), moment)
        raise ValueError(f"schedule expression {self.expression!r} is not supported")

    def _poll(self) -> int:
        now = clock.now()
        if now < self._next_due:
            return 0
        self._next_due = self._after(now)
        event = (
            json.loads(self.input)
            if self.input
            else {
                "version": "0",
                "id": str(uuid.uuid4()),
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": ACCOUNT_ID,
                "time": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "region": REGION,
                "resources": [
                    f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/{self.function.name}-{self.event_name}"
                ],
                "detail": {},
            }
        )
        self.invoker.invoke(event)
        return 1


def _cron_field(spec: str, low: int, high: int) -> set[int]:
    if spec in ("*", "?"):
        return set(range(low, high + 1))
    values: set[int] = set()
    for part in spec.split(","):
        step = 1
        if "/" in part:
            part, step_text = part.split("/")
            step = int(step_text)
        if part in ("*", "?"):
            start, end = low, high
        elif "-" in part:
            start, end = (int(p) for p in part.split("-"))
        else:
            start = end = int(part)
            if step != 1:
                end = high
        values.update(range(start, end + 1, step))
    return values


def next_cron_time(expression: str, after: datetime) -> datetime:
    """The next minute after `after` (UTC, as EventBridge) matching a six-field EventBridge cron.

    Supports numbers, ranges, lists, steps, * and ?; not L, W or # (the stack fails loudly on them).
    """
    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"cron({expression}) needs six fields")
    minutes, hours, days, months, weekdays, _years = fields
    if any(c in expression for c in "LW#"):
        raise ValueError(f"cron({expression}): L, W and # are not supported locally")
    names = {n: i + 1 for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
    for name, number in names.items():
        weekdays = weekdays.upper().replace(name, str(number))
    allowed = (
        _cron_field(minutes, 0, 59),
        _cron_field(hours, 0, 23),
        _cron_field(days, 1, 31),
        _cron_field(months, 1, 12),
        _cron_field(weekdays, 1, 7),
    )
    moment = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(366 * 24 * 60):
        weekday = (moment.isoweekday() % 7) + 1  # EventBridge: 1 = Sunday
        if (
            moment.minute in allowed[0]
            and moment.hour in allowed[1]
            and moment.day in allowed[2]
            and moment.month in allowed[3]
            and weekday in allowed[4]
        ):
            return moment
        moment += timedelta(minutes=1)
    raise ValueError(f"cron({expression}) never fires")


# --- DynamoDB streams -----------------------------------------------------------------------------


def _lambda_json(value: Any) -> Any:
    """boto3's typed values as Lambda delivers them: datetimes as epoch seconds, bytes as base64."""
    if isinstance(value, dict):
        return {k: _lambda_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_lambda_json(v) for v in value]
    if isinstance(value, datetime):
        return int(value.timestamp())
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return value


class EventSourceMappingPoller(Poller):
    """What Lambda's event source mappings share: batch size, filters, partial batch responses."""

    interval_seconds = 0.25
    service = ""
    default_batch_size = 10

    def __init__(
        self, function: LocalFunction, event_name: str, endpoint_url: str | None, props: dict[str, Any]
    ) -> None:
        super().__init__(function, event_name)
        self.client = local_client(self.service, endpoint_url)
        self.batch_size = int(props.get("BatchSize", self.default_batch_size))
        self.filters = props.get("FilterCriteria")
        self.report_failures = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])


@dataclass
class _Shard:
    """Where the mapping is in one shard: the records read but not yet done, and how it is retrying."""

    iterator: str | None
    pending: list[dict[str, Any]] = field(default_factory=list)
    # How many of `pending` the next invocation gets (fewer after a bisect).
    size: int = 0
    # Failed invocations of the batch at the head of `pending` (a bisect costs none).
    retries: int = 0


class DynamoDBStreamPoller(EventSourceMappingPoller):
    """A DynamoDB stream mapping, with Lambda's error handling.

    A failed batch (an error, or ReportBatchItemFailures naming a record) is retried from its first
    failed record; records before it are done. With BisectBatchOnFunctionError a batch that fails as a
    whole is split in two first, which costs no retry, so a bad record ends up alone. After
    MaximumRetryAttempts retries, or once its first record is older than MaximumRecordAgeInSeconds, the
    batch is given up: the OnFailure destination gets Lambda's on-failure record (shard and sequence
    numbers, not the records) and the shard moves on. -1 (Lambda's default) retries until the stream
    drops the record, which blocks the shard, as it does in Lambda.
    """

    service = "dynamodbstreams"
    default_batch_size = 100

    def __init__(
        self,
        function: LocalFunction,
        event_name: str,
        endpoint_url: str | None,
        stream_arn: str,
        props: dict[str, Any],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(function, event_name, endpoint_url, props)
        self.stream_arn = stream_arn
        self.max_retries = int(props.get("MaximumRetryAttempts", -1))
        self.max_record_age = int(props.get("MaximumRecordAgeInSeconds", -1))
        self.bisect = bool(props.get("BisectBatchOnFunctionError", False))
        self.on_failure = failure_destination(props, endpoint_url)
        # Record age is real time (the stream's timestamps are), never the CEMS clock the local stack
        # moves: playing a scenario forward three days must not age out the events it writes.
        self._wall_clock = wall_clock
        position = props.get("StartingPosition", "TRIM_HORIZON")
        self._start_type = "LATEST" if position == "LATEST" else "TRIM_HORIZON"
        self._shards_read: dict[str, _Shard] = {}
        if self.max_retries < 0 and self.max_record_age < 0:
            log.warning(
                "%s: no MaximumRetryAttempts or MaximumRecordAgeInSeconds; a failing record blocks its shard "
                "until the stream drops it, as in Lambda",
                self.description,
            )

    def _shards(self) -> list[str]:
        shards = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        return [s["ShardId"] for s in shards]

    def _poll(self) -> int:
        handed = 0
        for shard_id in self._shards():
            if shard_id not in self._shards_read:
                iterator = self.client.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType=self._start_type
                )["ShardIterator"]
                self._shards_read[shard_id] = _Shard(iterator=iterator)
            handed += self._poll_shard(shard_id, self._shards_read[shard_id])
        return handed

    def _poll_shard(self, shard_id: str, shard: _Shard) -> int:
        """One invocation (or none) for this shard; returns how many records the function was handed."""
        if not shard.pending:
            if shard.iterator is None:
                return 0  # a closed shard, read to its end
            answer = self.client.get_records(ShardIterator=shard.iterator, Limit=self.batch_size)
            shard.iterator = answer.get("NextShardIterator")
            records = [
                {**_lambda_json(r), "eventSourceARN": self.stream_arn, "awsRegion": REGION}
                for r in answer["Records"]
            ]
            # Filtered-out records are done without an invocation, as Lambda's filtering does.
            shard.pending = [r for r in records if matches_filters(r, self.filters)]
            shard.size, shard.retries = self.batch_size, 0
        self._drop_expired(shard_id, shard)
        if not shard.pending:
            return 0
        batch = shard.pending[: shard.size]
        failed_from = self._invoke(batch)
        if failed_from is None:
            del shard.pending[: len(batch)]
            shard.size, shard.retries = self.batch_size, 0
            return len(batch)
        if failed_from > 0:
            # Partial success: the records before the first failure are done; retry from it.
            del shard.pending[:failed_from]
            shard.size, shard.retries = len(batch) - failed_from, 0
            return len(batch)
        if self.bisect and len(batch) > 1:
            shard.size = len(batch) // 2
            return len(batch)
        shard.retries += 1
        if 0 <= self.max_retries < shard.retries:
            self._give_up(shard_id, shard, batch, "RetryAttemptsExhausted", attempts=shard.retries)
        else:
            log.warning(
                "%s failed on %d stream records; retry %d of %s",
                self.description,
                len(batch),
                shard.retries,
                self.max_retries if self.max_retries >= 0 else "unlimited",
            )
        return len(batch)

    def _invoke(self, batch: list[dict[str, Any]]) -> int | None:
        """Invokes the function: None when the batch is done, else the index of its first failed record."""
        try:
            result = self.function.invoke({"Records": batch})
        except Exception as exc:
            # The error type only: messages and tracebacks can carry personal data.
            log.warning(
                "%s failed on a batch of %d stream records (%s)",
                self.description,
                len(batch),
                type(exc).__name__,
            )
            log.debug("%s failed", self.description, exc_info=exc)
            return 0
        failures = _batch_failures(result) if self.report_failures else None
        if not failures:
            return None
        sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in batch]
        if not failures <= set(sequence_numbers):
            return 0  # an empty, null or unknown itemIdentifier fails the whole batch, as in Lambda
        # Lambda checkpoints at the lowest failed sequence number and retries everything from it.
        return min(sequence_numbers.index(s) for s in failures)

    def _drop_expired(self, shard_id: str, shard: _Shard) -> None:
        """Gives up the head records older than MaximumRecordAgeInSeconds (never invoked again)."""
        if self.max_record_age < 0:
            return
        oldest_allowed = self._wall_clock() - self.max_record_age
        expired = 0
        for record in shard.pending:
            created = record["dynamodb"].get("ApproximateCreationDateTime")
            if created is None or float(created) >= oldest_allowed:
                break
            expired += 1
        if expired:
            self._give_up(
                shard_id, shard, shard.pending[:expired], "RecordAgeExceeded", attempts=shard.retries
            )

    def _give_up(
        self, shard_id: str, shard: _Shard, batch: list[dict[str, Any]], condition: str, attempts: int
    ) -> None:
        if self.on_failure is None:
            log.error(
                "%s gave up on %d stream records (%s) and dropped them: no OnFailure destination",
                self.description,
                len(batch),
                condition,
            )
        else:
            # Sent before the records are let go: if sending fails, the next poll gives them up again.
            self.on_failure.send(self._failure_record(shard_id, batch, condition, attempts))
        del shard.pending[: len(batch)]
        shard.size, shard.retries = self.batch_size, 0
        if self.on_failure is None:
            return
        log.error(
            "%s gave up on %d stream records (%s); the on-failure record went to %s",
            self.description,
            len(batch),
            condition,
            self.on_failure.name,
        )

    def _failure_record(
        self, shard_id: str, batch: list[dict[str, Any]], condition: str, attempts: int
    ) -> dict[str, Any]:
        """Lambda's on-failure record for a stream batch: where the records are, not the records."""
        first, last = batch[0]["dynamodb"], batch[-1]["dynamodb"]
        record: dict[str, Any] = {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": _function_arn(self.function),
                "condition": condition,
                "approximateInvokeCount": attempts,
            },
            "version": "1.0",
            "timestamp": clock.iso(clock.now()),
            "DDBStreamBatchInfo": {
                "shardId": shard_id,
                "startSequenceNumber": first["SequenceNumber"],
                "endSequenceNumber": last["SequenceNumber"],
                "approximateArrivalOfFirstRecord": _arrival(first),
                "approximateArrivalOfLastRecord": _arrival(last),
                "batchSize": len(batch),
                "streamArn": self.stream_arn,
            },
        }
        if condition == "RetryAttemptsExhausted":
            record["responseContext"] = {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            }
        return record


def _arrival(stream_record: dict[str, Any]) -> str | None:
    created = stream_record.get("ApproximateCreationDateTime")
    if created is None:
        return None
    return datetime.fromtimestamp(float(created), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- SQS ------------------------------------------------------------------------------------------


class SqsPoller(EventSourceMappingPoller):
    service = "sqs"

    def __init__(
        self,
        function: LocalFunction,
        event_name: str,
        endpoint_url: str,
        queue_arn: str,
        props: dict[str, Any],
    ) -> None:
        super().__init__(function, event_name, endpoint_url, props)
        self.queue_arn = queue_arn
        queue_name = queue_arn.rsplit(":", 1)[1]
        self.queue_url: str = self.client.get_queue_url(QueueName=queue_name)["QueueUrl"]

    def _poll(self) -> int:
        messages: list[dict[str, Any]] = []
        while len(messages) < self.batch_size:
            answer = self.client.receive_message(
                QueueUrl=self.queue_url,
                MaxNumberOfMessages=min(10, self.batch_size - len(messages)),
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            received = answer.get("Messages", [])
            messages.extend(received)
            if len(received) < 10:
                break
        if not messages:
            return 0
        records = [sqs_record(m, self.queue_arn) for m in messages]
        wanted = [r for r in records if matches_filters(_with_json_body(r), self.filters)]
        failed: set[str] = set()
        if wanted:
            try:
                failures = _batch_failures(self.function.invoke({"Records": wanted}))
                failed = failures if (failures is not None and self.report_failures) else set()
            except Exception:
                log.exception("%s failed on a batch of %d messages", self.description, len(wanted))
                failed = {r["messageId"] for r in wanted}
        # As Lambda does: successes and filtered-out messages are deleted; failures come back after
        # the visibility time-out and go to the dead-letter queue after maxReceiveCount.
        done = [r for r in records if r["messageId"] not in failed]
        for start in range(0, len(done), 10):
            self.client.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": r["receiptHandle"]}
                    for i, r in enumerate(done[start : start + 10])
                ],
            )
        return len(records)


def sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """An SQS ReceiveMessage message as the record Lambda's SQS integration hands a function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {
                "stringValue": a.get("StringValue"),
                "binaryValue": a.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": a["DataType"],
            }
            for name, a in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody", ""),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def _with_json_body(record: dict[str, Any]) -> dict[str, Any]:
    # Lambda filters on an SQS body's JSON fields when the body is JSON.
    try:
        return {**record, "body": json.loads(record["body"])}
    except ValueError:
        return record


# --- S3 notifications -----------------------------------------------------------------------------


class S3Poller(Poller):
    """S3 event notifications, found by comparing the bucket's listing with the last one."""

    interval_seconds = 1.0

    def __init__(
        self,
        function: LocalFunction,
        event_name: str,
        endpoint_url: str,
        bucket: str,
        props: dict[str, Any],
        invoker: AsyncInvoker | None = None,
    ) -> None:
        super().__init__(function, event_name)
        self.client = local_client("s3", endpoint_url)
        # S3 invokes asynchronously: the function's EventInvokeConfig applies.
        self.invoker = invoker or AsyncInvoker(function, AsyncInvokeConfig())
        self.bucket = bucket
        events = props.get("Events", [])
        self.event_patterns = [events] if isinstance(events, str) else list(events)
        rules = (props.get("Filter") or {}).get("S3Key", {}).get("Rules", [])
        self.prefix = next((r["Value"] for r in rules if r["Name"].lower() == "prefix"), "")
        self.suffix = next((r["Value"] for r in rules if r["Name"].lower() == "suffix"), "")
        self._seen = self._listing()

    def _listing(self) -> dict[str, tuple[str, int]]:
        listing = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix
        ):
            for item in page.get("Contents", []):
                if item["Key"].endswith(self.suffix):
                    listing[item["Key"]] = (item["ETag"].strip('"'), int(item["Size"]))
        return listing

    def _wants(self, event_name: str) -> bool:
        return any(
            re.fullmatch(re.escape(p.removeprefix("s3:")).replace(r"\*", ".*"), event_name)
            for p in self.event_patterns
        )

    def _poll(self) -> int:
        listing = self._listing()
        changes = [
            ("ObjectCreated:Put", key, listing[key]) for key in listing if self._seen.get(key) != listing[key]
        ] + [("ObjectRemoved:Delete", key, self._seen[key]) for key in self._seen if key not in listing]
        self._seen = listing
        delivered = 0
        for event_name, key, (etag, size) in changes:
            if not self._wants(event_name):
                continue
            self.invoker.invoke({"Records": [self._record(event_name, key, etag, size)]})
            delivered += 1
        return delivered

    def _record(self, event_name: str, key: str, etag: str, size: int) -> dict[str, Any]:
        obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "sequencer": f"{time.time_ns():016X}"}
        if event_name.startswith("ObjectCreated"):
            obj.update({"size": size, "eTag": etag})
        return {
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": REGION,
            "eventTime": clock.iso(clock.now()),
            "eventName": event_name,
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": self.event_name,
                "bucket": {"name": self.bucket, "arn": f"arn:aws:s3:::{self.bucket}"},
                "object": obj,
            },
        }


def build_pollers(template: Template, functions: dict[str, LocalFunction], endpoint_url: str) -> list[Poller]:
    """One poller for each Schedule, DynamoDB, SQS and S3 event of every function in the template."""
    pollers: list[Poller] = []
    for function in functions.values():
        invoker = AsyncInvoker.for_function(function, template, endpoint_url)
        for event_name, event in function.spec.events.items():
            kind = event.get("Type")
            props = template.resolve(event.get("Properties", {}))
            if kind in ("Schedule", "ScheduleV2"):
                expression = props.get("Schedule") or props.get("ScheduleExpression")
                if props.get("Enabled", True) and props.get("State", "ENABLED") == "ENABLED":
                    pollers.append(
                        SchedulePoller(function, event_name, str(expression), props.get("Input"), invoker)
                    )
            elif kind == "DynamoDB":
                pollers.append(
                    DynamoDBStreamPoller(function, event_name, endpoint_url, props["Stream"], props)
                )
            elif kind == "SQS":
                pollers.append(SqsPoller(function, event_name, endpoint_url, props["Queue"], props))
            elif kind == "S3":
                pollers.append(S3Poller(function, event_name, endpoint_url, props["Bucket"], props, invoker))
            elif kind == "SNS":
                # moto's SNS cannot invoke a local function: the stack plays SES events (/_local/ses)
                # through sns_subscribers().
                pass
            elif kind not in ("HttpApi", None):
                log.warning("%s: event %s of type %s has no local poller", function.name, event_name, kind)
    return pollers

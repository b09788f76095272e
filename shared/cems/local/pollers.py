"""Pollers that stand in for Lambda's event sources: schedules, DynamoDB streams, SQS and S3.

They are built from the functions' `Events` in the template, so a function a later issue adds with a
`Schedule`, `DynamoDB`, `SQS` or `S3` event runs locally with no change here. Each poller hands the
function the same event shape Lambda would, honours `BatchSize`, `FilterCriteria` and
`ReportBatchItemFailures`, and can be run to idle on demand (`drain`), which tests and the local
clock use to play time forward.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from datetime import datetime, timedelta
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


# --- schedules ------------------------------------------------------------------------------------


class SchedulePoller(Poller):
    """An EventBridge schedule: `rate(...)` or `cron(...)`, evaluated against CEMS's clock."""

    interval_seconds = 1.0

    def __init__(self, function: LocalFunction, event_name: str, expression: str, input_: str | None) -> None:
        super().__init__(function, event_name)
        self.expression = expression
        self.input = input_
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
        self.function.invoke(event)
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
        self, function: LocalFunction, event_name: str, endpoint_url: str, props: dict[str, Any]
    ) -> None:
        super().__init__(function, event_name)
        self.client = local_client(self.service, endpoint_url)
        self.batch_size = int(props.get("BatchSize", self.default_batch_size))
        self.filters = props.get("FilterCriteria")
        self.report_failures = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])


class DynamoDBStreamPoller(EventSourceMappingPoller):
    service = "dynamodbstreams"
    default_batch_size = 100

    def __init__(
        self,
        function: LocalFunction,
        event_name: str,
        endpoint_url: str,
        stream_arn: str,
        props: dict[str, Any],
    ) -> None:
        super().__init__(function, event_name, endpoint_url, props)
        self.stream_arn = stream_arn
        self.max_retries = int(props.get("MaximumRetryAttempts", 3))
        position = props.get("StartingPosition", "TRIM_HORIZON")
        self._iterators: dict[str, str | None] = {}
        self._retries = 0
        self._start_type = "LATEST" if position == "LATEST" else "TRIM_HORIZON"

    def _shards(self) -> list[str]:
        shards = self.client.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        return [s["ShardId"] for s in shards]

    def _iterator(self, shard_id: str, **position: str) -> str | None:
        kind = "AT_SEQUENCE_NUMBER" if position else self._start_type
        iterator: str | None = self.client.get_shard_iterator(
            StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType=kind, **position
        )["ShardIterator"]
        return iterator

    def _poll(self) -> int:
        delivered = 0
        for shard_id in self._shards():
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._iterator(shard_id)
            iterator = self._iterators[shard_id]
            if iterator is None:
                continue
            answer = self.client.get_records(ShardIterator=iterator, Limit=self.batch_size)
            records = [
                {**_lambda_json(r), "eventSourceARN": self.stream_arn, "awsRegion": REGION}
                for r in answer["Records"]
            ]
            next_iterator = answer.get("NextShardIterator")
            wanted = [r for r in records if matches_filters(r, self.filters)]
            retry_from = self._deliver(wanted) if wanted else None
            if retry_from is not None:
                self._iterators[shard_id] = self._iterator(shard_id, SequenceNumber=retry_from)
                continue
            self._iterators[shard_id] = next_iterator
            delivered += len(wanted)
        return delivered

    def _deliver(self, records: list[dict[str, Any]]) -> str | None:
        """Invokes the function; returns the sequence number to retry from, or None when done."""
        try:
            failures = _batch_failures(self.function.invoke({"Records": records}))
        except Exception:
            log.exception("%s failed on a batch of %d stream records", self.description, len(records))
            failures = {records[0]["dynamodb"]["SequenceNumber"]}
        if not failures:
            self._retries = 0
            return None
        self._retries += 1
        if self._retries > self.max_retries:
            log.error("%s: giving up on stream records after %d retries", self.description, self.max_retries)
            self._retries = 0
            return None
        sequence_numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
        return (
            next(s for s in sequence_numbers if s in failures) if failures & set(sequence_numbers) else None
        )


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
        self, function: LocalFunction, event_name: str, endpoint_url: str, bucket: str, props: dict[str, Any]
    ) -> None:
        super().__init__(function, event_name)
        self.client = local_client("s3", endpoint_url)
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
            self.function.invoke({"Records": [self._record(event_name, key, etag, size)]})
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
        for event_name, event in function.spec.events.items():
            kind = event.get("Type")
            props = template.resolve(event.get("Properties", {}))
            if kind in ("Schedule", "ScheduleV2"):
                expression = props.get("Schedule") or props.get("ScheduleExpression")
                if props.get("Enabled", True) and props.get("State", "ENABLED") == "ENABLED":
                    pollers.append(SchedulePoller(function, event_name, str(expression), props.get("Input")))
            elif kind == "DynamoDB":
                pollers.append(
                    DynamoDBStreamPoller(function, event_name, endpoint_url, props["Stream"], props)
                )
            elif kind == "SQS":
                pollers.append(SqsPoller(function, event_name, endpoint_url, props["Queue"], props))
            elif kind == "S3":
                pollers.append(S3Poller(function, event_name, endpoint_url, props["Bucket"], props))
            elif kind == "SNS":
                pass  # moto's SNS cannot invoke a local function: the stack plays SES events (/_local/ses)
            elif kind not in ("HttpApi", None):
                log.warning("%s: event %s of type %s has no local poller", function.name, event_name, kind)
    return pollers

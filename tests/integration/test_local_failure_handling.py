"""The local stack's pollers keep what a function gives up on, as Lambda does (moto in-process).

Stream mappings: MaximumRetryAttempts, BisectBatchOnFunctionError, MaximumRecordAgeInSeconds and the
OnFailure destination (Lambda's on-failure record: where the records are, not the records).
Asynchronous invocations (S3, SNS, schedules): EventInvokeConfig retries, then the on-failure record
with the event and the error. Each poll is driven by hand, so nothing here depends on timing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from cems.local.pollers import (
    AsyncInvokeConfig,
    AsyncInvoker,
    DynamoDBStreamPoller,
    FailureDestination,
)

REGION = "ap-northeast-1"


class StreamFunction:
    """Records each batch it gets (its items' keys); fails as `fail` says."""

    name = "StreamFunction"

    def __init__(self, fail: Callable[[list[dict[str, Any]]], dict[str, Any] | None]) -> None:
        self.fail = fail
        self.batches: list[list[str]] = []

    def invoke(self, event: dict[str, Any]) -> dict[str, Any] | None:
        records = event["Records"]
        self.batches.append([r["dynamodb"]["Keys"]["pk"]["S"] for r in records])
        return self.fail(records)


def _poison(record: dict[str, Any]) -> bool:
    return "poison" in record["dynamodb"]["NewImage"]


def raise_on_poison(records: list[dict[str, Any]]) -> None:
    if any(_poison(r) for r in records):
        raise ValueError("cannot process this record")


def report_poison(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What Powertools' BatchProcessor answers: the records that failed, by sequence number."""
    return {
        "batchItemFailures": [
            {"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in records if _poison(r)
        ]
    }


@pytest.fixture
def stream(aws: None) -> tuple[Any, str]:
    dynamodb = boto3.client("dynamodb", region_name=REGION)
    table = dynamodb.create_table(
        TableName="Items",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )["TableDescription"]
    return dynamodb, table["LatestStreamArn"]


@pytest.fixture
def failure_queue(aws: None) -> tuple[Any, str, str]:
    sqs = boto3.client("sqs", region_name=REGION)
    url = sqs.create_queue(QueueName="FailureQueue")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return sqs, url, arn


def put(dynamodb: Any, *keys: str) -> None:
    """Writes the items in order; a key starting with "poison" gets a poison attribute."""
    for key in keys:
        item = {"pk": {"S": key}, **({"poison": {"BOOL": True}} if key.startswith("poison") else {})}
        dynamodb.put_item(TableName="Items", Item=item)


def kept(sqs: Any, url: str) -> list[dict[str, Any]]:
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def mapping(queue_arn: str, **settings: Any) -> dict[str, Any]:
    return {
        "BatchSize": 10,
        "StartingPosition": "TRIM_HORIZON",
        "DestinationConfig": {"OnFailure": {"Type": "SQS", "Destination": queue_arn}},
        **settings,
    }


def drain(poller: DynamoDBStreamPoller) -> None:
    # Polling until idle; bounded, so a poller that never settles fails the test instead of hanging it.
    for _ in range(50):
        if poller.poll() == 0:
            return
    raise AssertionError("the poller never became idle")


def test_a_poison_record_is_retried_as_configured_then_kept_and_the_records_after_it_run(
    stream: tuple[Any, str], failure_queue: tuple[Any, str, str]
) -> None:
    dynamodb, stream_arn = stream
    sqs, url, queue_arn = failure_queue
    function = StreamFunction(report_poison)
    poller = DynamoDBStreamPoller(
        function,  # type: ignore[arg-type]
        "Stream",
        None,
        stream_arn,
        mapping(
            queue_arn,
            MaximumRetryAttempts=2,
            BisectBatchOnFunctionError=True,
            FunctionResponseTypes=["ReportBatchItemFailures"],
        ),
    )
    put(dynamodb, "a", "poison-1", "b", "c")
    drain(poller)
    assert function.batches[0] == ["a", "poison-1", "b", "c"]
    assert function.batches.count(["poison-1"]) == 1 + 2, "the first try and MaximumRetryAttempts retries"
    assert function.batches[-1] == ["b", "c"], "the shard moves on past the kept record"
    assert not any("a" in batch for batch in function.batches[1:]), "what succeeded is not retried"
    [record] = kept(sqs, url)
    info = record["DDBStreamBatchInfo"]
    assert info["batchSize"] == 1
    assert info["startSequenceNumber"] == info["endSequenceNumber"]
    assert info["streamArn"] == stream_arn
    assert info["shardId"].startswith("shardId-")
    assert info["approximateArrivalOfFirstRecord"].endswith("Z")
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 3
    assert record["requestContext"]["functionArn"].endswith(":function:StreamFunction")
    assert record["responseContext"]["functionError"] == "Unhandled"
    assert "Records" not in json.dumps(record), (
        "Lambda's stream failure record names records, never holds them"
    )
    # The kept position is the poison record's.
    sequence_numbers = {
        r["dynamodb"]["Keys"]["pk"]["S"]: r["dynamodb"]["SequenceNumber"] for r in _stream(stream_arn)
    }
    assert info["startSequenceNumber"] == sequence_numbers["poison-1"]
    put(dynamodb, "d")
    drain(poller)
    assert function.batches[-1] == ["d"]


def _stream(stream_arn: str) -> list[dict[str, Any]]:
    streams = boto3.client("dynamodbstreams", region_name=REGION)
    [shard] = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=stream_arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records: list[dict[str, Any]] = streams.get_records(ShardIterator=iterator, Limit=100)["Records"]
    return records


def test_bisect_splits_a_failing_batch_until_the_bad_record_is_alone(
    stream: tuple[Any, str], failure_queue: tuple[Any, str, str]
) -> None:
    dynamodb, stream_arn = stream
    sqs, url, queue_arn = failure_queue
    function = StreamFunction(raise_on_poison)
    poller = DynamoDBStreamPoller(
        function,  # type: ignore[arg-type]
        "Stream",
        None,
        stream_arn,
        mapping(queue_arn, MaximumRetryAttempts=0, BisectBatchOnFunctionError=True),
    )
    put(dynamodb, "a", "b", "poison-1", "c")
    drain(poller)
    # Whole batch fails -> halves; the good half runs; the rest fails -> halves again; splits cost no
    # retry, so the bad record alone gets its first try, and with no retries it is kept.
    assert function.batches == [
        ["a", "b", "poison-1", "c"],
        ["a", "b"],
        ["poison-1", "c"],
        ["poison-1"],
        ["c"],
    ]
    [record] = kept(sqs, url)
    assert record["DDBStreamBatchInfo"]["batchSize"] == 1
    assert record["requestContext"]["approximateInvokeCount"] == 1


def test_without_bisect_the_whole_failing_batch_is_kept_after_its_retries(
    stream: tuple[Any, str], failure_queue: tuple[Any, str, str]
) -> None:
    dynamodb, stream_arn = stream
    sqs, url, queue_arn = failure_queue
    function = StreamFunction(raise_on_poison)
    poller = DynamoDBStreamPoller(
        function,  # type: ignore[arg-type]
        "Stream",
        None,
        stream_arn,
        mapping(queue_arn, MaximumRetryAttempts=1),
    )
    put(dynamodb, "a", "poison-1")
    drain(poller)
    assert function.batches == [["a", "poison-1"], ["a", "poison-1"]]
    [record] = kept(sqs, url)
    assert record["DDBStreamBatchInfo"]["batchSize"] == 2
    assert (
        record["DDBStreamBatchInfo"]["startSequenceNumber"]
        < record["DDBStreamBatchInfo"]["endSequenceNumber"]
    )
    put(dynamodb, "b")
    drain(poller)
    assert function.batches[-1] == ["b"]


def test_records_older_than_the_maximum_age_are_kept_without_an_invocation(
    stream: tuple[Any, str], failure_queue: tuple[Any, str, str]
) -> None:
    dynamodb, stream_arn = stream
    sqs, url, queue_arn = failure_queue
    function = StreamFunction(lambda records: None)
    poller = DynamoDBStreamPoller(
        function,  # type: ignore[arg-type]
        "Stream",
        None,
        stream_arn,
        mapping(queue_arn, MaximumRecordAgeInSeconds=60),
        wall_clock=lambda: time.time() + 3600,  # an hour later than the records were written
    )
    put(dynamodb, "a", "b")
    drain(poller)
    assert function.batches == []
    [record] = kept(sqs, url)
    assert record["requestContext"]["condition"] == "RecordAgeExceeded"
    assert record["DDBStreamBatchInfo"]["batchSize"] == 2


class AsyncFunction:
    name = "LoaderFunction"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.invocations = 0

    def invoke(self, event: dict[str, Any]) -> str:
        self.invocations += 1
        if self.invocations <= self.failures:
            raise RuntimeError("the bucket is unreachable")
        return "done"


S3_EVENT = {"Records": [{"eventSource": "aws:s3", "s3": {"object": {"key": "scenarios/welcome.json"}}}]}


def test_an_async_invocation_that_keeps_failing_lands_in_its_failure_queue(
    failure_queue: tuple[Any, str, str],
) -> None:
    sqs, url, queue_arn = failure_queue
    function = AsyncFunction(failures=10)
    config = AsyncInvokeConfig(maximum_retry_attempts=1, on_failure=FailureDestination(queue_arn, None))
    outcome = AsyncInvoker(function, config).invoke(S3_EVENT)  # type: ignore[arg-type]
    assert not outcome.succeeded
    assert function.invocations == 2, "the first try and MaximumRetryAttempts retries"
    [record] = kept(sqs, url)
    assert record["requestPayload"] == S3_EVENT
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestContext"]["functionArn"].endswith(":function:LoaderFunction:$LATEST")
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    assert record["responsePayload"]["errorMessage"] == "the bucket is unreachable"


def test_an_async_invocation_that_succeeds_on_a_retry_keeps_nothing(
    failure_queue: tuple[Any, str, str],
) -> None:
    sqs, url, queue_arn = failure_queue
    function = AsyncFunction(failures=2)
    config = AsyncInvokeConfig(maximum_retry_attempts=2, on_failure=FailureDestination(queue_arn, None))
    outcome = AsyncInvoker(function, config).invoke(S3_EVENT)  # type: ignore[arg-type]
    assert outcome.succeeded and outcome.result == "done" and outcome.attempts == 3
    assert kept(sqs, url) == []


def test_an_async_event_past_its_maximum_age_is_not_retried(failure_queue: tuple[Any, str, str]) -> None:
    sqs, url, queue_arn = failure_queue
    function = AsyncFunction(failures=10)
    config = AsyncInvokeConfig(
        maximum_retry_attempts=2, maximum_event_age_seconds=60, on_failure=FailureDestination(queue_arn, None)
    )
    ticks = iter([0.0, 61.0])
    invoker = AsyncInvoker(function, config, monotonic=lambda: next(ticks))  # type: ignore[arg-type]
    assert not invoker.invoke(S3_EVENT).succeeded
    assert function.invocations == 1
    [record] = kept(sqs, url)
    assert record["requestContext"]["condition"] == "EventAgeExceeded"


def test_only_queue_and_topic_destinations_are_supported_locally() -> None:
    with pytest.raises(ValueError, match="SQS queues and SNS topics"):
        FailureDestination("arn:aws:s3:::a-bucket", None)

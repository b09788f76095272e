"""The local stack's event sources, built from any template: DynamoDB streams, SQS, S3 and HttpApi."""

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cems.local.running import RunningStack, running_local_stack
from cems.local.runs import wait_for_run

from tests.e2e.conftest import HANG, LocalStackClient, eventually

pytestmark = pytest.mark.e2e

STACK = Path(__file__).parent / "pollers_stack"


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningStack, Path]]:
    record_file = tmp_path_factory.mktemp("recorder") / "events.jsonl"
    record_file.touch()
    args = ["--template", str(STACK / "template.yaml")]
    with running_local_stack(args=args, env={"RECORD_FILE": str(record_file)}, cwd=STACK) as stack:
        yield stack, record_file


def aws(stack: RunningStack, service: str) -> Any:
    return LocalStackClient(running=stack, dynamodb=None).client(service)


def recorded(
    record_file: Path, found: Callable[[dict[str, Any]], bool], function: str = "RecorderFunction"
) -> list[dict[str, Any]]:
    """The events `function` got so far that match."""
    lines = [json.loads(line) for line in record_file.read_text().splitlines()]
    return [line["event"] for line in lines if line["function"] == function and found(line["event"])]


def wait_for(
    record_file: Path,
    found: Callable[[dict[str, Any]], bool],
    count: int = 1,
    function: str = "RecorderFunction",
) -> list[dict[str, Any]]:
    """The events `function` got that match, once there are at least `count` of them."""

    def enough() -> list[dict[str, Any]] | None:
        matching = recorded(record_file, found, function)
        return matching if len(matching) >= count else None

    return eventually(enough, f"{count} matching events for {function}") or []


def test_resources_have_template_names_indexes_and_dead_letter_queues(
    recorder: tuple[RunningStack, Path],
) -> None:
    stack, _ = recorder
    table = aws(stack, "dynamodb").describe_table(TableName="ItemsTable")["Table"]
    assert [i["IndexName"] for i in table["GlobalSecondaryIndexes"]] == ["due-index"]
    sqs = aws(stack, "sqs")
    url = sqs.get_queue_url(QueueName="WorkQueue")["QueueUrl"]
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]["RedrivePolicy"]
    )
    assert redrive["deadLetterTargetArn"].endswith(":WorkDeadLetterQueue")
    assert "dropbucket" in [b["Name"] for b in aws(stack, "s3").list_buckets()["Buckets"]]


def test_stream_records_reach_the_function_filtered_like_lambda(recorder: tuple[RunningStack, Path]) -> None:
    stack, record_file = recorder
    dynamodb = aws(stack, "dynamodb")
    dynamodb.put_item(TableName="ItemsTable", Item={"pk": {"S": "item-1"}, "due": {"S": "a"}})
    dynamodb.put_item(TableName="ItemsTable", Item={"pk": {"S": "item-1"}, "due": {"S": "b"}})  # MODIFY
    # Then a REMOVE and an INSERT of the same item: a stream keeps one item's records in order, so
    # once the function got this last INSERT, the MODIFY before it was either delivered or filtered.
    dynamodb.delete_item(TableName="ItemsTable", Key={"pk": {"S": "item-1"}})
    dynamodb.put_item(TableName="ItemsTable", Item={"pk": {"S": "item-1"}, "due": {"S": "last"}})

    def stream_records() -> list[dict[str, Any]]:
        events = recorded(
            record_file, lambda e: "Records" in e and e["Records"][0].get("eventSource") == "aws:dynamodb"
        )
        return [r for e in events for r in e["Records"]]

    eventually(
        lambda: any(r["dynamodb"]["NewImage"]["due"] == {"S": "last"} for r in stream_records()),
        "the last INSERT reaching the function",
    )
    records = stream_records()
    assert [r["eventName"] for r in records] == ["INSERT", "INSERT"], "the filter passes INSERTs only"
    record = records[0]
    assert record["dynamodb"]["NewImage"]["pk"] == {"S": "item-1"}
    assert record["dynamodb"]["NewImage"]["due"] == {"S": "a"}
    assert record["eventSourceARN"].startswith("arn:aws:dynamodb:ap-northeast-1:")


def test_sqs_failures_are_retried_then_dead_lettered_and_successes_deleted(
    recorder: tuple[RunningStack, Path],
) -> None:
    stack, record_file = recorder
    sqs = aws(stack, "sqs")
    url = sqs.get_queue_url(QueueName="WorkQueue")["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="ok-1")
    sqs.send_message(QueueUrl=url, MessageBody="fail")

    def bodies() -> list[str]:
        events = recorded(
            record_file, lambda e: "Records" in e and e["Records"][0].get("eventSource") == "aws:sqs"
        )
        return [r["body"] for e in events for r in e["Records"]]

    dlq = sqs.get_queue_url(QueueName="WorkDeadLetterQueue")["QueueUrl"]

    def dead_letters() -> list[str]:
        answer = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        return [m["Body"] for m in answer.get("Messages", [])]

    # The failure reaches the dead-letter queue only after its second receive: by then a success
    # that was not deleted would have come back too (same batch, same one-second visibility).
    dead = eventually(dead_letters, "the failed message on the dead-letter queue")
    assert dead == ["fail"]
    assert bodies().count("fail") == 2, "a reported failure comes back until maxReceiveCount"
    assert bodies().count("ok-1") == 1, "a success is deleted, never delivered twice"


def test_s3_uploads_under_the_prefix_notify_the_function(recorder: tuple[RunningStack, Path]) -> None:
    stack, record_file = recorder
    s3 = aws(stack, "s3")
    s3.put_object(Bucket="dropbucket", Key="other/ignored.json", Body=b"{}")
    s3.put_object(Bucket="dropbucket", Key="scenarios/welcome 1.json", Body=b'{"id": "welcome"}')
    events = wait_for(
        record_file, lambda e: "Records" in e and e["Records"][0].get("eventSource") == "aws:s3"
    )
    assert len(events) == 1
    record = events[0]["Records"][0]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["bucket"]["name"] == "dropbucket"
    assert record["s3"]["object"]["key"] == "scenarios/welcome+1.json"  # URL-encoded, as S3 sends it
    assert record["s3"]["object"]["size"] == len(b'{"id": "welcome"}')


def test_http_routes_prefer_the_most_specific_and_pass_payload_v2(
    recorder: tuple[RunningStack, Path],
) -> None:
    stack, _ = recorder

    def get(path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{stack.http_url}{path}", timeout=10) as answer:
            event: dict[str, Any] = json.loads(answer.read())
            return event

    exact = get("/echo/exact?x=1&y=%E3%81%82")
    assert exact["routeKey"] == "ANY /echo/exact"
    assert exact["queryStringParameters"] == {"x": "1", "y": "あ"}
    greedy = get("/echo/a/b/c")
    assert greedy["routeKey"] == "GET /echo/{proxy+}"
    assert greedy["pathParameters"] == {"proxy": "a/b/c"}
    assert greedy["version"] == "2.0"
    assert greedy["requestContext"]["http"]["method"] == "GET"


def post_clock(stack: RunningStack, body: bytes) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{stack.http_url}/_local/clock", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=HANG) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_advancing_the_clock_runs_each_hours_schedule_in_turn(recorder: tuple[RunningStack, Path]) -> None:
    stack, record_file = recorder

    def ticks() -> list[dict[str, Any]]:
        return recorded(record_file, lambda e: e.get("detail-type") == "Scheduled Event")

    before = len(ticks())
    status, started = post_clock(stack, json.dumps({"advance_seconds": 3 * 3600 + 60}).encode())
    assert status == 202, "answered at once: the due work runs after the answer"
    assert started["kind"] == "clock" and started["steps"] == 4
    progress: list[int] = []
    finished = wait_for_run(
        stack.http_url, started, hang_seconds=HANG, on_progress=lambda s: progress.append(s["steps_done"])
    )
    assert finished["state"] == "done"
    assert finished["steps_done"] == 4
    assert progress == sorted(progress), "progress only moves forward"
    times = [t["time"] for t in ticks()[before:]]
    assert len(times) == 3, "one tick per hour of local time, each at its own time"
    assert times == sorted(times) and len(set(times)) == 3


def test_a_bad_clock_request_gets_a_clear_error(recorder: tuple[RunningStack, Path]) -> None:
    stack, _ = recorder
    for body in (b"{", b'{"advance_seconds": -1}', b'{"advance": 60}'):
        status, answer = post_clock(stack, body)
        assert status == 400
        assert answer["error"] == "invalid_clock_request"


def kept_records(stack: RunningStack, queue: str, count: int) -> list[dict[str, Any]]:
    """The on-failure records on `queue`, once there are `count`."""
    sqs = aws(stack, "sqs")
    url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
    records: list[dict[str, Any]] = []

    def received_all() -> bool:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for message in answer.get("Messages", []):
            records.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return len(records) >= count

    eventually(received_all, f"{count} on-failure records on {queue}")
    return records


def test_a_poison_stream_record_is_retried_as_the_template_says_then_kept_and_the_shard_moves_on(
    recorder: tuple[RunningStack, Path],
) -> None:
    stack, record_file = recorder
    dynamodb = aws(stack, "dynamodb")
    dynamodb.put_item(TableName="PoisonTable", Item={"pk": {"S": "poison-1"}, "poison": {"BOOL": True}})
    dynamodb.put_item(TableName="PoisonTable", Item={"pk": {"S": "after-1"}})
    [record] = kept_records(stack, "StreamFailureQueue", count=1)
    assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert record["DDBStreamBatchInfo"]["batchSize"] == 1, "bisected down to the poison record"

    def keys(event: dict[str, Any]) -> list[str]:
        return [r["dynamodb"]["Keys"]["pk"]["S"] for r in event["Records"]]

    after = wait_for(record_file, lambda e: "after-1" in keys(e), function="PoisonFunction")
    assert after, "the record after the poison one is processed"
    batches = [keys(e) for e in recorded(record_file, lambda e: True, function="PoisonFunction")]
    assert batches.count(["poison-1"]) == 1 + 2, "the first try and the template's MaximumRetryAttempts: 2"


def test_an_s3_notified_function_that_keeps_failing_lands_in_its_failure_queue(
    recorder: tuple[RunningStack, Path],
) -> None:
    stack, record_file = recorder
    aws(stack, "s3").put_object(Bucket="dropbucket", Key="failing/broken.json", Body=b"{}")
    [record] = kept_records(stack, "AsyncFailureQueue", count=1)
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2, (
        "EventInvokeConfig: MaximumRetryAttempts 1"
    )
    assert record["requestPayload"]["Records"][0]["s3"]["object"]["key"] == "failing/broken.json"
    assert record["responsePayload"]["errorType"] == "RuntimeError"
    tries = wait_for(record_file, lambda e: True, count=2, function="FailingUploadFunction")
    assert len(tries) == 2
    # The stack logs after it sent the record, and its output is read on another thread: wait for it.
    gave_up = "FailingUploadFunction gave up on an asynchronous event after 2 attempts"
    eventually(lambda: any(gave_up in line for line in stack.transcript), "the gave-up log line")
    assert not any("this function always fails" in line for line in stack.transcript), "no error messages"

"""Records every event it gets (one JSON line each); fails SQS messages whose body is "fail".

`fail_on_poison` raises on a stream batch holding an item with a `poison` attribute; `always_fail`
raises on everything. Both record first.
"""

import json
import os
from typing import Any


def record(event: dict[str, Any], context: Any) -> None:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as records:
        records.write(json.dumps({"function": context.function_name, "event": event}) + "\n")


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    record(event, context)
    if "routeKey" in event:
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    records = event.get("Records", [])
    if records and records[0].get("eventSource") == "aws:sqs":
        return {
            "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records if r["body"] == "fail"]
        }
    return {}


def fail_on_poison(event: dict[str, Any], context: Any) -> None:
    record(event, context)
    if any("poison" in r["dynamodb"]["NewImage"] for r in event["Records"]):
        raise ValueError("a poison record")


def always_fail(event: dict[str, Any], context: Any) -> None:
    record(event, context)
    raise RuntimeError("this function always fails")

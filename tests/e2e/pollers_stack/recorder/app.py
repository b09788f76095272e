"""Records every event it gets (one JSON line each); fails SQS messages whose body is "fail"."""

import json
import os
from typing import Any


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    with open(os.environ["RECORD_FILE"], "a", encoding="utf-8") as record:
        record.write(json.dumps({"function": context.function_name, "event": event}) + "\n")
    if "routeKey" in event:
        return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(event)}
    records = event.get("Records", [])
    if records and records[0].get("eventSource") == "aws:sqs":
        return {
            "batchItemFailures": [{"itemIdentifier": r["messageId"]} for r in records if r["body"] == "fail"]
        }
    return {}

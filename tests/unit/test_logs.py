"""Function logs: every record is one JSON object of at most 16 KB, whatever was logged."""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import pytest
from cems.logs import MAX_LINE_BYTES, BoundedFormatter, function_logger


def logged(action: Any) -> list[dict[str, Any]]:
    """The records a fresh function logger wrote while `action(logger)` ran, each checked for size."""
    stream = io.StringIO()
    logger = function_logger(service=f"test-logs-{uuid.uuid4().hex}", stream=stream)
    action(logger)
    lines = stream.getvalue().splitlines()
    for line in lines:
        assert len(line.encode("utf-8")) <= MAX_LINE_BYTES
    return [json.loads(line) for line in lines]


def recurse(depth: int) -> int:
    return recurse(depth + 1) + 1


def test_a_recursion_error_is_logged_shortened_with_its_first_and_last_frames() -> None:
    def action(logger: Any) -> None:
        try:
            recurse(0)
        except RecursionError:
            logger.exception("failed", extra={"route": "POST /line/webhook"})

    [record] = logged(action)
    assert record["message"] == "failed" and record["route"] == "POST /line/webhook"
    assert record["exception_name"] == "RecursionError"
    assert record["log_truncated"]["original_bytes"] > MAX_LINE_BYTES
    frames = record["stack_trace"]["frames"]
    assert frames[0]["function"] == "action" and frames[-1]["function"] == "recurse"
    assert any("omitted_frames" in frame for frame in frames)
    assert "RecursionError" in record["exception"]  # the traceback's last line survives


def test_a_huge_extra_field_is_cut_to_its_head_and_tail() -> None:
    huge = "a" * 100_000 + "THE END"
    [record] = logged(lambda logger: logger.info("stored", extra={"body": huge, "events": 3}))
    assert record["message"] == "stored" and record["events"] == 3
    assert record["body"].startswith("aaaa") and record["body"].endswith("THE END")
    assert "characters omitted" in record["body"]


def test_many_small_fields_fall_back_to_the_essential_keys() -> None:
    extra = {f"k{i}": "v" * 20 for i in range(5000)}
    [record] = logged(lambda logger: logger.info("many", extra=extra))
    assert record["message"] == "many" and record["level"] == "INFO"
    assert record["log_truncated"]["kept"] == "essential keys only"


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        10**5000,  # more digits than Python writes as text
        "\ud800 lone surrogate",
        {"deep": "x"},  # replaced below by a structure nested past the recursion limit
    ],
    ids=["nan", "infinity", "5000-digit-int", "lone-surrogate", "too-deep"],
)
def test_values_json_cannot_hold_still_give_one_valid_json_line(value: Any) -> None:
    if isinstance(value, dict):
        for _ in range(5000):
            value = {"deep": value}
    [record] = logged(lambda logger: logger.info("odd", extra={"value": value}))
    assert record["message"] == "odd"


def test_a_small_record_is_left_as_powertools_writes_it() -> None:
    [record] = logged(lambda logger: logger.info("hello", extra={"events": 1}))
    assert "log_truncated" not in record
    assert record["service"].startswith("test-logs-") and record["events"] == 1


def test_the_limit_is_a_parameter() -> None:
    formatter = BoundedFormatter(max_bytes=400)
    text = formatter.serialize({"level": "INFO", "message": "m", "body": "x" * 2000})
    assert len(text.encode()) <= 400 and json.loads(text)["message"] == "m"

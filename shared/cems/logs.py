"""The Powertools Logger every function uses, with each log record held to MAX_LINE_BYTES of JSON.

One bad request must not write a giant log line: a RecursionError's structured `stack_trace` lists
about a thousand frames (hundreds of kilobytes), and an `extra` field can hold whatever a client sent.
CloudWatch Logs splits or drops events past 256 KB, and a line that size is unreadable and costly long
before that, so CEMS keeps each record under 16 KB.

Powertools has no such option (as of 3.x: the Logger and LambdaPowertoolsFormatter take a serializer,
a `json_default` and the field order, but nothing bounds a record's size), so this module subclasses
its formatter and shortens only records that are too long: fewer stack frames, then each long field
cut to a head and a tail, then, if that is still too much, the record's identifying fields alone. The
result is always one valid JSON object that says it was shortened (`log_truncated`).
"""

from __future__ import annotations

import json
import math
from functools import partial
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter

MAX_LINE_BYTES = 16 * 1024
# Frames kept from each end of a long structured stack trace: where it started and where it failed.
KEPT_FRAMES = 8
# Successive limits (in characters) on each field of a record that is too long.
FIELD_BUDGETS = (4096, 1024, 256)
# What a record is cut down to when every field is small and it is still too long (say, 10,000 keys).
ESSENTIAL_KEYS = (
    "level",
    "location",
    "message",
    "timestamp",
    "service",
    "exception_name",
    "function_name",
    "function_request_id",
    "xray_trace_id",
)
ESSENTIAL_BUDGET = 512


def function_logger(**options: Any) -> Logger:
    """The Logger of a function (Powertools' own, with the bounded formatter); `options` go to it."""
    return Logger(logger_formatter=BoundedFormatter(), **options)


class BoundedFormatter(LambdaPowertoolsFormatter):
    """Powertools' JSON formatter, with every record at most `max_bytes` bytes of UTF-8."""

    def __init__(self, *, max_bytes: int = MAX_LINE_BYTES, **kwargs: Any) -> None:
        # Compact even under POWERTOOLS_DEV (whose indented JSON spreads one record over many lines),
        # and strict: NaN and Infinity are not JSON, so a record holding one is written shortened.
        serializer = partial(
            json.dumps, default=str, separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        super().__init__(json_serializer=serializer, **kwargs)
        self.max_bytes = max_bytes

    # Powertools types the record as its own LogRecord TypedDict; any dict works here.
    def serialize(self, log: Any) -> str:
        text = self._dump(log)
        size = _utf8_size(text) if text is not None else None
        if size is not None and size <= self.max_bytes:
            return text  # type: ignore[return-value]
        marker = {"original_bytes": size} if size is not None else {"unserializable": True}
        record = dict(log)
        if isinstance(record.get("stack_trace"), dict):
            record["stack_trace"] = _fewer_frames(record["stack_trace"])
        for budget in FIELD_BUDGETS:
            record = {key: _within(value, budget) for key, value in record.items()}
            record["log_truncated"] = marker
            text = self._dump(record)
            if text is not None and _utf8_size(text) <= self.max_bytes:
                return text
        essential = {key: _within(log[key], ESSENTIAL_BUDGET) for key in ESSENTIAL_KEYS if key in log}
        essential["log_truncated"] = {**marker, "kept": "essential keys only"}
        return self._dump(essential) or json.dumps({"log_truncated": marker})

    def _dump(self, record: Any) -> str | None:
        """The record as JSON, or None when it cannot be written (too deeply nested, circular). Text
        that is not valid Unicode (a lone surrogate) is escaped, so the line can always be printed."""
        try:
            text = self.json_serializer(record)
        except (ValueError, TypeError, RecursionError):
            return None
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(
                record, default=self.json_default, separators=(",", ":"), ensure_ascii=True, allow_nan=False
            )
        return text


def _utf8_size(text: str) -> int:
    return len(text.encode("utf-8", "backslashreplace"))


def _fewer_frames(stack_trace: dict[str, Any]) -> dict[str, Any]:
    frames = stack_trace.get("frames")
    if not isinstance(frames, list) or len(frames) <= 2 * KEPT_FRAMES:
        return stack_trace
    omitted = len(frames) - 2 * KEPT_FRAMES
    return {
        **stack_trace,
        "frames": [*frames[:KEPT_FRAMES], {"omitted_frames": omitted}, *frames[-KEPT_FRAMES:]],
    }


def _within(value: Any, budget: int) -> Any:
    """`value` if its JSON is at most `budget` characters, else a string of its head and tail."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return _shorten(value, budget)
    try:
        text = json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        # NaN or Infinity inside (kept as text), or an integer too long for Python to write.
        try:
            return _shorten(json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":")), budget)
        except (ValueError, TypeError, RecursionError):
            return f"<{type(value).__name__} that cannot be written as JSON>"
    except (TypeError, RecursionError):
        return f"<{type(value).__name__} that cannot be written as JSON>"
    return value if len(text) <= budget else _shorten(text, budget)


def _shorten(text: str, budget: int) -> str:
    if len(text) <= budget:
        return text
    # The tail matters as much as the head: a traceback ends with the exception's own line.
    half = max(budget // 2 - 40, 1)
    return f"{text[:half]} …[{len(text) - 2 * half} characters omitted]… {text[-half:]}"

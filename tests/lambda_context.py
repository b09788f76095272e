"""The Lambda context the handler tests pass: the attributes Powertools' Logger and the batch utilities
read, for one function."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FakeContext:
    function_name: str
    # What get_remaining_time_in_millis answers: a handler under test always has time left.
    remaining_ms: int = 30_000
    memory_limit_in_mb: int = 512
    aws_request_id: str = "0b8f7c6d-5e4a-4b3c-9d2e-1f0a9b8c7d6e"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:ap-northeast-1:123456789012:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms

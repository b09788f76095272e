"""The one source of "now" for CEMS; the local stack and tests move it, Lambda never does."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

_lock = threading.Lock()
_offset = timedelta(0)
_frozen_at: datetime | None = None


def now() -> datetime:
    """The current time, timezone-aware UTC, including any local offset or freeze."""
    with _lock:
        if _frozen_at is not None:
            return _frozen_at
        return datetime.now(UTC) + _offset


def advance(seconds: float) -> datetime:
    """Move time forward (the local stack uses this to play a 30-day scenario in seconds)."""
    global _offset, _frozen_at
    with _lock:
        if _frozen_at is not None:
            _frozen_at += timedelta(seconds=seconds)
            return _frozen_at
        _offset += timedelta(seconds=seconds)
        return datetime.now(UTC) + _offset


def freeze(at: datetime) -> None:
    """Stop time at `at` (tests); `advance` still moves it."""
    global _frozen_at
    if at.tzinfo is None:
        raise ValueError("freeze() needs a timezone-aware datetime")
    with _lock:
        _frozen_at = at.astimezone(UTC)


def reset() -> None:
    """Back to real time."""
    global _offset, _frozen_at
    with _lock:
        _offset = timedelta(0)
        _frozen_at = None


def iso(at: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a Z: fixed width, so strings sort in time order."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"

"""Errors that reach a caller as a clear HTTP answer: a status code and a JSON body naming the problem."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Bad input from a client; nothing has been stored when this is raised."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        limit: int | None = None,
        index: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.limit = limit
        self.index = index
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        # `code` repeats `error` because Segment's libraries log a rejected request's `code`.
        body: dict[str, Any] = {
            "success": False,
            "error": self.code,
            "code": self.code,
            "message": self.message,
        }
        if self.field is not None:
            body["field"] = self.field
        if self.limit is not None:
            body["limit"] = self.limit
        if self.index is not None:
            body["index"] = self.index
        return body


def validation_reasons(exc: Any, *, limit: int = 5, width: int = 200) -> list[str]:
    """A pydantic ValidationError's first `limit` errors as `path: message`, each cut to `width`:
    what a sender logs of a queue message it drops (paths and reasons only, never the input, which
    may hold an address or personal content)."""
    return [
        f"{'.'.join(str(p) for p in e['loc']) or 'dispatch'}: {e['msg']}"[:width]
        for e in exc.errors()[:limit]
    ]

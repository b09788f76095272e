"""The values of a scenario file: durations, times of day, ids, dates, and the base of every model.

Each value type parses what a file writes (`"3d"`, `"10:00"`) and writes it back the same way;
errors are Japanese first with English alongside. `StrictModel` is the base of every object in a
scenario file: unknown fields are errors, values are strict, and the JSON Schema description (an
editor's hover help) is the model's `doc_ja` followed by its docstring.
"""

from __future__ import annotations

import re
from datetime import datetime, time, timedelta
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema
from pydantic.config import JsonDict

from cems.scenario.durations import (
    DURATION_HINT,
    DURATION_HINT_JA,
    DURATION_PATTERN,
    LOCAL_TIME_PATTERN,
    OFFSET_PATTERN,
    format_duration,
    format_local_time,
    parse_duration,
    parse_local_time,
)
from cems.scenario.problems import bilingual

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
ID_PATTERN = _ID.pattern
ID_HINT = "lower-case letters, digits, `_` and `-`, starting with a letter or digit, at most 64 characters"
ID_HINT_JA = "英小文字・数字・`_`・`-` で、英小文字か数字で始まる 64 文字まで"
SURVEY_QUESTION = re.compile(r"^[\w.-]{1,64}$")
_DATE_SOURCE = re.compile(r"^(trigger_event|last_purchase_at|first_purchase_at|first_seen_at|traits\..+)$")
DATE_SOURCES = ("trigger_event", "last_purchase_at", "first_purchase_at", "first_seen_at", "traits.<name>")


# ---------------------------------------------------------------------------------------------- values


def _duration(value: Any) -> Any:
    return (
        parse_duration(value) if isinstance(value, str) else _not_text(value, DURATION_HINT_JA, DURATION_HINT)
    )


def _offset(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value, signed=True)
    return _not_text(value, DURATION_HINT_JA, DURATION_HINT)


def _local_time(value: Any) -> Any:
    return (
        parse_local_time(value) if isinstance(value, str) else _not_text(value, '例 "10:00"', 'e.g. "10:00"')
    )


def _not_text(value: Any, hint_ja: str, hint_en: str) -> Any:
    if isinstance(value, time | timedelta):  # already parsed (model_copy, tests)
        return value
    raise ValueError(
        bilingual(
            f"{value} は引用符で囲んだテキストで書いてください。{hint_ja}",
            f"{value} must be text in quotes; {hint_en}",
        )
    )


def _identifier(value: Any) -> Any:
    if isinstance(value, str) and not _ID.match(value):
        raise ValueError(
            bilingual(
                f'"{value}" は ID に使えません。{ID_HINT_JA}にしてください',
                f'"{value}" is not a valid id: use {ID_HINT}',
            )
        )
    return value


def _aware_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                bilingual(
                    f'"{value}" は日時ではありません。例 "2026-05-01T10:00:00+09:00" のように書いてください',
                    f'"{value}" is not a date and time; write e.g. "2026-05-01T10:00:00+09:00"',
                )
            ) from None
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError(
            bilingual(
                "タイムゾーンのオフセットを付けてください（日本なら +09:00）",
                "give the time zone offset, e.g. +09:00 for Japan",
            )
        )
    return value


def described(ja: str, en: str) -> str:
    """A description in the JSON Schema (an editor's hover help): Japanese, then English."""
    return f"{ja}\n\n{en}"


def _bilingual_description(schema: JsonDict, model: type[Any]) -> None:
    """Puts a model's `doc_ja` before its docstring in the JSON Schema."""
    ja = getattr(model, "doc_ja", None)
    if ja:
        english = schema.get("description")
        schema["description"] = described(ja, english) if isinstance(english, str) else ja


Duration = Annotated[
    timedelta,
    BeforeValidator(_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": described(f"期間: {DURATION_HINT_JA}", f"A duration: {DURATION_HINT}"),
        }
    ),
]
Offset = Annotated[
    timedelta,
    BeforeValidator(_offset),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": OFFSET_PATTERN,
            "description": described(
                '前後にずらす期間: 例 "3d"（後）、"-1d"（前）', 'A signed duration, e.g. "3d" or "-1d"'
            ),
        }
    ),
]
LocalTime = Annotated[
    time,
    BeforeValidator(_local_time),
    PlainSerializer(format_local_time, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": LOCAL_TIME_PATTERN,
            "description": described(
                'シナリオのタイムゾーンでの時刻 "HH:MM"（24 時間制）', 'Local time "HH:MM"'
            ),
        }
    ),
]
AwareDatetime = Annotated[
    datetime,
    BeforeValidator(_aware_datetime),
    PlainSerializer(lambda v: v.isoformat(), return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "description": described(
                'オフセット付きの ISO 8601 日時（例 "2026-05-01T10:00:00+09:00"）', "ISO 8601 with an offset"
            ),
        }
    ),
]
StepId = Annotated[
    str,
    BeforeValidator(_identifier),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ID_PATTERN,
            "description": described(f"ステップ ID: {ID_HINT_JA}", f"A step id: {ID_HINT}"),
        }
    ),
]
ScenarioId = Annotated[
    str,
    BeforeValidator(_identifier),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": ID_PATTERN,
            "description": described(f"シナリオ ID: {ID_HINT_JA}", f"A scenario id: {ID_HINT}"),
        }
    ),
]
EventName = Annotated[str, Field(min_length=1, max_length=200)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class StrictModel(BaseModel):
    """An object of a scenario file (the base of every model in one)."""

    model_config = ConfigDict(
        extra="forbid", strict=True, frozen=True, json_schema_extra=_bilingual_description
    )
    # The Japanese half of the model's description in the JSON Schema (the docstring is the English).
    doc_ja: ClassVar[str] = ""


# ------------------------------------------------------------------------------------------------ dates


def _date_source(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_SOURCE.match(value):
        known = ", ".join(DATE_SOURCES)
        raise ValueError(
            bilingual(
                f'"{value}" は CEMS が知っている日付ではありません。{known} のどれかを使ってください',
                f'"{value}" is not a date CEMS knows; use one of {known}',
            )
        )
    return value


DateSource = Annotated[
    str,
    BeforeValidator(_date_source),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": _DATE_SOURCE.pattern,
            "description": described(
                "日付の出どころ: trigger_event（トリガーイベント）、last_purchase_at（最終購入）、"
                "first_purchase_at（初回購入）、first_seen_at（初回訪問）、traits.<名前>（属性）",
                "trigger_event, last_purchase_at, first_purchase_at, first_seen_at or traits.<name>",
            ),
        }
    ),
]

"""Durations and local times as scenario files write them.

A duration is one or more `<whole number><unit>` parts, largest unit first, units `w` (7 days),
`d` (24 hours), `h`, `m` (minutes): `"30m"`, `"1h"`, `"3d"`, `"2w"`, `"1d12h"`. Offsets (a date plus
or minus) may start with `+` or `-`: `"-1d"`. A day is always 24 hours: Asia/Tokyo has no daylight
saving time, and a time of day is set separately (`at`). Seconds are not offered: nothing a scenario
does is that precise.

A local time is `"HH:MM"` on the 24-hour clock, `"00:00"` to `"23:59"`.
"""

from __future__ import annotations

import re
from datetime import time, timedelta

UNITS = {"w": timedelta(weeks=1), "d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}
# For editors (the JSON Schema); parse_duration is the rule.
DURATION_PATTERN = r"^(?=[0-9])([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?$"
OFFSET_PATTERN = r"^[+-]?(?=[0-9])([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?$"
LOCAL_TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_PART = re.compile(r"([0-9]+)([wdhm])")
_ORDER = "wdhm"
# Longer than any scenario could sensibly wait; keeps arithmetic on datetimes far from overflow.
MAX_DURATION = timedelta(days=3660)
DURATION_HINT = 'write e.g. "30m", "1h", "3d", "2w" or "1d12h" (units w, d, h, m; largest first)'
DURATION_HINT_JA = '"30m"・"1h"・"3d"・"2w"・"1d12h" のように書いてください（単位は w・d・h・m、大きい順）'


def parse_duration(text: str, *, signed: bool = False) -> timedelta:
    """`"1d12h"` -> timedelta(days=1, hours=12); raises ValueError with a plain-words reason, in
    Japanese and English (the scenario validator shows it as it is)."""
    if not isinstance(text, str):
        raise ValueError(f"期間はテキストです。{DURATION_HINT_JA} / a duration is text; {DURATION_HINT}")
    body = text.strip()
    sign = 1
    if body[:1] in "+-" and body:
        if not signed:
            raise ValueError(
                f'"{text}" に符号がありますが、この期間は負にできません。{DURATION_HINT_JA} / '
                f'"{text}" has a sign, but this duration cannot be negative; {DURATION_HINT}'
            )
        sign = -1 if body[0] == "-" else 1
        body = body[1:]
    parts = _PART.findall(body)
    if not body or "".join(n + u for n, u in parts) != body:
        raise ValueError(
            f'"{text}" は期間ではありません。{DURATION_HINT_JA} / "{text}" is not a duration; {DURATION_HINT}'
        )
    units = [u for _, u in parts]
    if len(set(units)) != len(units) or units != sorted(units, key=_ORDER.index):
        raise ValueError(
            f'"{text}" は単位が重なっているか、小さい単位が先にあります。{DURATION_HINT_JA} / '
            f'"{text}" repeats a unit or puts a smaller one first; {DURATION_HINT}'
        )
    total = sum((int(n) * UNITS[u] for n, u in parts), start=timedelta(0))
    if total > MAX_DURATION:
        raise ValueError(
            f'"{text}" は長すぎます（{MAX_DURATION.days} 日まで） / '
            f'"{text}" is longer than {MAX_DURATION.days} days'
        )
    return sign * total


def format_duration(value: timedelta) -> str:
    """The shortest text `parse_duration` reads back as `value` (whole minutes)."""
    minutes = int(abs(value).total_seconds() // 60)
    sign = "-" if value < timedelta(0) else ""
    if minutes == 0:
        return "0m"
    out = []
    for unit, size in (("w", 7 * 24 * 60), ("d", 24 * 60), ("h", 60), ("m", 1)):
        count, minutes = divmod(minutes, size)
        if count:
            out.append(f"{count}{unit}")
    return sign + "".join(out)


def parse_local_time(text: str) -> time:
    if not isinstance(text, str) or not re.match(LOCAL_TIME_PATTERN, text.strip()):
        raise ValueError(
            f'"{text}" は時刻ではありません。24 時間制の "HH:MM"（例 "10:00"）で書いてください / '
            f'"{text}" is not a time of day; write "HH:MM" on the 24-hour clock, e.g. "10:00"'
        )
    hours, minutes = text.strip().split(":")
    return time(int(hours), int(minutes))


def format_local_time(value: time) -> str:
    return f"{value.hour:02d}:{value.minute:02d}"

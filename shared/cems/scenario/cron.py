"""Cron schedules of recurring broadcasts: five fields, read in the scenario's time zone.

`minute hour day-of-month month day-of-week`, e.g. `"0 10 * * 1"` (Mondays at 10:00) or
`"30 9 1 * *"` (09:30 on the 1st of each month). Each field is `*`, a number, a range `a-b`, a step
`*/n` or `a-b/n`, or a comma-separated list of those. Months may be `jan`-`dec`, days of the week
`sun`-`sat` (0 and 7 are both Sunday). As in classic cron, when both day fields are restricted a day
matching either one fires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
    )
}
_DAYS = {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
CRON_HINT = 'write five fields "minute hour day-of-month month day-of-week", e.g. "0 10 * * 1"'
CRON_HINT_JA = '"分 時 日 月 曜日" の 5 つの欄で書いてください（例 "0 10 * * 1"）'
# The fields' names in the Japanese half of an error (the scenario validator shows errors as they are).
_JA = {"minute": "分", "hour": "時", "day of month": "日", "month": "月", "day of week": "曜日"}


@dataclass(frozen=True)
class CronSchedule:
    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    day_restricted: bool
    weekday_restricted: bool

    @classmethod
    def parse(cls, expression: str) -> CronSchedule:
        """Raises ValueError naming the field that is wrong, in Japanese and English."""
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(
                f'"{expression}" は欄が {len(fields)} つで、5 つではありません。{CRON_HINT_JA} / '
                f'"{expression}" has {len(fields)} fields, not 5; {CRON_HINT}'
            )
        values = [_parse_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
        weekdays = frozenset(0 if d == 7 else d for d in values[4])
        return cls(
            expression=expression,
            minutes=frozenset(values[0]),
            hours=frozenset(values[1]),
            days=frozenset(values[2]),
            months=frozenset(values[3]),
            weekdays=weekdays,
            day_restricted=not fields[2].startswith("*"),
            weekday_restricted=not fields[4].startswith("*"),
        )

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.day_restricted and self.weekday_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime | None:
        """The first time strictly after `after` (aware) that the schedule fires, as an aware
        datetime in `tz`; None if it never fires within 5 years (e.g. "0 0 31 2 *")."""
        local = after.astimezone(tz).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = local.date()
        for _ in range(366 * 5):
            if self._day_matches(day):
                start = local.time() if day == local.date() else time(0, 0)
                for hour in sorted(self.hours):
                    if hour < start.hour:
                        continue
                    for minute in sorted(self.minutes):
                        if hour == start.hour and minute < start.minute:
                            continue
                        return datetime.combine(day, time(hour, minute), tz)
            day += timedelta(days=1)
        return None


def _parse_field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    out: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise ValueError(
                    f'{_JA[name]}の欄 "{text}" の間隔 "{step_text}" が正しくありません。{CRON_HINT_JA} / '
                    f'the {name} field "{text}" has a bad step "{step_text}"; {CRON_HINT}'
                )
            step = int(step_text)
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, _, b = body.partition("-")
            first, last = _value(a, name, low, high, names, text), _value(b, name, low, high, names, text)
            if first > last:
                raise ValueError(
                    f'{_JA[name]}の欄 "{text}" の範囲が逆順です / '
                    f'the {name} field "{text}" has a range that runs backwards'
                )
        else:
            first = _value(body, name, low, high, names, text)
            last = high if step_text else first
        out.update(range(first, last + 1, step))
    return out


def _value(token: str, name: str, low: int, high: int, names: dict[str, int], text: str) -> int:
    if token in names:
        return names[token]
    if not token.isdigit():
        raise ValueError(
            f'{_JA[name]}の欄 "{text}" の "{token}" は数ではありません。{CRON_HINT_JA} / '
            f'the {name} field "{text}" has "{token}", which is not a number; {CRON_HINT}'
        )
    number = int(token)
    if not low <= number <= high:
        raise ValueError(
            f'{_JA[name]}の欄 "{text}" の {number} は {low}〜{high} の範囲外です / '
            f'the {name} field "{text}" has {number}, outside {low}-{high}'
        )
    return number

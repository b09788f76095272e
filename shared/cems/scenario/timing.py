"""When things are due: waits, date triggers, cron broadcasts, send windows, quiet hours (caps: `caps`).

Pure functions of a base moment and the scenario's time zone; every result is an aware UTC datetime.
Durations are elapsed time (a day is 24 hours, docs/scenarios.md); times of day (`at`, window
start) are wall-clock times in the zone. Across a daylight-saving change a wall-clock time that does
not exist (the spring gap) is taken at the same distance after the change (02:30 in a gap from 02:00
to 03:00 is 03:30), and a time that happens twice (the autumn overlap) is taken the first time.
Asia/Tokyo has no such changes; other zones are handled the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cems.models import Profile
from cems.scenario.cron import CronSchedule
from cems.scenario.model import WEEKDAYS, DateRef, DateTrigger, QuietHours, SendWindow, WaitStep


def local_moment(day: date, at: time, zone: ZoneInfo) -> datetime:
    """The UTC moment of wall-clock `at` on `day` in `zone` (gap: moved forward; overlap: first)."""
    # fold=0 reads a gap time with the offset in force before the change, which lands after it.
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def local_day(moment: datetime, zone: ZoneInfo) -> date:
    return moment.astimezone(zone).date()


def at_on_or_after(moment: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first moment at or after `moment` whose local time is `at`."""
    day = local_day(moment, zone)
    for offset in range(3):
        candidate = local_moment(day + timedelta(days=offset), at, zone)
        if candidate >= moment:
            return candidate
    raise AssertionError("unreachable: a wall-clock time occurs within two days")  # pragma: no cover


def at_after(moment: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first moment strictly after `moment` whose local time is `at` (later today, else tomorrow)."""
    return at_on_or_after(moment + timedelta(microseconds=1), at, zone)


# -------------------------------------------------------------------------------------------------- dates


def parse_date_value(value: Any, zone: ZoneInfo) -> datetime | None:
    """A date held in a trait or a profile field, as a UTC moment: a datetime (naive = local), an
    ISO date (local midnight) or ISO date and time text. Anything else is no date."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime.combine(value, time(0))
    elif isinstance(value, str):
        text = value.strip()
        try:
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return local_moment(moment.date(), moment.time(), zone)
    return moment.astimezone(UTC)


def profile_date(
    source: str, profile: Profile, trigger_time: datetime | None, zone: ZoneInfo
) -> datetime | None:
    """The moment a date source names (`trigger_event`, `last_purchase_at`, `first_purchase_at`,
    `first_seen_at`, `traits.<name>`), or None when the customer has no such date."""
    value: Any
    if source == "trigger_event":
        value = trigger_time
    elif source in ("last_purchase_at", "first_purchase_at", "first_seen_at"):
        value = getattr(profile, source)
    elif source.startswith("traits."):
        value = _trait(profile.traits, source.removeprefix("traits."))
    else:
        return None
    return None if value is None else parse_date_value(value, zone)


def _trait(traits: Mapping[str, Any], name: str) -> Any:
    if name in traits:
        return traits[name]
    current: Any = traits
    for key in name.split("."):
        if not isinstance(current, Mapping) or key not in current:
            return None
        current = current[key]
    return current


# -------------------------------------------------------------------------------------------------- waits


def wait_due(
    step: WaitStep,
    base: datetime,
    zone: ZoneInfo,
    profile: Profile,
    trigger_time: datetime | None = None,
) -> datetime | None:
    """When a wait that starts at `base` ends (may be in the past: the journey continues at once);
    None when it waits `until` a date the customer does not have.

    - `duration`: base + duration; with `at`, the first `at` on or after that.
    - `until`: the date plus its offset; with `at`, that time on the local day of that moment.
    - `at` alone: the next `at` after base."""
    if step.duration is not None:
        end = base + step.duration
        return end if step.at is None else at_on_or_after(end, step.at, zone)
    if step.until is not None:
        moment = date_ref_moment(step.until, profile, trigger_time, zone)
        if moment is None or step.at is None:
            return moment
        return local_moment(local_day(moment, zone), step.at, zone)
    assert step.at is not None  # the model requires one of the three
    return at_after(base, step.at, zone)


def date_ref_moment(
    ref: DateRef, profile: Profile, trigger_time: datetime | None, zone: ZoneInfo
) -> datetime | None:
    moment = profile_date(ref.date, profile, trigger_time, zone)
    return None if moment is None else moment + ref.offset


# ----------------------------------------------------------------------------------------- date triggers


def date_trigger_due(
    trigger: DateTrigger, profile: Profile, zone: ZoneInfo, after: datetime
) -> datetime | None:
    """The first moment at or after `after` when a date trigger fires for this customer: `at` on the
    local day of the date plus offset; with `yearly`, on that month and day of a later year when this
    year's has passed (29 February is the 28th in other years). None: no date, or it has passed."""
    moment = profile_date(trigger.date, profile, None, zone)
    if moment is None:
        return None
    day = local_day(moment + trigger.offset, zone)
    if not trigger.yearly:
        due = local_moment(day, trigger.at, zone)
        return due if due >= after else None
    year = local_day(after, zone).year
    for candidate_year in range(year - 1, year + 3):
        due = local_moment(_same_day_in(day, candidate_year), trigger.at, zone)
        if due >= after:
            return due
    return None  # pragma: no cover - a later year always qualifies


def _same_day_in(day: date, year: int) -> date:
    if day.month == 2 and day.day == 29:
        try:
            return date(year, 2, 29)
        except ValueError:
            return date(year, 2, 28)
    return day.replace(year=year)


# -------------------------------------------------------------------------------------------------- cron


def cron_next(expression: str | CronSchedule, after: datetime, zone: ZoneInfo) -> datetime | None:
    """The first moment strictly after `after` that a cron schedule (local to `zone`) fires; None if
    it never does (e.g. 31 February)."""
    schedule = CronSchedule.parse(expression) if isinstance(expression, str) else expression
    start = after
    for _ in range(4):  # a gap time resolved forward can land at or before `after`: look again
        local = schedule.next_after(start, zone)
        if local is None:
            return None
        due = local.astimezone(UTC)
        if due > after:
            return due
        start = local + timedelta(minutes=1)
    return None  # pragma: no cover


# ---------------------------------------------------------------------------------------- send windows


def in_window(window: SendWindow, moment: datetime, zone: ZoneInfo) -> bool:
    """Whether `moment` is inside the send window (its day allowed; start <= local time < end)."""
    local = moment.astimezone(zone)
    allowed = WEEKDAYS[local.weekday()] in window.days
    return allowed and window.start <= local.time().replace(tzinfo=None) < window.end


def window_opening(window: SendWindow, moment: datetime, zone: ZoneInfo) -> datetime:
    """`moment` itself when it is inside the send window, else the window's next opening. (The model
    keeps `start` before `end`: windows never cross midnight.)"""
    if in_window(window, moment, zone):
        return moment
    day = local_day(moment, zone)
    for offset in range(8):
        candidate_day = day + timedelta(days=offset)
        if WEEKDAYS[candidate_day.weekday()] not in window.days:
            continue
        opening = local_moment(candidate_day, window.start, zone)
        if opening >= moment:
            return opening
    raise AssertionError(
        "unreachable: a window with at least one day opens within a week"
    )  # pragma: no cover


# ------------------------------------------------------------------------------- quiet hours (deployment)

QUIET_ZONE = ZoneInfo("Asia/Tokyo")  # the deployment's quiet hours are Tokyo's, whatever a scenario's zone
# How far ahead sending is looked for: a week holds every day a window may name, plus a day of margin.
_SEND_HOURS_HORIZON = timedelta(days=8)


def in_quiet_hours(quiet: QuietHours, moment: datetime) -> bool:
    """Whether `moment` falls in the quiet hours (start <= Tokyo time < end, across midnight when
    `end` is earlier than `start`)."""
    local = moment.astimezone(QUIET_ZONE).time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        return quiet.start <= local < quiet.end
    return local >= quiet.start or local < quiet.end


def may_send(window: SendWindow | None, quiet: QuietHours | None, moment: datetime, zone: ZoneInfo) -> bool:
    """Whether a send may go at `moment`: inside the scenario's window (in its zone) and outside the
    deployment's quiet hours. The one rule the engine, the simulator and so the runner apply: a
    scenario's window narrows the quiet hours, never widens them; a scenario without one sends
    whenever the quiet hours allow, or within SendWindow()'s default when the deployment sets none."""
    window = _window_of(window, quiet)
    if window is not None and not in_window(window, moment, zone):
        return False
    return quiet is None or not in_quiet_hours(quiet, moment)


def send_opening(
    window: SendWindow | None, quiet: QuietHours | None, moment: datetime, zone: ZoneInfo
) -> datetime | None:
    """The first moment at or after `moment` when `may_send` holds; None when the scenario's window
    never meets the time the quiet hours leave (say a 22:00-23:00 window under 21:00-09:00 quiet hours).

    Found by moving to the window's next opening, then past the quiet hours, and again until both
    agree: each move skips only moments one of them refuses, so the first moment both allow is never
    passed, and the window (in its zone) and the quiet hours (in Tokyo's) need no common calendar."""
    window = _window_of(window, quiet)
    candidate = moment
    while candidate - moment <= _SEND_HOURS_HORIZON:
        if window is not None:
            candidate = window_opening(window, candidate, zone)
        if quiet is None or not in_quiet_hours(quiet, candidate):
            return candidate
        candidate = at_on_or_after(candidate, quiet.end, QUIET_ZONE)
    return None


def _window_of(window: SendWindow | None, quiet: QuietHours | None) -> SendWindow | None:
    # The default window stands in only where the deployment sets no quiet hours: a scenario written
    # before them keeps sending when it did.
    if window is None and quiet is None:
        return SendWindow()
    return window

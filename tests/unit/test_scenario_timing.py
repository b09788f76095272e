"""Due times: every wait form, date triggers, cron, send windows and cap periods; Tokyo and a DST zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from cems.models import Channel, OrderSummary, Profile
from cems.scenario.caps import CapCounter, CapPeriod, counters_of
from cems.scenario.model import DateTrigger, SendWindow, WaitStep
from cems.scenario.timing import (
    at_after,
    cron_next,
    date_trigger_due,
    in_window,
    local_moment,
    parse_date_value,
    wait_due,
    window_opening,
)
from hypothesis import given
from hypothesis import strategies as st

TOKYO = ZoneInfo("Asia/Tokyo")
NEW_YORK = ZoneInfo("America/New_York")


def jst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=TOKYO).astimezone(UTC)


def ny(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)


def profile(**fields: Any) -> Profile:
    at = jst(2026, 1, 1, 0, 0)
    return Profile(customer_id="cus_1", first_seen_at=at, updated_at=at, **fields)


def wait(**fields: Any) -> WaitStep:
    return WaitStep.model_validate({"id": "w", "type": "wait", **fields})


# -- waits ---------------------------------------------------------------------------------------------------


def test_a_duration_is_elapsed_time_from_the_base() -> None:
    base = jst(2026, 5, 1, 14, 30)
    assert wait_due(wait(duration="3d"), base, TOKYO, profile()) == base + timedelta(days=3)
    assert wait_due(wait(duration="1d12h"), base, TOKYO, profile()) == jst(2026, 5, 3, 2, 30)
    assert wait_due(wait(duration="30m"), base, TOKYO, profile()) == jst(2026, 5, 1, 15, 0)


def test_duration_and_at_is_the_first_at_on_or_after_the_duration() -> None:
    assert wait_due(wait(duration="1d", at="10:00"), jst(2026, 5, 1, 8, 0), TOKYO, profile()) == jst(
        2026, 5, 2, 10, 0
    )
    assert wait_due(wait(duration="1d", at="10:00"), jst(2026, 5, 1, 11, 0), TOKYO, profile()) == jst(
        2026, 5, 3, 10, 0
    )
    # exactly on the time counts as "on or after"
    assert wait_due(wait(duration="1d", at="10:00"), jst(2026, 5, 1, 10, 0), TOKYO, profile()) == jst(
        2026, 5, 2, 10, 0
    )


def test_at_alone_is_later_today_else_tomorrow() -> None:
    assert wait_due(wait(at="10:00"), jst(2026, 5, 1, 8, 0), TOKYO, profile()) == jst(2026, 5, 1, 10, 0)
    assert wait_due(wait(at="10:00"), jst(2026, 5, 1, 10, 0), TOKYO, profile()) == jst(2026, 5, 2, 10, 0)
    assert wait_due(wait(at="10:00"), jst(2026, 5, 1, 23, 0), TOKYO, profile()) == jst(2026, 5, 2, 10, 0)


def test_until_trigger_event_plus_offset_at_a_time_is_that_local_day() -> None:
    bought = jst(2026, 5, 1, 23, 30)  # late at night in Tokyo (14:30 UTC)
    step = wait(until={"date": "trigger_event", "offset": "3d"}, at="10:00")
    assert wait_due(step, bought, TOKYO, profile(), trigger_time=bought) == jst(2026, 5, 4, 10, 0)


def test_until_without_at_is_the_exact_moment_and_may_be_negative() -> None:
    p = profile(traits={"birthday": "1990-05-20"})
    step = wait(until={"date": "traits.birthday", "offset": "-7d"})
    assert wait_due(step, jst(2026, 1, 1, 0, 0), TOKYO, p) == jst(1990, 5, 13, 0, 0)


def test_until_a_profile_purchase_date() -> None:
    p = profile(orders={"o1": OrderSummary(at=jst(2026, 4, 10, 15, 0), amount=3000)})
    step = wait(until={"date": "last_purchase_at", "offset": "30d"}, at="09:30")
    assert wait_due(step, jst(2026, 4, 10, 16, 0), TOKYO, p) == jst(2026, 5, 10, 9, 30)


def test_a_wait_until_a_missing_date_has_no_due_time() -> None:
    step = wait(until={"date": "traits.birthday"}, at="10:00")
    assert wait_due(step, jst(2026, 1, 1, 0, 0), TOKYO, profile()) is None
    bad = profile(traits={"birthday": "not a date"})
    assert wait_due(step, jst(2026, 1, 1, 0, 0), TOKYO, bad) is None


def test_a_nested_trait_date() -> None:
    p = profile(traits={"member": {"since": "2025-03-01T12:00:00+09:00"}})
    step = wait(until={"date": "traits.member.since", "offset": "1d"})
    assert wait_due(step, jst(2026, 1, 1, 0, 0), TOKYO, p) == jst(2025, 3, 2, 12, 0)


def test_date_values() -> None:
    assert parse_date_value("2026-05-01", TOKYO) == jst(2026, 5, 1, 0, 0)
    assert parse_date_value("2026-05-01T01:00:00Z", TOKYO) == datetime(2026, 5, 1, 1, tzinfo=UTC)
    assert parse_date_value(date(2026, 5, 1), TOKYO) == jst(2026, 5, 1, 0, 0)
    assert parse_date_value(12345, TOKYO) is None


# -- daylight saving (Tokyo has none; New York does) --------------------------------------------------------


def test_a_wall_clock_time_in_the_spring_gap_moves_forward() -> None:
    # 2026-03-08: New York clocks go from 02:00 to 03:00.
    assert local_moment(date(2026, 3, 8), time(2, 30), NEW_YORK) == ny(2026, 3, 8, 3, 30)


def test_a_wall_clock_time_in_the_autumn_overlap_is_taken_the_first_time() -> None:
    # 2026-11-01: 01:00-02:00 happens twice; the first is EDT (UTC-4).
    assert local_moment(date(2026, 11, 1), time(1, 30), NEW_YORK) == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)


def test_at_stays_on_the_wall_clock_across_a_dst_change() -> None:
    # daily at 10:00 local across the spring change: 23 hours apart, still 10:00
    before = ny(2026, 3, 7, 10, 0)
    after = at_after(before, time(10, 0), NEW_YORK)
    assert after == ny(2026, 3, 8, 10, 0)
    assert after - before == timedelta(hours=23)
    step = wait(duration="1d", at="10:00")
    assert wait_due(step, ny(2026, 3, 7, 9, 0), NEW_YORK, profile()) == ny(2026, 3, 8, 10, 0)


def test_a_duration_is_24_hours_a_day_even_across_dst() -> None:
    base = ny(2026, 3, 7, 12, 0)
    due = wait_due(wait(duration="1d"), base, NEW_YORK, profile())
    assert due == base + timedelta(hours=24)
    assert due is not None and due.astimezone(NEW_YORK).hour == 13


# -- date triggers ------------------------------------------------------------------------------------------


def date_trigger(**fields: Any) -> DateTrigger:
    return DateTrigger.model_validate({"type": "date", **fields})


def test_a_date_trigger_fires_at_the_time_on_the_day_of_the_date_plus_offset() -> None:
    p = profile(orders={"o1": OrderSummary(at=jst(2026, 4, 10, 22, 0), amount=3000)})
    trigger = date_trigger(date="last_purchase_at", offset="30d", at="10:00")
    assert date_trigger_due(trigger, p, TOKYO, jst(2026, 4, 11, 0, 0)) == jst(2026, 5, 10, 10, 0)
    # once passed, a one-off date trigger does not fire again
    assert date_trigger_due(trigger, p, TOKYO, jst(2026, 5, 10, 10, 1)) is None
    assert date_trigger_due(trigger, profile(), TOKYO, jst(2026, 4, 11, 0, 0)) is None


def test_a_yearly_date_trigger_fires_every_year() -> None:
    p = profile(traits={"birthday": "1990-05-20"})
    trigger = date_trigger(date="traits.birthday", offset="-7d", at="10:00", yearly=True)
    assert date_trigger_due(trigger, p, TOKYO, jst(2026, 1, 1, 0, 0)) == jst(2026, 5, 13, 10, 0)
    assert date_trigger_due(trigger, p, TOKYO, jst(2026, 5, 13, 10, 1)) == jst(2027, 5, 13, 10, 0)


def test_a_29_february_birthday_is_the_28th_in_other_years() -> None:
    p = profile(traits={"birthday": "2000-02-29"})
    trigger = date_trigger(date="traits.birthday", at="09:00", yearly=True)
    assert date_trigger_due(trigger, p, TOKYO, jst(2026, 1, 1, 0, 0)) == jst(2026, 2, 28, 9, 0)
    assert date_trigger_due(trigger, p, TOKYO, jst(2027, 3, 1, 0, 0)) == jst(2028, 2, 29, 9, 0)


# -- cron ---------------------------------------------------------------------------------------------------


def test_cron_mondays_at_ten_tokyo() -> None:
    # 2026-05-04 is a Monday
    assert cron_next("0 10 * * mon", jst(2026, 5, 1, 12, 0), TOKYO) == jst(2026, 5, 4, 10, 0)
    assert cron_next("0 10 * * mon", jst(2026, 5, 4, 10, 0), TOKYO) == jst(2026, 5, 11, 10, 0)


def test_cron_first_of_the_month() -> None:
    assert cron_next("30 9 1 * *", jst(2026, 5, 1, 9, 30), TOKYO) == jst(2026, 6, 1, 9, 30)


def test_cron_that_never_fires() -> None:
    assert cron_next("0 0 31 2 *", jst(2026, 1, 1, 0, 0), TOKYO) is None


def test_cron_in_a_dst_zone_keeps_the_wall_clock_and_fires_once_in_the_gap() -> None:
    assert cron_next("0 10 * * *", ny(2026, 3, 7, 10, 0), NEW_YORK) == ny(2026, 3, 8, 10, 0)
    fired = cron_next("30 2 * * *", ny(2026, 3, 8, 0, 0), NEW_YORK)
    assert fired == ny(2026, 3, 8, 3, 30)
    assert fired is not None
    assert cron_next("30 2 * * *", fired, NEW_YORK) == ny(2026, 3, 9, 2, 30)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)))
def test_cron_is_always_strictly_later(after: datetime) -> None:
    for zone in (TOKYO, NEW_YORK):
        due = cron_next("*/20 1-3 * * *", after, zone)
        assert due is not None and due > after and due.tzinfo is UTC


# -- send windows -------------------------------------------------------------------------------------------


def window(**fields: Any) -> SendWindow:
    return SendWindow.model_validate(fields)


def test_inside_the_window_sends_now() -> None:
    at = jst(2026, 5, 1, 12, 0)
    assert window_opening(window(), at, TOKYO) == at


def test_before_the_window_waits_for_the_opening_the_same_day() -> None:
    assert window_opening(window(), jst(2026, 5, 1, 6, 0), TOKYO) == jst(2026, 5, 1, 9, 0)


def test_after_the_window_waits_for_tomorrow_morning() -> None:
    assert window_opening(window(), jst(2026, 5, 1, 21, 0), TOKYO) == jst(2026, 5, 2, 9, 0)
    assert window_opening(window(), jst(2026, 5, 1, 23, 59), TOKYO) == jst(2026, 5, 2, 9, 0)


def test_just_after_midnight_waits_for_the_same_morning() -> None:
    assert window_opening(window(), jst(2026, 5, 2, 0, 5), TOKYO) == jst(2026, 5, 2, 9, 0)


def test_weekdays_only_a_friday_night_send_waits_for_monday() -> None:
    weekdays = window(start="10:00", end="18:00", days=["mon", "tue", "wed", "thu", "fri"])
    # 2026-05-01 is a Friday
    assert window_opening(weekdays, jst(2026, 5, 1, 19, 0), TOKYO) == jst(2026, 5, 4, 10, 0)
    assert window_opening(weekdays, jst(2026, 5, 2, 12, 0), TOKYO) == jst(2026, 5, 4, 10, 0)
    assert not in_window(weekdays, jst(2026, 5, 3, 12, 0), TOKYO)


def test_the_end_of_the_window_is_outside() -> None:
    assert in_window(window(), jst(2026, 5, 1, 20, 59), TOKYO)
    assert not in_window(window(), jst(2026, 5, 1, 21, 0), TOKYO)


def test_a_window_in_a_dst_zone_opens_on_the_local_clock() -> None:
    assert window_opening(window(), ny(2026, 3, 7, 22, 0), NEW_YORK) == ny(2026, 3, 8, 9, 0)


@given(
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    st.sets(st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]), min_size=1),
)
def test_the_opening_is_never_earlier_and_always_inside(moment: datetime, days: set[str]) -> None:
    w = window(start="09:00", end="20:00", days=sorted(days))
    for zone in (TOKYO, NEW_YORK):
        opening = window_opening(w, moment, zone)
        assert opening >= moment
        assert in_window(w, opening, zone)
        assert opening - moment < timedelta(days=8)


# -- frequency-cap periods ----------------------------------------------------------------------------------


def test_cap_periods_are_tokyo_days_and_monday_weeks() -> None:
    late_utc = datetime(2026, 5, 3, 16, 0, tzinfo=UTC)  # Monday 01:00 in Tokyo
    assert CapPeriod.DAY.label_of(late_utc) == "2026-05-04"
    assert CapPeriod.WEEK.label_of(late_utc) == "2026-W19"
    assert CapPeriod.WEEK.label_of(datetime(2026, 12, 31, 15, 0, tzinfo=UTC)) == "2026-W53"  # Fri 1 Jan 2027
    assert CapPeriod.DAY.next_start(jst(2026, 5, 4, 13, 0)) == jst(2026, 5, 5, 0, 0)
    assert CapPeriod.WEEK.next_start(jst(2026, 5, 4, 13, 0)) == jst(2026, 5, 11, 0, 0)
    assert CapPeriod.WEEK.next_start(jst(2026, 5, 10, 23, 0)) == jst(2026, 5, 11, 0, 0)


def test_a_send_counts_in_its_channels_counters_of_the_tokyo_day_and_week() -> None:
    late_utc = datetime(2026, 5, 3, 16, 0, tzinfo=UTC)  # Monday 01:00 in Tokyo
    assert counters_of(Channel.EMAIL, late_utc) == (
        CapCounter(Channel.EMAIL, CapPeriod.DAY, "2026-05-04"),
        CapCounter(Channel.EMAIL, CapPeriod.WEEK, "2026-W19"),
    )

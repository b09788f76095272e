"""One cap across channels and the deployment's quiet hours (issue 13): the total cap is counted with
the channel's on the in-memory fakes the runner uses (the contract suite holds them to DynamoDB), the
engine sees it when deciding (this activation's earlier sends on any channel count), and every
scenario's send window only narrows the quiet hours, across midnight too."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cems import clock
from cems.adapters.dynamodb import keys
from cems.models import Channel, ChannelState, MessageType, Profile, StoredEvent
from cems.scenario import engine
from cems.scenario.caps import TOTAL, CapCounter, CapPeriod, counters_of
from cems.scenario.config import EngineSettings
from cems.scenario.model import ChannelCap, FrequencyCaps, QuietHours, Scenario, SendWindow
from cems.scenario.simulate import simulate
from cems.scenario.timing import may_send, send_opening
from cems.settings import Settings, SettingsError

from tests.fakes.journey_world import JourneyWorld
from tests.fakes.journeys import InMemoryCapStore

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday
TOKYO = ZoneInfo("Asia/Tokyo")
ONE_A_DAY = ChannelCap(per_day=1, per_week=None)
ROOMY = ChannelCap(per_day=5, per_week=10)
TOTAL_ONE = FrequencyCaps.model_validate(
    {"line": {"per_day": 5}, "email": {"per_day": 5}, "total": {"per_day": 1}}
)
LINE_SEND = {
    "id": "line-hello",
    "type": "send",
    "channel": "line",
    "line": [{"type": "text", "text": "こんにちは"}],
}
EMAIL_SEND = {
    "id": "mail-hello",
    "type": "send",
    "channel": "email",
    "email": {"subject": "こんにちは", "text": "ご来店ありがとうございます"},
}


@pytest.fixture(autouse=True)
def frozen() -> Iterator[None]:
    clock.freeze(NOW)
    yield
    clock.reset()


def tokyo(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, day, hour, minute, tzinfo=TOKYO).astimezone(UTC)


def both_channels(customer_id: str = "cus_1") -> Profile:
    on = ChannelState(reachable=True, consent=True, updated_at=NOW)
    return Profile(
        customer_id=customer_id,
        line_user_id="U" + "0" * 32,
        traits={"email": "hanako@example.jp"},
        channels={Channel.LINE: on, Channel.EMAIL: on},
        first_seen_at=NOW - timedelta(days=30),
        updated_at=NOW,
    )


def scenario(scenario_id: str, steps: list[dict[str, Any]], **fields: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "id": scenario_id,
            "name": scenario_id,
            "trigger": {"type": "event", "event": "Product Viewed"},
            "steps": [*steps, {"id": "done", "type": "end"}],
            **fields,
        }
    )


def started(s: Scenario, profile: Profile) -> engine.Enrolment:
    event = StoredEvent(
        customer_id=profile.customer_id,
        site_id="shop",
        type=MessageType.TRACK,
        message_id="m1",
        event="Product Viewed",
        timestamp=NOW,
        received_at=NOW,
    )
    decision = engine.enrol(s, 1, profile, event, None, NOW)
    assert decision.enrolment is not None
    return decision.enrolment


# ------------------------------------------------------------------------------------------ keys


def test_no_channel_is_named_total_and_the_totals_keys_read_back() -> None:
    """A channel named `total` would count in the total's counters: none may be."""
    assert TOTAL.value not in {c.value for c in Channel}
    day, week = counters_of(TOTAL, NOW)
    assert (keys.cap_sk(day), keys.cap_sk(week)) == ("total#D#2026-05-01", "total#W#2026-W18")
    assert keys.cap_counter_of_sk("total#D#2026-05-01") == CapCounter(TOTAL, CapPeriod.DAY, "2026-05-01")
    assert keys.cap_counter_of_sk("line#D#2026-05-01") == counters_of(Channel.LINE, NOW)[0]
    assert {keys.cap_sk(c) for c in counters_of(Channel.LINE, NOW)}.isdisjoint({keys.cap_sk(day)})


# ------------------------------------------------------------------------------------- the fake store


def test_the_total_counts_sends_on_every_channel_and_refuses_past_its_limit() -> None:
    caps = InMemoryCapStore()
    assert caps.try_consume("c1", Channel.LINE, ROOMY, NOW, "k-line", total=ONE_A_DAY).allowed
    refused = caps.try_consume("c1", Channel.EMAIL, ROOMY, NOW, "k-mail", total=ONE_A_DAY)
    assert not refused.allowed and refused.capped_scope is TOTAL and refused.capped_by is CapPeriod.DAY
    assert caps.counts("c1", Channel.EMAIL, NOW) == (0, 0)  # all or nothing
    assert caps.counts("c1", TOTAL, NOW) == (1, 0)  # the total's week has no limit: not counted
    # The same send again (a redo after a crash): allowed, counted once.
    again = caps.try_consume("c1", Channel.LINE, ROOMY, NOW, "k-line", total=ONE_A_DAY)
    assert again.allowed and again.already
    assert caps.counts("c1", TOTAL, NOW) == (1, 0) and caps.counts("c1", Channel.LINE, NOW) == (1, 1)
    # Given back with its key: the channel's and the total's, so the email now fits.
    caps.release("c1", Channel.LINE, NOW, "k-line", total=True)
    assert caps.counts("c1", TOTAL, NOW) == (0, 0) and caps.counts("c1", Channel.LINE, NOW) == (0, 0)
    assert caps.try_consume("c1", Channel.EMAIL, ROOMY, NOW, "k-mail", total=ONE_A_DAY).allowed


def test_a_page_of_takes_counts_one_customers_two_channels_in_the_total() -> None:
    caps = InMemoryCapStore()
    takes = [("c1", Channel.LINE, ROOMY), ("c1", Channel.EMAIL, ROOMY), ("c2", Channel.LINE, ROOMY)]
    outcomes = caps.try_consume_many(takes, NOW, send_keys=["a", "b", "c"], totals=[ONE_A_DAY] * 3)
    assert [o.allowed for o in outcomes] == [True, False, True]
    assert caps.counts("c1", TOTAL, NOW) == (1, 0) and caps.counts("c2", TOTAL, NOW) == (1, 0)


# ----------------------------------------------------------------------------------------- the engine


def test_the_engine_holds_back_a_send_the_total_has_no_room_for_and_names_the_total() -> None:
    profile = both_channels()
    s = scenario("mail", [EMAIL_SEND])
    (day, _), (total_day, _) = counters_of(Channel.EMAIL, NOW), counters_of(TOTAL, NOW)
    view = engine.CapView(TOTAL_ONE, {total_day: 1})  # a LINE message today, from another scenario
    result = engine.advance(s, started(s, profile), profile, [], NOW, view)
    assert not result.dispatches and result.enrolment.state is engine.EnrolmentState.WAITING
    (deferred,) = [r for r in result.log if r.what == "deferred"]
    assert deferred.detail.startswith("total cap (all channels) reached")
    assert result.enrolment.due_at == tokyo(2, 9)  # the next Tokyo day, at the window's opening
    # Without a total the email goes: its own channel has room.
    free = engine.advance(s, started(s, profile), profile, [], NOW, engine.CapView(FrequencyCaps(), {day: 0}))
    assert len(free.dispatches) == 1 and free.caps[0].total is None


def test_an_activations_earlier_send_on_another_channel_counts_against_the_total() -> None:
    profile = both_channels()
    s = scenario("both", [LINE_SEND, EMAIL_SEND], frequency_cap={"when_capped": "skip"})
    result = engine.advance(s, started(s, profile), profile, [], NOW, engine.CapView(TOTAL_ONE))
    assert [d.channel for d in result.dispatches] == [Channel.LINE]
    assert [(r.what, r.detail) for r in result.log if r.what == "capped_skip"] == [("capped_skip", "total")]
    (request,) = result.caps
    assert request.total == ONE_A_DAY and request.counters()[2:] == counters_of(TOTAL, NOW)


def test_a_send_whose_key_took_the_total_already_is_not_held_back_by_it() -> None:
    profile = both_channels()
    s = scenario("mail", [EMAIL_SEND])
    enrolment = started(s, profile)
    first = engine.advance(s, enrolment, profile, [], NOW, engine.CapView(TOTAL_ONE))
    key = first.dispatches[0].key
    total_day, _ = counters_of(TOTAL, NOW)
    email_day, email_week = counters_of(Channel.EMAIL, NOW)
    taken = {total_day: 1, email_day: 1, email_week: 1}
    holders = {c: {key} for c in taken}
    redo = engine.advance(s, enrolment, profile, [], NOW, engine.CapView(TOTAL_ONE, taken, holders))
    assert [d.key for d in redo.dispatches] == [key]


# ----------------------------------------------------------------------------------------- the runner


def test_two_scenarios_on_two_channels_send_one_message_a_day_under_a_total_of_one() -> None:
    world = JourneyWorld()
    world.runner = world.another_runner(TOTAL_ONE)
    world.upload({"id": "on-line", "name": "l", "trigger": {"type": "event", "event": "Product Viewed"},
                  "steps": [LINE_SEND]})  # fmt: skip
    world.upload({"id": "by-mail", "name": "m", "trigger": {"type": "event", "event": "Product Viewed"},
                  "steps": [EMAIL_SEND]})  # fmt: skip
    world.customers.put_profile(both_channels())
    report = world.runner.on_stored_event(world.event("cus_1", "Product Viewed"))
    assert report.dispatched == 1
    assert world.caps.counts("cus_1", TOTAL, NOW) == (1, 0)
    waiting = [world.enrolment("cus_1", s) for s in ("on-line", "by-mail")]
    assert sorted(e.state.value for e in waiting) == ["completed", "waiting"]
    # The next day the deferred one goes, and the total counts it in that day.
    clock.freeze(tokyo(2, 9, 1))
    assert world.runner.tick().dispatched == 1
    assert world.caps.counts("cus_1", TOTAL, tokyo(2, 9, 1)) == (1, 0)


# ------------------------------------------------------------------------------------------ quiet hours


NIGHT = QuietHours(start="21:00", end="09:00")  # type: ignore[arg-type]
SMALL_HOURS = QuietHours(start="02:00", end="06:00")  # type: ignore[arg-type]  # sends 06:00-02:00


def test_a_scenario_window_narrows_the_quiet_hours_to_their_intersection() -> None:
    window = SendWindow(start="08:00", end="20:00")  # type: ignore[arg-type]
    assert not may_send(window, NIGHT, tokyo(1, 8, 30), TOKYO)  # the window allows, the quiet hours not
    assert send_opening(window, NIGHT, tokyo(1, 8, 30), TOKYO) == tokyo(1, 9)
    assert may_send(window, NIGHT, tokyo(1, 19, 59), TOKYO)
    assert not may_send(window, NIGHT, tokyo(1, 20, 30), TOKYO)  # the quiet hours allow, the window not
    assert send_opening(window, NIGHT, tokyo(1, 20, 30), TOKYO) == tokyo(2, 9)


def test_quiet_hours_leaving_a_window_across_midnight_meet_a_scenario_window() -> None:
    window = SendWindow(start="01:00", end="23:00")  # type: ignore[arg-type]
    assert may_send(window, SMALL_HOURS, tokyo(1, 1, 30), TOKYO)
    assert not may_send(window, SMALL_HOURS, tokyo(1, 3), TOKYO)
    assert send_opening(window, SMALL_HOURS, tokyo(1, 3), TOKYO) == tokyo(1, 6)
    assert not may_send(window, SMALL_HOURS, tokyo(1, 23, 30), TOKYO)
    assert send_opening(window, SMALL_HOURS, tokyo(1, 23, 30), TOKYO) == tokyo(2, 1)
    # Without a window of its own a scenario sends whenever the quiet hours allow, midnight included.
    assert may_send(None, SMALL_HOURS, tokyo(1, 0, 30), TOKYO)
    assert send_opening(None, SMALL_HOURS, tokyo(1, 2, 30), TOKYO) == tokyo(1, 6)


def test_a_window_in_another_zone_and_on_some_days_meets_the_tokyo_quiet_hours() -> None:
    seoul = ZoneInfo("Asia/Seoul")  # the same offset; days from the window, hours from both
    window = SendWindow(start="07:00", end="12:00", days=["mon"])  # type: ignore[arg-type]
    friday_noon = tokyo(1, 12)
    assert send_opening(window, NIGHT, friday_noon, seoul) == tokyo(4, 9)  # Monday, when both allow


def test_without_quiet_hours_nothing_changes_and_a_window_the_quiet_hours_cover_never_opens() -> None:
    assert not may_send(None, None, tokyo(1, 22), TOKYO)  # SendWindow()'s 09:00-21:00, as before
    assert send_opening(None, None, tokyo(1, 22), TOKYO) == tokyo(2, 9)
    assert may_send(None, NIGHT, tokyo(1, 12), TOKYO) and not may_send(None, NIGHT, tokyo(1, 22), TOKYO)
    late = SendWindow(start="22:00", end="23:00")  # type: ignore[arg-type]
    assert send_opening(late, NIGHT, tokyo(1, 12), TOKYO) is None


def test_the_engine_waits_for_the_quiet_hours_and_leaves_when_they_never_open() -> None:
    profile = both_channels()
    s = scenario("line", [LINE_SEND])
    clock.freeze(tokyo(1, 22))
    at_night = tokyo(1, 22)
    waiting = engine.advance(s, started(s, profile), profile, [], at_night, engine.CapView(), NIGHT)
    assert not waiting.dispatches and waiting.enrolment.due_at == tokyo(2, 9)
    wider = scenario("wide", [LINE_SEND], send_window={"start": "00:00", "end": "23:59"})
    narrowed = engine.advance(wider, started(wider, profile), profile, [], at_night, engine.CapView(), NIGHT)
    assert narrowed.enrolment.due_at == tokyo(2, 9)  # its window cannot widen the quiet hours
    never = scenario("late", [LINE_SEND], send_window={"start": "22:00", "end": "23:00"})
    gone = engine.advance(never, started(never, profile), profile, [], at_night, engine.CapView(), NIGHT)
    assert gone.enrolment.state is engine.EnrolmentState.EXITED
    assert gone.enrolment.exit_reason == "no_send_hours"


def test_the_simulator_keeps_the_quiet_hours_production_keeps() -> None:
    profile = both_channels()
    s = scenario("line", [LINE_SEND], send_window={"start": "00:00", "end": "23:59"})
    event = StoredEvent(
        customer_id="cus_1",
        site_id="shop",
        type=MessageType.TRACK,
        message_id="m1",
        event="Product Viewed",
        timestamp=tokyo(1, 22),
        received_at=tokyo(1, 22),
    )
    free = simulate(s, [event], profile)
    quiet = simulate(s, [event], profile, quiet_hours=NIGHT)
    sent_free = [t.at for t in free.timeline if t.what == "sent"]
    sent_quiet = [t.at for t in quiet.timeline if t.what == "sent"]
    assert sent_free == [tokyo(1, 22)] and sent_quiet == [tokyo(2, 9)]


# ------------------------------------------------------------------------------------------- settings


def engine_settings(**environ: str) -> EngineSettings:
    return Settings(environ).area(EngineSettings)


def test_quiet_hours_and_the_total_cap_are_deployment_settings() -> None:
    unset = engine_settings()
    assert unset.quiet() is None and "total" not in unset.caps()
    assert FrequencyCaps.model_validate(unset.caps()).total is None
    chosen = engine_settings(CEMS_QUIET_HOURS="21:00-09:00", CEMS_CAP_TOTAL_PER_DAY="2")
    assert chosen.quiet() == NIGHT and chosen.quiet_hours == "21:00-09:00"
    limits = FrequencyCaps.model_validate(chosen.caps())
    assert limits.total == ChannelCap(per_day=2, per_week=None)  # an unset period of the total: no limit
    assert limits.of(Channel.LINE) == ChannelCap()  # the channels keep their defaults
    assert engine_settings(CEMS_QUIET_HOURS="none").quiet() is None


@pytest.mark.parametrize("value", ["21:00", "25:00-09:00", "09:00-09:00"])
def test_a_bad_quiet_hours_value_stops_the_function_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="CEMS_QUIET_HOURS"):
        engine_settings(CEMS_QUIET_HOURS=value)

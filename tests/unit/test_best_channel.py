"""The right channel per customer (issue 13): a send step's list of channels and `best`, chosen from
the engagement folded into the profile (cems.activity, cems.profile_facts); the choice and its reason
in the engine's log, the simulator's timeline and the report."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cems import clock
from cems.engagement import ENGAGE_SOURCE_ID
from cems.models import LINE_SOURCE_ID, Channel, ChannelState, MessageType, Profile, StoredEvent
from cems.profile_facts import apply_event
from cems.reports.cli import render_text
from cems.reports.html import render_html
from cems.reports.report import build_report
from cems.scenario.assignment import in_holdout
from cems.scenario.engine import Advance, CapView, advance, enrol
from cems.scenario.model import Scenario
from cems.scenario.simulate import default_profile, simulate

from tests.fakes.journey_world import JourneyWorld

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 5, 1, 12, 0, tzinfo=TOKYO).astimezone(UTC)
LINE_MESSAGES = [{"type": "text", "text": "新茶が入りました"}]
EMAIL = {"subject": "新茶のご案内", "text": "新茶が入りました"}


def scenario(channel: Any, holdout_percent: int = 0, **content: Any) -> Scenario:
    step = {
        "id": "news",
        "type": "send",
        "channel": channel,
        **(content or {"line": LINE_MESSAGES, "email": EMAIL}),
    }
    return Scenario.model_validate(
        {
            "id": "best-news",
            "name": "best news",
            "trigger": {"type": "event", "event": "Product Viewed"},
            "entry": {"holdout_percent": holdout_percent},
            "steps": [step],
        }
    )


def customer_id(holdout: bool = False, percent: int = 0) -> str:
    return next(f"cus_{i}" for i in range(1000) if in_holdout("best-news", f"cus_{i}", percent) is holdout)


def engaged(profile: Profile, *events: StoredEvent) -> Profile:
    """The profile after `events`, learnt as ingest learns them (cems.profile_facts)."""
    for e in events:
        profile = apply_event(profile, e)
    return profile


def engage_event(name: str, channel: str, days_ago: int = 1, n: int = 0) -> StoredEvent:
    at = NOW - timedelta(days=days_ago)
    return StoredEvent(
        customer_id="cus_x",
        site_id=ENGAGE_SOURCE_ID,
        type=MessageType.TRACK,
        message_id=f"engage-{name}-{channel}-{days_ago}-{n}",
        event=name,
        timestamp=at,
        received_at=at,
        properties={"channel": channel, "dispatch_key": "k"},
    )


def line_reply(days_ago: int = 1, n: int = 0) -> StoredEvent:
    at = NOW - timedelta(days=days_ago)
    return StoredEvent(
        customer_id="cus_x",
        site_id=LINE_SOURCE_ID,
        type=MessageType.TRACK,
        message_id=f"line-{days_ago}-{n}",
        event="line_message",
        line_user_id="U" + "0" * 32,
        timestamp=at,
        received_at=at,
        properties={"text": "ありがとう"},
    )


def reachable_customer(cid: str = "cus_1") -> Profile:
    return default_profile(cid, NOW - timedelta(days=200))


def run(s: Scenario, profile: Profile) -> Advance:
    decision = enrol(s, 1, profile, engage_event("Product Viewed", "shop"), None, NOW)
    assert decision.enrolment is not None, decision.reason
    return advance(s, decision.enrolment, profile, [], NOW, CapView())


def chosen(result: Advance) -> list[tuple[str, str]]:
    return [(r.what, r.detail) for r in result.log if r.what.startswith("chosen_by_")]


def test_an_email_clicker_gets_the_email() -> None:
    profile = engaged(
        reachable_customer(),
        *(engage_event("Link Clicked", "email", days_ago=d) for d in (3, 10, 40)),
        engage_event("Email Opened", "email", days_ago=3),
    )
    result = run(scenario("best"), profile)
    (dispatch,) = result.dispatches
    assert (dispatch.channel, dispatch.fallbacks) == (Channel.EMAIL, (Channel.LINE,))
    assert chosen(result) == [("chosen_by_engagement", "best:email(clicks 3, opens 1 in 90d)")]
    assert set(dispatch.messages) == {Channel.EMAIL, Channel.LINE}


def test_a_line_replier_gets_line() -> None:
    profile = engaged(
        reachable_customer(), line_reply(2), line_reply(5), engage_event("Email Opened", "email", 4)
    )
    result = run(scenario("best"), profile)
    assert result.dispatches[0].channel is Channel.LINE
    assert chosen(result) == [("chosen_by_engagement", "best:line(replies 2 in 90d)")]


def test_no_history_goes_by_the_default_order() -> None:
    result = run(scenario("best"), reachable_customer())
    assert result.dispatches[0].channel is Channel.LINE
    assert chosen(result) == [("chosen_by_default", "best:line(no history, default order)")]


def test_a_tie_goes_by_the_default_order() -> None:
    profile = engaged(reachable_customer(), line_reply(2), engage_event("Link Clicked", "email", 3))
    result = run(scenario("best"), profile)
    assert result.dispatches[0].channel is Channel.LINE
    assert chosen(result) == [("chosen_by_default", "best:line(tie replies 1 in 90d, default order)")]


def test_engagement_older_than_the_window_does_not_count() -> None:
    profile = engaged(
        reachable_customer(), *(engage_event("Link Clicked", "email", 120, n) for n in range(5))
    )
    result = run(scenario("best"), profile)
    assert chosen(result) == [("chosen_by_default", "best:line(no history, default order)")]


def test_an_unreachable_preferred_channel_gives_way_to_the_next() -> None:
    clicker = engaged(reachable_customer(), *(engage_event("Link Clicked", "email", d) for d in (1, 2)))
    unsubscribed = clicker.model_copy(
        update={
            "channels": {
                **clicker.channels,
                Channel.EMAIL: ChannelState(
                    reachable=True, consent=False, updated_at=NOW, reason="unsubscribed"
                ),
            }
        }
    )
    result = run(scenario("best"), unsubscribed)
    (dispatch,) = result.dispatches
    assert (dispatch.channel, dispatch.fallbacks) == (Channel.LINE, ())
    assert chosen(result) == [("chosen_by_default", "best:line(no history, default order)")]


def test_a_holdout_gets_nothing_and_no_choice_is_recorded() -> None:
    s = scenario("best", holdout_percent=50)
    cid = customer_id(holdout=True, percent=50)
    profile = engaged(reachable_customer(cid), engage_event("Link Clicked", "email", 1))
    result = run(s, profile)
    assert result.enrolment.holdout and result.dispatches == [] and result.caps == []
    assert chosen(result) == []
    assert next(r.what for r in result.log if r.step_id == "news") == "held_out"


def test_a_list_sends_on_its_first_reachable_channel_in_its_own_order() -> None:
    result = run(scenario(["email", "line"]), reachable_customer())
    (dispatch,) = result.dispatches
    assert (dispatch.channel, dispatch.fallbacks) == (Channel.EMAIL, (Channel.LINE,))
    assert chosen(result) == []
    no_mail = reachable_customer().model_copy(
        update={
            "channels": {c: s for c, s in reachable_customer().channels.items() if c is not Channel.EMAIL}
        }
    )
    assert run(scenario(["email", "line"]), no_mail).dispatches[0].channel is Channel.LINE


def test_best_chooses_only_among_the_channels_it_has_content_for() -> None:
    s = scenario("best", line=LINE_MESSAGES, web={"kind": "banner", "title": "新茶", "body": "入荷しました"})
    assert s.steps[0].channels() == (Channel.LINE, Channel.WEB)  # type: ignore[union-attr]
    profile = engaged(reachable_customer(), *(engage_event("Link Clicked", "email", d) for d in (1, 2)))
    assert run(s, profile).dispatches[0].channel is Channel.LINE  # email has no content: not a candidate


def test_nobody_reachable_leaves_as_unreachable_naming_the_option() -> None:
    bare = Profile(customer_id="cus_1", first_seen_at=NOW, updated_at=NOW)
    result = run(scenario("best"), bare)
    assert result.dispatches == [] and [r.detail for r in result.log if r.what == "exited"] == [
        "unreachable:best"
    ]
    listed = run(scenario(["email", "line"]), bare)
    assert [r.detail for r in listed.log if r.what == "exited"] == ["unreachable:email,line"]


def test_the_simulator_shows_the_choice_and_its_reason() -> None:
    s = scenario("best")
    events = [
        *(engage_event("Link Clicked", "email", d, n) for n, d in enumerate((3, 4))),
        engage_event("Product Viewed", "shop", 0),
    ]
    simulation = simulate(s, events, reachable_customer())
    assert any(
        "chosen_by_engagement" in line and "best:email(clicks 2 in 90d)" in line
        for line in simulation.lines()
    )
    assert [e.channel for e in simulation.sends] == ["email_then_line"]


# -- the report ------------------------------------------------------------------------------------------


@pytest.fixture
def world() -> Iterator[JourneyWorld]:
    clock.freeze(NOW)
    yield JourneyWorld()
    clock.reset()


def test_the_report_counts_each_choice_by_step_channel_and_reason(world: JourneyWorld) -> None:
    s = world.upload(scenario("best").model_dump(mode="json", exclude_none=True))
    clicker = engaged(reachable_customer("cus_click"), engage_event("Link Clicked", "email", 2))
    replier = engaged(reachable_customer("cus_reply"), line_reply(2))
    for profile in (clicker, replier, reachable_customer("cus_new1"), reachable_customer("cus_new2")):
        world.customers.put_profile(profile)
        report = world.runner.on_stored_event(world.event(profile.customer_id, "Product Viewed"))
        assert report.dispatched == 1
    report = build_report(s.id, world.counters.cells(s.id))
    rows = {row.channel: row for row in report.steps if row.step_id == "news"}
    assert (rows["email"].chosen_by_engagement, rows["email"].chosen_by_default) == (1, 0)
    assert (rows["line"].chosen_by_engagement, rows["line"].chosen_by_default) == (1, 2)
    text = render_text(report)
    assert "Best-channel choices" in text and "By engagement" in text
    assert "反応で選択 by engagement 1 · 既定の順 by default order 2" in render_html(report)

"""The scenario runner on in-memory stores (tests/fakes, held to the DynamoDB adapters' contract by
tests/integration/test_journeys_contract.py): scenarios from examples/scenarios, customers with LINE
contacts, events fed as `trigger` would, due work run as `tick` would; what the senders would get."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from cems import clock
from cems.models import Channel, Profile
from cems.reports.counters import Metric, ReportCell
from cems.reports.report import ReportService, build_report
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.model import ChannelCap, FrequencyCaps

from tests.fakes.journey_world import EXAMPLES, JourneyWorld, line_user_id

NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday: inside every send window
MENU = "richmenu-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture
def world() -> Iterator[JourneyWorld]:
    clock.freeze(NOW)
    yield JourneyWorld()
    clock.reset()


def _treated(scenario_id: str, prefix: str, count: int, percent: int = 5) -> list[str]:
    """Customer ids outside the scenario's holdout (holdouts send nothing)."""
    ids = (f"{prefix}{n:03d}" for n in range(1000))
    return [c for c in ids if not in_holdout(scenario_id, c, percent)][:count]


def _held(scenario_id: str, prefix: str, count: int, percent: int = 5) -> list[str]:
    ids = (f"{prefix}{n:03d}" for n in range(1000))
    return [c for c in ids if in_holdout(scenario_id, c, percent)][:count]


def _line(text: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}]


def _scenario(scenario_id: str, event: str, steps: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": scenario_id,
        "name": scenario_id,
        "trigger": {"type": "event", "event": event},
        "frequency_cap": {"when_capped": "skip"},
        "steps": steps,
        **extra,
    }


# ------------------------------------------------------------------------------- example journeys


def test_cart_abandonment_reminds_only_the_customer_who_did_not_buy(world: JourneyWorld) -> None:
    world.upload("cart_abandonment.json")
    lingers, buys = (world.customer(c) for c in _treated("cart-abandonment", "cus_cart_", 2))
    added = {c: world.event(c, "Product Added", name="玉露 100g") for c in (lingers, buys)}
    for event in added.values():
        report = world.runner.on_stored_event(event)
        assert report.enrolled == 1 and report.dispatched == 0
    assert world.sent() == []  # waiting an hour for an order

    clock.advance(600)
    world.runner.on_stored_event(world.event(buys, "Order Completed", order_id="o-1", revenue=3000))
    assert world.enrolment(buys, "cart-abandonment").state is engine.EnrolmentState.CONVERTED

    clock.advance(30 * 60)
    assert world.runner.tick().dispatched == 0  # not an hour yet
    clock.advance(2 * 3600)
    assert world.runner.tick().dispatched == 1
    (sent,) = world.sent()
    assert sent["recipients"] == [lingers]
    assert sent["idempotency_key"] == f"{lingers}#cart-abandonment#v1#remind#e1"
    assert "玉露 100g" in json.dumps(sent["messages"], ensure_ascii=False)
    reminded = world.enrolment(lingers, "cart-abandonment")
    assert reminded.state is engine.EnrolmentState.COMPLETED and reminded.due_at is None

    # Nothing more: a second tick, and the same trigger event delivered again by the stream.
    clock.advance(3600)
    assert world.runner.tick().dispatched == 0
    for event in added.values():
        assert world.runner.on_stored_event(event).dispatched == 0
    assert world.sent() == []


def test_line_welcome_greets_at_once_and_sends_the_coupon_three_days_later(world: JourneyWorld) -> None:
    world.upload("line_welcome.json")
    world.upload("cart_abandonment.json")  # not triggered by a follow
    friend = world.customer("cus_friend")
    follow = world.event(friend, "line_follow", site_id="line")
    report = world.runner.on_stored_event(follow)
    assert (report.enrolled, report.dispatched) == (1, 1)
    greeting = world.sent()
    assert [d["idempotency_key"] for d in greeting] == [f"{friend}#line-welcome#v1#welcome#e1"]
    assert greeting[0]["recipients"] == [friend]

    # The same follow again (stream redelivery): never re-entered, nothing sent.
    assert world.runner.on_stored_event(follow).dispatched == 0
    assert world.runner.tick().dispatched == 0
    assert world.sent() == []

    clock.advance(3 * 24 * 3600)
    assert world.runner.tick().dispatched == 1
    assert world.sent_keys() == [f"{friend}#line-welcome#v1#first-coupon#e1"]
    assert world.runner.tick().dispatched == 0
    assert world.enrolment(friend, "line-welcome").state is engine.EnrolmentState.COMPLETED


def test_an_unknown_customer_is_skipped(world: JourneyWorld) -> None:
    world.upload("cart_abandonment.json")
    report = world.runner.on_stored_event(world.event("cus_nobody", "Product Added"))
    assert report.missing == ["profile"] and report.enrolled == 0


def test_an_event_no_journey_cares_about_reads_no_event_history(
    world: JourneyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.upload("cart_abandonment.json")
    (customer,) = _treated("cart-abandonment", "cus_browse_", 1)
    world.customer(customer)
    reads: list[str] = []
    history = world.customers.history

    def counted(profile: Profile, limit: int | None = 1000) -> Any:
        reads.append(profile.customer_id)
        return history(profile, limit)

    monkeypatch.setattr(world.customers, "history", counted)
    report = world.runner.on_stored_event(world.event(customer, "Page Viewed"))
    assert (report.enrolled, report.dispatched) == (0, 0)
    assert reads == []
    # An event that does start a journey still reads the history its conditions may need, once.
    assert world.runner.on_stored_event(world.event(customer, "Product Added")).enrolled == 1
    assert reads == [customer]


# ------------------------------------------------------------------------------------------- races


def test_a_lost_race_shares_the_winners_keyed_cap_take_and_is_decided_again_on_a_fresh_read(
    world: JourneyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.upload("cart_abandonment.json")
    (customer,) = (world.customer(c) for c in _treated("cart-abandonment", "cus_race_", 1))
    limits = FrequencyCaps({Channel.LINE: ChannelCap(per_day=5, per_week=5)})
    runner, other = world.another_runner(limits), world.another_runner(limits)
    runner.on_stored_event(world.event(customer, "Product Added"))
    clock.advance(3600 + 60)
    save = world.enrolments.save
    raced = False

    def racing_save(enrolment: engine.Enrolment, at: datetime | None = None) -> engine.Enrolment | None:
        nonlocal raced
        if not raced:  # another tick reads, decides and writes between this one's read and write
            raced = True
            assert other.tick().changed == 1
        return save(enrolment, at)

    monkeypatch.setattr(world.enrolments, "save", racing_save)
    report = runner.tick()
    assert (report.conflicts, report.lost, report.changed) == (1, 0, 0)
    # Both enqueued the same dispatch key (the sender sends it once); the cap counted one send.
    assert {d["idempotency_key"] for d in world.sent()} == {f"{customer}#cart-abandonment#v1#remind#e1"}
    assert world.caps.counts(customer, "line", clock.now()) == (1, 1)
    assert world.enrolment(customer, "cart-abandonment").state is engine.EnrolmentState.COMPLETED


LATE_MARK = _scenario(
    "late-mark",
    "Product Viewed",
    [
        {"id": "wait", "type": "wait", "duration": "1h"},
        {"id": "mark", "type": "set_trait", "trait": "late_mark", "value": "{{ scenario.id }}"},
        {"id": "menu", "type": "rich_menu", "rich_menu_id": MENU},
        {"id": "done", "type": "end"},
    ],
)


def test_a_lost_race_applies_neither_trait_nor_menu_only_the_winner_does(
    world: JourneyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, other = world.another_runner(), world.another_runner()
    world.upload(LATE_MARK)
    customer = world.customer("cus_race")
    runner.on_stored_event(world.event(customer, "Product Viewed"))
    clock.advance(3600 + 60)
    save = world.enrolments.save
    raced = False

    def racing_save(enrolment: engine.Enrolment, at: datetime | None = None) -> engine.Enrolment | None:
        nonlocal raced
        if not raced:  # the other tick decides and writes between this one's read and write
            raced = True
            report = other.tick()
            assert (report.changed, report.traits_set, report.rich_menus_linked) == (1, 1, 1)
        return save(enrolment, at)

    monkeypatch.setattr(world.enrolments, "save", racing_save)
    report = runner.tick()
    assert (report.conflicts, report.changed, report.traits_set, report.rich_menus_linked) == (1, 0, 0, 0)
    assert world.rich_menus is not None
    assert world.rich_menus.calls == [(line_user_id(customer), MENU)]  # the winner's only
    assert world.profile(customer).traits["late_mark"] == "late-mark"


# --------------------------------------------------------------------------- traits and rich menus


TEA_CLUB = _scenario(
    "tea-club",
    "Order Completed",
    [
        {"id": "join", "type": "set_trait", "trait": "tea_club", "value": "member"},
        {"id": "wait", "type": "wait", "duration": "1h"},
        {
            "id": "still-member",
            "type": "branch",
            "branches": [
                {"when": {"kind": "trait", "trait": "tea_club", "value": "member"}, "next": "welcome"}
            ],
            "otherwise": "sorry",
        },
        {
            "id": "welcome",
            "type": "send",
            "channel": "line",
            "line": _line("お茶の会へようこそ"),
            "next": "end",
        },
        {"id": "sorry", "type": "send", "channel": "line", "line": _line("またのご参加をお待ちしています")},
        {"id": "end", "type": "end"},
    ],
)

MENU_SWITCH = _scenario(
    "menu-switch",
    "Product Viewed",
    [
        {"id": "mark", "type": "set_trait", "trait": "menu_switched", "value": True},
        {"id": "menu", "type": "rich_menu", "rich_menu_id": MENU},
        {"id": "done", "type": "end"},
    ],
    entry={"holdout_percent": 50},
)


def test_a_trait_set_by_the_journey_is_stored_and_a_later_branch_reads_it(world: JourneyWorld) -> None:
    world.upload(TEA_CLUB)
    stays, leaves = world.customer("cus_stays"), world.customer("cus_leaves")
    before = world.profile(stays).version
    for customer in (stays, leaves):
        report = world.runner.on_stored_event(world.event(customer, "Order Completed", order_id=customer))
        assert (report.enrolled, report.traits_set, report.trait_failures) == (1, 1, 0)
    stored = world.profile(stays)
    assert stored.traits["tea_club"] == "member" and stored.version == before + 1

    # Meanwhile something else changes one customer's trait: the branch, an hour later, reads the store.
    assert world.customers.set_traits(leaves, {"tea_club": "lapsed"})
    clock.advance(3600 + 60)
    assert world.runner.tick().dispatched == 2
    assert world.sent_keys() == sorted([f"{stays}#tea-club#v1#welcome#e1", f"{leaves}#tea-club#v1#sorry#e1"])


def test_a_trait_that_could_not_be_written_is_counted_and_the_journey_moves_on(
    world: JourneyWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.upload(LATE_MARK)
    customer = world.customer("cus_gone")
    world.runner.on_stored_event(world.event(customer, "Product Viewed"))
    monkeypatch.setattr(world.customers, "set_traits", lambda *args, **kwargs: False)  # the profile went
    clock.advance(3600 + 60)
    report = world.runner.tick()
    assert (report.changed, report.traits_set, report.trait_failures) == (1, 0, 1)
    assert world.enrolment(customer, "late-mark").state is engine.EnrolmentState.COMPLETED


def test_rich_menu_links_the_customers_line_user_and_a_holdout_gets_neither_menu_nor_trait(
    world: JourneyWorld,
) -> None:
    world.upload(MENU_SWITCH)
    (treated,) = _treated("menu-switch", "cus_menu_", 1, 50)
    (held,) = _held("menu-switch", "cus_menu_", 1, 50)
    world.customer(treated)
    world.customer(held)
    report = world.runner.on_stored_event(world.event(treated, "Product Viewed"))
    assert (report.enrolled, report.rich_menus_linked, report.traits_set) == (1, 1, 1)
    assert world.rich_menus is not None and world.rich_menus.links == {line_user_id(treated): MENU}
    assert world.profile(treated).traits["menu_switched"] is True

    report = world.runner.on_stored_event(world.event(held, "Product Viewed"))
    assert report.enrolled == 1
    assert (report.rich_menus_linked, report.rich_menus_unreachable, report.traits_set) == (0, 0, 0)
    assert world.enrolment(held, "menu-switch").holdout
    assert line_user_id(held) not in world.rich_menus.links
    assert "menu_switched" not in world.profile(held).traits


def test_rich_menu_is_skipped_when_line_is_unreachable_and_a_failure_is_counted_without_the_user_id(
    world: JourneyWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world.upload(MENU_SWITCH)
    blocked, refused = _treated("menu-switch", "cus_blocked_", 2, 50)
    world.customer(blocked, reachable=False)
    report = world.runner.on_stored_event(world.event(blocked, "Product Viewed"))
    assert (report.rich_menus_unreachable, report.rich_menus_linked, report.rich_menu_failures) == (1, 0, 0)
    assert world.rich_menus is not None and world.rich_menus.calls == []

    world.customer(refused)
    world.rich_menus.failure = "http_401"  # e.g. a revoked channel access token
    with caplog.at_level(logging.WARNING, logger="cems.scenario"):
        report = world.runner.on_stored_event(world.event(refused, "Product Viewed"))
    assert (report.rich_menu_failures, report.rich_menus_linked, report.changed) == (1, 0, 1)
    assert world.rich_menus.links == {}
    (record,) = [r for r in caplog.records if r.getMessage() == "rich menu not linked"]
    assert record.reason == "http_401"  # type: ignore[attr-defined]
    assert line_user_id(refused) not in caplog.text and refused not in caplog.text


def test_without_a_rich_menu_linker_a_menu_step_counts_as_unreachable() -> None:
    clock.freeze(NOW)
    try:
        world = JourneyWorld(rich_menus=False)
        world.upload("line_welcome.json")
        friend = world.customer("cus_friend")
        report = world.runner.on_stored_event(world.event(friend, "line_follow", site_id="line"))
        assert (report.enrolled, report.rich_menus_unreachable, report.rich_menus_linked) == (1, 1, 0)
    finally:
        clock.reset()


# ------------------------------------------------------------------------------------------- caps


def _one_send(scenario_id: str) -> dict[str, Any]:
    return _scenario(
        scenario_id,
        "Product Viewed",
        [{"id": "hello", "type": "send", "channel": "line", "line": _line("新茶")}],
    )


def test_the_line_caps_decide_how_many_of_the_days_sends_go_and_which_are_skipped(
    world: JourneyWorld,
) -> None:
    for scenario_id in ("first", "second", "third"):
        world.upload(_one_send(scenario_id))
    default, raised = world.customer("cus_default"), world.customer("cus_raised")

    report = world.runner.on_stored_event(world.event(default, "Product Viewed"))
    assert (report.enrolled, report.dispatched) == (3, 1)  # one LINE send a day by default

    runner = world.another_runner(FrequencyCaps({Channel.LINE: ChannelCap(per_day=2, per_week=10)}))
    report = runner.on_stored_event(world.event(raised, "Product Viewed"))
    assert (report.enrolled, report.dispatched) == (3, 2)
    keys = world.sent_keys()
    assert len([k for k in keys if k.startswith(f"{default}#")]) == 1
    assert len([k for k in keys if k.startswith(f"{raised}#")]) == 2
    assert world.caps.counts(raised, "line", NOW) == (2, 2)
    capped = [
        counts.get(Metric.CAPPED, 0)
        for scenario_id in ("first", "second", "third")
        for _, counts in world.counters.cells(scenario_id)
    ]
    assert sum(int(c) for c in capped) == 3  # two of the default's, one of the raised customer's


# ---------------------------------------------------------------------------------- date triggers

REFILL = "refill-30d"
# 30 days after 2026-05-01 12:00 JST, at 10:00 JST = 2026-05-31 01:00 UTC.
FIRST_DUE = datetime(2026, 5, 31, 1, 0, tzinfo=UTC)


def _refill(reentry: str = "never") -> dict[str, Any]:
    return {
        "id": REFILL,
        "name": "Refill reminder",
        "trigger": {"type": "date", "date": "last_purchase_at", "offset": "30d", "at": "10:00"},
        "entry": {"reentry": reentry},
        "steps": [
            {"id": "remind", "type": "send", "channel": "line", "line": _line("そろそろ")},
            {"id": "done", "type": "end"},
        ],
    }


def test_a_purchase_schedules_a_date_entry_and_tick_enrols_at_the_moment(world: JourneyWorld) -> None:
    world.upload(_refill())
    customer = world.customer("cus_date_1")
    purchase = world.purchase(customer, "o-1")
    report = world.runner.on_stored_event(purchase)
    assert report.scheduled == 1 and report.enrolled == 0
    schedule = world.enrolments.schedule(customer, REFILL)
    assert schedule is not None and schedule.due_at == FIRST_DUE
    assert world.enrolments.get(customer, REFILL) is None

    # The same event again (the stream delivers at least once) schedules nothing new.
    assert world.runner.on_stored_event(purchase).scheduled == 0

    clock.freeze(FIRST_DUE - timedelta(minutes=1))
    report = world.runner.tick()
    assert report.enrolled == 0 and report.dispatched == 0
    assert world.sent() == []

    clock.freeze(FIRST_DUE)
    report = world.runner.tick()
    assert report.enrolled == 1 and report.dispatched == 1
    (sent,) = world.sent()
    assert sent["recipients"] == [customer]
    assert sent["idempotency_key"] == f"{customer}#{REFILL}#v1#remind#e1"
    assert world.enrolment(customer, REFILL).state is engine.EnrolmentState.COMPLETED
    assert world.enrolments.schedule(customer, REFILL) is None
    assert world.runner.tick().enrolled == 0


def test_a_second_purchase_moves_the_date_entry(world: JourneyWorld) -> None:
    world.upload(_refill())
    customer = world.customer("cus_date_2")
    world.runner.on_stored_event(world.purchase(customer, "o-1"))
    clock.freeze(NOW + timedelta(days=10))
    assert world.runner.on_stored_event(world.purchase(customer, "o-2")).scheduled == 1
    moved = world.enrolments.schedule(customer, REFILL)
    assert moved is not None and moved.due_at == FIRST_DUE + timedelta(days=10)

    clock.freeze(FIRST_DUE + timedelta(hours=1))
    assert world.runner.tick().enrolled == 0
    clock.freeze(FIRST_DUE + timedelta(days=10))
    assert world.runner.tick().enrolled == 1
    assert len(world.sent()) == 1


def test_tick_rechecks_a_date_that_moved_without_the_trigger(world: JourneyWorld) -> None:
    """If the schedule was not moved (e.g. the later purchase's event is still in the stream), tick
    sees the new date at the old moment and reschedules instead of enrolling."""
    world.upload(_refill())
    customer = world.customer("cus_date_3")
    world.runner.on_stored_event(world.purchase(customer, "o-1"))
    clock.freeze(NOW + timedelta(days=5))
    world.purchase(customer, "o-2")  # stored, not yet seen by the trigger

    clock.freeze(FIRST_DUE)
    report = world.runner.tick()
    assert report.enrolled == 0 and report.scheduled == 1
    schedule = world.enrolments.schedule(customer, REFILL)
    assert schedule is not None and schedule.due_at == FIRST_DUE + timedelta(days=5)
    clock.freeze(FIRST_DUE + timedelta(days=5))
    assert world.runner.tick().enrolled == 1


@pytest.mark.parametrize(("reentry", "entries"), [("never", 1), ("after_exit", 2)])
def test_a_date_trigger_follows_the_reentry_rule(world: JourneyWorld, reentry: str, entries: int) -> None:
    world.upload(_refill(reentry))
    customer = world.customer("cus_date_4")
    world.runner.on_stored_event(world.purchase(customer, "o-1"))
    clock.freeze(FIRST_DUE)
    assert world.runner.tick().enrolled == 1

    clock.freeze(FIRST_DUE + timedelta(days=1))
    assert world.runner.on_stored_event(world.purchase(customer, "o-2")).scheduled == 1
    clock.freeze(FIRST_DUE + timedelta(days=32))
    assert world.runner.tick().enrolled == entries - 1
    assert world.enrolment(customer, REFILL).entry == entries
    assert len(world.sent()) == entries
    assert world.enrolments.schedule(customer, REFILL) is None


def test_an_order_event_without_a_purchase_date_schedules_nothing(world: JourneyWorld) -> None:
    world.upload(_refill())
    customer = world.customer("cus_date_5")
    assert world.runner.on_stored_event(world.event(customer, "Order Completed")).scheduled == 0
    assert world.enrolments.schedule(customer, REFILL) is None


def test_a_date_entry_of_a_stopped_scenario_is_dropped_at_its_moment(world: JourneyWorld) -> None:
    world.upload(_refill())
    customer = world.customer("cus_date_6")
    world.runner.on_stored_event(world.purchase(customer, "o-1"))
    assert world.scenarios.stop(REFILL)
    clock.freeze(FIRST_DUE + timedelta(minutes=5))  # past the runner's one-minute summary cache
    assert world.runner.tick().enrolled == 0
    assert world.enrolments.schedule(customer, REFILL) is None and world.sent() == []


# ---------------------------------------------------------------------------------------- reports


def test_entries_conversions_and_revenue_are_counted_once_per_journey(world: JourneyWorld) -> None:
    scenario = "cart-abandonment"
    world.upload("cart_abandonment.json")
    treated = _treated(scenario, "cus_rep_", 6)
    held = _held(scenario, "cus_rep_", 2)
    events = {c: world.event(world.customer(c), "Product Added", name="玉露") for c in treated + held}
    for event in events.values():
        world.runner.on_stored_event(event)
        world.runner.on_stored_event(event)  # the stream delivers it again: counted once

    order = world.event(treated[0], "Order Completed", order_id="o-1", revenue=3000)
    world.runner.on_stored_event(order)
    world.runner.on_stored_event(order)

    report = build_report(scenario, world.counters.cells(scenario))
    assert (report.treatment.enrolled, report.holdout.enrolled) == (6, 2)
    assert (report.treatment.converted, report.holdout.converted) == (1, 0)
    assert report.treatment.revenue == Decimal(3000)

    # Two hours on: the five who did not buy are reminded; the holdout's reminder is held back.
    clock.advance(2 * 3600)
    world.runner.tick()
    assert len(world.sent()) == 5
    held_back = sum(
        int(counts.get(Metric.HELD_OUT, 0))
        for cell, counts in world.counters.cells(scenario)
        if cell.step_id == "remind" and cell.holdout
    )
    assert held_back == 2
    world.runner.tick()
    assert build_report(scenario, world.counters.cells(scenario)).treatment.enrolled == 6


def test_a_report_counter_that_cannot_be_written_never_stops_the_journey(
    world: JourneyWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world.upload("line_welcome.json")
    friend = world.customer("cus_friend")
    world.counters.unavailable = True
    with caplog.at_level(logging.WARNING, logger="cems.scenario"):
        report = world.runner.on_stored_event(world.event(friend, "line_follow", site_id="line"))
    assert (report.enrolled, report.dispatched) == (1, 1)
    assert "report counter not added" in caplog.text


def test_a_report_reads_back_the_journeys_the_runner_counted(world: JourneyWorld) -> None:
    """Journeys run by the runner (the counting side) read back by ReportService as the groups,
    conversions, revenue and held-out sends that really happened."""
    document = json.loads((EXAMPLES / "cart_abandonment.json").read_text(encoding="utf-8"))
    document["entry"]["holdout_percent"] = 30
    scenario = world.upload(document)
    customers = [world.customer(f"cus_rpt_{n:03d}") for n in range(40)]
    held = {c for c in customers if in_holdout(scenario.id, c, 30)}
    buyers = set(customers[::3])
    for customer in customers:
        world.runner.on_stored_event(world.event(customer, "Product Added"))
    clock.advance(600)
    for n, customer in enumerate(customers):
        if customer in buyers:
            order = world.event(customer, "Order Completed", order_id=f"o-{n}", total=3000)
            world.runner.on_stored_event(order)
            world.runner.on_stored_event(order)  # the stream delivers it again: counted once
    clock.advance(2 * 3600)
    world.runner.tick()

    report = ReportService(world.counters, world.scenarios).report(scenario.id)
    assert 0 < len(held) < len(customers)
    assert (report.enrolled, report.held_out) == (len(customers), len(held))
    assert report.treatment.converted == len(buyers - held)
    assert report.holdout.converted == len(buyers & held)
    assert report.treatment.revenue == Decimal(3000) * len(buyers - held)
    assert report.goal == "Order Completed within 2d"
    remind = {row.step_id: row for row in report.steps}["remind"]
    assert remind.held_out == len(held - buyers)  # the holdout's reminders, held back
    assert len(world.sent()) == len(set(customers) - held - buyers)  # sent: counted by send_line
    # Everyone bought before the reminder: no message to attribute their conversions to.
    shares = {share.attributed_to: share.converted for share in report.conversions}
    assert shares == {
        k: v for k, v in {"no_message": len(buyers - held), "holdout": len(buyers & held)}.items() if v
    }


def test_a_conversion_is_counted_at_the_last_send_and_its_channel(world: JourneyWorld) -> None:
    """Issue 12: a customer who buys after the reminder converts in the reminder's cell, on the
    channel it was dispatched on, so the report splits conversions by step and channel."""
    document = json.loads((EXAMPLES / "cart_abandonment.json").read_text(encoding="utf-8"))
    document["entry"]["holdout_percent"] = 0
    scenario = world.upload(document)
    customer = world.customer("cus_after_remind")
    world.runner.on_stored_event(world.event(customer, "Product Added"))
    clock.advance(26 * 3600)  # past the wait for an order: the reminder goes out on LINE
    world.runner.tick()
    assert len(world.sent()) == 1
    enrolment = world.enrolment(customer, scenario.id)
    assert (enrolment.last_send_step, enrolment.last_send_channel) == ("remind", Channel.LINE)
    clock.advance(3600)
    world.runner.on_stored_event(world.event(customer, "Order Completed", order_id="o-1", total=5000))

    remind = ReportCell(scenario.id, 1, "remind", channel="line")
    assert world.counters.count(remind, Metric.CONVERTED) == 1
    assert world.counters.count(ReportCell(scenario.id, 1), Metric.CONVERTED) == 0
    report = ReportService(world.counters, world.scenarios).report(scenario.id)
    row = {r.step_id: r for r in report.steps}["remind"]
    assert (row.channel, row.converted, row.revenue, row.delivered, row.opened) == (
        "line",
        1,
        5000,
        None,
        None,
    )
    assert [(s.attributed_to, s.converted) for s in report.conversions] == [("line", 1)]
    assert report.treatment.converted == 1


def test_each_step_counts_the_journeys_that_entered_it_and_those_waiting_there_now(
    world: JourneyWorld,
) -> None:
    """Issue 12's diagram counts: a journey arriving at a step is counted once (a redelivered event
    counts nothing again), one waiting at a step is counted there until it moves, and a send held
    for its window waits at the send step and is not counted as entering it again when it goes."""
    document = json.loads((EXAMPLES / "cart_abandonment.json").read_text(encoding="utf-8"))
    document["entry"]["holdout_percent"] = 0
    scenario = world.upload(document)
    service = ReportService(world.counters, world.scenarios)

    def at_steps() -> dict[str, tuple[int, int]]:
        report = service.report(scenario.id)
        return {row.step_id: (row.entered, row.waiting) for row in report.journeys}

    lingers, buys, late = (world.customer(f"cus_steps_{n}") for n in range(3))
    for customer in (lingers, buys):
        added = world.event(customer, "Product Added")
        world.runner.on_stored_event(added)
        world.runner.on_stored_event(added)  # the stream delivers it again
    assert at_steps() == {"wait-for-order": (2, 2)}

    clock.advance(600)
    world.runner.on_stored_event(world.event(buys, "Order Completed", order_id="o-1", total=3000))
    assert at_steps() == {"wait-for-order": (2, 1)}  # converted: waits no more

    clock.advance(3600)  # 13:10 in Tokyo: the other one's hour is over, the reminder goes
    world.runner.tick()
    assert len(world.sent()) == 1
    assert at_steps()["wait-for-order"] == (2, 0)
    assert at_steps()["remind"] == (1, 0)

    clock.advance(9 * 3600)  # 22:10 in Tokyo: outside the send window
    world.runner.on_stored_event(world.event(late, "Product Added"))
    clock.advance(2 * 3600)
    world.runner.tick()  # the hour is over at night: the reminder waits at its step for 09:00
    assert world.enrolment(late, scenario.id).state is engine.EnrolmentState.WAITING
    assert at_steps()["wait-for-order"] == (3, 0)
    assert at_steps()["remind"] == (2, 1)
    clock.advance(10 * 3600)
    world.runner.tick()
    assert len(world.sent()) == 1
    assert at_steps()["remind"] == (2, 0)  # sent: left, and not counted as entering again


def test_a_journey_keeps_its_latest_messages_for_the_customer_timeline(world: JourneyWorld) -> None:
    """Issue 12: the console's customer timeline lists the messages each journey sent (step,
    channel, when), with nothing of their content; a journey keeps only the latest."""
    world.upload("line_welcome.json")
    customer = world.customer("cus_timeline")
    world.runner.on_stored_event(world.event(customer, "line_follow", site_id="line"))
    clock.advance(3 * 86400)
    world.runner.tick()
    enrolment = world.enrolment(customer, "line-welcome")
    assert [(m.step_id, m.channel, m.at) for m in enrolment.messages] == [
        ("welcome", Channel.LINE, NOW),
        ("first-coupon", Channel.LINE, NOW + timedelta(days=3)),
    ]
    # A journey that has sent many already keeps the latest MESSAGES_KEPT, the new one last.
    scenario = world.scenarios.version("line-welcome", 1)
    assert scenario is not None
    old = [engine.SentMessage(step_id=f"s{n}", channel=Channel.EMAIL, at=NOW) for n in range(30)]
    at_coupon = enrolment.model_copy(
        update={"state": engine.EnrolmentState.ACTIVE, "step_id": "first-coupon", "messages": old}
    )
    profile = world.profile(customer)
    result = engine.advance(scenario.scenario, at_coupon, profile, [], clock.now(), engine.CapView())
    kept = result.enrolment.messages
    assert len(kept) == engine.MESSAGES_KEPT
    assert kept[-1].step_id == "first-coupon" and kept[0].step_id == f"s{30 - engine.MESSAGES_KEPT + 1}"

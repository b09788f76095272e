"""The in-memory journey stores (tests/fakes) keep the JourneysTable adapters' contract: the same
assertions run against each fake and against the DynamoDB adapter under moto, so a behaviour test of
the runner on the fakes tells what production does. Covered: what the runner's rules depend on
(conditional enrolment and schedule writes refused on a stale revision, the due index, caps refused
at the limit and taken both-or-neither, version numbers given once, `once` report counts, trait
writes and histories across a merge)."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import pytest
from cems import clock
from cems.adapters.dynamodb import keys
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import CapStore, EnrolmentStore, ScenarioStore
from cems.adapters.dynamodb.report_counters import ReportCounters
from cems.models import Channel, ChannelState, MessageType, Profile, StoredEvent
from cems.ports import (
    CapStorePort,
    CounterPort,
    EnrolmentStorePort,
    EventHistory,
    ProfileWriter,
    ReportReader,
    ScenarioPublisher,
)
from cems.reports.counters import Metric, ReportCell, report_day
from cems.scenario import engine
from cems.scenario.caps import TOTAL, CapCounter, CapPeriod, counters_of
from cems.scenario.model import ChannelCap, Scenario
from cems.scenario.records import DateSchedule, ScenarioSource

from tests.fakes.customers import InMemoryCustomers
from tests.fakes.journeys import InMemoryCapStore, InMemoryEnrolmentStore, InMemoryScenarioStore
from tests.fakes.scenario_io import InMemoryReportCounters

# The contract suites' moto: tables made once per module (fixtures used by name).
from tests.integration.contract_tables import empty_dynamodb, empty_stores, module_dynamodb  # noqa: F401

EXAMPLES = Path(__file__).parents[2] / "examples" / "scenarios"
TABLE = "JourneysTable"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday


def read(counters: ReportReader, scenario_id: str) -> list[tuple[ReportCell, dict[str, int | Decimal]]]:
    """`counters.cells` with each cell's day checked (the store dates a count with the Tokyo day it
    was counted on: NOW's, here) and left out, so expectations name cells as callers give them."""
    found = counters.cells(scenario_id)
    assert all(cell.day == report_day(NOW) for cell, _ in found)
    return [(replace(cell, day=None), counts) for cell, counts in found]


IMPLEMENTATIONS = ["fake", "moto"]


@pytest.fixture(autouse=True)
def frozen() -> Any:
    clock.freeze(NOW)
    yield
    clock.reset()


@pytest.fixture(params=IMPLEMENTATIONS)
def enrolments(request: pytest.FixtureRequest) -> EnrolmentStorePort:
    if request.param == "fake":
        return InMemoryEnrolmentStore[engine.Enrolment]()
    return EnrolmentStore(TABLE, request.getfixturevalue("empty_dynamodb"), 4, model=engine.Enrolment)


@pytest.fixture(params=IMPLEMENTATIONS)
def caps(request: pytest.FixtureRequest) -> CapStorePort:
    if request.param == "fake":
        return InMemoryCapStore()
    return CapStore(TABLE, request.getfixturevalue("empty_dynamodb"))


@pytest.fixture(params=IMPLEMENTATIONS)
def scenarios(request: pytest.FixtureRequest) -> ScenarioPublisher:
    if request.param == "fake":
        return InMemoryScenarioStore()
    return ScenarioStore(TABLE, request.getfixturevalue("empty_dynamodb"))


class Counters(CounterPort, ReportReader, Protocol):
    pass


@pytest.fixture(params=IMPLEMENTATIONS)
def counters(request: pytest.FixtureRequest) -> Counters:
    if request.param == "fake":
        return InMemoryReportCounters()
    return ReportCounters(TABLE, request.getfixturevalue("empty_dynamodb"))


class CustomerWorld:
    """Profiles and events arranged directly, read and written through the ports."""

    def __init__(self, put_profile: Any, put_event: Any, writer: ProfileWriter, history: EventHistory):
        self.put_profile = put_profile
        self.put_event = put_event
        self.writer = writer
        self.history = history


@pytest.fixture(params=IMPLEMENTATIONS)
def customers(request: pytest.FixtureRequest) -> CustomerWorld:
    if request.param == "fake":
        fake = InMemoryCustomers()
        return CustomerWorld(fake.put_profile, fake.put_event, fake, fake)
    stores: Stores = request.getfixturevalue("empty_stores")

    def put_profile(profile: Profile) -> None:
        stores.customers.client.put_item(
            TableName=stores.customers.table_name, Item=stores.customers.profile_item(profile)
        )

    def put_event(event: StoredEvent) -> None:
        stores.events.client.transact_write_items(TransactItems=[stores.events.event_action(event)])

    return CustomerWorld(put_profile, put_event, stores.customers, stores.events)


def enrolment(customer_id: str = "c1", scenario_id: str = "s1", **fields: Any) -> engine.Enrolment:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "scenario_id": scenario_id,
        "version": 1,
        "step_id": "first",
        "state": engine.EnrolmentState.ACTIVE,
        "entered_at": NOW,
    }
    return engine.Enrolment.model_validate(values | fields)


# -------------------------------------------------------------------------------------- enrolments


def test_an_enrolment_is_created_once_and_read_per_customer(enrolments: EnrolmentStorePort) -> None:
    created = enrolments.create(enrolment())
    assert created is not None and created.revision == 1
    assert enrolments.create(enrolment(step_id="other")) is None
    enrolments.create(enrolment(scenario_id="s2"))
    enrolments.create(enrolment(customer_id="c2"))

    assert enrolments.get("c1", "s1") == created
    assert sorted(e.scenario_id for e in enrolments.of_customer("c1")) == ["s1", "s2"]
    assert enrolments.get("c3", "s1") is None and enrolments.of_customer("c3") == []


def test_a_save_on_the_revision_read_wins_and_a_stale_one_is_refused(enrolments: EnrolmentStorePort) -> None:
    read = enrolments.create(enrolment())
    assert read is not None
    winner = enrolments.save(read.model_copy(update={"step_id": "second"}))
    assert winner is not None and winner.revision == 2

    assert enrolments.save(read.model_copy(update={"step_id": "lost"})) is None
    stored = enrolments.get("c1", "s1")
    assert stored is not None and stored.step_id == "second" and stored.revision == 2


def test_a_save_of_an_enrolment_never_created_is_refused(enrolments: EnrolmentStorePort) -> None:
    assert enrolments.save(enrolment(revision=1)) is None
    assert enrolments.get("c1", "s1") is None


def test_the_due_index_lists_what_is_due_and_drops_what_is_no_longer_waiting(
    enrolments: EnrolmentStorePort,
) -> None:
    due = enrolments.create(enrolment(customer_id="due", due_at=NOW - timedelta(minutes=1)))
    enrolments.create(enrolment(customer_id="exactly", due_at=NOW))
    enrolments.create(enrolment(customer_id="later", due_at=NOW + timedelta(minutes=1)))
    enrolments.create(enrolment(customer_id="waiting"))

    listed = {(k.customer_id, k.scenario_id, k.due_at, k.kind) for k in enrolments.iter_due(NOW)}
    assert listed == {
        ("due", "s1", NOW - timedelta(minutes=1), "enrolment"),
        ("exactly", "s1", NOW, "enrolment"),
    }

    assert due is not None
    enrolments.save(due.model_copy(update={"due_at": None}))
    assert {k.customer_id for k in enrolments.iter_due(NOW + timedelta(minutes=5))} == {"exactly", "later"}


def test_date_schedules_are_in_the_due_index_and_written_on_the_revision_read(
    enrolments: EnrolmentStorePort,
) -> None:
    birthday = NOW + timedelta(days=3)
    assert enrolments.put_schedule("c1", "birthday", birthday, None)
    assert not enrolments.put_schedule("c1", "birthday", birthday, None)  # one exists already
    read = enrolments.schedule("c1", "birthday")
    assert read == DateSchedule("c1", "birthday", birthday, 1)

    assert [k for k in enrolments.iter_due(NOW)] == []
    (key,) = enrolments.iter_due(birthday)
    assert (key.customer_id, key.scenario_id, key.due_at, key.kind) == ("c1", "birthday", birthday, "date")

    assert enrolments.put_schedule("c1", "birthday", birthday + timedelta(days=365), read)
    assert not enrolments.put_schedule("c1", "birthday", NOW, read)  # stale
    assert not enrolments.delete_schedule(read)  # stale
    moved = enrolments.schedule("c1", "birthday")
    assert moved is not None and moved.revision == 2 and moved.due_at == birthday + timedelta(days=365)
    assert enrolments.delete_schedule(moved)
    assert enrolments.schedule("c1", "birthday") is None
    assert not enrolments.delete_schedule(moved)


# ------------------------------------------------------------------------------------------- caps


def test_caps_count_to_the_day_limit_and_refuse_past_it(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=2, per_week=5)
    assert caps.try_consume("c1", "line", cap, NOW).allowed
    assert caps.try_consume("c1", "line", cap, NOW).allowed
    refused = caps.try_consume("c1", "line", cap, NOW)
    assert not refused.allowed and refused.capped_by is CapPeriod.DAY
    assert caps.counts("c1", "line", NOW) == (2, 2)  # the refused send took nothing
    assert caps.counts("c1", "email", NOW) == (0, 0)
    assert caps.counts("c2", "line", NOW) == (0, 0)


def test_every_channels_counters_read_at_once_match_each_channels_counts(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=5, per_week=5)
    for _ in range(2):
        assert caps.try_consume("c1", Channel.LINE, cap, NOW).allowed
    assert caps.try_consume("c1", Channel.EMAIL, cap, NOW - timedelta(days=1)).allowed  # Thursday
    counted = caps.counts_of("c1", [Channel.LINE, Channel.EMAIL], NOW)
    line_day, line_week = counters_of(Channel.LINE, NOW)
    email_day, email_week = counters_of(Channel.EMAIL, NOW)
    assert counted == {line_day: 2, line_week: 2, email_day: 0, email_week: 1}
    assert caps.counts_of("c2", [Channel.LINE], NOW) == {line_day: 0, line_week: 0}
    assert caps.counts_of("c1", [], NOW) == {}


def test_a_week_limit_refuses_without_taking_the_day(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=5, per_week=1)
    assert caps.try_consume("c1", "line", cap, NOW).allowed
    refused = caps.try_consume("c1", "line", cap, NOW + timedelta(days=1))
    assert not refused.allowed and refused.capped_by is CapPeriod.WEEK
    assert caps.counts("c1", "line", NOW + timedelta(days=1)) == (0, 1)


def test_caps_start_a_new_day_at_tokyo_midnight_and_a_new_week_on_monday(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=1, per_week=5)
    before_midnight = datetime(2026, 5, 1, 14, 59, tzinfo=UTC)  # 23:59 Friday in Tokyo
    assert caps.try_consume("c1", "line", cap, before_midnight).allowed
    assert not caps.try_consume("c1", "line", cap, before_midnight).allowed
    assert caps.try_consume("c1", "line", cap, before_midnight + timedelta(minutes=1)).allowed
    monday = datetime(2026, 5, 3, 15, 0, tzinfo=UTC)  # 00:00 Monday in Tokyo
    assert caps.counts("c1", "line", before_midnight + timedelta(minutes=1)) == (1, 2)
    assert caps.counts("c1", "line", monday) == (0, 0)


def test_a_release_gives_back_a_send_and_never_goes_below_zero(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=1, per_week=3)
    assert caps.try_consume("c1", "line", cap, NOW).allowed
    caps.release("c1", "line", NOW)
    assert caps.counts("c1", "line", NOW) == (0, 0)
    caps.release("c1", "line", NOW)
    assert caps.counts("c1", "line", NOW) == (0, 0)
    assert caps.try_consume("c1", "line", cap, NOW).allowed


def test_a_keyed_take_counts_a_send_once_however_often_it_is_taken(caps: CapStorePort) -> None:
    """A take names its send (its dispatch key): taken again by that key (a redo after a crash, the
    loser of a race), it is allowed and counts nothing more, even at the limit it filled itself."""
    cap = ChannelCap(per_day=1, per_week=3)
    first = caps.try_consume("c1", Channel.LINE, cap, NOW, "c1#s#v1#hello#e1")
    assert first.allowed and not first.already
    again = caps.try_consume("c1", Channel.LINE, cap, NOW, "c1#s#v1#hello#e1")
    assert again.allowed and again.already
    assert caps.counts("c1", Channel.LINE, NOW) == (1, 1)
    other = caps.try_consume("c1", Channel.LINE, cap, NOW, "c1#t#v1#hello#e1")
    assert not other.allowed and other.capped_by is CapPeriod.DAY and not other.already
    day, week = counters_of(Channel.LINE, NOW)
    read = caps.read_caps_many(["c1", "c2"], [Channel.LINE], NOW)
    assert read["c1"].counts == {day: 1, week: 1}
    assert read["c1"].holders == {day: {"c1#s#v1#hello#e1"}, week: {"c1#s#v1#hello#e1"}}
    assert read["c2"].counts == {day: 0, week: 0} and read["c2"].holders == {}
    # The next day (same week): the send was counted this week, and is not counted again.
    saturday = NOW + timedelta(days=1)
    assert caps.try_consume("c1", Channel.LINE, cap, saturday, "c1#s#v1#hello#e1").already
    assert caps.counts("c1", Channel.LINE, saturday) == (0, 1)


def test_keyed_takes_in_a_transaction_answer_made_already_refused_or_counted(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=1, per_week=5)
    assert caps.try_consume("mine", Channel.LINE, cap, NOW, "k-mine").allowed
    assert caps.try_consume("full", Channel.LINE, cap, NOW, "k-other").allowed
    takes = [("mine", Channel.LINE, cap), ("full", Channel.LINE, cap), ("new", Channel.LINE, cap)]
    outcomes = caps.try_consume_many(takes, NOW, send_keys=["k-mine", "k-full", "k-new"])
    assert [(o.allowed, o.already) for o in outcomes] == [(True, True), (False, False), (True, False)]
    assert outcomes[1].capped_by is CapPeriod.DAY
    assert {c: caps.counts(c, Channel.LINE, NOW) for c in ("mine", "full", "new")} == {
        "mine": (1, 1),
        "full": (1, 1),
        "new": (1, 1),
    }
    # Again, as a page redone: every take its key made already; nothing more counted.
    again = caps.try_consume_many(takes[::2], NOW, send_keys=["k-mine", "k-new"])
    assert [(o.allowed, o.already) for o in again] == [(True, True), (True, True)]
    assert caps.counts("new", Channel.LINE, NOW) == (1, 1)
    with pytest.raises(ValueError, match="one key per take"):
        caps.try_consume_many(takes, NOW, send_keys=["k-mine"])


def test_a_keyed_release_gives_back_that_sends_count_only(caps: CapStorePort) -> None:
    cap = ChannelCap(per_day=2, per_week=5)
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k1").allowed
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k2").allowed
    caps.release("c1", Channel.LINE, NOW, "k-never")  # took nothing: gives nothing back
    assert caps.counts("c1", Channel.LINE, NOW) == (2, 2)
    caps.release("c1", Channel.LINE, NOW, "k1")
    caps.release("c1", Channel.LINE, NOW, "k1")  # once only
    assert caps.counts("c1", Channel.LINE, NOW) == (1, 1)
    day, week = counters_of(Channel.LINE, NOW)
    assert caps.read_caps_many(["c1"], [Channel.LINE], NOW)["c1"].holders == {day: {"k2"}, week: {"k2"}}
    again = caps.try_consume("c1", Channel.LINE, cap, NOW, "k1")  # released: a take that counts
    assert again.allowed and not again.already
    assert caps.counts("c1", Channel.LINE, NOW) == (2, 2)


def test_counts_taken_without_a_key_go_on_counting_beside_keyed_ones(caps: CapStorePort) -> None:
    """Counters counted before takes were keyed (and unkeyed takes) hold no key: a keyed take counts
    on top of them, and a keyed release never takes one of them back."""
    cap = ChannelCap(per_day=2, per_week=5)
    assert caps.try_consume("c1", Channel.LINE, cap, NOW).allowed
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k1").allowed
    refused = caps.try_consume("c1", Channel.LINE, cap, NOW, "k2")
    assert not refused.allowed and refused.capped_by is CapPeriod.DAY
    caps.release("c1", Channel.LINE, NOW, "k2")
    assert caps.counts("c1", Channel.LINE, NOW) == (2, 2)
    caps.release("c1", Channel.LINE, NOW)  # unkeyed: one count back, as before
    assert caps.counts("c1", Channel.LINE, NOW) == (1, 1)
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k1").already


def test_a_cap_without_limits_allows_without_counting(caps: CapStorePort) -> None:
    for _ in range(3):
        assert caps.try_consume("c1", "line", ChannelCap(per_day=None, per_week=None), NOW).allowed
    assert caps.counts("c1", "line", NOW) == (0, 0)


def test_counters_keep_the_keys_a_deployed_stack_wrote_them_under(request: pytest.FixtureRequest) -> None:
    """DynamoDB only: a deploy must not reset anyone's cap. Counters a running stack wrote, under the
    literal sort keys below, go on counting, and the adapter writes nothing under any other key."""
    dynamodb = request.getfixturevalue("empty_dynamodb")
    caps = CapStore(TABLE, dynamodb)
    written = {"line#D#2026-05-01": 1, "line#W#2026-W18": 3}  # NOW: Friday 1 May 2026, ISO week 18
    for sk, count in written.items():
        item = {"pk": {"S": "CAP#c1"}, "sk": {"S": sk}, "count": {"N": str(count)}}
        dynamodb.put_item(TableName=TABLE, Item=item)
    assert caps.counts("c1", Channel.LINE, NOW) == (1, 3)
    refused = caps.try_consume("c1", Channel.LINE, ChannelCap(per_day=5, per_week=3), NOW)
    assert not refused.allowed and refused.capped_by is CapPeriod.WEEK
    assert caps.try_consume("c1", Channel.LINE, ChannelCap(per_day=5, per_week=5), NOW).allowed
    caps.try_consume("c1", Channel.EMAIL, ChannelCap(per_day=5, per_week=None), NOW)
    items = dynamodb.scan(TableName=TABLE)["Items"]
    stored = {(i["pk"]["S"], i["sk"]["S"]): int(i["count"]["N"]) for i in items}
    assert stored == {
        ("CAP#c1", "line#D#2026-05-01"): 2,
        ("CAP#c1", "line#W#2026-W18"): 4,
        ("CAP#c1", "email#D#2026-05-01"): 1,
    }
    # The key module reads each sort key back as the counter the rules name.
    day, week = counters_of(Channel.LINE, NOW)
    assert [keys.cap_counter_of_sk(sk) for sk in written] == [day, week]
    email_day = CapCounter(Channel.EMAIL, CapPeriod.DAY, "2026-05-01")
    assert keys.cap_counter_of_sk("email#D#2026-05-01") == email_day
    assert all(keys.cap_sk(keys.cap_counter_of_sk(sk)) == sk for _, sk in stored)
    with pytest.raises(ValueError, match="not a cap counter"):
        keys.cap_counter_of_sk("line#2026-05-01")


TOTAL_ONE_A_DAY = ChannelCap(per_day=1, per_week=None)
TOTAL_TWO = ChannelCap(per_day=2, per_week=2)


def test_the_total_cap_counts_every_channels_sends_in_the_same_take(caps: CapStorePort) -> None:
    """Issue 13: the channel's counters and the total's, all or none; a refusal by the total names
    it and counts nothing on the channel; the counts read together with the channels'."""
    roomy = ChannelCap(per_day=5, per_week=5)
    assert caps.try_consume("c1", Channel.LINE, roomy, NOW, "k-line", total=TOTAL_ONE_A_DAY).allowed
    refused = caps.try_consume("c1", Channel.EMAIL, roomy, NOW, "k-mail", total=TOTAL_ONE_A_DAY)
    assert not refused.allowed and refused.capped_by is CapPeriod.DAY and refused.capped_scope is TOTAL
    line_day, line_week = counters_of(Channel.LINE, NOW)
    mail_day, mail_week = counters_of(Channel.EMAIL, NOW)
    total_day, total_week = counters_of(TOTAL, NOW)
    read = caps.read_caps_many(["c1"], [Channel.LINE, Channel.EMAIL, TOTAL], NOW)["c1"]
    assert read.counts == {line_day: 1, line_week: 1, mail_day: 0, mail_week: 0, total_day: 1, total_week: 0}
    assert read.holders == {line_day: {"k-line"}, line_week: {"k-line"}, total_day: {"k-line"}}
    # The same send again: allowed, counted once; a keyed release gives back the total's too.
    assert caps.try_consume("c1", Channel.LINE, roomy, NOW, "k-line", total=TOTAL_ONE_A_DAY).already
    assert caps.counts("c1", TOTAL, NOW) == (1, 0)
    caps.release("c1", Channel.LINE, NOW, "k-line", total=True)
    assert caps.counts("c1", TOTAL, NOW) == (0, 0) and caps.counts("c1", Channel.LINE, NOW) == (0, 0)
    assert caps.try_consume("c1", Channel.EMAIL, roomy, NOW, "k-mail", total=TOTAL_ONE_A_DAY).allowed
    # Unkeyed: given back from the total only when the take counted there.
    assert caps.try_consume("c2", Channel.LINE, roomy, NOW, total=TOTAL_TWO).allowed
    caps.release("c2", Channel.LINE, NOW, total=True)
    assert caps.counts("c2", TOTAL, NOW) == (0, 0)


def test_a_page_of_takes_with_one_customer_on_two_channels_counts_the_total_once_each(
    caps: CapStorePort,
) -> None:
    """A broadcast page's `try_consume_many`: one customer's takes on LINE and email both update the
    total's counters, which one DynamoDB transaction may not touch twice; each is answered, the total
    never passes its limit."""
    roomy = ChannelCap(per_day=5, per_week=5)
    takes = [("c1", Channel.LINE, roomy), ("c1", Channel.EMAIL, roomy), ("c2", Channel.LINE, roomy)]
    keys_ = ["k1-line", "k1-mail", "k2-line"]
    outcomes = caps.try_consume_many(takes, NOW, send_keys=keys_, totals=[TOTAL_TWO] * 3)
    assert [(o.allowed, o.already) for o in outcomes] == [(True, False)] * 3
    assert caps.counts("c1", TOTAL, NOW) == (2, 2) and caps.counts("c2", TOTAL, NOW) == (1, 1)
    again = caps.try_consume_many(takes, NOW, send_keys=keys_, totals=[TOTAL_TWO] * 3)  # a page redone
    assert [(o.allowed, o.already) for o in again] == [(True, True)] * 3
    assert caps.counts("c1", TOTAL, NOW) == (2, 2)
    more = [("c1", Channel.LINE, roomy), ("c1", Channel.EMAIL, roomy)]
    refused = caps.try_consume_many(more, NOW, send_keys=["k1-line2", "k1-mail2"], totals=[TOTAL_TWO] * 2)
    assert [(o.allowed, o.capped_scope) for o in refused] == [(False, TOTAL), (False, TOTAL)]
    assert caps.counts("c1", Channel.LINE, NOW) == (1, 1) and caps.counts("c1", TOTAL, NOW) == (2, 2)


def test_a_transaction_never_updates_one_counter_twice(request: pytest.FixtureRequest) -> None:
    """DynamoDB only: the takes that share the total's counters are split across transactions."""
    dynamodb = request.getfixturevalue("empty_dynamodb")
    sent: list[list[tuple[str, str]]] = []

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(dynamodb, name)

        def transact_write_items(self, **kwargs: Any) -> Any:
            sent.append(
                [
                    (a["Update"]["Key"]["pk"]["S"], a["Update"]["Key"]["sk"]["S"])
                    for a in kwargs["TransactItems"]
                ]
            )
            return dynamodb.transact_write_items(**kwargs)

    caps = CapStore(TABLE, Recording())  # type: ignore[arg-type]
    roomy = ChannelCap(per_day=5, per_week=5)
    takes = [(f"c{n}", channel, roomy) for n in range(30) for channel in (Channel.LINE, Channel.EMAIL)]
    outcomes = caps.try_consume_many(
        takes, NOW, send_keys=[f"k{n}" for n in range(60)], totals=[TOTAL_TWO] * 60
    )
    assert all(o.allowed for o in outcomes)
    assert all(len(items) == len(set(items)) and len(items) <= 100 for items in sent)
    # 240 updates, each customer's two takes apart: first fit needs 4 transactions (3 at the least).
    assert len(sent) <= 4
    stored = {i["sk"]["S"] for i in dynamodb.scan(TableName=TABLE)["Items"] if i["pk"]["S"] == "CAP#c7"}
    assert stored == {
        "line#D#2026-05-01",
        "line#W#2026-W18",
        "email#D#2026-05-01",
        "email#W#2026-W18",
        "total#D#2026-05-01",
        "total#W#2026-W18",
    }


# -------------------------------------------------------------------------------------- scenarios


def _welcome(**changes: Any) -> tuple[Scenario, dict[str, Any]]:
    document: dict[str, Any] = json.loads((EXAMPLES / "line_welcome.json").read_text(encoding="utf-8"))
    document.update(changes)
    return Scenario.model_validate(document), document


def test_versions_are_numbered_once_and_the_latest_is_active(scenarios: ScenarioPublisher) -> None:
    scenario, document = _welcome()
    assert scenarios.active_version(scenario.id) is None
    first = scenarios.put_version(scenario, document, ScenarioSource("s/w.json", "e1"))
    assert (first.result, first.version) == ("created", 1)
    again = scenarios.put_version(scenario, document, ScenarioSource("s/w.json", "e1"))
    assert (again.result, again.version) == ("unchanged", 1)
    renamed, document2 = _welcome(name="ようこそ 2")
    second = scenarios.put_version(renamed, document2, ScenarioSource("s/w.json", "e2"))
    assert (second.result, second.version) == ("created", 2)

    active = scenarios.active_version(scenario.id)
    assert active is not None and active.version == 2 and active.scenario.name == "ようこそ 2"
    old = scenarios.version(scenario.id, 1)
    assert old is not None and old.scenario.name == scenario.name
    (summary,) = scenarios.active_summaries()
    assert (summary.scenario_id, summary.version, summary.trigger_type) == (scenario.id, 2, "line_follow")


def test_an_s3_event_applied_already_or_overtaken_stores_nothing(scenarios: ScenarioPublisher) -> None:
    scenario, document = _welcome()
    assert scenarios.put_version(scenario, document, ScenarioSource("k", "e1", sequencer="0A")).created
    duplicate = scenarios.put_version(scenario, document, ScenarioSource("k", "e2", sequencer="0a"))
    assert duplicate.result == "duplicate"
    older = scenarios.put_version(scenario, document, ScenarioSource("k", "e3", sequencer="09"))
    assert older.result == "superseded"
    assert not scenarios.stop(scenario.id, sequencer="05")
    state = scenarios.active(scenario.id)
    assert state is not None and state.latest == 1 and state.is_active


def test_a_stopped_scenario_leaves_the_summaries_and_keeps_its_versions(scenarios: ScenarioPublisher) -> None:
    scenario, document = _welcome()
    scenarios.put_version(scenario, document, ScenarioSource("k", "e1"))
    assert scenarios.stop(scenario.id)
    assert not scenarios.stop(scenario.id)
    assert scenarios.active_summaries() == [] and scenarios.active_version(scenario.id) is None
    state = scenarios.active(scenario.id)
    assert state is not None and state.state == "stopped" and state.version == 1
    assert scenarios.version(scenario.id, 1) is not None
    # The same content uploaded again starts it as a new version.
    assert scenarios.put_version(scenario, document, ScenarioSource("k", "e1")).version == 2


def test_a_stopped_scenario_stays_in_play(scenarios: ScenarioPublisher) -> None:
    """What the trigger's relevance rule and a broadcast page's other journeys read
    (cems.scenario.relevance): a stopped scenario's journeys still run, so it stays listed."""
    assert isinstance(scenarios, ScenarioStore | InMemoryScenarioStore)
    scenario, document = _welcome()
    assert scenarios.scenarios_in_play() == []
    scenarios.put_version(scenario, document, ScenarioSource("k", "e1"))
    assert scenarios.scenarios_in_play() == [(scenario.id, 1)]
    assert scenarios.stop(scenario.id)
    assert scenarios.scenarios_in_play() == [(scenario.id, 1)]
    renamed, document2 = _welcome(name="ようこそ 2")
    scenarios.put_version(renamed, document2, ScenarioSource("k", "e2"))
    assert scenarios.scenarios_in_play() == [(scenario.id, 2)]
    assert [s.version for s in scenarios.active_summaries()] == [2]
    assert scenarios.activate(scenario.id, 1)
    assert scenarios.scenarios_in_play() == [(scenario.id, 1)] and scenarios.versions(scenario.id) == [1, 2]


# ---------------------------------------------------------------------------------- report counters


def test_counts_add_up_per_cell_and_revenue_with_them(counters: Counters) -> None:
    cell = ReportCell("s1", 1, "send", "a")
    assert counters.add(cell, Metric.SENT)
    assert counters.add(cell, Metric.SENT)
    counters.add(ReportCell("s1", 1), Metric.CONVERTED, revenue=Decimal("3000"))
    counters.add(ReportCell("s1", 1), Metric.CONVERTED, revenue=Decimal("1500.5"))
    counters.add(ReportCell("s2", 1, holdout=True), Metric.ENROLLED)

    assert read(counters, "s1") == [
        (ReportCell("s1", 1), {"converted": 2, "revenue": Decimal("4500.5")}),
        (ReportCell("s1", 1, "send", "a"), {"sent": 2}),
    ]
    assert counters.scenario_ids() == ["s1", "s2"]


def test_a_fact_named_once_counts_once_per_scenario(counters: Counters) -> None:
    cell = ReportCell("s1", 1, "send")
    assert counters.add(cell, Metric.OPENED, once="opened#k1")
    assert not counters.add(cell, Metric.OPENED, once="opened#k1")
    assert not counters.add(ReportCell("s1", 2, "other"), Metric.CLICKED, once="opened#k1")
    assert counters.add(cell, Metric.OPENED, once="opened#k2")
    assert counters.add(ReportCell("s2", 1, "send"), Metric.OPENED, once="opened#k1")
    assert read(counters, "s1") == [(cell, {"opened": 2})]


def test_cells_keep_free_text_variants_apart_from_no_variant(counters: Counters) -> None:
    # A variant named "-" or holding "#" must not collide with "no variant" or another cell.
    for variant in ("-", None, "x#G#h"):
        counters.add(ReportCell("s1", 1, "send", variant), Metric.SENT)
    assert [cell.variant for cell, _ in read(counters, "s1")] == [None, "-", "x#G#h"]


# ---------------------------------------------------------------------------------------- customers


def _profile(customer_id: str, **fields: Any) -> Profile:
    values: dict[str, Any] = {
        "customer_id": customer_id,
        "first_seen_at": NOW - timedelta(days=3),
        "updated_at": NOW - timedelta(days=1),
        "channels": {"line": ChannelState(reachable=True, consent=True, updated_at=NOW)},
        "line_user_id": "U" + "0" * 32,
    }
    return Profile.model_validate(values | fields)


def _event(customer_id: str, message_id: str, minutes: int) -> StoredEvent:
    at = NOW + timedelta(minutes=minutes)
    return StoredEvent(
        customer_id=customer_id,
        site_id="shop",
        type=MessageType.TRACK,
        message_id=message_id,
        event="Product Viewed",
        timestamp=at,
        received_at=at,
    )


def test_traits_are_set_on_the_customer_a_merge_left(customers: CustomerWorld) -> None:
    customers.put_profile(_profile("kept", merged_ids={"gone"}, traits={"plan": "gold"}, version=4))
    customers.put_profile(_profile("gone", merged_into="kept", version=2))

    assert customers.writer.set_traits("gone", {"tier": "vip"}, NOW)
    assert not customers.writer.set_traits("nobody", {"tier": "vip"}, NOW)
    kept = customers.writer.profile("gone")
    assert kept is not None and kept.customer_id == "kept"
    assert kept.traits == {"plan": "gold", "tier": "vip"} and kept.version == 5


def test_a_history_holds_the_merged_ids_events_oldest_first(customers: CustomerWorld) -> None:
    kept = _profile("kept", merged_ids={"gone"})
    customers.put_profile(kept)
    customers.put_profile(_profile("gone", merged_into="kept"))
    customers.put_profile(_profile("other"))
    for event in (_event("kept", "m3", 3), _event("gone", "m1", 1), _event("other", "x", 2)):
        customers.put_event(event)
    customers.put_event(_event("kept", "m2", 2))

    assert [e.message_id for e in customers.history.history(kept)] == ["m1", "m2", "m3"]


def test_counter_items_a_deployed_stack_wrote_without_keys_take_keyed_sends(
    request: pytest.FixtureRequest,
) -> None:
    """DynamoDB only: an item written before takes were keyed (count, no key set) takes a keyed send
    under the same atomic condition, refuses at its limit, and its key set starts with that send."""
    dynamodb = request.getfixturevalue("empty_dynamodb")
    caps = CapStore(TABLE, dynamodb)
    for sk, count in {"line#D#2026-05-01": 1, "line#W#2026-W18": 3}.items():
        item = {"pk": {"S": "CAP#c1"}, "sk": {"S": sk}, "count": {"N": str(count)}}
        dynamodb.put_item(TableName=TABLE, Item=item)
    cap = ChannelCap(per_day=2, per_week=5)
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k1").allowed
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k1").already
    refused = caps.try_consume("c1", Channel.LINE, cap, NOW, "k2")
    assert not refused.allowed and refused.capped_by is CapPeriod.DAY
    stored = {i["sk"]["S"]: i for i in dynamodb.scan(TableName=TABLE)["Items"]}
    assert {sk: (i["count"]["N"], i["keys"]["SS"]) for sk, i in stored.items()} == {
        "line#D#2026-05-01": ("2", ["k1"]),
        "line#W#2026-W18": ("4", ["k1"]),
    }
    caps.release("c1", Channel.LINE, NOW, "k1")
    stored = {i["sk"]["S"]: i for i in dynamodb.scan(TableName=TABLE)["Items"]}
    assert {sk: (i["count"]["N"], "keys" in i) for sk, i in stored.items()} == {
        "line#D#2026-05-01": ("1", False),
        "line#W#2026-W18": ("3", False),
    }


def test_a_keyed_take_refused_with_a_counter_unreported_reads_whether_its_key_took_it(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB only: a cancellation that names one full counter and says nothing of the other (a
    reason without a failed condition) is not taken as a refusal while the other may hold the send's
    key: the counters are read, and the key the week's holds answers made already."""
    from botocore.exceptions import ClientError

    dynamodb = request.getfixturevalue("empty_dynamodb")
    caps = CapStore(TABLE, dynamodb)
    cap = ChannelCap(per_day=1, per_week=5)
    assert caps.try_consume("c1", Channel.LINE, cap, NOW - timedelta(days=1), "k1").allowed  # Thursday
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k2").allowed  # today's full
    real = dynamodb.transact_write_items

    def week_unreported(**kwargs: Any) -> Any:
        try:
            return real(**kwargs)
        except ClientError as exc:
            exc.response["CancellationReasons"][1] = {"Code": "None"}
            raise

    monkeypatch.setattr(dynamodb, "transact_write_items", week_unreported)
    assert caps.try_consume("c1", Channel.LINE, cap, NOW, "k1").already
    (many,) = caps.try_consume_many([("c1", Channel.LINE, cap)], NOW, send_keys=["k1"])
    assert many.already
    refused = caps.try_consume("c1", Channel.LINE, cap, NOW, "k3")
    assert not refused.allowed and refused.capped_by is CapPeriod.DAY
    assert caps.counts("c1", Channel.LINE, NOW) == (1, 2)


def test_counters_left_unprocessed_are_read_again(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB only: a throttled BatchGetItem answers with UnprocessedKeys instead of an error; those
    counters are asked again, not read as zero (a cap read as zero would let a send past it)."""
    dynamodb = request.getfixturevalue("empty_dynamodb")
    caps = CapStore(TABLE, dynamodb)
    assert caps.try_consume("c1", Channel.LINE, ChannelCap(per_day=5, per_week=5), NOW).allowed
    real = dynamodb.batch_get_item
    calls = []

    def throttled_once(**kwargs: Any) -> Any:
        calls.append(kwargs)
        if len(calls) == 1:
            return {"Responses": {TABLE: []}, "UnprocessedKeys": kwargs["RequestItems"]}
        return real(**kwargs)

    monkeypatch.setattr(dynamodb, "batch_get_item", throttled_once)
    day, week = counters_of(Channel.LINE, NOW)
    assert caps.counts_of("c1", [Channel.LINE], NOW) == {day: 1, week: 1}
    assert len(calls) == 2 and calls[1]["RequestItems"][TABLE]["ConsistentRead"] is True

"""What a journey does besides sending, under moto: `set_trait` writes the profile (and a later
branch reads it back), `rich_menu` links the customer's LINE user on the fake LINE API (its own small
server), holdouts do neither; and the frequency caps come from the environment (CEMS_CAP_*).

The runner is built by `cems.wiring.runner`, as `trigger` and `tick` build it."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from cems import clock, wiring
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.dynamodb.journeys import EnrolmentStore, ScenarioStore
from cems.adapters.line_api import LineRichMenus
from cems.local.fake_line import FakeLine, FakeLineServer
from cems.models import Profile, StoredEvent
from cems.scenario import engine
from cems.scenario.assignment import in_holdout
from cems.scenario.model import ChannelCap, FrequencyCaps, Scenario
from cems.scenario.records import ScenarioSource
from cems.scenario.runner import ScenarioRunner
from cems.settings import Settings

from tests.integration.journeys import drain_queue, line_user_id, put_customer, put_track_event

TABLE = "JourneysTable"
TOKEN = "integration-channel-access-token"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday
MENU = "richmenu-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


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


def _one_send(scenario_id: str) -> dict[str, Any]:
    return _scenario(
        scenario_id,
        "Product Viewed",
        [{"id": "hello", "type": "send", "channel": "line", "line": _line("新茶")}],
    )


class Harness:
    def __init__(self, dynamodb: Any, stores: Stores, fake: FakeLine, url: str) -> None:
        self.dynamodb = dynamodb
        self.stores = stores
        self.fake = fake
        self.url = url
        self.sqs = boto3.client("sqs", region_name="ap-northeast-1")
        self.queue_url = self.sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
        self.scenarios = ScenarioStore(TABLE, dynamodb)
        self.enrolments = EnrolmentStore(TABLE, dynamodb, 4, model=engine.Enrolment)
        self.count = 0

    def runner(self, monkeypatch: pytest.MonkeyPatch, **env: str) -> ScenarioRunner:
        for name, value in {
            "JOURNEYS_TABLE": TABLE,
            "CEMS_DUE_SHARDS": "4",
            "CUSTOMERS_TABLE": "CustomersTable",
            "EVENTS_TABLE": "EventsTable",
            "LINE_SEND_QUEUE_URL": self.queue_url,
            "CEMS_LINE_API_URL": self.url,
            "CEMS_LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
            **env,
        }.items():
            monkeypatch.setenv(name, value)
        return wiring.runner(self.dynamodb, self.sqs, Settings.from_environ())

    def upload(self, document: dict[str, Any]) -> None:
        scenario = Scenario.model_validate(document)
        self.scenarios.put_version(
            scenario, document, ScenarioSource(f"scenarios/{scenario.id}.json", scenario.id)
        )

    def customer(self, customer_id: str, *, reachable: bool = True) -> str:
        return put_customer(self.stores.customers, customer_id, NOW, reachable=reachable)

    @staticmethod
    def line_user(customer_id: str) -> str:
        return line_user_id(customer_id)

    def profile(self, customer_id: str) -> Profile:
        profile = self.stores.customers.profile(customer_id)
        assert profile is not None
        return profile

    def event(self, customer_id: str, name: str, **properties: Any) -> StoredEvent:
        self.count += 1
        return put_track_event(self.stores.events, customer_id, name, f"msg-{self.count}", **properties)

    def sent_keys(self) -> list[str]:
        return sorted(d["idempotency_key"] for d in drain_queue(self.sqs, self.queue_url))


@pytest.fixture
def fake_line() -> Iterator[tuple[FakeLine, str]]:
    fake = FakeLine(TOKEN)
    server = FakeLineServer(fake).start()
    yield fake, server.url
    server.stop()


@pytest.fixture
def harness(dynamodb: Any, stores: Stores, fake_line: tuple[FakeLine, str]) -> Harness:
    clock.freeze(NOW)
    return Harness(dynamodb, stores, *fake_line)


def _split(scenario_id: str, prefix: str, percent: int) -> tuple[str, str]:
    """One customer id outside the holdout and one inside it."""
    ids = [f"{prefix}{n:03d}" for n in range(200)]
    treated = next(c for c in ids if not in_holdout(scenario_id, c, percent))
    held = next(c for c in ids if in_holdout(scenario_id, c, percent))
    return treated, held


def test_a_trait_set_by_the_journey_is_stored_and_a_later_branch_reads_it(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = harness.runner(monkeypatch)
    harness.upload(TEA_CLUB)
    stays, leaves = harness.customer("cus_stays"), harness.customer("cus_leaves")
    before = harness.profile(stays).version
    for customer in (stays, leaves):
        report = runner.on_stored_event(harness.event(customer, "Order Completed", order_id=customer))
        assert (report.enrolled, report.traits_set, report.trait_failures) == (1, 1, 0)
    stored = harness.profile(stays)
    assert stored.traits["tea_club"] == "member"
    assert stored.version == before + 1

    # Meanwhile something else changes one customer's trait: the branch, an hour later, reads the store.
    assert harness.stores.customers.set_traits(leaves, {"tea_club": "lapsed"})
    clock.advance(3600 + 60)
    report = runner.tick()
    assert report.dispatched == 2
    assert harness.sent_keys() == sorted(
        [f"{stays}#tea-club#v1#welcome#e1", f"{leaves}#tea-club#v1#sorry#e1"]
    )


def test_setting_traits_follows_a_merge_and_reports_a_missing_profile(harness: Harness) -> None:
    customers = harness.stores.customers
    assert customers.set_traits("cus_nobody", {"x": 1}) is False
    harness.customer("cus_has_no_traits_map")
    harness.dynamodb.update_item(
        TableName="CustomersTable",
        Key={"pk": {"S": "CUST#cus_has_no_traits_map"}, "sk": {"S": "PROFILE"}},
        UpdateExpression="REMOVE traits",
    )
    assert customers.set_traits("cus_has_no_traits_map", {"x": 1}) is True
    assert harness.profile("cus_has_no_traits_map").traits == {"x": 1}


def test_rich_menu_links_the_customers_line_user_and_a_holdout_gets_neither_menu_nor_trait(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = harness.runner(monkeypatch)
    harness.upload(MENU_SWITCH)
    treated, held = (harness.customer(c) for c in _split("menu-switch", "cus_menu_", 50))
    report = runner.on_stored_event(harness.event(treated, "Product Viewed"))
    assert (report.enrolled, report.rich_menus_linked, report.traits_set) == (1, 1, 1)
    assert harness.fake.snapshot()["rich_menus"] == {harness.line_user(treated): MENU}
    assert harness.profile(treated).traits["menu_switched"] is True

    report = runner.on_stored_event(harness.event(held, "Product Viewed"))
    assert report.enrolled == 1
    assert (report.rich_menus_linked, report.rich_menus_unreachable, report.traits_set) == (0, 0, 0)
    held_enrolment = harness.enrolments.get(held, "menu-switch")
    assert held_enrolment is not None and held_enrolment.holdout
    assert harness.line_user(held) not in harness.fake.snapshot()["rich_menus"]
    assert "menu_switched" not in harness.profile(held).traits


def test_rich_menu_is_skipped_when_line_is_unreachable_and_a_failure_is_counted_without_the_user_id(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    harness.upload(MENU_SWITCH)
    blocked, _ = _split("menu-switch", "cus_blocked_", 50)
    harness.customer(blocked, reachable=False)
    report = harness.runner(monkeypatch).on_stored_event(harness.event(blocked, "Product Viewed"))
    assert (report.rich_menus_unreachable, report.rich_menus_linked, report.rich_menu_failures) == (1, 0, 0)
    assert harness.fake.snapshot()["rich_menus"] == {}

    refused, _ = _split("menu-switch", "cus_refused_", 50)
    harness.customer(refused)
    runner = harness.runner(monkeypatch, CEMS_LINE_CHANNEL_ACCESS_TOKEN="a-revoked-token")
    with caplog.at_level(logging.WARNING, logger="cems.scenario"):
        report = runner.on_stored_event(harness.event(refused, "Product Viewed"))
    assert (report.rich_menu_failures, report.rich_menus_linked, report.changed) == (1, 0, 1)
    assert harness.fake.snapshot()["rich_menus"] == {}
    (record,) = [r for r in caplog.records if r.getMessage() == "rich menu not linked"]
    assert record.reason == "http_401"  # type: ignore[attr-defined]
    assert harness.line_user(refused) not in caplog.text and refused not in caplog.text


def test_caps_from_the_environment_change_what_is_skipped(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    for scenario_id in ("first", "second", "third"):
        harness.upload(_one_send(scenario_id))
    default, raised = harness.customer("cus_default"), harness.customer("cus_raised")

    report = harness.runner(monkeypatch).on_stored_event(harness.event(default, "Product Viewed"))
    assert (report.enrolled, report.dispatched) == (3, 1)  # one LINE send a day by default

    runner = harness.runner(monkeypatch, CEMS_CAP_LINE_PER_DAY="2", CEMS_CAP_LINE_PER_WEEK="10")
    assert runner.limits.line == ChannelCap(per_day=2, per_week=10)
    report = runner.on_stored_event(harness.event(raised, "Product Viewed"))
    assert (report.enrolled, report.dispatched) == (3, 2)
    keys = harness.sent_keys()
    assert len([k for k in keys if k.startswith(f"{default}#")]) == 1
    assert len([k for k in keys if k.startswith(f"{raised}#")]) == 2


def test_caps_from_the_environment_keep_the_defaults_and_refuse_bad_values(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert harness.runner(monkeypatch).limits == FrequencyCaps()
    runner = harness.runner(monkeypatch, CEMS_CAP_EMAIL_PER_WEEK="5", CEMS_CAP_LINE_PER_DAY=" ")
    assert runner.limits == FrequencyCaps(email=ChannelCap(per_day=1, per_week=5))
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="CEMS_CAP_LINE_PER_WEEK"):
            harness.runner(monkeypatch, CEMS_CAP_LINE_PER_WEEK=bad)


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
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = harness.runner(monkeypatch)
    other = harness.runner(monkeypatch)
    harness.upload(LATE_MARK)
    customer = harness.customer("cus_race")
    runner.on_stored_event(harness.event(customer, "Product Viewed"))
    applied: list[tuple[str, Any]] = []
    for who, r in (("loser", runner), ("winner", other)):
        set_traits, linker = r.customers.set_traits, r.rich_menus
        assert linker is not None

        def recording(
            customer_id: str, traits: Any, at: Any = None, who: str = who, f: Any = set_traits
        ) -> bool:
            applied.append((who, dict(traits)))
            return bool(f(customer_id, traits, at))

        def linking(user: str, menu: str | None, who: str = who, f: Any = linker.link) -> str | None:
            applied.append((who, menu))
            return f(user, menu)  # type: ignore[no-any-return]

        monkeypatch.setattr(r.customers, "set_traits", recording)
        monkeypatch.setattr(linker, "link", linking)
    clock.advance(3600 + 60)
    save = runner.enrolments.save
    raced = False

    def racing_save(enrolment: engine.Enrolment, at: datetime | None = None) -> engine.Enrolment | None:
        nonlocal raced
        if not raced:  # the other tick decides and writes between this one's read and write
            raced = True
            assert other.tick().changed == 1
        return save(enrolment, at)

    monkeypatch.setattr(runner.enrolments, "save", racing_save)
    report = runner.tick()
    assert (report.conflicts, report.changed, report.traits_set, report.rich_menus_linked) == (1, 0, 0, 0)
    assert applied == [("winner", {"late_mark": "late-mark"}), ("winner", MENU)]
    assert harness.profile(customer).traits["late_mark"] == "late-mark"
    assert harness.fake.snapshot()["rich_menus"] == {harness.line_user(customer): MENU}


def test_line_rich_menus_links_unlinks_and_reports_an_unanswered_call(
    fake_line: tuple[FakeLine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = fake_line
    monkeypatch.setenv("CEMS_LINE_CHANNEL_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("CEMS_LINE_API_URL", url)
    menus = LineRichMenus(Settings.from_environ().line)
    user = "U" + "ab" * 16
    assert menus.link(user, MENU) is None
    assert fake.snapshot()["rich_menus"] == {user: MENU}
    assert menus.link(user, None) is None  # back to the default menu
    assert fake.snapshot()["rich_menus"] == {}

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CEMS_LINE_API_URL", f"http://127.0.0.1:{port}")
    reason = LineRichMenus(Settings.from_environ().line).link(user, MENU)
    assert reason is not None and user not in reason

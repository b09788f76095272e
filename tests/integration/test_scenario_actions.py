"""The adapters and wiring behind a journey's actions, under moto: the customer store's trait writes
(a profile without a traits map, a missing profile), LineRichMenus on the fake LINE API (its own small
server), and the runner `cems.wiring.runner` builds taking its caps from the environment (CEMS_CAP_*).

What the runner does with traits, menus and caps is tested on in-memory stores in
tests/unit/test_scenario_runner_behaviour.py."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from cems import clock, wiring
from cems.adapters.dynamodb.customers import Stores
from cems.adapters.line_rich_menus import LineRichMenus
from cems.line.config import LineSettings
from cems.local.fake_line import FakeLine, FakeLineServer
from cems.models import Channel
from cems.scenario.model import ChannelCap, FrequencyCaps
from cems.scenario.runner import ScenarioRunner
from cems.settings import Settings

from tests.integration.journeys import put_customer

TOKEN = "integration-channel-access-token"
NOW = datetime(2026, 5, 1, 3, 0, tzinfo=UTC)  # 12:00 in Tokyo, a Friday
MENU = "richmenu-0a1b2c3d4e5f60718293a4b5c6d7e8f9"


@pytest.fixture
def fake_line() -> Iterator[tuple[FakeLine, str]]:
    fake = FakeLine(TOKEN)
    server = FakeLineServer(fake).start()
    yield fake, server.url
    server.stop()


def _runner(dynamodb: Any, monkeypatch: pytest.MonkeyPatch, **env: str) -> ScenarioRunner:
    sqs = boto3.client("sqs", region_name="ap-northeast-1")
    queue_url = sqs.create_queue(QueueName="LineSendQueue")["QueueUrl"]
    for name, value in {
        "JOURNEYS_TABLE": "JourneysTable",
        "CEMS_DUE_SHARDS": "4",
        "CUSTOMERS_TABLE": "CustomersTable",
        "EVENTS_TABLE": "EventsTable",
        "LINE_SEND_QUEUE_URL": queue_url,
        "CEMS_LINE_CHANNEL_ACCESS_TOKEN": TOKEN,
        **env,
    }.items():
        monkeypatch.setenv(name, value)
    return wiring.runner(dynamodb, sqs, Settings.from_environ())


def test_setting_traits_follows_a_merge_and_reports_a_missing_profile(dynamodb: Any, stores: Stores) -> None:
    clock.freeze(NOW)
    customers = stores.customers
    assert customers.set_traits("cus_nobody", {"x": 1}) is False
    put_customer(customers, "cus_has_no_traits_map", NOW)
    dynamodb.update_item(
        TableName="CustomersTable",
        Key={"pk": {"S": "CUST#cus_has_no_traits_map"}, "sk": {"S": "PROFILE"}},
        UpdateExpression="REMOVE traits",
    )
    assert customers.set_traits("cus_has_no_traits_map", {"x": 1}) is True
    profile = customers.profile("cus_has_no_traits_map")
    assert profile is not None and profile.traits == {"x": 1}


def test_caps_from_the_environment_reach_the_runner_and_bad_values_are_refused(
    dynamodb: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _runner(dynamodb, monkeypatch).limits == FrequencyCaps()
    runner = _runner(dynamodb, monkeypatch, CEMS_CAP_EMAIL_PER_WEEK="5", CEMS_CAP_LINE_PER_DAY=" ")
    assert runner.limits == FrequencyCaps({Channel.EMAIL: ChannelCap(per_day=1, per_week=5)})
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(ValueError, match="CEMS_CAP_LINE_PER_WEEK"):
            _runner(dynamodb, monkeypatch, CEMS_CAP_LINE_PER_WEEK=bad)


def test_line_rich_menus_links_unlinks_and_reports_an_unanswered_call(
    fake_line: tuple[FakeLine, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = fake_line
    monkeypatch.setenv("CEMS_LINE_CHANNEL_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("CEMS_LINE_API_URL", url)
    menus = LineRichMenus(Settings.from_environ().area(LineSettings))
    user = "U" + "ab" * 16
    assert menus.link(user, MENU) is None
    assert fake.snapshot()["rich_menus"] == {user: MENU}
    assert menus.link(user, None) is None  # back to the default menu
    assert fake.snapshot()["rich_menus"] == {}

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("CEMS_LINE_API_URL", f"http://127.0.0.1:{port}")
    reason = LineRichMenus(Settings.from_environ().area(LineSettings)).link(user, MENU)
    assert reason is not None and user not in reason

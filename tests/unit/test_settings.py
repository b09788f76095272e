"""Settings are read once from the environment, typed, with one default each; a bad value is refused
naming its variable."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from cems.email.config import EmailSettings, EmailSettingsError
from cems.engagement.config import EngagementSettings
from cems.line.config import LineSettings
from cems.scenario.config import EngineSettings
from cems.settings import Settings, SettingsError

EMAIL = {
    "EMAIL_FROM_ADDRESS": "shop@shop.example.jp",
    "EMAIL_FROM_NAME": "サンプル茶舗",
    "EMAIL_POSTAL_ADDRESS": "東京都千代田区千代田1-1",
    "EMAIL_CONTACT": "support@shop.example.jp",
    "ENGAGE_BASE_URL": "https://links.shop.example.jp/",
}


def test_an_empty_environment_gives_the_defaults() -> None:
    settings = Settings({})
    assert settings.tables.journeys == "JourneysTable"
    assert settings.tables.customers == "CustomersTable"
    assert (settings.retention.event_days, settings.retention.dedupe_days) == (395, 7)
    assert settings.retention.site_cache_seconds == 60.0
    engine = settings.area(EngineSettings)
    assert (engine.due_shards, engine.broadcast_segments) == (16, None)  # None: sized to the table
    assert (engine.broadcast_segment_customers, engine.broadcast_max_segments) == (10_000, 1_000)
    assert settings.area(EngineSettings).caps() == {}
    assert settings.queues.line_send == ""


def test_values_are_typed_and_blank_ones_count_as_unset() -> None:
    settings = Settings(
        {
            "JOURNEYS_TABLE": " cems-dev-journeys ",
            "CEMS_DUE_SHARDS": "4",
            "CEMS_SITE_CACHE_SECONDS": "0",
            "CEMS_BROADCAST_SEGMENTS": "",
            "CEMS_CAP_EMAIL_PER_WEEK": "5",
            "CEMS_CAP_LINE_PER_DAY": " ",
        }
    )
    assert settings.tables.journeys == "cems-dev-journeys"
    assert settings.area(EngineSettings).due_shards == 4
    assert settings.area(EngineSettings).broadcast_segments is None
    assert settings.retention.site_cache_seconds == 0.0
    assert settings.area(EngineSettings).caps() == {"email": {"per_week": 5}}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CEMS_DUE_SHARDS", "0"),
        ("CEMS_BROADCAST_SEGMENTS", "many"),
        ("CEMS_CAP_LINE_PER_WEEK", "1.5"),
        ("CEMS_CAP_EMAIL_PER_DAY", "-1"),
    ],
)
def test_a_bad_value_is_refused_naming_its_variable_and_value(variable: str, value: str) -> None:
    with pytest.raises(SettingsError, match=variable) as refused:
        _ = Settings({variable: value}).area(EngineSettings)
    assert repr(value) in str(refused.value)


def test_a_bad_retention_is_refused() -> None:
    with pytest.raises(SettingsError, match="CEMS_EVENT_RETENTION_DAYS"):
        _ = Settings({"CEMS_EVENT_RETENTION_DAYS": "0"}).retention


def test_the_environment_is_read_once_when_settings_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNEYS_TABLE", "first")
    settings = Settings.from_environ()
    monkeypatch.setenv("JOURNEYS_TABLE", "second")
    assert settings.tables.journeys == "first"


def test_areas_a_function_does_not_use_are_not_checked() -> None:
    # collect never asks for the email sender's settings, so their absence cannot stop it.
    settings = Settings({"CEMS_LINE_CHANNEL_SECRET": "s", "CEMS_LINE_CHANNEL_ACCESS_TOKEN": "t"})
    assert settings.area(LineSettings).channel_secret() == "s"
    with pytest.raises(EmailSettingsError):
        _ = settings.area(EmailSettings)


def test_base_urls_lose_their_trailing_slash() -> None:
    settings = Settings(EMAIL | {"CEMS_TRACKING_SECRET": "x", "CEMS_LINE_API_URL": "http://line.test/"})
    assert settings.area(EmailSettings).engage_base_url == "https://links.shop.example.jp"
    assert settings.area(EngagementSettings).base_url == "https://links.shop.example.jp"
    assert settings.area(EngagementSettings).shop_name == "サンプル茶舗"
    assert settings.local is False


def test_email_settings_name_every_missing_variable_outside_the_local_stack() -> None:
    with pytest.raises(EmailSettingsError) as refused:
        _ = Settings({"EMAIL_FROM_ADDRESS": "a@example.jp"}).area(EmailSettings)
    for name in ("EMAIL_FROM_NAME", "EMAIL_POSTAL_ADDRESS", "EMAIL_CONTACT", "ENGAGE_BASE_URL"):
        assert name in str(refused.value)
    assert Settings({"CEMS_LOCAL": "1"}).area(EmailSettings).postal_address


def test_a_bad_retry_base_is_refused_as_an_email_setting() -> None:
    with pytest.raises(EmailSettingsError, match="CEMS_EMAIL_RETRY_BASE_SECONDS"):
        _ = Settings(EMAIL | {"CEMS_EMAIL_RETRY_BASE_SECONDS": "soon"}).area(EmailSettings)


ROOT = Path(__file__).parents[2]
# Their own options, not the functions' settings: the local stack and the command-line tools.
# The command lines find the local stack by its port variables, as the stack itself does.
MAY_READ_THE_ENVIRONMENT = {
    "settings.py",
    "cli.py",
    "reports/cli.py",
    "console/audit_cli.py",
    "console/user_cli.py",
    "local",
}


def _reads_the_environment(path: Path) -> list[str]:
    """`os.environ` / `os.getenv` uses, except the handlers' PYDANTIC_DISABLE_PLUGINS cold-start switch
    (it must be set before pydantic builds its first model, which settings cannot guarantee)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    allowed = {
        id(node.func.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "setdefault"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == "PYDANTIC_DISABLE_PLUGINS"
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and id(node) not in allowed:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            names = [alias.name for alias in node.names if alias.name in ("environ", "getenv")]
            found += [f"{path.relative_to(ROOT)}:{node.lineno}" for _ in names]
    return found


def test_only_the_settings_module_reads_the_environment() -> None:
    package = ROOT / "shared" / "cems"
    found = []
    for path in sorted([*package.rglob("*.py"), *(ROOT / "functions").rglob("*.py")]):
        relative = path.relative_to(package).as_posix() if path.is_relative_to(package) else ""
        if relative in MAY_READ_THE_ENVIRONMENT or relative.split("/")[0] in MAY_READ_THE_ENVIRONMENT:
            continue
        found += _reads_the_environment(path)
    assert found == []

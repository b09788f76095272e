"""Secrets never fall back to the public local defaults outside the local stack (CEMS_LOCAL=1)."""

import pytest
from cems.engagement.config import LOCAL_TRACKING_SECRET, EngagementSettings
from cems.line.config import (
    LOCAL_CHANNEL_ACCESS_TOKEN,
    LOCAL_CHANNEL_SECRET,
    LineSettings,
    MissingSecretSetting,
)

SECRET_VARIABLES = (
    "CEMS_LOCAL",
    "CEMS_LINE_CHANNEL_SECRET",
    "CEMS_LINE_CHANNEL_ACCESS_TOKEN",
    "CEMS_TRACKING_SECRET",
    "LINE_CHANNEL_SECRET_PARAMETER",
    "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER",
    "TRACKING_SECRET_PARAMETER",
)


@pytest.fixture(autouse=True)
def nothing_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_line_settings_refuse_to_be_built_without_the_secrets_naming_each_setting() -> None:
    with pytest.raises(MissingSecretSetting) as refused:
        LineSettings.from_env()
    message = str(refused.value)
    for name in (
        "LINE_CHANNEL_SECRET_PARAMETER",
        "CEMS_LINE_CHANNEL_SECRET",
        "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER",
        "CEMS_LINE_CHANNEL_ACCESS_TOKEN",
    ):
        assert name in message


def test_only_the_missing_secret_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINE_CHANNEL_SECRET_PARAMETER", "/cems/line/channel-secret")
    with pytest.raises(MissingSecretSetting) as refused:
        LineSettings.from_env()
    assert "CEMS_LINE_CHANNEL_ACCESS_TOKEN" in str(refused.value)
    assert "CEMS_LINE_CHANNEL_SECRET " not in str(refused.value)


def test_engagement_settings_refuse_to_be_built_without_the_tracking_secret() -> None:
    with pytest.raises(MissingSecretSetting, match=r"TRACKING_SECRET_PARAMETER .* or CEMS_TRACKING_SECRET"):
        EngagementSettings.from_env()


def test_an_ssm_parameter_name_or_a_value_configures_a_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    # What the template gives every function: the SSM parameter names (read when first used).
    monkeypatch.setenv("LINE_CHANNEL_SECRET_PARAMETER", "/cems/line/channel-secret")
    monkeypatch.setenv("LINE_CHANNEL_ACCESS_TOKEN_PARAMETER", "/cems/line/channel-access-token")
    monkeypatch.setenv("TRACKING_SECRET_PARAMETER", "/cems/tracking-secret")
    assert LineSettings.from_env().channel_secret_parameter == "/cems/line/channel-secret"
    assert EngagementSettings.from_env().tracking_secret_parameter == "/cems/tracking-secret"
    # A value set directly wins over the parameter (no SSM call).
    monkeypatch.setenv("CEMS_LINE_CHANNEL_SECRET", "from-env")
    assert LineSettings.from_env().channel_secret() == "from-env"


def test_settings_built_by_hand_never_fall_back_to_the_local_defaults() -> None:
    settings = LineSettings("https://api.line.me", "", "", None, None)
    with pytest.raises(MissingSecretSetting, match="CEMS_LINE_CHANNEL_SECRET"):
        settings.channel_secret()
    with pytest.raises(MissingSecretSetting, match="CEMS_LINE_CHANNEL_ACCESS_TOKEN"):
        settings.channel_access_token()
    with pytest.raises(MissingSecretSetting, match="CEMS_TRACKING_SECRET"):
        EngagementSettings("https://links.example.jp", None).secret()


def test_the_local_stack_gets_the_documented_local_defaults_and_never_asks_ssm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CEMS_LOCAL", "1")
    # Named parameters too: the local stack still never calls SSM.
    monkeypatch.setenv("TRACKING_SECRET_PARAMETER", "/cems/tracking-secret")
    line = LineSettings.from_env()
    assert line.channel_secret() == LOCAL_CHANNEL_SECRET
    assert line.channel_access_token() == LOCAL_CHANNEL_ACCESS_TOKEN
    assert EngagementSettings.from_env().secret() == LOCAL_TRACKING_SECRET.encode()


@pytest.mark.parametrize("local", ["0", "", "true", "yes"])
def test_only_cems_local_1_is_the_local_stack(monkeypatch: pytest.MonkeyPatch, local: str) -> None:
    monkeypatch.setenv("CEMS_LOCAL", local)
    with pytest.raises(MissingSecretSetting):
        LineSettings.from_env()

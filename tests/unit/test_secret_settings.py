"""Secrets never fall back to the public local defaults outside the local stack (CEMS_LOCAL=1)."""

import pytest
from cems.engagement.config import LOCAL_TRACKING_SECRET, EngagementSettings
from cems.line.config import LOCAL_CHANNEL_ACCESS_TOKEN, LOCAL_CHANNEL_SECRET, LineSettings
from cems.settings import MissingSecretSetting, Settings


def test_line_settings_refuse_to_be_built_without_the_secrets_naming_each_setting() -> None:
    with pytest.raises(MissingSecretSetting) as refused:
        _ = Settings({}).area(LineSettings)
    message = str(refused.value)
    for name in (
        "LINE_CHANNEL_SECRET_PARAMETER",
        "CEMS_LINE_CHANNEL_SECRET",
        "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER",
        "CEMS_LINE_CHANNEL_ACCESS_TOKEN",
    ):
        assert name in message


def test_only_the_missing_secret_is_named() -> None:
    with pytest.raises(MissingSecretSetting) as refused:
        _ = Settings({"LINE_CHANNEL_SECRET_PARAMETER": "/cems/line/channel-secret"}).area(LineSettings)
    assert "CEMS_LINE_CHANNEL_ACCESS_TOKEN" in str(refused.value)
    assert "CEMS_LINE_CHANNEL_SECRET " not in str(refused.value)


def test_engagement_settings_refuse_to_be_built_without_the_tracking_secret() -> None:
    with pytest.raises(MissingSecretSetting, match=r"TRACKING_SECRET_PARAMETER .* or CEMS_TRACKING_SECRET"):
        _ = Settings({}).area(EngagementSettings)


def test_an_ssm_parameter_name_or_a_value_configures_a_secret() -> None:
    # What the template gives every function: the SSM parameter names (read when first used).
    env = {
        "LINE_CHANNEL_SECRET_PARAMETER": "/cems/line/channel-secret",
        "LINE_CHANNEL_ACCESS_TOKEN_PARAMETER": "/cems/line/channel-access-token",
        "TRACKING_SECRET_PARAMETER": "/cems/tracking-secret",
    }
    assert Settings(env).area(LineSettings).channel_secret_parameter == "/cems/line/channel-secret"
    assert Settings(env).area(EngagementSettings).tracking_secret_parameter == "/cems/tracking-secret"
    # A value set directly wins over the parameter (no SSM call).
    direct = Settings(env | {"CEMS_LINE_CHANNEL_SECRET": "from-env"}).area(LineSettings)
    assert direct.channel_secret() == "from-env"


def test_settings_built_by_hand_never_fall_back_to_the_local_defaults() -> None:
    settings = LineSettings(api_url="https://api.line.me")
    with pytest.raises(MissingSecretSetting, match="CEMS_LINE_CHANNEL_SECRET"):
        settings.channel_secret()
    with pytest.raises(MissingSecretSetting, match="CEMS_LINE_CHANNEL_ACCESS_TOKEN"):
        settings.channel_access_token()
    with pytest.raises(MissingSecretSetting, match="CEMS_TRACKING_SECRET"):
        EngagementSettings(base_url="https://links.example.jp").secret()


def test_the_local_stack_gets_the_documented_local_defaults_and_never_asks_ssm() -> None:
    # Named parameters too: the local stack still never calls SSM.
    settings = Settings({"CEMS_LOCAL": "1", "TRACKING_SECRET_PARAMETER": "/cems/tracking-secret"})
    assert settings.area(LineSettings).channel_secret() == LOCAL_CHANNEL_SECRET
    assert settings.area(LineSettings).channel_access_token() == LOCAL_CHANNEL_ACCESS_TOKEN
    assert settings.area(EngagementSettings).secret() == LOCAL_TRACKING_SECRET.encode()


@pytest.mark.parametrize("local", ["0", "", "true", "yes"])
def test_only_cems_local_1_is_the_local_stack(local: str) -> None:
    with pytest.raises(MissingSecretSetting):
        _ = Settings({"CEMS_LOCAL": local}).area(LineSettings)

"""A function whose secret is configured neither as a value nor as an SSM parameter refuses to start:
its init (importing app.py) fails naming the setting, instead of signing with the public local default.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
from cems.adapters import aws as cems_aws
from cems.engagement.config import TRACKING_SECRET
from cems.line.config import LINE_CHANNEL_ACCESS_TOKEN, LINE_CHANNEL_SECRET
from cems.settings import MissingSecretSetting, SecretSetting

ROOT = Path(__file__).parents[2]

EMAIL_SETTINGS = {
    "EMAIL_FROM_ADDRESS": "shop@shop.example.jp",
    "EMAIL_FROM_NAME": "Sample Tea Shop",
    "EMAIL_POSTAL_ADDRESS": "1-1 Chiyoda, Tokyo",
    "EMAIL_CONTACT": "support@shop.example.jp",
    "ENGAGE_BASE_URL": "https://links.shop.example.jp",
}


@pytest.mark.parametrize(
    ("function", "secret"),
    [
        ("line_webhook", LINE_CHANNEL_SECRET),
        ("send_line", LINE_CHANNEL_ACCESS_TOKEN),
        ("engage", TRACKING_SECRET),
        ("ses_events", TRACKING_SECRET),
        ("send_email", TRACKING_SECRET),
        ("trigger", TRACKING_SECRET),
    ],
)
def test_a_function_without_its_secret_configured_refuses_to_start(
    aws: None, monkeypatch: pytest.MonkeyPatch, function: str, secret: SecretSetting
) -> None:
    for name, value in EMAIL_SETTINGS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CEMS_LOCAL", raising=False)
    monkeypatch.delenv(secret.env_name, raising=False)
    monkeypatch.delenv(secret.parameter_env_name, raising=False)
    cems_aws.dynamodb.cache_clear()
    name = f"cems_{function}_app_without_secrets"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / function / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        with pytest.raises(MissingSecretSetting) as refused:
            spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
        cems_aws.dynamodb.cache_clear()
    assert secret.env_name in str(refused.value)
    assert secret.parameter_env_name in str(refused.value)


def test_the_same_function_starts_with_only_the_ssm_parameter_named(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As deployed: the template names the SSM parameter; it is read on first use, not at init.
    monkeypatch.delenv("CEMS_LOCAL", raising=False)
    monkeypatch.delenv(LINE_CHANNEL_SECRET.env_name, raising=False)
    monkeypatch.setenv(LINE_CHANNEL_SECRET.parameter_env_name, "/cems/line/channel-secret")
    cems_aws.dynamodb.cache_clear()
    name = "cems_line_webhook_app_with_parameter"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "line_webhook" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(name, None)
        cems_aws.dynamodb.cache_clear()
    assert module.webhook.settings.channel_secret_parameter == "/cems/line/channel-secret"

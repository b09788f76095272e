"""Integration fixtures: moto in-process, with the tables template.yaml declares."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.engagement.config import TRACKING_SECRET
from cems.line.config import LINE_CHANNEL_ACCESS_TOKEN, LINE_CHANNEL_SECRET
from cems.local.cfn import Template
from cems.local.moto_server import patch_moto
from cems.local.resources import create_table
from cems.settings import Settings
from cems.wiring import customer_stores
from moto import mock_aws

TEMPLATE = Path(__file__).parents[2] / "template.yaml"

# moto's TransactWriteItems deep-copies every table a transaction touches (to roll back), so each
# transaction costs time in proportion to the table; the local stack's undo-log version applies the
# same all-or-nothing rule to just the touched items (cems.local.moto_server, tested there and by
# every e2e test). The races in test_scenario_races.py run against a moto server patched this way.
patch_moto()


def template_tables() -> dict[str, dict[str, Any]]:
    template = Template.load(TEMPLATE)
    return {name: r["Properties"] for name, r in template.resources_of_type("AWS::DynamoDB::Table").items()}


@pytest.fixture(autouse=True)
def configured_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The LINE and tracking secrets, set as values. Outside the local stack a function with a secret
    configured neither way refuses to start (cems.settings.Settings.require_secrets), so tests
    configure them as a deployment does; a test that needs another value or none sets its own."""
    for setting in (LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN, TRACKING_SECRET):
        monkeypatch.setenv(setting.env_name, setting.local_default)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "ap-northeast-1",
        "AWS_REGION": "ap-northeast-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield
    clock.reset()


@pytest.fixture
def dynamodb(aws: None) -> Any:
    client = boto3.client("dynamodb", region_name="ap-northeast-1")
    # The same table creation as the local stack's, from template.yaml.
    template = Template.load(TEMPLATE)
    for name, props in template_tables().items():
        create_table(client, template, name, props)
    return client


@pytest.fixture
def stores(dynamodb: Any) -> Stores:
    return customer_stores(dynamodb, Settings.from_environ())

"""Integration fixtures: moto in-process, with the tables template.yaml declares."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from moto import mock_aws

from cems import clock
from cems.config import Settings
from cems.store import Stores

TEMPLATE = Path(__file__).parents[2] / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    pass


def _tag(loader: yaml.Loader, suffix: str, node: yaml.Node) -> Any:
    return None


_CfnLoader.add_multi_constructor("!", _tag)


def template_tables() -> dict[str, dict[str, Any]]:
    resources = yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)["Resources"]  # noqa: S506
    return {name: r["Properties"] for name, r in resources.items() if r["Type"] == "AWS::DynamoDB::Table"}


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
    for name, props in template_tables().items():
        client.create_table(
            TableName=name,
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
            **(
                {"StreamSpecification": {"StreamEnabled": True, **props["StreamSpecification"]}}
                if "StreamSpecification" in props
                else {}
            ),
        )
    return client


@pytest.fixture
def stores(dynamodb: Any) -> Stores:
    return Stores.from_clients(dynamodb, Settings.from_env())

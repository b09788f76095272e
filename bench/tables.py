"""The DynamoDB tables template.yaml declares, created on a (moto) client under their logical names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
REGION = "ap-northeast-1"
# Credentials moto accepts; no request leaves the machine.
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short-form tags (!Ref, !GetAtt, ...) as nothing: tables need none."""


def _ignore_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> None:
    return None


_CfnLoader.add_multi_constructor("!", _ignore_tag)


def template_tables() -> dict[str, dict[str, Any]]:
    document: dict[str, Any] = yaml.load(TEMPLATE.read_text(encoding="utf-8"), Loader=_CfnLoader)
    return {
        name: resource["Properties"]
        for name, resource in document["Resources"].items()
        if resource["Type"] == "AWS::DynamoDB::Table"
    }


def create_table(client: DynamoDBClient, name: str, props: dict[str, Any]) -> None:
    """One table as the template's properties declare it (on demand; streams as declared)."""
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if "StreamSpecification" in props:
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    client.create_table(**request)


def create_tables(client: DynamoDBClient) -> list[str]:
    """Every table of the template, named by its logical id (as the local stack and tests name them)."""
    tables = template_tables()
    for name, props in tables.items():
        create_table(client, name, props)
    return list(tables)

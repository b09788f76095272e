"""The DynamoDB tables template.yaml declares, created on a (moto) client under their logical names."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cems.local import resources as local_resources
from cems.local.cfn import Template

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


def template() -> Template:
    return Template.load(TEMPLATE)


def template_tables() -> dict[str, dict[str, Any]]:
    return {name: r["Properties"] for name, r in template().resources_of_type("AWS::DynamoDB::Table").items()}


def create_table(client: DynamoDBClient, name: str, props: dict[str, Any]) -> None:
    """One table as the template's properties declare it, the way the local stack creates it."""
    local_resources.create_table(client, template(), name, props)


def create_tables(client: DynamoDBClient) -> list[str]:
    """Every table of the template, named by its logical id (as the local stack and tests name them)."""
    tables = template_tables()
    for name, props in tables.items():
        create_table(client, name, props)
    return list(tables)

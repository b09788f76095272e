"""moto for the contract suites: the template's tables made once per module and emptied after each
test. Making the tables is most of a moto test's cost (about two seconds each on a busy machine), and
a contract test only needs empty tables, not new ones."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from cems import clock
from cems.adapters.dynamodb.customers import Stores
from cems.local.cfn import Template
from cems.local.resources import create_table
from cems.settings import Settings
from cems.wiring import customer_stores
from moto import mock_aws

from tests.integration.conftest import TEMPLATE, template_tables

REGION = "ap-northeast-1"
AWS_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


@pytest.fixture(scope="module")
def module_dynamodb() -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as env:
        for name, value in AWS_ENVIRONMENT.items():
            env.setenv(name, value)
        env.delenv("AWS_ENDPOINT_URL", raising=False)
        with mock_aws():
            client = boto3.client("dynamodb", region_name=REGION)
            template = Template.load(TEMPLATE)
            for name, props in template_tables().items():
                create_table(client, template, name, props)
            yield client
    clock.reset()


@pytest.fixture
def empty_dynamodb(module_dynamodb: Any) -> Iterator[Any]:
    """The module's DynamoDB client; every table is emptied after the test."""
    yield module_dynamodb
    for table in module_dynamodb.list_tables()["TableNames"]:
        schema = module_dynamodb.describe_table(TableName=table)["Table"]["KeySchema"]
        key = [k["AttributeName"] for k in schema]
        for page in module_dynamodb.get_paginator("scan").paginate(TableName=table):
            for item in page["Items"]:
                module_dynamodb.delete_item(TableName=table, Key={name: item[name] for name in key})


@pytest.fixture
def empty_sqs(module_dynamodb: Any) -> Iterator[Any]:
    """An SQS client in the module's moto; every queue is deleted after the test."""
    sqs = boto3.client("sqs", region_name=REGION)
    yield sqs
    for url in sqs.list_queues().get("QueueUrls", []):
        sqs.delete_queue(QueueUrl=url)


@pytest.fixture
def empty_stores(empty_dynamodb: Any) -> Stores:
    """The customer stores (as the conftest's `stores`) on the module's emptied tables."""
    return customer_stores(empty_dynamodb, Settings.from_environ())

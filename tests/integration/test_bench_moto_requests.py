"""bench.aws_requests.MotoRequests: requests counted where moto receives them (any client, by stage and
operation), and DynamoDB item writes and reads per key, parsed from the bodies moto got (bench.broadcast's
requests per recipient and hottest item rest on it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bench.aws_requests import MotoRequests, key_schemas

REGION = "ap-northeast-1"
TABLE = "T"
SCHEMA = {
    TABLE: {
        "KeySchema": [{"AttributeName": "sk", "KeyType": "RANGE"}, {"AttributeName": "pk", "KeyType": "HASH"}]
    }
}


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        yield dynamodb, boto3.client("sqs", region_name=REGION)


def _key(pk: str, sk: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def test_key_schemas_put_the_hash_key_first() -> None:
    assert key_schemas(SCHEMA) == {TABLE: ("pk", "sk")}


def test_requests_and_item_writes_are_counted_as_moto_received_them(clients: tuple[Any, Any]) -> None:
    dynamodb, sqs = clients
    counter = MotoRequests(key_schemas(SCHEMA))
    queue = sqs.create_queue(QueueName="q")["QueueUrl"]  # before counting: not counted
    with counter.counting():
        with counter.stage_of("writer"):
            dynamodb.put_item(TableName=TABLE, Item={**_key("HOT", "A"), "n": {"N": "1"}})
            dynamodb.update_item(
                TableName=TABLE,
                Key=_key("HOT", "A"),
                UpdateExpression="ADD n :one",
                ExpressionAttributeValues={":one": {"N": "1"}},
            )
            dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": TABLE,
                            "Key": _key("HOT", "A"),
                            "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                    {"Put": {"TableName": TABLE, "Item": _key("HOT", "B")}},
                    {
                        "ConditionCheck": {
                            "TableName": TABLE,
                            "Key": _key("C", "1"),
                            "ConditionExpression": "attribute_not_exists(pk)",
                        }
                    },
                ]
            )
            dynamodb.batch_write_item(
                RequestItems={TABLE: [{"PutRequest": {"Item": _key(f"P{n}", "x")}} for n in range(3)]}
            )
            # A refused write is a request DynamoDB received (and bills): counted.
            with pytest.raises(dynamodb.exceptions.ConditionalCheckFailedException):
                dynamodb.put_item(
                    TableName=TABLE, Item=_key("HOT", "A"), ConditionExpression="attribute_not_exists(pk)"
                )
        with counter.stage_of("reader"):
            dynamodb.get_item(TableName=TABLE, Key=_key("HOT", "A"))
            dynamodb.batch_get_item(RequestItems={TABLE: {"Keys": [_key("HOT", "A"), _key("P1", "x")]}})
            sqs.send_message(QueueUrl=queue, MessageBody="m")
    dynamodb.put_item(TableName=TABLE, Item=_key("HOT", "A"))  # after counting: not counted

    assert counter.by_operation("writer") == {
        "dynamodb:PutItem": 2,
        "dynamodb:UpdateItem": 1,
        "dynamodb:TransactWriteItems": 1,
        "dynamodb:BatchWriteItem": 1,
    }
    assert counter.by_operation("reader") == {
        "dynamodb:GetItem": 1,
        "dynamodb:BatchGetItem": 1,
        "sqs:SendMessage": 1,
    }
    assert counter.total() == 8
    assert counter.total("reader", "sqs") == 1
    assert counter.writes[(TABLE, "HOT|A")] == 4
    assert counter.writes[(TABLE, "HOT|B")] == 1
    assert counter.transactional == {(TABLE, "HOT|A"): 1, (TABLE, "HOT|B"): 1}
    assert counter.checks == {(TABLE, "C|1"): 1}
    assert all(counter.writes[(TABLE, f"P{n}|x")] == 1 for n in range(3))
    assert counter.hottest(counter.writes) == (TABLE, "HOT|A", 4)
    assert counter.hottest(counter.writes, partition=True) == (TABLE, "HOT", 5)
    assert counter.reads == {(TABLE, "HOT|A"): 2, (TABLE, "P1|x"): 1}


def test_a_partition_query_answers_as_motos_own(clients: tuple[Any, Any]) -> None:
    from bench.broadcast import partition_queries

    dynamodb, _ = clients
    for pk in ("A", "B", "C"):
        for n in range(7):
            dynamodb.put_item(TableName=TABLE, Item={**_key(pk, f"{n:02d}"), "v": {"N": str(n)}})
    asks: list[dict[str, Any]] = [
        {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": "B"}}},
        {
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :a AND :b",
            "ExpressionAttributeValues": {":pk": {"S": "B"}, ":a": {"S": "02"}, ":b": {"S": "05"}},
            "ScanIndexForward": False,
        },
        {
            "KeyConditionExpression": "pk = :pk",
            "FilterExpression": "v > :three",
            "ExpressionAttributeValues": {":pk": {"S": "C"}, ":three": {"N": "3"}},
            "Limit": 2,
        },
        {"KeyConditionExpression": "pk = :pk", "ExpressionAttributeValues": {":pk": {"S": "none"}}},
    ]

    def pages(ask: dict[str, Any]) -> list[dict[str, Any]]:
        paginator = dynamodb.get_paginator("query")
        return [
            {k: page.get(k) for k in ("Items", "Count", "ScannedCount", "LastEvaluatedKey")}
            for page in paginator.paginate(TableName=TABLE, **ask)
        ]

    own = [pages(ask) for ask in asks]
    with partition_queries():
        assert [pages(ask) for ask in asks] == own
    assert own[0][0]["Count"] == 7
    assert len(own[2]) > 1  # paged

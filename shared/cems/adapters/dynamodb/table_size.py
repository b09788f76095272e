"""A table's approximate size (DescribeTable's ItemCount): what a broadcast's fan-out is sized by."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


class DynamoTableSize:
    """ports.TableSize for one DynamoDB table: one DescribeTable per call (no read capacity used).
    DynamoDB refreshes ItemCount about every six hours, so a table that grew since counts low: the
    segments of a run are sized to within those hours, and a segment is only longer, never wrong."""

    def __init__(self, table_name: str, client: DynamoDBClient) -> None:
        self.table_name = table_name
        self.client = client

    def approximate_items(self) -> int:
        table = self.client.describe_table(TableName=self.table_name)["Table"]
        return int(table.get("ItemCount", 0))

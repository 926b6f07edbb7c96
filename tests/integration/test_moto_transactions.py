"""The local stack's TransactWriteItems (local/moto_patch.py) keeps DynamoDB's all-or-nothing:
a cancelled transaction leaves every item as it was, whatever the partitions held."""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from local.stack import LocalStack


def test_a_cancelled_transaction_changes_nothing(stack: LocalStack) -> None:
    name = stack.tables["ThreadsTable"]
    table: Any = boto3.resource("dynamodb").Table(name)
    client: Any = boto3.client("dynamodb")
    kept, emptied, fresh = (f"tx-{uuid.uuid4().hex}" for _ in range(3))
    table.put_item(Item={"pk": kept, "sk": "1", "v": "before"})
    table.put_item(Item={"pk": emptied, "sk": "1", "v": "gone"})
    table.delete_item(Key={"pk": emptied, "sk": "1"})  # a partition that exists, empty
    with pytest.raises(ClientError) as raised:
        client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": name,
                        "Item": {"pk": {"S": kept}, "sk": {"S": "1"}, "v": {"S": "after"}},
                    }
                },
                {"Put": {"TableName": name, "Item": {"pk": {"S": kept}, "sk": {"S": "2"}}}},
                {"Put": {"TableName": name, "Item": {"pk": {"S": emptied}, "sk": {"S": "1"}}}},
                {"Put": {"TableName": name, "Item": {"pk": {"S": fresh}, "sk": {"S": "1"}}}},
                {
                    "ConditionCheck": {
                        "TableName": name,
                        "Key": {"pk": {"S": f"missing-{uuid.uuid4().hex}"}, "sk": {"S": "1"}},
                        "ConditionExpression": "attribute_exists(pk)",
                    }
                },
            ]
        )
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert table.get_item(Key={"pk": kept, "sk": "1"})["Item"]["v"] == "before"
    for pk, sk in ((kept, "2"), (emptied, "1"), (fresh, "1")):
        assert "Item" not in table.get_item(Key={"pk": pk, "sk": sk})
    # and the table still reads whole (no half-restored partition)
    assert table.scan(Limit=1000)["Items"] is not None

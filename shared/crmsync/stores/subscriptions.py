"""Microsoft Graph subscriptions of the mailboxes, in the cursors table (CURSORS_TABLE).

Two items per subscription, written together (see docs/architecture/providers.md, "Graph subscriptions
and notifications"):
- by id:      pk=GRAPHSUB#{subscription id}  sk=SUB                  what a notification is checked against
- by account: pk=ACC#{account}               sk=GRAPHSUB#{subscription id}  renewal and disconnect

Each holds the record (account, folder, expiry) and the SHA-256 of the clientState, never the
clientState itself. `expires_at` (the table's TTL attribute) is a day after the subscription's
own expiry, so a subscription that lapsed for good leaves nothing behind.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from boto3.dynamodb.conditions import Key

from crmsync.errors import TransientError
from crmsync.providers.microsoft.subscriptions import SubscriptionRecord
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import plain, transact

TTL_GRACE_S = 86_400
BATCH_GET_MAX = 100  # keys per BatchGetItem call (DynamoDB's limit)
BATCH_GET_ATTEMPTS = 4


def _keys(record: SubscriptionRecord) -> list[dict[str, str]]:
    return [
        {"pk": f"GRAPHSUB#{record.subscription_id}", "sk": "SUB"},
        {"pk": f"ACC#{record.account_id}", "sk": f"GRAPHSUB#{record.subscription_id}"},
    ]


class DynamoGraphSubscriptionStore:
    def __init__(self, table_name: str) -> None:
        self._name = table_name
        self._table = dynamodb().Table(table_name)

    def put(self, record: SubscriptionRecord) -> None:
        body = record.model_dump(mode="json")
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._name,
                    "Item": {**key, "record": body, "expires_at": record.expires_at + TTL_GRACE_S},
                }
            }
            for key in _keys(record)
        ]
        self._table.meta.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]

    def get(self, subscription_id: str) -> SubscriptionRecord | None:
        # consistent: a notification may follow the subscription's creation by milliseconds
        item = self._table.get_item(
            Key={"pk": f"GRAPHSUB#{subscription_id}", "sk": "SUB"}, ConsistentRead=True
        ).get("Item")
        return SubscriptionRecord.model_validate(plain(item)["record"]) if item else None

    def get_many(self, subscription_ids: Sequence[str]) -> dict[str, SubscriptionRecord]:
        """The records of these subscriptions that exist, by id: one consistent BatchGetItem per
        100 ids (DynamoDB's limit per call), whatever the count of notifications that named them."""
        found: dict[str, SubscriptionRecord] = {}
        unique = list(dict.fromkeys(subscription_ids))
        client = self._table.meta.client
        for start in range(0, len(unique), BATCH_GET_MAX):
            keys = [{"pk": f"GRAPHSUB#{s}", "sk": "SUB"} for s in unique[start : start + BATCH_GET_MAX]]
            request: dict[str, Any] = {self._name: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(BATCH_GET_ATTEMPTS):
                answer = client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self._name, []):
                    record = SubscriptionRecord.model_validate(plain(item)["record"])
                    found[record.subscription_id] = record
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2**attempt)  # throttled: DynamoDB hands back what it did not read
            else:
                raise TransientError("subscriptions could not be read now (throttled)")
        return found

    def for_account(self, account_id: str) -> list[SubscriptionRecord]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"ACC#{account_id}") & Key("sk").begins_with("GRAPHSUB#"),
            "ConsistentRead": True,
        }
        found: list[SubscriptionRecord] = []
        while True:
            page = self._table.query(**kwargs)
            found.extend(SubscriptionRecord.model_validate(plain(i)["record"]) for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                return sorted(found, key=lambda r: (r.folder, r.subscription_id))
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def renewed(self, record: SubscriptionRecord) -> bool:
        """Store a new expiry of a subscription still known; False if it was forgotten
        meanwhile (a disconnect), so a late renewal cannot bring it back (ACC-8)."""
        body = record.model_dump(mode="json")
        actions: list[dict[str, Any]] = [
            {
                "Update": {
                    "TableName": self._name,
                    "Key": key,
                    "UpdateExpression": "SET #r = :r, expires_at = :e",
                    "ConditionExpression": "attribute_exists(pk)",
                    "ExpressionAttributeNames": {"#r": "record"},
                    "ExpressionAttributeValues": {":r": body, ":e": record.expires_at + TTL_GRACE_S},
                }
            }
            for key in _keys(record)
        ]
        return transact(self._table, actions)

    def forget(self, record: SubscriptionRecord) -> None:
        for key in _keys(record):
            self._table.delete_item(Key=key)

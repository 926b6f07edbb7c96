"""Connection health records (SYNC-9) in the cursors table, beside the account's cursors:
pk=ACC#{account} sk=HEALTH#{name}.

A run without failed items is one UpdateItem (the attributes it changes, the version bumped).
A run with failed items reads the record and writes it back whole on the version it read,
since the bounded list of failed items cannot be merged by an update expression; a lost race
is read again (a few times, then TransientError)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from crmsync.errors import TransientError
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import is_condition_failure, plain
from crmsync.sync.health import RunReport, SyncHealth, merged

PREFIX = "HEALTH#"
ATTEMPTS = 4


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _item(record: SyncHealth) -> dict[str, Any]:
    body = record.model_dump(mode="json", exclude_none=True)
    return {"pk": f"ACC#{record.account_id}", "sk": f"{PREFIX}{record.name}", **body}


def _record(item: dict[str, Any]) -> SyncHealth:
    found = plain(item)
    found.pop("pk", None)
    found.pop("sk", None)
    return SyncHealth.model_validate(found)


class DynamoHealthStore:
    def __init__(self, table_name: str) -> None:
        self._table = dynamodb().Table(table_name)

    def health_of(self, account_id: str) -> list[SyncHealth]:
        query: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"ACC#{account_id}") & Key("sk").begins_with(PREFIX),
            "ConsistentRead": True,
        }
        found: list[SyncHealth] = []
        while True:
            page = self._table.query(**query)
            found.extend(_record(item) for item in page["Items"])
            if "LastEvaluatedKey" not in page:
                return found
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def record(self, account_id: str, name: str, run: RunReport) -> SyncHealth:
        if not run.failed_items and run.outcome != "items":
            return self._update(account_id, name, run)
        for _ in range(ATTEMPTS):
            item = self._table.get_item(
                Key={"pk": f"ACC#{account_id}", "sk": f"{PREFIX}{name}"}, ConsistentRead=True
            ).get("Item")
            current = _record(item) if item else None
            version = current.version if current else 0
            after = merged(current, account_id, name, run).model_copy(update={"version": version + 1})
            condition = "version = :v" if current else "attribute_not_exists(pk)"
            request: dict[str, Any] = {"Item": _item(after), "ConditionExpression": condition}
            if current:
                request["ExpressionAttributeValues"] = {":v": version}
            try:
                self._table.put_item(**request)
            except ClientError as error:
                if is_condition_failure(error):
                    continue  # another run wrote meanwhile: merge into theirs
                raise
            return after
        raise TransientError(f"the health record of {account_id}/{name} kept changing")

    def _update(self, account_id: str, name: str, run: RunReport) -> SyncHealth:
        """`merged` of a run without failed items, as one update expression."""
        sets = ["account_id = :a", "#n = :n", "last_attempt_at = :at"]
        adds = ["version :one"]
        values: dict[str, Any] = {":a": account_id, ":n": name, ":at": _when(run.at), ":one": 1}
        if run.outcome == "error":
            sets += ["last_error = :e", "last_error_at = :at"]
            adds.append("failures :one")
            values[":e"] = run.error or "failed"
        else:
            sets.append("failures = :zero")
            values[":zero"] = 0
            if run.outcome == "success":
                sets.append("last_success_at = :at")
        response = self._table.update_item(
            Key={"pk": f"ACC#{account_id}", "sk": f"{PREFIX}{name}"},
            UpdateExpression=f"SET {', '.join(sets)} ADD {', '.join(adds)}",
            ExpressionAttributeNames={"#n": "name"},
            ExpressionAttributeValues=values,
            ReturnValues="ALL_NEW",
        )
        return _record(response["Attributes"])

"""The cursors table (CURSORS_TABLE): sync state per account, and the due index.

Items (see docs/architecture/data.md, "Cursors"):
- progress:  pk=ACC#{account}  sk=RESYNC#{kind}
- due items: any pk/sk, with due_shard={lane}#{n} and due_at (epoch s) while they are pending
  (a mailbox's watch renewal and catch-up poll: pk=ACC#{account} sk=DUE#watch / DUE#catchup in
  lane `due`; a calendar connection's poll, sk=DUE#calpoll, in lane `calpoll`)
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from crmsync.resync import ResyncProgress
from crmsync.schedule import DUE_LANE, DueItem
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import is_condition_failure, plain


class DynamoSyncStateStore:
    def __init__(self, table_name: str) -> None:
        self._table = dynamodb().Table(table_name)

    def get_progress(self, account_id: str, kind: str) -> ResyncProgress | None:
        item = self._table.get_item(
            Key={"pk": f"ACC#{account_id}", "sk": f"RESYNC#{kind}"}, ConsistentRead=True
        )
        found = item.get("Item")
        return ResyncProgress.model_validate(plain(found["progress"])) if found else None

    def put_progress(self, progress: ResyncProgress, expected_version: int | None) -> bool:
        stored = progress.model_copy(update={"version": (expected_version or 0) + 1})
        condition = "attribute_not_exists(pk)"
        values: dict[str, Any] = {}
        if expected_version is not None:
            # a record from before versions has none: version 0
            condition = (
                "version = :v" if expected_version else "attribute_not_exists(version) OR version = :v"
            )
            values[":v"] = expected_version
        request: dict[str, Any] = {
            "Item": {
                "pk": f"ACC#{progress.account_id}",
                "sk": f"RESYNC#{progress.kind}",
                "progress": stored.model_dump(mode="json"),
                "version": stored.version,
            },
            "ConditionExpression": condition,
        }
        if values:
            request["ExpressionAttributeValues"] = values
        try:
            self._table.put_item(**request)
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True


class DynamoCursorStore:
    """Provider cursors: pk=ACC#{account} sk=CUR#{name}. A write names the value it replaces,
    and stamps `updated_at` (epoch s; absent on cursors written before it was kept)."""

    def __init__(self, table_name: str, clock: Callable[[], float] = time.time) -> None:
        self._table = dynamodb().Table(table_name)
        self._clock = clock

    def get(self, account_id: str, name: str) -> str | None:
        item = self._table.get_item(
            Key={"pk": f"ACC#{account_id}", "sk": f"CUR#{name}"}, ConsistentRead=True
        ).get("Item")
        return str(item["cursor"]) if item else None

    def updated_at(self, account_id: str, name: str) -> datetime | None:
        """When the cursor last moved (SYNC-9's cursor age); None if unknown."""
        item = self._table.get_item(
            Key={"pk": f"ACC#{account_id}", "sk": f"CUR#{name}"},
            ProjectionExpression="updated_at",
            ConsistentRead=True,
        ).get("Item")
        stamp = plain(item.get("updated_at")) if item else None
        return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None

    def set(self, account_id: str, name: str, value: str) -> None:
        """A new baseline, whatever was there (the end of a full resync)."""
        self._table.put_item(
            Item={
                "pk": f"ACC#{account_id}",
                "sk": f"CUR#{name}",
                "cursor": value,
                "updated_at": int(self._clock()),
            }
        )

    def advance(self, account_id: str, name: str, new: str, expected: str | None) -> bool:
        try:
            if expected is None:
                self._table.put_item(
                    Item={
                        "pk": f"ACC#{account_id}",
                        "sk": f"CUR#{name}",
                        "cursor": new,
                        "updated_at": int(self._clock()),
                    },
                    ConditionExpression="attribute_not_exists(pk)",
                )
            else:
                self._table.update_item(
                    Key={"pk": f"ACC#{account_id}", "sk": f"CUR#{name}"},
                    UpdateExpression="SET #c = :new, updated_at = :at",
                    ConditionExpression="#c = :old",
                    ExpressionAttributeNames={"#c": "cursor"},
                    ExpressionAttributeValues={":new": new, ":old": expected, ":at": int(self._clock())},
                )
        except ClientError as error:
            if is_condition_failure(error):
                return False  # someone moved it meanwhile: theirs stands
            raise
        return True


class DynamoDueStore:
    def __init__(self, table_name: str, shards: int) -> None:
        self._table = dynamodb().Table(table_name)
        self._shards = shards

    def _shard(self, pk: str, lane: str = DUE_LANE) -> str:
        return f"{lane}#{zlib.crc32(pk.encode()) % self._shards}"

    def put(self, item: DueItem) -> None:
        self._table.update_item(
            Key={"pk": item.pk, "sk": item.sk},
            UpdateExpression="SET due_shard = :s, due_at = :d, job = :j, every_s = :e",
            ExpressionAttributeValues={
                ":s": self._shard(item.pk, item.lane),
                ":d": item.due_at,
                ":j": item.job,
                ":e": item.every_s,
            },
        )

    def replace(self, item: DueItem) -> bool:
        """Move an item that exists to a new due time (and job); False if it was removed, so
        work that finishes after a disconnect (ACC-8) cannot bring its schedule back."""
        try:
            self._table.update_item(
                Key={"pk": item.pk, "sk": item.sk},
                UpdateExpression="SET due_shard = :s, due_at = :d, job = :j, every_s = :e",
                ConditionExpression="attribute_exists(job)",
                ExpressionAttributeValues={
                    ":s": self._shard(item.pk, item.lane),
                    ":d": item.due_at,
                    ":j": item.job,
                    ":e": item.every_s,
                },
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    def remove(self, pk: str, sk: str) -> None:
        self._table.delete_item(Key={"pk": pk, "sk": sk})

    def due(self, now: int, limit: int, lane: str = DUE_LANE) -> Iterator[DueItem]:
        """At most `limit` items of one lane, fair to every shard (SYNC-7): each shard gets an equal share
        of the limit, oldest first, so that a crowded shard cannot starve the others; what the
        quieter shards leave is shared again among the shards that have more. The shard read
        first moves on with the minute (with `limit` below the shard count, each is first in
        turn)."""
        start = (now // 60) % self._shards
        pending: list[tuple[int, dict[str, Any] | None]] = [
            ((start + n) % self._shards, None) for n in range(self._shards)
        ]
        left = limit
        while left > 0 and pending:
            share = max(1, left // len(pending))
            more: list[tuple[int, dict[str, Any] | None]] = []  # shards with more due, where to go on
            for shard, last in pending:
                if left <= 0:
                    return
                items, following = self._read(lane, shard, now, min(share, left), last)
                left -= len(items)
                yield from items
                if following is not None:
                    more.append((shard, following))
            pending = more

    def _read(
        self, lane: str, shard: int, now: int, count: int, start: dict[str, Any] | None
    ) -> tuple[list[DueItem], dict[str, Any] | None]:
        """Up to `count` due items of a shard from `start`, and where the next read goes on
        (None: nothing more is due there)."""
        kwargs: dict[str, Any] = {
            "IndexName": "due",
            "KeyConditionExpression": Key("due_shard").eq(f"{lane}#{shard}") & Key("due_at").lte(now),
        }
        if start is not None:
            kwargs["ExclusiveStartKey"] = start
        found: list[DueItem] = []
        while len(found) < count:
            page = self._table.query(Limit=min(count - len(found), 500), **kwargs)
            for raw in page["Items"]:
                item = plain(raw)
                found.append(
                    DueItem(
                        pk=item["pk"],
                        sk=item["sk"],
                        due_at=item["due_at"],
                        job=item["job"],
                        every_s=item.get("every_s"),
                        lane=lane,
                    )
                )
            if "LastEvaluatedKey" not in page:
                return found, None
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found, kwargs.get("ExclusiveStartKey")

    def advance(self, item: DueItem, next_due: int | None) -> bool:
        """Move the item to its next due time (or out of the index); False if someone else did."""
        try:
            if next_due is None:
                self._table.update_item(
                    Key={"pk": item.pk, "sk": item.sk},
                    UpdateExpression="REMOVE due_shard, due_at",
                    ConditionExpression="due_at = :d",
                    ExpressionAttributeValues={":d": item.due_at},
                )
            else:
                self._table.update_item(
                    Key={"pk": item.pk, "sk": item.sk},
                    UpdateExpression="SET due_at = :n",
                    ConditionExpression="due_at = :d",
                    ExpressionAttributeValues={":d": item.due_at, ":n": next_due},
                )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

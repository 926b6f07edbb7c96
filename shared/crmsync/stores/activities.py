"""The calendar engine's ActivityStore (crmsync.calendar.ports) on DynamoDB: ACTIVITIES_TABLE.

Access patterns, and the item that serves each (see docs/architecture/data.md, "Activities"):
- an activity by id (API GET, the engine):        pk=T#{tenant}#ACT#{activity}  sk=ACTIVITY
  a user's activities by start (gsi1):             gsi1pk=T#{tenant}#U#{owner}#ACT
                                                   gsi1sk={start, UTC}#{activity}
- the sync state row of an activity:              pk=T#{tenant}#ACT#{activity}  sk=STATE
- the state of a provider event (one or a batch): pk=CAL#{account}#EVT#{id key}  sk=MAP
  (`{id key}` is crmsync.ids.id_key; the map carries a copy of the state row, written in the
  same transaction as the row, so one GetItem / BatchGetItem answers without a second read)
- how many items a connection has synced (CAL-16): pk=CAL#{account}  sk=COUNT  (a counter)
- an activity's conflicts, oldest first (CAL-14):  pk=T#{tenant}#ACT#{activity}
                                                   sk=CONFLICT#{decided_at, UTC}#{digest}

Writes:
- put_activity is one conditional PutItem: the item is absent or its `updated_us` (microseconds
  since the epoch of `updated_at`) is older than the new one; an equal or newer one stands.
- put_state writes in one TransactWriteItems: the row (conditional on the text of the row it
  replaces and its account), the event map of the new event (conditional: absent or this
  activity's), the delete of the map of the event the row had before (when the event or the
  account changed), and the counters (+1 for a new row; -1 / +1 when the row changes
  connection). The text it replaces is the one this instance last read or wrote for the row
  when that is still `expected` (the engine has just read it), so no read comes first; a write
  so refused, or one with no such text, reads the row (consistently), compares it with
  `expected` as a model (a row written before the model gained a field still matches), and
  writes conditional on what it read. A crash before or after the call leaves both or neither:
  no map without its row, no row without its map.
- count_states reads the counter rather than querying: an exact, consistent answer in one
  GetItem however many items the calendar has (a Query with Select=COUNT reads, and pays for,
  every item, and gsi1 is eventually consistent). The counter is written only in the state
  transactions above, and one connection's syncs run one at a time, so the item is not hot.
- add_conflict is a PutItem whose key derives from the conflict itself: a retried add rewrites
  the same item instead of adding a second one.
- attendees the sync made contacts of (CAL-13): pk=T#{tenant}#ATTENDEES  sk={address}: a
  conditional PutItem claims it for one activity (absent, or that activity's and not yet told),
  an UpdateItem sets `told` once the contact's event went out.
- activities held while sync is stopped (CAL-9): pk=CAL#{account}#HELD  sk={activity}, put with
  `attribute_not_exists` (the first hold's time stands), queried in the order held by their
  `held_us`, deleted on release.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from crmsync.calendar.models import Activity, Conflict, SyncState
from crmsync.ids import id_key
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import batch_get, is_condition_failure, plain, transact

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAP_IS_OURS = "attribute_not_exists(pk) OR (tenant_id = :t AND activity_id = :a)"


# ---- keys and orderings, shared with the in-memory twin (stores/memory_activities.py)
def _utc(moment: datetime) -> datetime:
    """An aware instant in UTC; a naive datetime is taken as UTC already."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def updated_micros(activity: Activity) -> int:
    """The activity's `updated_at` as whole microseconds since the epoch: exact, and comparable
    whatever offset the CRM wrote it with."""
    return (_utc(activity.updated_at) - _EPOCH) // timedelta(microseconds=1)


def start_key(start: date | datetime) -> str:
    """A start as sortable text: the day of an all-day item, the UTC instant of a timed one."""
    if isinstance(start, datetime):
        return _utc(start).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return start.isoformat()


def state_json(state: SyncState) -> str:
    """The stored form of a state row; a write names the row it replaces by this text."""
    return state.model_dump_json()


def conflict_sort_key(conflict: Conflict) -> str:
    """The conflict's place among its activity's: decided_at in UTC at fixed width (so text order
    is time order), then a digest of the conflict (the same conflict twice is one entry)."""
    body = conflict.model_dump_json()
    digest = hashlib.sha256(body.encode()).hexdigest()[:20]
    return f"{_utc(conflict.decided_at).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}#{digest}"


def _activity_pk(tenant_id: str, activity_id: str) -> str:
    return f"T#{tenant_id}#ACT#{activity_id}"


def _map_key(account_id: str, provider_event_id: str) -> dict[str, str]:
    return {"pk": f"CAL#{account_id}#EVT#{id_key(provider_event_id)}", "sk": "MAP"}


def _count_key(account_id: str) -> dict[str, str]:
    return {"pk": f"CAL#{account_id}", "sk": "COUNT"}


class DynamoActivityStore:
    def __init__(self, table_name: str) -> None:
        self._name = table_name
        self._table = dynamodb().Table(table_name)
        # (tenant, activity) → the text and connection of its state row as this instance last
        # read or wrote it (put_state's condition names it, so a write needs no read first)
        self._rows: dict[tuple[str, str], tuple[str, str]] = {}

    def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    # ---- activities
    def get_activity(self, tenant_id: str, activity_id: str) -> Activity | None:
        item = self._get({"pk": _activity_pk(tenant_id, activity_id), "sk": "ACTIVITY"})
        return Activity.model_validate_json(str(item["activity"])) if item else None

    def get_activities(self, tenant_id: str, activity_ids: Sequence[str]) -> dict[str, Activity]:
        keys = [{"pk": _activity_pk(tenant_id, i), "sk": "ACTIVITY"} for i in activity_ids]
        found = (Activity.model_validate_json(str(item["activity"])) for item in self._batch_get(keys))
        return {a.id: a for a in found}

    def put_activity(self, activity: Activity) -> bool:
        micros = updated_micros(activity)
        item: dict[str, Any] = {
            "pk": _activity_pk(activity.tenant_id, activity.id),
            "sk": "ACTIVITY",
            "gsi1pk": f"T#{activity.tenant_id}#U#{activity.owner_user_id}#ACT",
            "gsi1sk": f"{start_key(activity.start)}#{activity.id}",
            "activity": activity.model_dump_json(),
            "updated_us": micros,
        }
        try:
            self._table.put_item(
                Item=item,
                ConditionExpression="attribute_not_exists(pk) OR updated_us < :u",
                ExpressionAttributeValues={":u": micros},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False  # the stored one is as new or newer
            raise
        return True

    # ---- sync state rows and their event maps
    def _seen(self, raw: str, account_id: str) -> SyncState:
        """A row as read (or its map's copy): kept by its text and connection, so that writing it
        next needs no second read (put_state)."""
        state = SyncState.model_validate_json(raw)
        if len(self._rows) >= 10_000:
            self._rows.clear()
        self._rows[(state.tenant_id, state.activity_id)] = (raw, account_id)
        return state

    def get_state(self, tenant_id: str, activity_id: str) -> SyncState | None:
        item = self._get({"pk": _activity_pk(tenant_id, activity_id), "sk": "STATE"})
        return self._seen(str(item["state"]), str(item["account_id"])) if item else None

    def state_of_event(self, account_id: str, provider_event_id: str) -> SyncState | None:
        item = self._get(_map_key(account_id, provider_event_id))
        return self._seen(str(item["state"]), account_id) if item else None

    def states_of_events(self, account_id: str, provider_event_ids: Sequence[str]) -> dict[str, SyncState]:
        """`state_of_event` for many: one BatchGetItem per 100 events, those mapped answered."""
        by_pk = {_map_key(account_id, e)["pk"]: e for e in provider_event_ids}
        found: dict[str, SyncState] = {}
        for item in self._batch_get([{"pk": pk, "sk": "MAP"} for pk in by_pk]):
            found[by_pk[item["pk"]]] = self._seen(str(item["state"]), account_id)
        return found

    def _batch_get(self, keys: list[dict[str, str]]) -> list[dict[str, Any]]:
        return batch_get(self._name, keys, consistent=True)

    def put_state(self, account_id: str, state: SyncState, expected: SyncState | None) -> bool:
        key = (state.tenant_id, state.activity_id)
        seen = self._rows.get(key)
        if expected is None or (seen is not None and SyncState.model_validate_json(seen[0]) == expected):
            # the row as this instance last read or wrote it: the write's condition checks it
            # is still so, with no read first; only a refused write reads to tell why
            stored = None if expected is None else {"state": seen[0], "account_id": seen[1]} if seen else None
            if self._write_state(account_id, state, expected, stored):
                return True
            if expected is None:
                return False
        row = self._get({"pk": _activity_pk(*key), "sk": "STATE"})
        if row is None or expected is None or SyncState.model_validate_json(str(row["state"])) != expected:
            return False  # another writer changed the row since the caller read it
        return self._write_state(account_id, state, expected, row)

    def _write_state(
        self, account_id: str, state: SyncState, expected: SyncState | None, stored: dict[str, Any] | None
    ) -> bool:
        """One transaction: the row (conditional on the text it replaces), the event's map, the
        old map's delete and the counters."""
        row_key = {"pk": _activity_pk(state.tenant_id, state.activity_id), "sk": "STATE"}
        new_json = state_json(state)
        row: dict[str, Any] = {
            "TableName": self._name,
            "Item": {**row_key, "state": new_json, "account_id": account_id},
        }
        if stored is None:
            row["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            row["ConditionExpression"] = "#s = :old AND account_id = :old_account"
            row["ExpressionAttributeNames"] = {"#s": "state"}
            row["ExpressionAttributeValues"] = {":old": stored["state"], ":old_account": stored["account_id"]}
        new_map = _map_key(account_id, state.provider_event_id)
        actions: list[dict[str, Any]] = [
            {"Put": row},
            {
                "Put": {
                    "TableName": self._name,
                    "Item": {
                        **new_map,
                        "tenant_id": state.tenant_id,
                        "activity_id": state.activity_id,
                        "provider_event_id": state.provider_event_id,
                        "state": new_json,
                    },
                    # an event is synced with one activity: another's map is not taken over
                    "ConditionExpression": _MAP_IS_OURS,
                    "ExpressionAttributeValues": {":t": state.tenant_id, ":a": state.activity_id},
                }
            },
        ]
        if stored is not None and expected is not None:
            old_account = str(stored["account_id"])
            old_map = _map_key(old_account, expected.provider_event_id)
            if old_map != new_map:
                actions.append({"Delete": {"TableName": self._name, "Key": old_map}})
            if old_account != account_id:
                actions.append(self._count(old_account, -1))
                actions.append(self._count(account_id, +1))
        else:
            actions.append(self._count(account_id, +1))
        if not transact(self._table, actions):
            self._rows.pop((state.tenant_id, state.activity_id), None)
            return False  # the row changed meanwhile, or the event is another activity's
        self._rows[(state.tenant_id, state.activity_id)] = (new_json, account_id)
        return True

    def _count(self, account_id: str, step: int) -> dict[str, Any]:
        return {
            "Update": {
                "TableName": self._name,
                "Key": _count_key(account_id),
                "UpdateExpression": "ADD #n :step",
                "ExpressionAttributeNames": {"#n": "states"},
                "ExpressionAttributeValues": {":step": step},
            }
        }

    def count_states(self, account_id: str) -> int:
        item = self._get(_count_key(account_id))
        return int(item.get("states", 0)) if item else 0

    # ---- conflicts (CAL-14)
    def add_conflict(self, tenant_id: str, conflict: Conflict) -> None:
        self._table.put_item(
            Item={
                "pk": _activity_pk(tenant_id, conflict.activity_id),
                "sk": f"CONFLICT#{conflict_sort_key(conflict)}",
                "conflict": conflict.model_dump_json(),
            }
        )

    def conflicts(self, tenant_id: str, activity_id: str) -> list[Conflict]:
        """The activity's conflicts, oldest first: a Query of its partition, every page read."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(_activity_pk(tenant_id, activity_id))
            & Key("sk").begins_with("CONFLICT#"),
            "ConsistentRead": True,
        }
        found: list[Conflict] = []
        while True:
            page = self._table.query(**kwargs)
            found += [Conflict.model_validate_json(str(i["conflict"])) for i in page["Items"]]
            if not page.get("LastEvaluatedKey"):
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # ---- activities held while a connection is stopped (CAL-9)
    def hold(self, account_id: str, activity_id: str) -> None:
        now_us = (datetime.now(UTC) - _EPOCH) // timedelta(microseconds=1)
        try:
            self._table.put_item(
                Item={"pk": f"CAL#{account_id}#HELD", "sk": activity_id, "held_us": now_us},
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise

    def held(self, account_id: str) -> list[str]:
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"CAL#{account_id}#HELD"),
            "ConsistentRead": True,
        }
        found: list[tuple[int, str]] = []
        while True:
            page = self._table.query(**kwargs)
            found += [(int(str(i["held_us"])), str(i["sk"])) for i in page["Items"]]
            if not page.get("LastEvaluatedKey"):
                return [activity_id for _, activity_id in sorted(found)]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def release(self, account_id: str, activity_id: str) -> None:
        self._table.delete_item(Key={"pk": f"CAL#{account_id}#HELD", "sk": activity_id})

    # ---- attendees made contacts of (CAL-13)
    def claim_attendee(self, tenant_id: str, email: str, activity_id: str) -> bool:
        try:
            self._table.put_item(
                Item={
                    "pk": f"T#{tenant_id}#ATTENDEES",
                    "sk": email.strip().lower(),
                    "claimed_by": activity_id,
                    "told": False,
                },
                ConditionExpression="attribute_not_exists(pk) OR (claimed_by = :a AND told = :f)",
                ExpressionAttributeValues={":a": activity_id, ":f": False},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    def attendee_told(self, tenant_id: str, email: str) -> None:
        self._table.update_item(
            Key={"pk": f"T#{tenant_id}#ATTENDEES", "sk": email.strip().lower()},
            UpdateExpression="SET told = :t",
            ExpressionAttributeValues={":t": True},
        )

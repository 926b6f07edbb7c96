"""The in-memory twin of DynamoActivityStore (stores/activities.py), for fast tests.

Same methods, same keys, the same conditional writes and the same answers on a conflict
(tests/contract/test_activity_store.py runs one suite against both). Records are kept as JSON,
as DynamoDB keeps them, so a caller changing a model it got back changes nothing stored. One
lock makes every write all-or-nothing, as the DynamoDB store's transaction does.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from crmsync.calendar.models import Activity, Conflict, SyncState
from crmsync.ids import id_key
from crmsync.stores.activities import conflict_sort_key, state_json, updated_micros


@dataclass(frozen=True)
class _Row:
    account_id: str
    state: str  # JSON


@dataclass(frozen=True)
class _Map:
    tenant_id: str
    activity_id: str
    state: str  # JSON: a copy of the row, written with it


class MemoryActivityStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._activities: dict[tuple[str, str], tuple[int, str]] = {}  # (tenant, id) → (updated µs, JSON)
        self._rows: dict[tuple[str, str], _Row] = {}  # (tenant, activity)
        self._maps: dict[tuple[str, str], _Map] = {}  # (account, id key of the event)
        self._counts: dict[str, int] = {}  # account → rows
        self._conflicts: dict[tuple[str, str], dict[str, str]] = {}  # (tenant, activity) → sort key → JSON
        self._held: dict[str, dict[str, None]] = {}  # account → activity ids, in the order held
        self._attendees: dict[tuple[str, str], tuple[str, bool]] = {}  # (tenant, address) → (by, told)

    def get_activity(self, tenant_id: str, activity_id: str) -> Activity | None:
        with self._lock:
            found = self._activities.get((tenant_id, activity_id))
        return Activity.model_validate_json(found[1]) if found else None

    def get_activities(self, tenant_id: str, activity_ids: Sequence[str]) -> dict[str, Activity]:
        found = {i: self.get_activity(tenant_id, i) for i in activity_ids}
        return {i: a for i, a in found.items() if a is not None}

    def put_activity(self, activity: Activity) -> bool:
        key = (activity.tenant_id, activity.id)
        micros = updated_micros(activity)
        with self._lock:
            stored = self._activities.get(key)
            if stored is not None and stored[0] >= micros:
                return False
            self._activities[key] = (micros, activity.model_dump_json())
        return True

    def get_state(self, tenant_id: str, activity_id: str) -> SyncState | None:
        with self._lock:
            row = self._rows.get((tenant_id, activity_id))
        return SyncState.model_validate_json(row.state) if row else None

    def state_of_event(self, account_id: str, provider_event_id: str) -> SyncState | None:
        with self._lock:
            found = self._maps.get((account_id, id_key(provider_event_id)))
        return SyncState.model_validate_json(found.state) if found else None

    def states_of_events(self, account_id: str, provider_event_ids: Sequence[str]) -> dict[str, SyncState]:
        with self._lock:
            maps = {e: self._maps.get((account_id, id_key(e))) for e in provider_event_ids}
        return {e: SyncState.model_validate_json(m.state) for e, m in maps.items() if m is not None}

    def put_state(self, account_id: str, state: SyncState, expected: SyncState | None) -> bool:
        row_key = (state.tenant_id, state.activity_id)
        new_json = state_json(state)
        new_map = (account_id, id_key(state.provider_event_id))
        with self._lock:
            stored = self._rows.get(row_key)
            if (stored is None) != (expected is None):
                return False
            if stored is not None and expected is not None and stored.state != state_json(expected):
                return False
            holder = self._maps.get(new_map)
            if holder is not None and (holder.tenant_id, holder.activity_id) != row_key:
                return False  # the event is another activity's
            # every check passed: the whole write lands, as one transaction does
            if stored is not None and expected is not None:
                old_map = (stored.account_id, id_key(expected.provider_event_id))
                if old_map != new_map:
                    self._maps.pop(old_map, None)
                if stored.account_id != account_id:
                    self._counts[stored.account_id] = self._counts.get(stored.account_id, 0) - 1
                    self._counts[account_id] = self._counts.get(account_id, 0) + 1
            else:
                self._counts[account_id] = self._counts.get(account_id, 0) + 1
            self._rows[row_key] = _Row(account_id=account_id, state=new_json)
            self._maps[new_map] = _Map(
                tenant_id=state.tenant_id, activity_id=state.activity_id, state=new_json
            )
        return True

    def count_states(self, account_id: str) -> int:
        with self._lock:
            return self._counts.get(account_id, 0)

    def add_conflict(self, tenant_id: str, conflict: Conflict) -> None:
        with self._lock:
            kept = self._conflicts.setdefault((tenant_id, conflict.activity_id), {})
            kept[conflict_sort_key(conflict)] = conflict.model_dump_json()

    def conflicts(self, tenant_id: str, activity_id: str) -> list[Conflict]:
        with self._lock:
            kept = dict(self._conflicts.get((tenant_id, activity_id), {}))
        return [Conflict.model_validate_json(kept[k]) for k in sorted(kept)]

    def hold(self, account_id: str, activity_id: str) -> None:
        with self._lock:
            self._held.setdefault(account_id, {}).setdefault(activity_id, None)

    def held(self, account_id: str) -> list[str]:
        with self._lock:
            return list(self._held.get(account_id, {}))

    def release(self, account_id: str, activity_id: str) -> None:
        with self._lock:
            self._held.get(account_id, {}).pop(activity_id, None)

    def claim_attendee(self, tenant_id: str, email: str, activity_id: str) -> bool:
        with self._lock:
            key = (tenant_id, email.strip().lower())
            found = self._attendees.get(key)
            if found is not None and (found[0] != activity_id or found[1]):
                return False
            self._attendees[key] = (activity_id, False)
            return True

    def attendee_told(self, tenant_id: str, email: str) -> None:
        with self._lock:
            key = (tenant_id, email.strip().lower())
            by = self._attendees.get(key, ("", False))[0]
            self._attendees[key] = (by, True)

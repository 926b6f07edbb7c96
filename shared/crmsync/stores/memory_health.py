"""Connection health records in memory, with the semantics of stores.health.DynamoHealthStore
(tests/contract/test_health_store.py runs one contract against both)."""

from __future__ import annotations

import threading

from crmsync.sync.health import RunReport, SyncHealth, merged


class MemoryHealthStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], str] = {}  # (account, name) -> JSON, as stored

    def health_of(self, account_id: str) -> list[SyncHealth]:
        with self._lock:
            found = [raw for (account, _), raw in sorted(self._records.items()) if account == account_id]
        return [SyncHealth.model_validate_json(raw) for raw in found]

    def record(self, account_id: str, name: str, run: RunReport) -> SyncHealth:
        with self._lock:
            raw = self._records.get((account_id, name))
            current = SyncHealth.model_validate_json(raw) if raw else None
            after = merged(current, account_id, name, run)
            after = after.model_copy(update={"version": (current.version if current else 0) + 1})
            self._records[(account_id, name)] = after.model_dump_json()
            return after

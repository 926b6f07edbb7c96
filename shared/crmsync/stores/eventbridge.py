"""EventPublisher on an EventBridge bus."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from crmsync.errors import TransientError
from crmsync.events import CrmEvent
from crmsync.stores.aws import client

_MAX_ENTRIES = 10  # PutEvents takes at most 10 entries per call
_ATTEMPTS = 3


class EventBridgePublisher:
    def __init__(self, bus_name: str, source: str, events_client: Any = None) -> None:
        self._bus = bus_name
        self._source = source
        self._client = events_client or client("events")

    def _entry(self, event: CrmEvent) -> dict[str, Any]:
        return {
            "EventBusName": self._bus,
            "Source": self._source,
            "DetailType": event.detail_type(),
            "Detail": event.model_dump_json(),
            "Time": event.occurred_at,
        }

    def publish(self, events: Sequence[CrmEvent]) -> None:
        for start in range(0, len(events), _MAX_ENTRIES):
            pending = [self._entry(e) for e in events[start : start + _MAX_ENTRIES]]
            for attempt in range(_ATTEMPTS):
                result = self._client.put_events(Entries=pending)
                if not result.get("FailedEntryCount"):
                    break
                pending = [
                    entry
                    for entry, outcome in zip(pending, result["Entries"], strict=True)
                    if outcome.get("ErrorCode")
                ]
                time.sleep(0.05 * 2**attempt)
            else:
                raise TransientError(f"{len(pending)} event(s) could not be put on bus {self._bus}")

"""Scheduled work, fanned out: due items live in the cursors table's `due` index.

A due item carries the job to enqueue and when it is due; it may repeat every N seconds.
The scheduler reads what has come due, a fair share from every shard (see DynamoDueStore.due),
enqueues each job on the sync queue and moves the item on. It never walks all accounts, only
what is due (SYNC-2, SYNC-7).

Items live in lanes (their own shards of the index): the generic `due` lane is the scheduler
function's (watch renewals, mail catch-ups); the `calpoll` lane holds the calendar polls, read
by the calendar_poll function alone (calendar/schedule.py). A Scheduler reads one lane.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, Protocol

from pydantic import BaseModel

from crmsync.jobs import Job

DUE_LANE = "due"  # the scheduler function's lane (the shard keys stay `due#{n}`)


class DueItem(BaseModel):
    pk: str
    sk: str
    due_at: int
    job: dict[str, Any]
    every_s: int | None = None
    lane: str = DUE_LANE  # which fan-out reads it (its shards are `{lane}#{n}`)


class DueStore(Protocol):
    def due(self, now: int, limit: int, lane: str = DUE_LANE) -> Iterator[DueItem]: ...

    def advance(self, item: DueItem, next_due: int | None) -> bool: ...

    def put(self, item: DueItem) -> None: ...


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str) -> None: ...


class Scheduler:
    def __init__(self, store: DueStore, queue: JobQueue, lane: str = DUE_LANE) -> None:
        self._store = store
        self._queue = queue
        self._lane = lane  # the one lane of the due index this scheduler fans out

    def schedule(self, item: DueItem) -> None:
        self._store.put(item)

    def run(self, now: int, limit: int = 5000) -> int:
        """Enqueue what is due at `now` (epoch seconds); returns how many jobs were enqueued."""
        sent = 0
        for item in self._store.due(now, limit, self._lane):
            job = Job.model_validate(item.job)
            dedup = hashlib.sha256(f"{item.pk}|{item.sk}|{item.due_at}".encode()).hexdigest()
            self._queue.send(job, dedup)
            next_due = None
            if item.every_s:
                next_due = item.due_at + item.every_s
                if next_due <= now:  # long overdue: do not replay every missed tick
                    next_due = now + item.every_s
            self._store.advance(item, next_due)
            sent += 1
        return sent

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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel

from crmsync.jobs import Job

if TYPE_CHECKING:
    from crmsync.accounts.models import Account

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


class DueItems(Protocol):
    def put(self, item: DueItem) -> None: ...

    def replace(self, item: DueItem) -> bool: ...

    def remove(self, pk: str, sk: str) -> None: ...


@dataclass(frozen=True)
class Periodic:
    """A connection's poll: its due item's sort key, the job it queues, the lane that fans it out."""

    sk: str
    job_type: str
    reason: str
    lane: str = DUE_LANE


@dataclass(frozen=True)
class Renewal:
    """A push channel's renewal: its due item's sort key, its job, when it is due (from now and
    the channel's expiry), and how long after a renewal that failed for good it is tried again."""

    sk: str
    job_type: str
    due: Callable[[int, int], int]
    retry_s: int


class ConnectionSchedule:
    """A connection's due items (SYNC-2, SYNC-7): its poll, moved a full period on by each sync,
    so a connection whose pushes arrive is not polled on top of them and one whose pushes are
    lost is synced anyway; and its push channel's renewal, by the channel's expiry. Stopping
    removes both; a job that finishes after that cannot bring them back (the store only moves
    items that still exist)."""

    def __init__(
        self,
        items: DueItems,
        poll: Periodic,
        poll_after_s: int,
        renewal: Renewal,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if poll_after_s <= 0 or renewal.retry_s <= 0:
            raise ValueError("poll and renewal periods must be positive seconds")
        self._items = items
        self._poll_spec = poll
        self._after = poll_after_s
        self._renewal_spec = renewal
        self._clock = clock

    def started(self, account: Account, expires_at: int | None = None) -> None:
        """The connection starts syncing (connect, or a reconnect); with a push channel, its
        renewal is scheduled too."""
        self._items.put(self._poll(account))
        if expires_at is not None:
            self._items.put(self._renewal(account, expires_at))

    def synced(self, account: Account) -> bool:
        """The connection has just synced: its poll moves a full period on (False: it was
        stopped meanwhile, and nothing is scheduled again)."""
        return self._items.replace(self._poll(account))

    def renewed(self, account: Account, expires_at: int | None) -> bool:
        """After a renewal: the next one by the new expiry (False: stopped meanwhile). With no
        channel to keep any more, the renewal item goes."""
        if expires_at is None:
            self._items.remove(f"ACC#{account.account_id}", self._renewal_spec.sk)
            return True
        return self._items.replace(self._renewal(account, expires_at))

    def stopped(self, account: Account) -> None:
        """ACC-8: nothing is scheduled for the connection any more."""
        for sk in (self._renewal_spec.sk, self._poll_spec.sk):
            self._items.remove(f"ACC#{account.account_id}", sk)

    def _poll(self, account: Account) -> DueItem:
        spec = self._poll_spec
        job = Job(
            type=spec.job_type,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"reason": spec.reason},
        )
        return DueItem(
            pk=f"ACC#{account.account_id}",
            sk=spec.sk,
            due_at=int(self._clock()) + self._after,
            job=job.model_dump(mode="json"),
            every_s=self._after,
            lane=spec.lane,
        )

    def _renewal(self, account: Account, expires_at: int) -> DueItem:
        spec = self._renewal_spec
        job = Job(
            type=spec.job_type,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"expires_at": expires_at},
        )
        return DueItem(
            pk=f"ACC#{account.account_id}",
            sk=spec.sk,
            due_at=spec.due(int(self._clock()), expires_at),
            job=job.model_dump(mode="json"),
            every_s=spec.retry_s,  # a renewal that failed for good is tried again this much later
        )

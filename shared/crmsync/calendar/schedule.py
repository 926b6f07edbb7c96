"""The calendar poll (SYNC-2 for calendars): every syncing calendar connection has a due item,
`pk=ACC#{account} sk=DUE#calpoll`, a `calendar.sync` job due `poll_after_s` after the connection
last synced. The scheduler function fans due items out through the due index (schedule.py), so
no run ever reads all connections; each sync moves the item a full period on, so a calendar whose
pushes arrive is not polled on top of them, and one whose pushes are lost is synced anyway.
Disconnecting removes it; a sync that finishes after that cannot bring it back."""

from __future__ import annotations

import time
from collections.abc import Callable

from crmsync.accounts.models import Account
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.mail.watch import DueItems
from crmsync.schedule import DueItem

POLL = "DUE#calpoll"


class CalendarPolls:
    def __init__(self, items: DueItems, poll_after_s: int, clock: Callable[[], float] = time.time) -> None:
        if poll_after_s <= 0:
            raise ValueError("the calendar poll period must be positive seconds")
        self._items = items
        self._after = poll_after_s
        self._clock = clock

    def started(self, account: Account) -> None:
        """A calendar connection starts syncing (connect, or a reconnect)."""
        self._items.put(self._poll(account))

    def synced(self, account: Account) -> bool:
        """The connection has just synced: its poll moves a full period on (False: it was
        disconnected meanwhile, and nothing is scheduled again)."""
        return self._items.replace(self._poll(account))

    def stopped(self, account: Account) -> None:
        self._items.remove(f"ACC#{account.account_id}", POLL)

    def _poll(self, account: Account) -> DueItem:
        job = Job(
            type=JobType.CALENDAR_SYNC,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"reason": "poll"},
        )
        return DueItem(
            pk=f"ACC#{account.account_id}",
            sk=POLL,
            due_at=int(self._clock()) + self._after,
            job=job.model_dump(mode="json"),
            every_s=self._after,
        )

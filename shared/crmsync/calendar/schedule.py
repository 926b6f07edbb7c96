"""A calendar connection's due items (SYNC-2, SYNC-7), in the cursors table (see schedule.py):

- `pk=ACC#{account} sk=DUE#calpoll`: the poll, a `calendar.sync` job due `poll_after_s` after
  the connection last synced. It lives in its own lane of the due index (`calpoll`), which the
  calendar_poll function alone fans out (functions/calendar_poll); the generic scheduler never
  reads it. Each sync moves it a full period on, so a calendar whose pushes arrive is not
  polled on top of them, and one whose pushes are lost (or that has no push channel, when no
  webhook URL is configured) is synced anyway.
- `pk=ACC#{account} sk=DUE#calwatch`: the push channel's renewal, a `calendar.watch` job due a
  day before the channel expires (half-way, for a short-lived one), in the generic lane the
  scheduler fans out, like the Gmail watch renewal. Only kept while there is a channel.

Disconnecting removes both; a job that finishes after that cannot bring them back (the store
only moves items that still exist)."""

from __future__ import annotations

import time
from collections.abc import Callable

from crmsync.accounts.models import Account
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.mail.watch import DueItems
from crmsync.schedule import DueItem

POLL = "DUE#calpoll"
RENEWAL = "DUE#calwatch"
LANE = "calpoll"  # the calendar polls' own lane of the due index (calendar_poll reads it)
RENEW_BEFORE_S = 86_400  # a channel is replaced a day before it expires
RENEW_RETRY_S = 3_600  # a renewal that failed for good is tried again an hour later


def renewal_due(now: int, expires_at: int, before_s: int = RENEW_BEFORE_S) -> int:
    """When to replace a channel expiring at `expires_at`: `before_s` ahead of it; half-way
    there for a channel that lives less than twice that; at once if it has lapsed."""
    left = expires_at - now
    return now + max(0, left - before_s, left // 2)


class CalendarPolls:
    def __init__(self, items: DueItems, poll_after_s: int, clock: Callable[[], float] = time.time) -> None:
        if poll_after_s <= 0:
            raise ValueError("the calendar poll period must be positive seconds")
        self._items = items
        self._after = poll_after_s
        self._clock = clock

    def started(self, account: Account, channel_expires_at: int | None = None) -> None:
        """A calendar connection starts syncing (connect, or a reconnect); with a push channel,
        its renewal is scheduled too."""
        self._items.put(self._poll(account))
        if channel_expires_at is not None:
            self._items.put(self._renewal(account, channel_expires_at))

    def synced(self, account: Account) -> bool:
        """The connection has just synced: its poll moves a full period on (False: it was
        disconnected meanwhile, and nothing is scheduled again)."""
        return self._items.replace(self._poll(account))

    def renewed(self, account: Account, channel_expires_at: int | None) -> bool:
        """After a channel renewal: the next one by the new expiry (False: disconnected
        meanwhile). Without a channel any more (no webhook URL), the renewal item goes."""
        if channel_expires_at is None:
            self._items.remove(f"ACC#{account.account_id}", RENEWAL)
            return True
        return self._items.replace(self._renewal(account, channel_expires_at))

    def stopped(self, account: Account) -> None:
        for sk in (POLL, RENEWAL):
            self._items.remove(f"ACC#{account.account_id}", sk)

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
            lane=LANE,
        )

    def _renewal(self, account: Account, expires_at: int) -> DueItem:
        job = Job(
            type=JobType.CALENDAR_WATCH,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"expires_at": expires_at},
        )
        return DueItem(
            pk=f"ACC#{account.account_id}",
            sk=RENEWAL,
            due_at=renewal_due(int(self._clock()), expires_at),
            job=job.model_dump(mode="json"),
            every_s=RENEW_RETRY_S,
        )

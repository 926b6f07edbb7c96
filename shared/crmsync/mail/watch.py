"""Keeping a mailbox's notifications alive and its sync caught up (SYNC-2, SYNC-7, ACC-8).

Every syncing mailbox has up to two due items in the cursors table (see schedule.py):

- `pk=ACC#{account} sk=DUE#watch`: a `mail.watch` job, due well before the provider's watch
  (Gmail users.watch, later a Graph subscription) expires. The job renews the watch, moves
  the item by the expiry the provider returned, and runs the delta sync from the stored
  cursor, so whatever arrived while notifications lapsed is caught up.
- `pk=ACC#{account} sk=DUE#catchup`: a `mail.sync` job due `catchup_after_s` after the
  account last synced. Every sync pushes it forward, so an account whose notifications keep
  coming is never polled on top of them, and one whose pushes are lost is synced anyway.

Disconnecting (or replacing) an account removes both; a job that finishes after that cannot
bring them back (the store only moves items that still exist).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aws_lambda_powertools import Logger

from crmsync.accounts.models import Account
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.schedule import DueItem

logger = Logger()

WATCH = "DUE#watch"
CATCHUP = "DUE#catchup"
RENEW_EVERY_S = 86_400  # Gmail: re-call watch at least every 7 days, Google recommends daily


class Watcher(Protocol):
    """A provider's push channel for one mailbox (Gmail watch, Graph subscription)."""

    def renew(self, account: Account) -> int | None:
        """Start or renew the account's channel; returns when it expires (epoch seconds),
        or None when this deployment keeps no channel for the provider (nothing to renew)."""
        ...


class DueItems(Protocol):
    def put(self, item: DueItem) -> None: ...

    def replace(self, item: DueItem) -> bool: ...

    def remove(self, pk: str, sk: str) -> None: ...


def renew_at(now: int, expires_at: int, every_s: int = RENEW_EVERY_S) -> int:
    """When to renew a channel that expires at `expires_at`: within `every_s`, and never later
    than half-way to its expiry, whatever lifetime the provider chose to give it."""
    return now + max(0, min(every_s, (expires_at - now) // 2))


class SyncSchedule:
    """The due items of a mailbox's watch renewal and catch-up poll."""

    def __init__(
        self,
        items: DueItems,
        catchup_after_s: int,
        renew_every_s: int = RENEW_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if catchup_after_s <= 0 or renew_every_s <= 0:
            raise ValueError("catch-up and renewal periods must be positive seconds")
        self._items = items
        self._catchup_after = catchup_after_s
        self._renew_every = renew_every_s
        self._clock = clock

    def started(self, account: Account, expires_at: int | None) -> None:
        """A mailbox starts syncing (connect, or a reconnect after a disconnect)."""
        self._items.put(self._catchup(account, int(self._clock())))
        if expires_at is not None:
            self._items.put(self._watch(account, expires_at))

    def renewed(self, account: Account, expires_at: int | None) -> bool:
        """After a renewal: the next one by the new expiry. False if the account's schedule is
        gone (disconnected meanwhile); with no channel to keep, the renewal item goes."""
        if expires_at is None:
            self._items.remove(f"ACC#{account.account_id}", WATCH)
            return True
        return self._items.replace(self._watch(account, expires_at))

    def synced(self, account: Account) -> bool:
        """The account has just synced: its catch-up poll moves a full period on."""
        return self._items.replace(self._catchup(account, int(self._clock())))

    def stopped(self, account: Account) -> None:
        """ACC-8: nothing is scheduled for the account any more."""
        for sk in (WATCH, CATCHUP):
            self._items.remove(f"ACC#{account.account_id}", sk)

    def _catchup(self, account: Account, now: int) -> DueItem:
        job = Job(
            type=JobType.MAIL_SYNC,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"reason": "catch-up"},
        )
        return DueItem(
            pk=f"ACC#{account.account_id}",
            sk=CATCHUP,
            due_at=now + self._catchup_after,
            job=job.model_dump(mode="json"),
            every_s=self._catchup_after,
        )

    def _watch(self, account: Account, expires_at: int) -> DueItem:
        job = Job(
            type=JobType.MAIL_WATCH,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"expires_at": expires_at},
        )
        return DueItem(
            pk=f"ACC#{account.account_id}",
            sk=WATCH,
            due_at=renew_at(int(self._clock()), expires_at, self._renew_every),
            job=job.model_dump(mode="json"),
            # if a renewal fails for good, the scheduler still tries again a period later
            every_s=self._renew_every,
        )


class AccountSync(Protocol):
    """The `mail.sync` job: the account a job names (or why it may not run), and its sync."""

    def account_of(self, job: Job) -> Account: ...

    def sync(self, account: Account) -> None: ...


class MailWatchJob:
    """The worker's `mail.watch` job (SYNC-7): renew the account's channel, schedule the next
    renewal by the expiry the provider returned, then sync from the stored cursor."""

    def __init__(
        self, mail_sync: AccountSync, watchers: Mapping[str, Watcher], schedule: SyncSchedule
    ) -> None:
        self._sync = mail_sync
        self._watchers = watchers
        self._schedule = schedule

    def __call__(self, job: Job, message_id: str) -> None:
        account = self._sync.account_of(job)  # raises Paused for an account that may not sync
        watcher = self._watchers.get(account.provider)
        expires_at = watcher.renew(account) if watcher is not None else None
        previous = job.payload.get("expires_at")
        if isinstance(previous, int) and previous <= time.time():
            logger.warning(
                "watch had lapsed; catching up", extra={"account_id": account.account_id, "expired": previous}
            )
        if not self._schedule.renewed(account, expires_at):
            logger.info(
                "account no longer scheduled; renewal not rescheduled",
                extra={"account_id": account.account_id},
            )
        self._sync.sync(account)  # a lapse is caught up by a delta sync

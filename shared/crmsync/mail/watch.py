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
from crmsync.schedule import ConnectionSchedule, DueItems, Periodic, Renewal

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


def renew_at(now: int, expires_at: int, every_s: int = RENEW_EVERY_S) -> int:
    """When to renew a channel that expires at `expires_at`: within `every_s`, and never later
    than half-way to its expiry, whatever lifetime the provider chose to give it."""
    return now + max(0, min(every_s, (expires_at - now) // 2))


class SyncSchedule(ConnectionSchedule):
    """The due items of a mailbox's catch-up poll and watch renewal."""

    def __init__(
        self,
        items: DueItems,
        catchup_after_s: int,
        renew_every_s: int = RENEW_EVERY_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(
            items,
            Periodic(CATCHUP, JobType.MAIL_SYNC, "catch-up"),
            catchup_after_s,
            Renewal(
                WATCH, JobType.MAIL_WATCH, lambda now, exp: renew_at(now, exp, renew_every_s), renew_every_s
            ),
            clock,
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

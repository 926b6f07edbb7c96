"""A calendar connection's push channel, kept alive (SYNC-7): the provider-neutral port and the
worker's `calendar.watch` job. Google's channels are in providers/google/calendar_watch.py;
the due item that queues the job is calendar/schedule.py's DUE#calwatch."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Protocol

from aws_lambda_powertools import Logger

from crmsync.accounts.models import Account, TokenSet
from crmsync.calendar.schedule import CalendarPolls
from crmsync.errors import Paused
from crmsync.jobs import Job

logger = Logger()


class CalendarWatcher(Protocol):
    """A provider's push channel for one calendar connection."""

    @property
    def watches(self) -> bool:
        """False when this deployment keeps no channel (no webhook URL): the poll alone syncs."""
        ...

    def start(self, account: Account, access_token: str) -> int | None:
        """Open the connection's channel; when it expires (epoch seconds), None without one."""
        ...

    def renew(self, account: Account) -> int | None:
        """Replace the channel with a new one (new first, then the old stopped); its expiry."""
        ...

    def stop(self, account: Account, tokens: TokenSet | None) -> None:
        """ACC-8: stop the channel at the provider and forget it."""
        ...


class AccountSync(Protocol):
    """The `calendar.sync` job (sync/jobs.py SyncJob): the account a job names, and its sync."""

    def account_of(self, job: Job) -> Account: ...

    def sync(self, account: Account) -> None: ...


class CalendarWatchJob:
    """`calendar.watch`: a new channel in place of the one about to expire, the next renewal by
    its expiry, then a sync from the stored cursor (whatever the swap or a lapse let through)."""

    def __init__(
        self, calendar_sync: AccountSync, watchers: Mapping[str, CalendarWatcher | None], polls: CalendarPolls
    ) -> None:
        self._sync = calendar_sync
        self._watchers = watchers
        self._polls = polls

    def __call__(self, job: Job, message_id: str) -> None:
        account = self._sync.account_of(job)  # Paused for an account that may not sync
        if not account.calendar_syncing:  # not connected for calendar, or stopped (CAL-9)
            raise Paused(f"account {account.account_id} does not sync its calendar")
        watcher = self._watchers.get(account.provider)
        expires_at = watcher.renew(account) if watcher is not None else None
        previous = job.payload.get("expires_at")
        if isinstance(previous, int) and previous <= time.time():
            logger.warning(
                "calendar channel had lapsed; catching up",
                extra={"account_id": account.account_id, "expired": previous},
            )
        if not self._polls.renewed(account, expires_at):
            logger.info(
                "calendar no longer scheduled; renewal not rescheduled",
                extra={"account_id": account.account_id},
            )
            return
        self._sync.sync(account)

"""The sync worker's `mail.sync` job: run an account's incremental sync from its cursor."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from crmsync.accounts.models import Account
from crmsync.errors import Paused, PermanentError
from crmsync.jobs import Job
from crmsync.mail.sync import ChangeSource, MailboxSync


class AccountById(Protocol):
    def get_by_id(self, account_id: str) -> Account | None: ...


class MailSyncJob:
    def __init__(
        self,
        accounts: AccountById,
        mailbox_sync: MailboxSync,
        sources: Mapping[str, ChangeSource],
        synced: Callable[[Account], object] | None = None,
    ) -> None:
        self._accounts = accounts
        self._sync = mailbox_sync
        self._sources = sources  # provider → ChangeSource; the Gmail, Graph and IMAP adapters register
        self._synced = synced  # e.g. SyncSchedule.synced: the catch-up poll moves on (SYNC-2)

    def __call__(self, job: Job, message_id: str) -> None:
        self.sync(self.account_of(job))

    def account_of(self, job: Job) -> Account:
        account = self._accounts.get_by_id(job.account_id)
        if account is None or account.tenant_id != job.tenant_id:
            raise PermanentError(f"no account {job.account_id} in tenant {job.tenant_id}")
        if not account.can_sync:
            raise Paused(f"account {account.account_id} is {account.status}")
        return account

    def sync(self, account: Account) -> None:
        try:
            source = self._sources[account.provider]
        except KeyError:
            raise PermanentError(f"no change source for {account.provider} mailboxes in this build") from None
        self._sync.run(account, source)
        if self._synced is not None:
            self._synced(account)

"""The sync worker's `mail.sync` and `calendar.sync` jobs: an account's incremental sync of one
item kind from its cursor, on the sync core's loop, continued as a job of its own when the run
runs out of time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from pydantic import ValidationError

from crmsync.accounts.models import Account
from crmsync.errors import Paused, PermanentError
from crmsync.jobs import Job, current_deadline
from crmsync.jobtypes import JobType
from crmsync.sync.core import ChangeSource, CursorLoop, Resume

if TYPE_CHECKING:
    from crmsync.sync.health import HealthLog


class AccountById(Protocol):
    def get_by_id(self, account_id: str) -> Account | None: ...


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str) -> None: ...


class SyncJob[T]:
    def __init__(
        self,
        accounts: AccountById,
        mailbox_sync: CursorLoop[T],
        sources: Mapping[str, ChangeSource[T]],
        synced: Callable[[Account], object] | None = None,
        continuation: JobQueue | None = None,
        job_type: str = JobType.MAIL_SYNC,
        paused: Callable[[Account], str | None] | None = None,
        health: HealthLog | None = None,
    ) -> None:
        self._job_type = job_type  # what a continuation is queued as
        self._accounts = accounts
        self._sync = mailbox_sync
        self._sources = sources  # provider → its ChangeSource of this item kind
        self._synced = synced  # e.g. SyncSchedule.synced: the catch-up poll moves on (SYNC-2)
        self._continuation = continuation  # where a run that ran out of time queues the rest
        self._paused = paused  # why an account that may sync otherwise does not sync this kind
        self._health = health  # SYNC-9: one record per run, under the loop's (and cursor's) name

    def __call__(self, job: Job, message_id: str) -> None:
        resume = None
        if "resume" in job.payload:
            try:
                resume = Resume.model_validate(job.payload["resume"])
            except ValidationError:
                resume = None  # unreadable: the run starts from the stored cursor, nothing lost
        self.sync(self.account_of(job), resume)

    def account_of(self, job: Job) -> Account:
        account = self._accounts.get_by_id(job.account_id)
        if account is None or account.tenant_id != job.tenant_id:
            raise PermanentError(f"no account {job.account_id} in tenant {job.tenant_id}")
        if not account.can_sync:
            raise Paused(f"account {account.account_id} is {account.status}")
        why = self._paused(account) if self._paused is not None else None
        if why:
            raise Paused(f"account {account.account_id}: {why}")
        return account

    def sync(self, account: Account, resume: Resume | None = None) -> None:
        try:
            source = self._sources[account.provider]
        except KeyError:
            raise PermanentError(
                f"no change source for {account.provider} ({self._job_type}) in this build"
            ) from None
        deadline = current_deadline() if self._continuation is not None else None
        try:
            result = self._sync.run(account, source, deadline=deadline, resume=resume)
        except Exception as error:
            if self._health is not None:
                self._health.failed(account.account_id, self._sync.name, error)
            raise
        if self._health is not None:
            completed = result.status == "synced"  # else continued, or a resync takes over
            self._health.ran(account.account_id, self._sync.name, completed, result.failed)
        if result.resume is not None and self._continuation is not None:
            # out of time: the rest is a job of its own, behind whatever else the account has queued
            go_on = Job(
                type=self._job_type,
                tenant_id=account.tenant_id,
                account_id=account.account_id,
                payload={"resume": result.resume.model_dump()},
            )
            digest = hashlib.sha256(result.resume.model_dump_json().encode()).hexdigest()[:40]
            self._continuation.send(go_on, f"continue-{digest}")
            return
        if self._synced is not None:
            self._synced(account)

"""CRM-side archive and delete, and their propagation to the mailbox (MAIL-9).

The CRM copy changes at once (`crm_state`); the mailbox follows through a queued job per
account (group = account, so it never races that account's sync), and only for accounts
whose `archive_propagation` setting is on. Throttling retries the job; a message already
gone from the mailbox is nothing to do. Deleting in the CRM moves to the provider's trash,
never a permanent delete."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from crmsync.accounts.models import Account
from crmsync.auth import Principal
from crmsync.errors import NotFound, Paused, PermanentError
from crmsync.ids import check_id
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.mail.models import MessageRecord, ThreadRecord

Action = Literal["archive", "trash"]
_BATCH = 100  # provider ids per queued job


class MailboxActions(Protocol):
    """A provider's side of MAIL-9; each returns False when the message is already gone."""

    def archive(self, account: Account, provider_message_id: str) -> bool: ...

    def trash(self, account: Account, provider_message_id: str) -> bool: ...


class ActionStore(Protocol):
    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None: ...

    def thread_messages(self, tenant_id: str, crm_thread_id: str) -> list[MessageRecord]: ...

    def get_message(self, tenant_id: str, user_id: str, crm_message_id: str) -> MessageRecord | None: ...

    def set_crm_state(self, record: MessageRecord, state: str) -> MessageRecord: ...


class AccountById(Protocol):
    def get_by_id(self, account_id: str) -> Account | None: ...


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str) -> None: ...


class ActionResult(BaseModel):
    thread_id: str
    changed: list[str] = Field(description="CRM message ids whose state changed")
    propagating_to: list[str] = Field(description="Accounts whose mailbox will follow (MAIL-9 on)")


class MailActions:
    def __init__(self, store: ActionStore, accounts: AccountById, queue: JobQueue) -> None:
        self._store = store
        self._accounts = accounts
        self._queue = queue

    def archive_thread(self, principal: Principal, thread_id: str) -> ActionResult:
        check_id(thread_id, "thread id")
        thread = self._store.get_thread(principal.tenant_id, thread_id)
        if thread is None or thread.user_id != principal.user_id:
            raise NotFound(f"no thread {thread_id!r} in your mail")
        messages = [
            m for m in self._store.thread_messages(principal.tenant_id, thread_id) if m.crm_state == "active"
        ]
        return self._apply(principal, thread_id, messages, "archived", "archive")

    def delete_message(self, principal: Principal, message_id: str) -> ActionResult:
        check_id(message_id, "message id")
        record = self._store.get_message(principal.tenant_id, principal.user_id, message_id)
        if record is None:
            raise NotFound(f"no message {message_id!r} in your mail")
        pending = [] if record.crm_state == "deleted" else [record]
        return self._apply(principal, record.crm_thread_id, pending, "deleted", "trash")

    def _apply(
        self, principal: Principal, thread_id: str, messages: list[MessageRecord], state: str, action: Action
    ) -> ActionResult:
        by_account: dict[str, list[str]] = {}
        for record in messages:
            self._store.set_crm_state(record, state)
            if record.provider_message_id:
                by_account.setdefault(record.account_id, []).append(record.provider_message_id)
        propagating = []
        for account_id, ids in by_account.items():
            account = self._accounts.get_by_id(account_id)
            if account is None or not account.settings.archive_propagation or not account.can_sync:
                continue
            propagating.append(account_id)
            for start in range(0, len(ids), _BATCH):
                chunk = ids[start : start + _BATCH]
                job = Job(
                    type=JobType.MAIL_PROPAGATE,
                    tenant_id=principal.tenant_id,
                    account_id=account_id,
                    payload={"action": action, "provider_message_ids": chunk},
                )
                seed = f"{action}|{account_id}|{','.join(chunk)}"
                self._queue.send(job, hashlib.sha256(seed.encode()).hexdigest())
        return ActionResult(
            thread_id=thread_id, changed=[m.crm_message_id for m in messages], propagating_to=propagating
        )


class PropagateJob:
    """The worker's `mail.propagate`: apply a CRM archive/delete to the mailbox."""

    def __init__(self, accounts: AccountById, providers: Mapping[str, MailboxActions]) -> None:
        self._accounts = accounts
        self._providers = providers

    def __call__(self, job: Job, message_id: str) -> None:
        account = self._accounts.get_by_id(job.account_id)
        if account is None or account.tenant_id != job.tenant_id:
            raise PermanentError(f"no account {job.account_id} in tenant {job.tenant_id}")
        if not account.can_sync or not account.settings.archive_propagation:
            raise Paused(f"account {account.account_id} does not propagate now")
        provider = self._providers.get(account.provider)
        action = job.payload.get("action")
        if provider is None or action not in ("archive", "trash"):
            raise PermanentError(f"cannot {action} in {account.provider} mailboxes")
        for provider_message_id in job.payload.get("provider_message_ids", []):
            # idempotent at the provider: archiving an archived message changes nothing
            getattr(provider, action)(account, str(provider_message_id))

"""What the mail engine reads and writes through (the MailStore and RawStore ports), and one
batch's view of it: `Batch` reads what a provider batch needs in a few batched reads, answers
the engine's questions from them (reading alone only what was not read ahead), and records what
the batch wrote, so that a later message of the batch sees an earlier one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from crmsync.accounts.models import Account
from crmsync.directory import LookupResult
from crmsync.events import CrmEvent
from crmsync.mail.models import MessageRecord, MessageRef, ProviderMessage, ThreadRecord


def ref_of(record: MessageRecord) -> MessageRef:
    return MessageRef(
        crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id, user_id=record.user_id
    )


class MailStore(Protocol):
    """Port: thread maps, the Message-ID index, message metadata (stores/mail.py). The
    `…s` reads are the batched forms of the single ones (BatchGetItem), with their answers."""

    def find_provider_message(self, account_id: str, provider_message_id: str) -> MessageRef | None: ...

    def find_provider_messages(
        self, account_id: str, provider_message_ids: Sequence[str]
    ) -> dict[str, MessageRef]: ...

    def find_message_id(self, tenant_id: str, user_id: str, message_id: str) -> MessageRef | None: ...

    def find_message_ids(
        self, tenant_id: str, user_id: str, message_ids: Sequence[str]
    ) -> dict[str, MessageRef]: ...

    def find_provider_thread(self, account_id: str, provider_thread_id: str) -> str | None: ...

    def find_provider_threads(
        self, account_id: str, provider_thread_ids: Sequence[str]
    ) -> dict[str, str]: ...

    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None: ...

    def get_threads(self, tenant_id: str, crm_thread_ids: Sequence[str]) -> dict[str, ThreadRecord]: ...

    def record_message(self, record: MessageRecord, thread: ThreadRecord, previous_version: int) -> bool: ...

    def attach_copy(self, account: Account, message: ProviderMessage, ref: MessageRef) -> None: ...

    def get_message(self, tenant_id: str, user_id: str, crm_message_id: str) -> MessageRecord | None: ...

    def get_messages(
        self, tenant_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MessageRecord]: ...

    def mark_published(self, *records: MessageRecord) -> None: ...

    def unpublished(self, tenant_id: str, user_id: str, account_id: str) -> list[MessageRecord]:
        """The account's messages stored but not marked published (a read of the user's messages)."""
        ...

    def mark_removed(self, record: MessageRecord, removed: bool, *more: MessageRecord) -> MessageRecord: ...

    def record_skip(self, account_id: str, provider_message_id: str, reason: str) -> bool:
        """True unless the CRM was told of this skip already."""
        ...

    def mark_skip_told(self, account_id: str, *provider_message_ids: str) -> None: ...

    def thread_messages(self, tenant_id: str, crm_thread_id: str) -> list[MessageRecord]: ...

    def set_delivery(
        self,
        record: MessageRecord,
        delivery: str,
        error: str | None,
        provider_message_id: str | None = None,
        provider_thread_id: str | None = None,
    ) -> MessageRecord: ...


class RawStore(Protocol):
    def put(self, key: str, data: bytes) -> None: ...


class Removal(Protocol):
    """A message that left the mailbox or the synced labels or folders (sync.core.Removal)."""

    @property
    def item_id(self) -> str: ...

    @property
    def how(self) -> str: ...


def message_key(ref: MessageRef | MessageRecord) -> tuple[str, str]:
    return (ref.user_id, ref.crm_message_id)


@dataclass
class Batch:
    """One batch of one account: what was read for it (None: read, not there), what it wrote
    (so later messages of the batch see earlier ones), and what it will publish and mark.
    Anything not read ahead is read when asked for, alone."""

    store: MailStore
    account: Account
    provider_messages: dict[str, MessageRef | None] = field(default_factory=dict)
    provider_threads: dict[str, str | None] = field(default_factory=dict)
    message_ids: dict[str, MessageRef | None] = field(default_factory=dict)
    threads: dict[str, ThreadRecord | None] = field(default_factory=dict)
    records: dict[tuple[str, str], MessageRecord | None] = field(default_factory=dict)
    lookups: dict[str, LookupResult] = field(default_factory=dict)
    deal_linking: str | None = None
    events: list[CrmEvent] = field(default_factory=list)
    publishing: dict[tuple[str, str], MessageRecord] = field(default_factory=dict)  # event in `events`
    skipped: dict[str, str] = field(default_factory=dict)  # provider id -> reason, this batch
    told: list[str] = field(default_factory=list)  # skips whose event is in `events`

    # ---- reads ahead (batched), each overwriting what was there: a re-read after a conflict
    def read_provider_messages(self, ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(ids))
        if ids:
            found = self.store.find_provider_messages(self.account.account_id, ids)
            self.provider_messages.update({i: found.get(i) for i in ids})

    def read_provider_threads(self, ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(ids))
        if ids:
            found = self.store.find_provider_threads(self.account.account_id, ids)
            self.provider_threads.update({i: found.get(i) for i in ids})

    def read_message_ids(self, ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(ids))
        if ids:
            found = self.store.find_message_ids(self.account.tenant_id, self.account.user_id, ids)
            self.message_ids.update({i: found.get(i) for i in ids})

    def read_threads(self, ids: Sequence[str]) -> None:
        ids = list(dict.fromkeys(ids))
        if ids:
            found = self.store.get_threads(self.account.tenant_id, ids)
            self.threads.update({i: found.get(i) for i in ids})

    def read_records(self, refs: Sequence[MessageRef]) -> None:
        keys = list(dict.fromkeys(message_key(r) for r in refs))
        if keys:
            found = self.store.get_messages(self.account.tenant_id, keys)
            self.records.update({k: found.get(k) for k in keys})

    # ---- answers
    def provider_message(self, provider_message_id: str) -> MessageRef | None:
        if provider_message_id not in self.provider_messages:
            self.read_provider_messages([provider_message_id])
        return self.provider_messages[provider_message_id]

    def provider_thread(self, provider_thread_id: str) -> str | None:
        if provider_thread_id not in self.provider_threads:
            self.read_provider_threads([provider_thread_id])
        return self.provider_threads[provider_thread_id]

    def message_id(self, message_id: str) -> MessageRef | None:
        if message_id not in self.message_ids:
            self.read_message_ids([message_id])
        return self.message_ids[message_id]

    def thread(self, crm_thread_id: str) -> ThreadRecord | None:
        if crm_thread_id not in self.threads:
            self.read_threads([crm_thread_id])
        return self.threads[crm_thread_id]

    def record(self, ref: MessageRef) -> MessageRecord | None:
        if message_key(ref) not in self.records:
            self.read_records([ref])
        return self.records[message_key(ref)]

    # ---- what this batch wrote
    def stored(self, record: MessageRecord, thread: ThreadRecord) -> None:
        ref = ref_of(record)
        if record.provider_message_id:
            self.provider_messages[record.provider_message_id] = ref
        if record.provider_thread_id:
            self.provider_threads[record.provider_thread_id] = record.crm_thread_id
        if record.message_id:
            self.message_ids[record.message_id] = ref
        self.threads[thread.crm_thread_id] = thread
        self.records[message_key(record)] = record

    def attached(self, message: ProviderMessage, ref: MessageRef) -> None:
        self.provider_messages[message.provider_message_id] = ref
        if message.provider_thread_id:
            self.provider_threads[message.provider_thread_id] = ref.crm_thread_id

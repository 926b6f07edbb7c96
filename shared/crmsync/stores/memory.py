"""In-memory stores with the semantics of the DynamoDB and S3 ones, for fast tests.

Each class mirrors one store of this package: the same methods, the same conditional writes
and the same answers on a conflict (tests/contract/test_stores.py runs one suite against both,
so the two cannot drift). Records are kept as JSON, as DynamoDB keeps them, so that a caller
changing a model it got back changes nothing stored. Every store is safe to share between
threads (one lock each). Nothing here talks to AWS.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from crmsync.accounts.models import Account
from crmsync.directory import Blocklist, ConcurrentUpdate, DirectoryRecord, TenantSettings
from crmsync.errors import TransientError
from crmsync.events import CrmEvent
from crmsync.ids import MAX_ID_KEY_BYTES as MAX_ID_KEY_BYTES  # re-exported: the key bound
from crmsync.ids import id_key
from crmsync.mail.models import (
    MessageRecord,
    MessageRef,
    ProviderMessage,
    ThreadRecord,
    delivery_changes,
)
from crmsync.resync import ResyncProgress

_TRANSACT_ITEMS = 100  # DynamoMailStore's marks: one transaction per 100 messages


class ConditionFailed(Exception):
    """An update of an item that is not there (DynamoDB: ConditionalCheckFailedException)."""


class _Message:
    """A stored message: its JSON as created, and the attributes changed since (stores/mail.py)."""

    def __init__(self, record: MessageRecord) -> None:
        self.json = record.model_dump_json()
        self.changes: dict[str, Any] = {"published": False}
        self.tenant_id = record.tenant_id
        self.thread_id = record.crm_thread_id
        self.order = f"{record.date.isoformat() if record.date else ''}#{record.crm_message_id}"

    def record(self) -> MessageRecord:
        return MessageRecord.model_validate_json(self.json).model_copy(update=self.changes)


class MemoryMailStore:
    """MailStore (mail/engine.py) with the semantics of stores.mail.DynamoMailStore."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._provider_messages: dict[tuple[str, str], MessageRef] = {}  # (account, id key)
        self._provider_threads: dict[tuple[str, str], str] = {}  # (account, id key) -> thread
        self._skips: dict[tuple[str, str], str] = {}  # (account, id key) -> reason
        self._skips_told: set[tuple[str, str]] = set()  # skips whose MessageSkipped went out
        self._message_ids: dict[tuple[str, str, str], MessageRef] = {}  # (tenant, id key, user)
        self._threads: dict[tuple[str, str], tuple[str, int]] = {}  # (tenant, thread) -> (json, version)
        self._messages: dict[tuple[str, str, str], _Message] = {}  # (tenant, user, crm id)

    # ---- reads
    def find_provider_message(self, account_id: str, provider_message_id: str) -> MessageRef | None:
        with self._lock:
            ref = self._provider_messages.get((account_id, id_key(provider_message_id)))
            return ref.model_copy() if ref else None

    def find_message_id(self, tenant_id: str, user_id: str, message_id: str) -> MessageRef | None:
        with self._lock:
            ref = self._message_ids.get((tenant_id, id_key(message_id), user_id))
            return ref.model_copy() if ref else None

    def find_provider_thread(self, account_id: str, provider_thread_id: str) -> str | None:
        with self._lock:
            return self._provider_threads.get((account_id, id_key(provider_thread_id)))

    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None:
        with self._lock:
            found = self._threads.get((tenant_id, crm_thread_id))
            return ThreadRecord.model_validate_json(found[0]) if found else None

    def get_message(self, tenant_id: str, user_id: str, crm_message_id: str) -> MessageRecord | None:
        with self._lock:
            found = self._messages.get((tenant_id, user_id, crm_message_id))
            return found.record() if found else None

    # ---- batched reads (DynamoMailStore: BatchGetItem)
    def find_provider_messages(
        self, account_id: str, provider_message_ids: Sequence[str]
    ) -> dict[str, MessageRef]:
        found = {i: self.find_provider_message(account_id, i) for i in provider_message_ids}
        return {i: ref for i, ref in found.items() if ref is not None}

    def find_provider_threads(self, account_id: str, provider_thread_ids: Sequence[str]) -> dict[str, str]:
        found = {i: self.find_provider_thread(account_id, i) for i in provider_thread_ids}
        return {i: thread for i, thread in found.items() if thread is not None}

    def find_message_ids(
        self, tenant_id: str, user_id: str, message_ids: Sequence[str]
    ) -> dict[str, MessageRef]:
        found = {m: self.find_message_id(tenant_id, user_id, m) for m in message_ids}
        return {m: ref for m, ref in found.items() if ref is not None}

    def get_threads(self, tenant_id: str, crm_thread_ids: Sequence[str]) -> dict[str, ThreadRecord]:
        found = {t: self.get_thread(tenant_id, t) for t in crm_thread_ids}
        return {t: thread for t, thread in found.items() if thread is not None}

    def get_messages(
        self, tenant_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MessageRecord]:
        found = {(user, crm_id): self.get_message(tenant_id, user, crm_id) for user, crm_id in keys}
        return {key: record for key, record in found.items() if record is not None}

    def thread_messages(self, tenant_id: str, crm_thread_id: str) -> list[MessageRecord]:
        with self._lock:
            found = [m for m in self._messages.values() if m.thread_id == crm_thread_id]
            return [m.record() for m in sorted(found, key=lambda m: m.order) if m.tenant_id == tenant_id]

    def unpublished(self, tenant_id: str, user_id: str, account_id: str) -> list[MessageRecord]:
        found = [r for r in self.messages(tenant_id, user_id) if r.account_id == account_id]
        return [r for r in found if not r.published]

    def messages(self, tenant_id: str, user_id: str) -> list[MessageRecord]:
        """Every message of a user (for tests: DynamoDB has no such read)."""
        with self._lock:
            return [
                m.record()
                for (tenant, user, _), m in sorted(self._messages.items())
                if (tenant, user) == (tenant_id, user_id)
            ]

    def skipped(self, account_id: str) -> dict[str, str]:
        """The skip records of an account by id key (for tests)."""
        with self._lock:
            return {key: reason for (account, key), reason in self._skips.items() if account == account_id}

    # ---- writes
    def record_message(self, record: MessageRecord, thread: ThreadRecord, previous_version: int) -> bool:
        """One transaction, as DynamoMailStore's: all or nothing. False when the provider copy
        is mapped already; any other failed condition (this user's Message-ID entry exists, the
        thread moved on, the message exists) is a TransientError."""
        ref = MessageRef(
            crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id, user_id=record.user_id
        )
        map_key = (record.account_id, id_key(record.provider_message_id or ""))
        mid_key = (record.tenant_id, id_key(record.message_id or ""), record.user_id)
        thread_key = (record.tenant_id, thread.crm_thread_id)
        message_key = (record.tenant_id, record.user_id, record.crm_message_id)
        with self._lock:
            if record.provider_message_id and map_key in self._provider_messages:
                return False  # the provider copy is mapped already: a duplicate finished first
            stored = self._threads.get(thread_key)
            thread_ok = (
                stored is None
                if not previous_version
                else stored is not None and stored[1] == previous_version
            )
            if (
                (record.message_id and mid_key in self._message_ids)
                or not thread_ok
                or message_key in self._messages
            ):
                raise TransientError("the thread changed meanwhile; the job is retried")
            if record.provider_message_id:
                self._provider_messages[map_key] = ref
            if record.provider_thread_id:
                self._provider_threads[(record.account_id, id_key(record.provider_thread_id))] = (
                    record.crm_thread_id
                )
            if record.message_id:
                self._message_ids[mid_key] = ref
            self._threads[thread_key] = (thread.model_dump_json(), thread.version)
            self._messages[message_key] = _Message(record)
        return True

    def attach_copy(self, account: Account, message: ProviderMessage, ref: MessageRef) -> None:
        with self._lock:
            self._provider_messages[(account.account_id, id_key(message.provider_message_id))] = (
                ref.model_copy()
            )
            if message.provider_thread_id:
                self._provider_threads[(account.account_id, id_key(message.provider_thread_id))] = (
                    ref.crm_thread_id
                )

    def _update(self, record: MessageRecord, **changes: Any) -> MessageRecord:
        self._update_many([record], **changes)
        return record.model_copy(update=changes)

    def _update_many(self, records: Sequence[MessageRecord], **changes: Any) -> None:
        """As DynamoMailStore's: all or nothing per 100 (one transaction each)."""
        for start in range(0, len(records), _TRANSACT_ITEMS):
            with self._lock:
                chunk = records[start : start + _TRANSACT_ITEMS]
                found = [self._messages.get((r.tenant_id, r.user_id, r.crm_message_id)) for r in chunk]
                missing = [r.crm_message_id for r, f in zip(chunk, found, strict=True) if f is None]
                if missing:
                    raise ConditionFailed(f"no message {', '.join(missing)}")
                for stored in found:
                    if stored is not None:
                        stored.changes.update(changes)

    def mark_published(self, *records: MessageRecord) -> None:
        self._update_many(records, published=True)

    def mark_removed(self, record: MessageRecord, removed: bool, *more: MessageRecord) -> MessageRecord:
        self._update_many([record, *more], removed_in_mailbox=removed)
        return record.model_copy(update={"removed_in_mailbox": removed})

    def set_crm_state(self, record: MessageRecord, state: str) -> MessageRecord:
        return self._update(record, crm_state=state)

    def set_delivery(
        self,
        record: MessageRecord,
        delivery: str,
        error: str | None,
        provider_message_id: str | None = None,
        provider_thread_id: str | None = None,
    ) -> MessageRecord:
        changes = delivery_changes(delivery, error, provider_message_id, provider_thread_id)
        return self._update(record, **changes)

    def record_skip(self, account_id: str, provider_message_id: str, reason: str) -> bool:
        with self._lock:
            key = (account_id, id_key(provider_message_id))
            if key in self._skips_told:
                return False
            self._skips[key] = reason[:2000]
        return True

    def mark_skip_told(self, account_id: str, *provider_message_ids: str) -> None:
        with self._lock:
            self._skips_told.update((account_id, id_key(i)) for i in provider_message_ids)


class MemoryRawStore:
    """RawStore (mail/engine.py) like stores.mail.S3RawStore: a put replaces the object."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._objects: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self._objects[key] = bytes(data)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._objects.get(key)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._objects)


class MemoryCursorStore:
    """Provider cursors like stores.cursors.DynamoCursorStore: a write names the value it replaces
    and stamps when (whole seconds, as DynamoDB keeps them)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._cursors: dict[tuple[str, str], str] = {}
        self._stamps: dict[tuple[str, str], int] = {}
        self._clock = clock

    def get(self, account_id: str, name: str) -> str | None:
        with self._lock:
            return self._cursors.get((account_id, name))

    def updated_at(self, account_id: str, name: str) -> datetime | None:
        with self._lock:
            stamp = self._stamps.get((account_id, name))
        return datetime.fromtimestamp(stamp, UTC) if stamp is not None else None

    def set(self, account_id: str, name: str, value: str) -> None:
        with self._lock:
            self._cursors[(account_id, name)] = value
            self._stamps[(account_id, name)] = int(self._clock())

    def advance(self, account_id: str, name: str, new: str, expected: str | None) -> bool:
        with self._lock:
            if self._cursors.get((account_id, name)) != expected:
                return False  # someone moved it meanwhile (or made it, or it is gone): theirs stands
            self._cursors[(account_id, name)] = new
            self._stamps[(account_id, name)] = int(self._clock())
        return True

    def forget(self, account_id: str, name: str) -> None:
        """Lose a cursor (for tests: DynamoDB has no such write)."""
        with self._lock:
            self._cursors.pop((account_id, name), None)
            self._stamps.pop((account_id, name), None)


class MemorySyncStateStore:
    """Resync progress like stores.cursors.DynamoSyncStateStore (optimistic versions)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._progress: dict[tuple[str, str], str] = {}

    def get_progress(self, account_id: str, kind: str) -> ResyncProgress | None:
        with self._lock:
            found = self._progress.get((account_id, kind))
            return ResyncProgress.model_validate_json(found) if found else None

    def put_progress(self, progress: ResyncProgress, expected_version: int | None) -> bool:
        """None: only if there is no record. 0: no record, or one at version 0. n: version n."""
        stored = progress.model_copy(update={"version": (expected_version or 0) + 1})
        key = (progress.account_id, progress.kind)
        with self._lock:
            found = self._progress.get(key)
            if expected_version is None:
                if found is not None:
                    return False
            elif expected_version:
                if found is None or ResyncProgress.model_validate_json(found).version != expected_version:
                    return False
            elif found is not None and ResyncProgress.model_validate_json(found).version != 0:
                return False
            self._progress[key] = stored.model_dump_json()
        return True


class MemoryEventPublisher:
    """EventPublisher (events.py) that keeps what it was given, in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[CrmEvent] = []

    def publish(self, events: Sequence[CrmEvent]) -> None:
        with self._lock:
            self._events.extend(events)

    @property
    def events(self) -> list[CrmEvent]:
        with self._lock:
            return list(self._events)


class MemoryDirectoryStore:
    """DirectoryStore (directory.py) with the semantics of stores.directory.DynamoDirectoryStore:
    an entry changes only from the version the writer read (ConcurrentUpdate otherwise)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str, str], str] = {}  # (tenant, kind, id) -> JSON
        self._addresses: dict[tuple[str, str], set[tuple[str, str]]] = {}  # (tenant, address)
        self._deals: dict[tuple[str, str], set[str]] = {}  # (tenant, contact) -> deal ids
        self._settings: dict[str, str] = {}
        self._blocklists: dict[tuple[str, str], str] = {}

    def get(self, tenant_id: str, kind: str, entry_id: str) -> DirectoryRecord | None:
        with self._lock:
            found = self._entries.get((tenant_id, kind, entry_id))
            return DirectoryRecord.model_validate_json(found) if found else None

    def get_many(self, tenant_id: str, keys: Sequence[tuple[str, str]]) -> list[DirectoryRecord]:
        with self._lock:
            found = [self._entries.get((tenant_id, kind, entry_id)) for kind, entry_id in keys]
            return [DirectoryRecord.model_validate_json(f) for f in found if f]

    def _version(self, tenant_id: str, kind: str, entry_id: str) -> int | None:
        found = self._entries.get((tenant_id, kind, entry_id))
        return DirectoryRecord.model_validate_json(found).version if found else None

    def put(
        self, tenant_id: str, record: DirectoryRecord, previous: DirectoryRecord | None, links: Sequence[str]
    ) -> None:
        with self._lock:
            stored = self._version(tenant_id, record.kind, record.id)
            if stored != (previous.version if previous else None):
                raise ConcurrentUpdate
            self._entries[(tenant_id, record.kind, record.id)] = record.model_dump_json()
            owner = (record.kind, record.id)
            for address in set(previous.addresses if previous else []) - set(record.addresses):
                self._addresses.get((tenant_id, address), set()).discard(owner)
            for address in record.addresses:
                self._addresses.setdefault((tenant_id, address), set()).add(owner)
            old_links = set(previous.data.get("contact_ids", [])) if previous else set()
            for contact in old_links - set(links):
                self._deals.get((tenant_id, contact), set()).discard(record.id)
            for contact in links:
                self._deals.setdefault((tenant_id, contact), set()).add(record.id)

    def delete(self, tenant_id: str, record: DirectoryRecord, links: Sequence[str]) -> None:
        with self._lock:
            if self._version(tenant_id, record.kind, record.id) != record.version:
                raise ConcurrentUpdate
            del self._entries[(tenant_id, record.kind, record.id)]
            for address in record.addresses:
                self._addresses.get((tenant_id, address), set()).discard((record.kind, record.id))
            for contact in links:
                self._deals.get((tenant_id, contact), set()).discard(record.id)

    def owners_of(self, tenant_id: str, address: str) -> list[tuple[str, str]]:
        with self._lock:  # in the order of the DynamoDB sort key, "{kind}#{id}"
            owners = self._addresses.get((tenant_id, address), set())
            return sorted(owners, key=lambda owner: f"{owner[0]}#{owner[1]}")

    def deals_of(self, tenant_id: str, owner_keys: Sequence[tuple[str, str]]) -> list[str]:
        with self._lock:
            return [
                d for _, contact in owner_keys for d in sorted(self._deals.get((tenant_id, contact), set()))
            ]

    def get_settings(self, tenant_id: str) -> TenantSettings | None:
        with self._lock:
            found = self._settings.get(tenant_id)
            return TenantSettings.model_validate_json(found) if found else None

    def put_settings(self, tenant_id: str, settings: TenantSettings) -> None:
        with self._lock:
            self._settings[tenant_id] = settings.model_dump_json()

    def get_blocklist(self, tenant_id: str, user_id: str) -> Blocklist | None:
        with self._lock:
            found = self._blocklists.get((tenant_id, user_id))
            return Blocklist.model_validate_json(found) if found else None

    def put_blocklist(self, tenant_id: str, user_id: str, blocklist: Blocklist) -> None:
        with self._lock:
            self._blocklists[(tenant_id, user_id)] = blocklist.model_dump_json()

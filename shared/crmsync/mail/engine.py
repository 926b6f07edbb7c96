"""The mail sync engine: a provider message in, a CRM message out, exactly once (MAIL-7).

The sync core hands the engine a provider batch (`ingest_many`: a Gmail page, a Graph delta
page). The engine reads what the whole batch needs in batches (the provider-id map, the
Message-ID index with the In-Reply-To and References chains, the provider-thread map, the
threads, the directory's answers for every participant), decides each message in order with
the pure rules (a message stored earlier in the batch is seen by the ones after it: two
messages of one thread thread together, a duplicate is stored once), and writes.

Writes happen in an order that survives a crash between any two of them:
1. per new message, the raw MIME goes to S3 under a key derived from the provider's id (a
   retry rewrites the same object), then one DynamoDB transaction creates the message, the
   provider-id map, the Message-ID index entry and the thread at the version it was read at
   (the map's existence condition makes a second attempt a no-op; a thread another worker
   moved meanwhile cancels it, and that message is read again and decided alone);
   a skip is recorded (`record_skip`) in its turn;
2. then the batch's events go out, 10 per PutEvents;
3. then the messages are marked published and the skips told, in batches.
A redelivery that finds a message stored but unpublished publishes it then (so does a
removal or `settled`), and a skip recorded but not told is told then: creation exactly once,
events at least once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from crmsync.accounts.models import Account
from crmsync.directory import Blocklist, Directory, LookupResult
from crmsync.errors import TransientError
from crmsync.events import (
    EventPublisher,
    MessageRemovedInMailbox,
    MessageSkipped,
    MessageSynced,
)
from crmsync.ids import is_address
from crmsync.mail.batch import Batch, MailStore, RawStore, Removal, message_key, ref_of
from crmsync.mail.inbound import limit
from crmsync.mail.limits import AttachmentLimits, limits_for
from crmsync.mail.mime import Malformed, ParsedMessage, ReadMessage, parse, read
from crmsync.mail.models import (
    IngestOutcome,
    MessageRecord,
    MessageRef,
    ProviderMessage,
    RemovalKind,
    ThreadRecord,
)
from crmsync.mail.rules import Facts, decide

BLOCKLIST_TTL_S = 60
_IDS = uuid.UUID("3b8c4f0e-6a53-4a4e-9a43-2f1b7c9d5e11")


def stable_id(*parts: str) -> str:
    """The same inputs give the same id: a retried ingest creates nothing new."""
    return str(uuid.uuid5(_IDS, "|".join(parts)))


@dataclass(frozen=True)
class _Removed:
    item_id: str
    how: str


@dataclass(frozen=True)
class _NewMessage:
    """What ingesting a new message will write."""

    raw: bytes
    record: MessageRecord
    thread: ThreadRecord
    previous_version: int


class _Conflict(Exception):
    """The message's transaction was cancelled: another writer moved its thread meanwhile."""


def _transient_or_other(error: BaseException) -> str:
    return "retry" if isinstance(error, TransientError) else "other"


def _unprocessable(error: BaseException) -> str:
    detail = " ".join(str(error).split())[:300]
    return f"unprocessable: {type(error).__name__}" + (f": {detail}" if detail else "")


class MailSync:
    def __init__(
        self,
        store: MailStore,
        raw: RawStore,
        directory: Directory,
        publisher: EventPublisher,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        limits: Callable[[str], AttachmentLimits] = limits_for,
        classify: Callable[[BaseException], str] = lambda e: (
            "retry" if isinstance(e, TransientError) else "other"
        ),
    ) -> None:
        self._limits = limits
        # 'retry' | 'refused' | 'other' for a failure while ingesting (stores.aws.classify_failure)
        self._classify = classify if classify is not None else _transient_or_other
        self._blocklists: dict[tuple[str, str], tuple[float, Blocklist]] = {}
        self._store = store
        self._raw = raw
        self._directory = directory
        self._publisher = publisher
        self._now = now

    # ------------------------------------------------------------------ inbound from a mailbox
    def ingest(self, account: Account, message: ProviderMessage) -> IngestOutcome:
        """One mailbox message into the CRM (`ingest_many` of one)."""
        return self.ingest_many(account, [message])[0]

    def ingest_many(self, account: Account, messages: Sequence[ProviderMessage]) -> list[IngestOutcome]:
        """A provider batch (the sync core's Sink port), in order: read together, decided one
        by one, written in the order of the module docstring.

        A message is never allowed to stall its mailbox (SEC-5, SYNC-8): any failure while it is
        read and decided (hostile MIME, a parser's recursion limit, a container the type check
        cannot open, a bug of ours) is a recorded skip with its reason, and so is AWS refusing
        what it would write (a key or item too large). Only failures of the infrastructure
        (throttling, the network, a crash) propagate, and the job is retried."""
        if not messages:
            return []
        batch = Batch(self._store, account)
        try:
            reads = self._read_ahead(account, messages, batch)
        except Exception as error:
            if self._classify(error) == "retry":
                raise
            if len(messages) > 1:  # one message's reads failed the batch's: each goes alone
                return [outcome for m in messages for outcome in self.ingest_many(account, [m])]
            outcomes = [self._skip(account, messages[0], _unprocessable(error), batch)]
            self._flush(batch)
            return outcomes
        outcomes = [self._ingest_one(account, m, reads.get(i), batch) for i, m in enumerate(messages)]
        self._flush(batch)
        return outcomes

    def _read_ahead(
        self, account: Account, messages: Sequence[ProviderMessage], batch: Batch
    ) -> dict[int, ReadMessage | Exception]:
        """Everything the batch's decisions read, in batched reads: the provider-id map; then
        (each new message parsed once) the Message-ID index for the ids, In-Reply-To and
        References, and the provider-thread map; then the threads and the messages found, and
        the directory's answers for the participants. Parse failures are the message's own."""
        provider_ids = [m.provider_message_id for m in messages]
        batch.read_provider_messages(provider_ids)
        reads: dict[int, ReadMessage | Exception] = {}
        for index, message in enumerate(messages):
            if batch.provider_messages.get(message.provider_message_id) is None:
                try:
                    reads[index] = read(message.raw)
                except Exception as error:  # the message's own: decided when its turn comes
                    reads[index] = error
        parsed = [r.parsed for r in reads.values() if isinstance(r, ReadMessage)]
        new = [messages[i] for i, r in reads.items() if isinstance(r, ReadMessage)]
        message_ids = [i for p in parsed for i in [p.message_id, p.in_reply_to, *p.references] if i]
        provider_threads = [m.provider_thread_id for m in new if m.provider_thread_id]
        batch.read_message_ids(message_ids)
        batch.read_provider_threads(provider_threads)
        mapped = [batch.message_ids[i] for i in message_ids]
        threads = [batch.provider_threads[t] for t in provider_threads]
        batch.read_threads([*(t for t in threads if t), *(ref.crm_thread_id for ref in mapped if ref)])
        same = [batch.message_ids[p.message_id] for p in parsed if p.message_id]  # MAIL-2: a copy
        known = [batch.provider_messages[i] for i in provider_ids]
        batch.read_records([ref for ref in [*known, *same] if ref is not None])
        addresses = [
            a
            for p in parsed
            if not (p.message_id and batch.message_ids.get(p.message_id))
            for a in self._participants(account, p)
        ]
        if addresses:
            batch.lookups.update(
                self._directory.lookup_many(account.tenant_id, list(dict.fromkeys(addresses)))
            )
        return reads

    def _ingest_one(
        self,
        account: Account,
        message: ProviderMessage,
        reading: ReadMessage | Exception | None,
        batch: Batch,
        again: bool = False,
    ) -> IngestOutcome:
        known = batch.provider_message(message.provider_message_id)
        if known is not None:  # MAIL-7: seen before (duplicate push, resync, redelivery, this batch)
            self._publish_if_pending(known, batch)
            return IngestOutcome(
                status="updated", crm_message_id=known.crm_message_id, crm_thread_id=known.crm_thread_id
            )
        if message.provider_message_id in batch.skipped:  # twice in this batch: recorded once
            return IngestOutcome(status="skipped", reason=batch.skipped[message.provider_message_id])
        try:
            if reading is None:  # known when the batch was read, and not now (not seen in practice)
                reading = read(message.raw)
            if isinstance(reading, Exception):
                raise reading
            plan = self._plan(account, message, reading, batch)
        except Malformed as error:
            return self._skip(account, message, f"malformed_mime: {error}", batch)
        except Exception as error:
            if self._classify(error) == "retry":
                raise
            return self._skip(account, message, _unprocessable(error), batch)
        if isinstance(plan, str):
            return self._skip(account, message, plan, batch)
        if isinstance(plan, MessageRef):  # MAIL-2/MAIL-7: this user's copy of a message the CRM has
            self._store.attach_copy(account, message, plan)
            batch.attached(message, plan)
            self._publish_if_pending(plan, batch)
            return IngestOutcome(
                status="updated", crm_message_id=plan.crm_message_id, crm_thread_id=plan.crm_thread_id
            )
        try:
            return self._store_new(plan, batch)
        except _Conflict as conflict:
            if again:
                raise TransientError("the thread changed meanwhile; the job is retried") from conflict
            # another worker wrote meanwhile: read this message's world again, decide it alone
            self._read_ahead(account, [message], batch)
            return self._ingest_one(account, message, reading, batch, again=True)
        except Exception as error:
            if self._classify(error) != "refused":
                raise
            return self._skip(account, message, _unprocessable(error), batch)

    def _plan(
        self, account: Account, message: ProviderMessage, reading: ReadMessage, batch: Batch
    ) -> _NewMessage | MessageRef | str:
        """Reads (from the batch) and decisions only: a new message to store, this user's
        existing copy, or why the message is skipped."""
        parsed = reading.parsed
        if parsed.message_id:
            same = batch.message_id(parsed.message_id)
            if same is not None:
                return same
        blocked = self._blocklist(account).match(
            [a for a in [*parsed.participants, *parsed.bcc] if a != account.address]
        )
        if blocked:  # MAIL-6: from or to a blocked address or domain
            return f"blocked: {blocked} is on the user's blocklist"
        thread = self._thread_of(message, parsed, batch)
        lookups = self._lookups(account, parsed, batch)
        direction = "outbound" if parsed.sender == account.address else "inbound"
        facts = self._facts(account, parsed, direction, thread is not None, lookups, message.labels)
        decision = decide(account.settings, facts)
        if not decision.sync:
            return decision.reason or "skipped"
        left_out: list[str] = []
        if parsed.attachments:  # ATT-2, ATT-3: the provider's limits on what comes in
            verdict = limit(reading, message.raw, self._limits(account.provider))
            if verdict.refused:
                return f"attachment_limit: {verdict.refused}"
            if verdict.left_out:
                message = message.model_copy(update={"raw": verdict.raw})
                parsed = parsed.model_copy(update={"attachments": verdict.attachments or []})
                left_out = verdict.left_out
        raw_key = f"raw/{account.tenant_id}/{account.account_id}/{stable_id(message.provider_message_id)}.eml"
        record = self._record(
            account, message, parsed, direction, thread, lookups, raw_key, message.labels, batch
        )
        record.attachments_left_out = left_out
        return _NewMessage(
            raw=message.raw,
            record=record,
            thread=self._thread_after(account, parsed, record, thread),
            previous_version=thread.version if thread else 0,
        )

    def settled(self, account: Account, provider_message_id: str) -> bool:
        """Whether this mailbox copy is in the CRM already (`settled_many` of one)."""
        return provider_message_id in self.settled_many(account, [provider_message_id])

    def settled_many(self, account: Account, provider_message_ids: Sequence[str]) -> set[str]:
        """Which of these mailbox copies the CRM holds already, so that a source need not fetch
        them again. A copy stored but not yet published (a crash in between) is published now,
        as a redelivered ingest would do (MAIL-7)."""
        batch = Batch(self._store, account)
        batch.read_provider_messages(provider_message_ids)
        known = {i: ref for i in provider_message_ids if (ref := batch.provider_message(i)) is not None}
        batch.read_records(list(known.values()))
        for ref in known.values():
            self._publish_if_pending(ref, batch)
        self._flush(batch)
        return set(known)

    def settle(self, account: Account) -> int:
        """The sync core's Sink port, after a resync or import has listed the whole mailbox: a
        message of this account stored but never published (a worker died between its
        transaction and its event) is published now, even if it has left the mailbox since and
        so was not listed (MAIL-7). How many were published."""
        batch = Batch(self._store, account)
        for record in self._store.unpublished(account.tenant_id, account.user_id, account.account_id):
            self._publish(record, batch)
        published = len(batch.publishing)
        self._flush(batch)
        return published

    def mark_removed(self, account: Account, provider_message_id: str, how: RemovalKind) -> bool:
        """MAIL-10 for one message (`remove_many` of one)."""
        return self.remove_many(account, [_Removed(provider_message_id, how)]) == 1

    def remove_many(self, account: Account, removals: Sequence[Removal]) -> int:
        """MAIL-10 (the sync core's Sink port): the mailbox no longer holds these messages where
        we sync them. The CRM copies stay, marked; the CRM is told once. Unknown messages (never
        synced) are nothing. Read in batches; the events go out (a message stored but never
        published first), then the marks. How many were news to the CRM."""
        batch = Batch(self._store, account)
        batch.read_provider_messages([r.item_id for r in removals])
        refs = {r.item_id: ref for r in removals if (ref := batch.provider_message(r.item_id)) is not None}
        batch.read_records(list(refs.values()))
        removed: dict[tuple[str, str], MessageRecord] = {}
        for removal in removals:
            ref = refs.get(removal.item_id)
            record = batch.record(ref) if ref else None
            if ref is None or record is None or record.removed_in_mailbox or message_key(record) in removed:
                continue
            if not record.published:  # stored, then a crash before its event: the CRM hears of it first
                self._publish_if_pending(ref, batch)
            batch.events.append(
                MessageRemovedInMailbox(
                    tenant_id=record.tenant_id,
                    user_id=record.user_id,
                    account_id=account.account_id,
                    message_id=record.crm_message_id,
                    thread_id=record.crm_thread_id,
                    how=cast(RemovalKind, removal.how),
                )
            )
            removed[message_key(record)] = record
        self._flush(batch)
        if removed:  # after the events: a crash between repeats them
            first, *more = removed.values()
            self._store.mark_removed(first, True, *more)
        return len(removed)

    # ------------------------------------------------------------------ sent from the CRM
    def record_outgoing(
        self, account: Account, raw: bytes, parent_message_id: str | None = None, publish: bool = True
    ) -> MessageRecord:
        """The send path records what it sends before the provider has an id for it, so that
        the Sent copy is recognised (MAIL-2) and replies join the thread (MAIL-3). Recording
        the same Message-ID again (a retried send) returns the record already there."""
        parsed = parse(raw)
        if not parsed.message_id:
            raise Malformed("a message sent from the CRM needs a Message-ID")
        existing = self._store.find_message_id(account.tenant_id, account.user_id, parsed.message_id)
        if existing is not None:
            found = self._store.get_message(account.tenant_id, existing.user_id, existing.crm_message_id)
            if found is not None:
                return found
        thread = None
        if parent_message_id:
            parent = self._store.find_message_id(account.tenant_id, account.user_id, parent_message_id)
            thread = self._store.get_thread(account.tenant_id, parent.crm_thread_id) if parent else None
        raw_key = f"raw/{account.tenant_id}/{account.account_id}/{stable_id('mid', parsed.message_id)}.eml"
        self._raw.put(raw_key, raw)
        batch = Batch(self._store, account)
        lookups = self._lookups(account, parsed, batch)
        record = self._record(account, None, parsed, "outbound", thread, lookups, raw_key, ["SENT"], batch)
        record.delivery = "sending"
        new_thread = self._thread_after(account, parsed, record, thread)
        self._store.record_message(record, new_thread, thread.version if thread else 0)
        if publish:
            self._publish_if_pending(self._ref(record), batch)
            self._flush(batch)
        return record

    def outgoing(self, account: Account, message_id: str) -> MessageRecord | None:
        """The user's message with this Message-ID, if the CRM holds it."""
        ref = self._store.find_message_id(account.tenant_id, account.user_id, message_id)
        if ref is None:
            return None
        return self._store.get_message(account.tenant_id, ref.user_id, ref.crm_message_id)

    def confirm_sent(
        self,
        account: Account,
        record: MessageRecord,
        provider_message_id: str,
        provider_thread_id: str | None,
    ) -> MessageRecord:
        """The provider took the message: map its ids to the CRM's (so its Sent copy is this
        message, MAIL-7), mark it sent, and tell the CRM (once, even if the worker saw the
        Sent copy first)."""
        copy = ProviderMessage(
            provider_message_id=provider_message_id, provider_thread_id=provider_thread_id, raw=b""
        )
        self._store.attach_copy(account, copy, self._ref(record))
        updated = self._store.set_delivery(
            record,
            "sent",
            None,
            provider_message_id=provider_message_id,
            provider_thread_id=provider_thread_id,
        )
        batch = Batch(self._store, account)
        self._publish_if_pending(self._ref(record), batch)
        self._flush(batch)
        return updated

    def fail_sent(self, record: MessageRecord, reason: str) -> MessageRecord:
        """The provider refused it: the CRM copy says so; nothing is published as sent."""
        return self._store.set_delivery(record, "failed", reason)

    @staticmethod
    def _ref(record: MessageRecord) -> MessageRef:
        return ref_of(record)

    # ------------------------------------------------------------------ pieces
    @staticmethod
    def _thread_of(message: ProviderMessage, parsed: ParsedMessage, batch: Batch) -> ThreadRecord | None:
        thread_id = None
        if message.provider_thread_id:
            thread_id = batch.provider_thread(message.provider_thread_id)
        if thread_id is None:  # the RFC 5322 chain: In-Reply-To, then References newest first
            for ref in [parsed.in_reply_to, *reversed(parsed.references)]:
                found = batch.message_id(ref) if ref else None
                if found is not None:
                    thread_id = found.crm_thread_id
                    break
        return batch.thread(thread_id) if thread_id else None

    def _blocklist(self, account: Account) -> Blocklist:
        """The owner's blocklist, read at most once a minute per worker (a new entry applies
        to mail synced from then on)."""
        key = (account.tenant_id, account.user_id)
        now = time.monotonic()
        cached = self._blocklists.get(key)
        if cached is None or cached[0] < now:
            cached = (now + BLOCKLIST_TTL_S, self._directory.blocklist(*key))
            self._blocklists[key] = cached
        return cached[1]

    @staticmethod
    def _participants(account: Account, parsed: ParsedMessage) -> list[str]:
        """The other participants; the mailbox's own address is never looked up."""
        found = [a for a in [*parsed.participants, *parsed.bcc] if is_address(a) and a != account.address]
        return list(dict.fromkeys(found))

    def _lookups(self, account: Account, parsed: ParsedMessage, batch: Batch) -> dict[str, LookupResult]:
        """Who the other participants are (the batch looked them up together, as a rule)."""
        addresses = self._participants(account, parsed)
        missing = [a for a in addresses if a not in batch.lookups]
        if missing:
            batch.lookups.update(self._directory.lookup_many(account.tenant_id, missing))
        return {a: batch.lookups[a] for a in addresses}

    @staticmethod
    def _facts(
        account: Account,
        parsed: ParsedMessage,
        direction: str,
        thread_known: bool,
        lookups: dict[str, LookupResult],
        labels: Sequence[str],
    ) -> Facts:
        sender = lookups.get(parsed.sender or "")
        recipients = [a for a in [*parsed.to, *parsed.cc, *parsed.bcc] if a != account.address]
        chosen = {label.lower() for label in account.settings.labels_or_folders}
        return Facts(
            direction=direction,
            thread_known=thread_known,
            sender_is_other_user=bool(sender and any(u.id != account.user_id for u in sender.users)),
            recipients_all_users=bool(recipients)
            and all(lookups[a].is_tenant_user for a in recipients if a in lookups),
            sender_is_contact=bool(sender and sender.contacts),
            in_selected_labels=not chosen or any(label.lower() in chosen for label in labels),
        )

    def _links(
        self,
        account: Account,
        lookups: dict[str, LookupResult],
        thread: ThreadRecord | None,
        batch: Batch,
    ) -> tuple[list[str], list[str], str | None]:
        """LINK-1: contacts and leads among the participants. LINK-2: for a user whose deal
        linking is `automatic`, the contacts' open deal, the most recently updated; a thread
        keeps the deal it has. `manual`: deals are the user's to link."""
        contacts: dict[str, None] = dict.fromkeys(thread.contact_ids if thread else [])
        leads: dict[str, None] = dict.fromkeys(thread.lead_ids if thread else [])
        deals = []
        for address, found in lookups.items():
            if address == account.address:
                continue
            contacts.update(dict.fromkeys(c.id for c in found.contacts))
            leads.update(dict.fromkeys(lead.id for lead in found.leads))
            deals += [d for d in found.deals if d.data.get("status") == "open"]
        deal_id = thread.deal_id if thread and thread.deal_id else None
        if deal_id is None and deals and batch.deal_linking is None:  # read once per batch
            batch.deal_linking = self._directory.deal_linking(account.tenant_id, account.user_id)
        if deal_id is None and deals and batch.deal_linking == "automatic":
            newest = max(deals, key=lambda d: str(d.data.get("updated_at") or d.updated_at.isoformat()))
            deal_id = newest.id
        return list(contacts), list(leads), deal_id

    def _record(
        self,
        account: Account,
        message: ProviderMessage | None,
        parsed: ParsedMessage,
        direction: str,
        thread: ThreadRecord | None,
        lookups: dict[str, LookupResult],
        raw_key: str | None,
        labels: list[str],
        batch: Batch,
    ) -> MessageRecord:
        if parsed.message_id:  # each user who has the message has a copy of their own
            crm_message_id = stable_id(account.tenant_id, account.user_id, "mid", parsed.message_id)
        else:
            crm_message_id = stable_id(
                account.account_id, "pmid", message.provider_message_id if message else ""
            )
        if thread is not None:
            crm_thread_id = thread.crm_thread_id
        else:
            root = parsed.references[0] if parsed.references else parsed.message_id or crm_message_id
            crm_thread_id = stable_id(account.tenant_id, account.user_id, "thread", root)
        contacts, leads, deal = self._links(account, lookups, thread, batch)
        return MessageRecord(
            crm_message_id=crm_message_id,
            crm_thread_id=crm_thread_id,
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            account_id=account.account_id,
            provider=account.provider,
            provider_message_id=message.provider_message_id if message else None,
            provider_thread_id=message.provider_thread_id if message else None,
            message_id=parsed.message_id,
            references=parsed.references,
            direction=direction,
            subject=parsed.subject,
            sender=parsed.sender,
            to=parsed.to,
            cc=parsed.cc,
            date=parsed.date,
            preview=parsed.preview,
            labels=labels,
            attachments=parsed.attachments,
            contact_ids=contacts,
            lead_ids=leads,
            deal_id=deal,
            raw_key=raw_key,
            synced_at=self._now(),
        )

    def _thread_after(
        self, account: Account, parsed: ParsedMessage, record: MessageRecord, thread: ThreadRecord | None
    ) -> ThreadRecord:
        base = thread or ThreadRecord(
            crm_thread_id=record.crm_thread_id,
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            subject=parsed.subject,
        )
        latest = max(filter(None, [base.last_message_at, record.date]), default=None)
        return base.model_copy(
            update={
                "contact_ids": record.contact_ids,
                "lead_ids": record.lead_ids,
                "deal_id": record.deal_id,
                "account_ids": list(dict.fromkeys([*base.account_ids, account.account_id])),
                "message_count": base.message_count + 1,
                "last_message_at": latest,
                "version": base.version + 1,
            }
        )

    def _store_new(self, plan: _NewMessage, batch: Batch) -> IngestOutcome:
        """The message's writes: the raw MIME, then its transaction (module docstring); its
        event goes out with the batch's."""
        record = plan.record
        self._raw.put(record.raw_key or "", plan.raw)
        try:
            created = self._store.record_message(record, plan.thread, plan.previous_version)
        except TransientError as error:  # a condition failed: someone else wrote meanwhile
            raise _Conflict(str(error)) from error
        if not created:  # the provider copy was mapped meanwhile: the writer that did publishes it
            return IngestOutcome(
                status="updated", crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id
            )
        batch.stored(record, plan.thread)
        self._publish(record, batch)
        return IngestOutcome(
            status="synced", crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id
        )

    def _publish_if_pending(self, ref: MessageRef, batch: Batch) -> None:
        """A stored message whose event did not go out (a crash in between) goes out with the batch."""
        if message_key(ref) in batch.publishing:
            return  # its event goes out with this batch already
        record = batch.record(ref)
        if record is not None and not record.published:
            self._publish(record, batch)

    @staticmethod
    def _publish(record: MessageRecord, batch: Batch) -> None:
        batch.events.append(
            MessageSynced(
                tenant_id=record.tenant_id,
                user_id=record.user_id,
                account_id=record.account_id,
                message_id=record.crm_message_id,
                thread_id=record.crm_thread_id,
                direction=record.direction,
                subject=record.subject,
                sender=record.sender,
                to=record.to,
                cc=record.cc,
                date=record.date,
                contact_ids=record.contact_ids,
                lead_ids=record.lead_ids,
                deal_id=record.deal_id,
                raw_key=record.raw_key,
                attachments_left_out=record.attachments_left_out,
            )
        )
        batch.publishing[message_key(record)] = record

    def _skip(self, account: Account, message: ProviderMessage, reason: str, batch: Batch) -> IngestOutcome:
        batch.skipped[message.provider_message_id] = reason
        if self._store.record_skip(account.account_id, message.provider_message_id, reason):
            batch.events.append(
                MessageSkipped(
                    tenant_id=account.tenant_id,
                    user_id=account.user_id,
                    account_id=account.account_id,
                    provider_message_id=message.provider_message_id,
                    reason=reason.split(":", 1)[0],
                    detail=reason,
                )
            )
            batch.told.append(message.provider_message_id)
        return IngestOutcome(status="skipped", reason=reason)

    def _flush(self, batch: Batch) -> None:
        """The batch's events (10 per PutEvents, the publisher's part), then, only after they
        went out, the published marks and the told skips, in batches: a worker that dies in
        between publishes or tells again on redelivery."""
        if batch.events:
            self._publisher.publish(batch.events)
        if batch.publishing:
            self._store.mark_published(*batch.publishing.values())
        if batch.told:
            self._store.mark_skip_told(batch.account.account_id, *batch.told)
        batch.events, batch.publishing, batch.told = [], {}, []

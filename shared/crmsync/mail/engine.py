"""The mail sync engine: a provider message in, a CRM message out, exactly once (MAIL-7).

Writes happen in an order that survives a crash between any two of them: the raw MIME goes to
S3 under a key derived from the provider's id (a retry rewrites the same object), then one
DynamoDB transaction creates the message, the provider-id map, the Message-ID index entry and
the thread together (the map's existence condition makes a second attempt a no-op), then the
event is published and the message marked published. A redelivery that finds the message
stored but unpublished publishes it then: creation exactly once, events at least once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, cast

from crmsync.accounts.models import Account
from crmsync.directory import Blocklist, Directory, LookupResult
from crmsync.errors import TransientError
from crmsync.events import EventPublisher, MessageRemovedInMailbox, MessageSkipped, MessageSynced
from crmsync.ids import is_address
from crmsync.mail.inbound import apply_limits
from crmsync.mail.limits import AttachmentLimits, limits_for
from crmsync.mail.mime import Malformed, ParsedMessage, parse
from crmsync.mail.models import (
    IngestOutcome,
    MessageRecord,
    MessageRef,
    ProviderMessage,
    RemovalKind,
    ThreadRecord,
)
from crmsync.mail.rules import Facts, decide
from crmsync.sync.core import Removal

BLOCKLIST_TTL_S = 60
_IDS = uuid.UUID("3b8c4f0e-6a53-4a4e-9a43-2f1b7c9d5e11")


def stable_id(*parts: str) -> str:
    """The same inputs give the same id: a retried ingest creates nothing new."""
    return str(uuid.uuid5(_IDS, "|".join(parts)))


class MailStore(Protocol):
    """Port: thread maps, the Message-ID index, message metadata (stores/mail.py)."""

    def find_provider_message(self, account_id: str, provider_message_id: str) -> MessageRef | None: ...

    def find_message_id(self, tenant_id: str, user_id: str, message_id: str) -> MessageRef | None: ...

    def find_provider_thread(self, account_id: str, provider_thread_id: str) -> str | None: ...

    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None: ...

    def record_message(self, record: MessageRecord, thread: ThreadRecord, previous_version: int) -> bool: ...

    def attach_copy(self, account: Account, message: ProviderMessage, ref: MessageRef) -> None: ...

    def get_message(self, tenant_id: str, user_id: str, crm_message_id: str) -> MessageRecord | None: ...

    def mark_published(self, record: MessageRecord) -> None: ...

    def mark_removed(self, record: MessageRecord, removed: bool) -> MessageRecord: ...

    def record_skip(self, account_id: str, provider_message_id: str, reason: str) -> bool:
        """True unless the CRM was told of this skip already."""
        ...

    def mark_skip_told(self, account_id: str, provider_message_id: str) -> None: ...

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


@dataclass(frozen=True)
class _NewMessage:
    """What ingesting a new message will write."""

    raw: bytes
    record: MessageRecord
    thread: ThreadRecord
    previous_version: int


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
    def ingest_many(self, account: Account, messages: Sequence[ProviderMessage]) -> list[IngestOutcome]:
        """A provider batch (the sync core's Sink port), in order."""
        return [self.ingest(account, message) for message in messages]

    def remove_many(self, account: Account, removals: Sequence[Removal]) -> int:
        """The sync core's Sink port: MAIL-10 for each removal; how many were news to the CRM."""
        return sum(self.mark_removed(account, r.item_id, cast(RemovalKind, r.how)) for r in removals)

    def ingest(self, account: Account, message: ProviderMessage) -> IngestOutcome:
        """One mailbox message into the CRM: read what it needs, decide, then write.

        A message is never allowed to stall its mailbox (SEC-5, SYNC-8): any failure while it is
        read and decided (hostile MIME, a parser's recursion limit, a container the type check
        cannot open, a bug of ours) is a recorded skip with its reason, and so is AWS refusing
        what it would write (a key or item too large). Only failures of the infrastructure
        (throttling, the network, a crash) propagate, and the job is retried."""
        known = self._store.find_provider_message(account.account_id, message.provider_message_id)
        if known is not None:  # MAIL-7: seen before (duplicate push, resync, redelivery)
            self._publish_if_pending(account.tenant_id, known)
            return IngestOutcome(
                status="updated", crm_message_id=known.crm_message_id, crm_thread_id=known.crm_thread_id
            )
        try:
            plan = self._plan(account, message)
        except Exception as error:
            if self._classify(error) == "retry":
                raise
            return self._skip(account, message, _unprocessable(error))
        if isinstance(plan, str):
            return self._skip(account, message, plan)
        if isinstance(plan, MessageRef):  # MAIL-2/MAIL-7: this user's copy of a message the CRM has
            self._store.attach_copy(account, message, plan)
            self._publish_if_pending(account.tenant_id, plan)
            return IngestOutcome(
                status="updated", crm_message_id=plan.crm_message_id, crm_thread_id=plan.crm_thread_id
            )
        try:
            return self._store_new(plan)
        except Exception as error:
            if self._classify(error) != "refused":
                raise
            return self._skip(account, message, _unprocessable(error))

    def _plan(self, account: Account, message: ProviderMessage) -> _NewMessage | MessageRef | str:
        """Reads and decisions only: a new message to store, this user's existing copy, or why
        the message is skipped."""
        try:
            parsed = parse(message.raw)
        except Malformed as error:
            return f"malformed_mime: {error}"
        if parsed.message_id:
            same = self._store.find_message_id(account.tenant_id, account.user_id, parsed.message_id)
            if same is not None:
                return same
        blocked = self._blocklist(account).match(
            [a for a in [*parsed.participants, *parsed.bcc] if a != account.address]
        )
        if blocked:  # MAIL-6: from or to a blocked address or domain
            return f"blocked: {blocked} is on the user's blocklist"
        thread = self._thread_of(account, message, parsed)
        lookups = self._lookups(account, parsed)
        direction = "outbound" if parsed.sender == account.address else "inbound"
        facts = self._facts(account, parsed, direction, thread is not None, lookups, message.labels)
        decision = decide(account.settings, facts)
        if not decision.sync:
            return decision.reason or "skipped"
        left_out: list[str] = []
        if parsed.attachments:  # ATT-2, ATT-3: the provider's limits on what comes in
            verdict = apply_limits(message.raw, self._limits(account.provider))
            if verdict.refused:
                return f"attachment_limit: {verdict.refused}"
            if verdict.left_out:
                message = message.model_copy(update={"raw": verdict.raw})
                parsed = parse(verdict.raw)
                left_out = verdict.left_out
        raw_key = f"raw/{account.tenant_id}/{account.account_id}/{stable_id(message.provider_message_id)}.eml"
        record = self._record(account, message, parsed, direction, thread, lookups, raw_key, message.labels)
        record.attachments_left_out = left_out
        return _NewMessage(
            raw=message.raw,
            record=record,
            thread=self._thread_after(account, parsed, record, thread),
            previous_version=thread.version if thread else 0,
        )

    def settled(self, account: Account, provider_message_id: str) -> bool:
        """Whether this mailbox copy is in the CRM already, so that a source need not fetch it
        again. A copy stored but not yet published (a crash in between) is published now, as a
        redelivered ingest would do (MAIL-7)."""
        ref = self._store.find_provider_message(account.account_id, provider_message_id)
        if ref is None:
            return False
        self._publish_if_pending(account.tenant_id, ref)
        return True

    def mark_removed(self, account: Account, provider_message_id: str, how: RemovalKind) -> bool:
        """MAIL-10: the mailbox no longer holds this message where we sync it. The CRM copy
        stays, marked; the CRM is told once. Unknown messages (never synced) are nothing."""
        ref = self._store.find_provider_message(account.account_id, provider_message_id)
        record = self._store.get_message(account.tenant_id, ref.user_id, ref.crm_message_id) if ref else None
        if record is None or record.removed_in_mailbox:
            return False
        if not record.published:  # stored, then a crash before its event: the CRM hears of it first
            self._publish(record)
        self._publisher.publish(
            [
                MessageRemovedInMailbox(
                    tenant_id=record.tenant_id,
                    user_id=record.user_id,
                    account_id=account.account_id,
                    message_id=record.crm_message_id,
                    thread_id=record.crm_thread_id,
                    how=how,
                )
            ]
        )
        self._store.mark_removed(record, True)  # after the event: a crash between repeats it
        return True

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
        lookups = self._lookups(account, parsed)
        record = self._record(
            account, None, parsed, "outbound", thread, lookups, raw_key=raw_key, labels=["SENT"]
        )
        record.delivery = "sending"
        new_thread = self._thread_after(account, parsed, record, thread)
        self._store.record_message(record, new_thread, thread.version if thread else 0)
        if publish:
            self._publish_if_pending(account.tenant_id, self._ref(record))
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
        self._publish_if_pending(account.tenant_id, self._ref(record))
        return updated

    def fail_sent(self, record: MessageRecord, reason: str) -> MessageRecord:
        """The provider refused it: the CRM copy says so; nothing is published as sent."""
        return self._store.set_delivery(record, "failed", reason)

    @staticmethod
    def _ref(record: MessageRecord) -> MessageRef:
        return MessageRef(
            crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id, user_id=record.user_id
        )

    # ------------------------------------------------------------------ pieces
    def _thread_of(
        self, account: Account, message: ProviderMessage, parsed: ParsedMessage
    ) -> ThreadRecord | None:
        thread_id = None
        if message.provider_thread_id:
            thread_id = self._store.find_provider_thread(account.account_id, message.provider_thread_id)
        if thread_id is None:  # the RFC 5322 chain: In-Reply-To, then References newest first
            for ref in [parsed.in_reply_to, *reversed(parsed.references)]:
                found = self._store.find_message_id(account.tenant_id, account.user_id, ref) if ref else None
                if found is not None:
                    thread_id = found.crm_thread_id
                    break
        return self._store.get_thread(account.tenant_id, thread_id) if thread_id else None

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

    def _lookups(self, account: Account, parsed: ParsedMessage) -> dict[str, LookupResult]:
        """Who the other participants are; the mailbox's own address is never looked up."""
        addresses = [a for a in [*parsed.participants, *parsed.bcc] if is_address(a) and a != account.address]
        return {a: self._directory.lookup(account.tenant_id, a) for a in dict.fromkeys(addresses)}

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
        self, account: Account, lookups: dict[str, LookupResult], thread: ThreadRecord | None
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
        if (
            deal_id is None
            and deals
            and self._directory.deal_linking(account.tenant_id, account.user_id) == "automatic"
        ):
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
        contacts, leads, deal = self._links(account, lookups, thread)
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

    def _store_new(self, plan: _NewMessage) -> IngestOutcome:
        """The writes, in the order that survives a crash between any two (module docstring)."""
        record = plan.record
        self._raw.put(record.raw_key or "", plan.raw)
        if not self._store.record_message(record, plan.thread, plan.previous_version):
            return IngestOutcome(
                status="updated", crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id
            )
        self._publish(record)
        return IngestOutcome(
            status="synced", crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id
        )

    def _publish_if_pending(self, tenant_id: str, ref: MessageRef) -> None:
        """A stored message whose event did not go out (a crash in between) is published now."""
        record = self._store.get_message(tenant_id, ref.user_id, ref.crm_message_id)
        if record is not None and not record.published:
            self._publish(record)

    def _publish(self, record: MessageRecord) -> None:
        self._publisher.publish(
            [
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
            ]
        )
        self._store.mark_published(record)

    def _skip(self, account: Account, message: ProviderMessage, reason: str) -> IngestOutcome:
        if self._store.record_skip(account.account_id, message.provider_message_id, reason):
            self._publisher.publish(
                [
                    MessageSkipped(
                        tenant_id=account.tenant_id,
                        user_id=account.user_id,
                        account_id=account.account_id,
                        provider_message_id=message.provider_message_id,
                        reason=reason.split(":", 1)[0],
                        detail=reason,
                    )
                ]
            )
            # after the event: a worker that dies in between tells the CRM on redelivery
            self._store.mark_skip_told(account.account_id, message.provider_message_id)
        return IngestOutcome(status="skipped", reason=reason)

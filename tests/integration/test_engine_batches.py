"""The mail engine in batches (`ingest_many`, `remove_many`, `settled_many`): a batch is read
together, decided in order (each message sees the ones stored before it in the batch), written
S3 → transaction per message, then the events, then the marks; a crash between any two writes
and a redelivery still end with each message once and each event out at least once. Over the
in-memory stores (the same contract as the DynamoDB ones), and the request counts on moto."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from crmsync.accounts.models import Account, AccountSettings
from crmsync.auth import Principal
from crmsync.directory import ContactEntry, DealEntry, Directory, LeadEntry, UserEntry
from crmsync.errors import TransientError
from crmsync.events import MessageRemovedInMailbox, MessageSkipped, MessageSynced
from crmsync.mail.engine import MailSync
from crmsync.mail.models import ProviderMessage
from crmsync.stores import memory
from crmsync.stores.eventbridge import EventBridgePublisher
from crmsync.sync.core import Removal
from local.stack import LocalStack
from tests.integration.test_mail_engine import OWNER, delivered, mail

CONTACT = "carla@client.test"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
READS = {
    "find_provider_message",
    "find_provider_messages",
    "find_message_id",
    "find_message_ids",
    "find_provider_thread",
    "find_provider_threads",
    "get_thread",
    "get_threads",
    "get_message",
    "get_messages",
}
WRITES = {"put", "record_message", "attach_copy", "mark_published", "mark_removed", "record_skip"}
WRITES |= {"mark_skip_told", "publish"}


class Crash(Exception):
    """The worker died at a write."""


@dataclass
class Log:
    """Every call of the stores, the bus and the directory store, in order; and a crash plan."""

    calls: list[str] = field(default_factory=list)
    crash_at: int | None = None  # the n-th write (1-based) crashes ...
    after: bool = False  # ... before it, or after it went through
    writes: int = 0
    before_call: dict[str, Callable[..., None]] = field(default_factory=dict)

    def names(self, kinds: set[str]) -> list[str]:
        return [c for c in self.calls if c in kinds]


class Logged:
    def __init__(self, inner: Any, log: Log) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            log = self._log
            log.calls.append(name)
            if name in log.before_call:
                log.before_call[name](*args, **kwargs)
            if name not in WRITES:
                return target(*args, **kwargs)
            log.writes += 1
            if log.writes == log.crash_at and not log.after:
                raise Crash(f"before {name}")
            result = target(*args, **kwargs)
            if log.writes == log.crash_at:
                raise Crash(f"after {name}")
            return result

        return call


class World:
    """A tenant (a user, a colleague, a contact with an open deal) on the in-memory stores."""

    def __init__(self) -> None:
        self.tenant = f"t-{uuid.uuid4().hex[:8]}"
        self.log = Log()
        self.directory_store = memory.MemoryDirectoryStore()
        self.directory = Directory(Logged(self.directory_store, self.log), memory.MemoryEventPublisher())
        admin = Principal(tenant_id=self.tenant, user_id="admin", role="admin")
        self.directory.upsert(admin, "users", "u1", UserEntry(name="Owner", email=OWNER))
        self.directory.upsert(admin, "users", "u2", UserEntry(name="Colleague", email="colleague@corp.test"))
        self.directory.upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=[CONTACT]))
        self.directory.upsert(
            admin, "deals", "d1", DealEntry(name="Deal", contact_ids=["c1"], updated_at=NOW)
        )
        self.store = memory.MemoryMailStore()
        self.raw = memory.MemoryRawStore()
        self.publisher = memory.MemoryEventPublisher()
        self.account = Account(
            account_id=f"acc-{uuid.uuid4().hex[:8]}",
            tenant_id=self.tenant,
            user_id="u1",
            provider="google",
            purpose="both",
            address=OWNER,
            status="connected",
            settings=AccountSettings(),
            connected_at=NOW,
            updated_at=NOW,
        )
        self.log.calls.clear()
        self.log.writes = 0  # the directory's own writes above are not the sync's
        self.engine = self.worker()

    def worker(self) -> MailSync:
        """An engine whose stores and bus are logged (and crash as the log's plan says)."""
        return MailSync(
            Logged(self.store, self.log),
            Logged(self.raw, self.log),
            self.directory,
            Logged(self.publisher, self.log),
        )

    def records(self) -> list[Any]:
        return self.store.messages(self.tenant, "u1")

    def synced_events(self) -> Counter[str]:
        return Counter(e.message_id for e in self.publisher.events if isinstance(e, MessageSynced))


def contact_mail(subject: str, reply_to: EmailMessage | None = None) -> EmailMessage:
    return mail(CONTACT, [OWNER], subject, reply_to=reply_to)


def malformed() -> ProviderMessage:
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (n, n) for n in range(120)
    )
    return ProviderMessage(provider_message_id="bad", raw=b"From: x@y.test\r\n" + nested)


@pytest.mark.rule("MAIL-3")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SEC-5")
def test_a_batch_is_read_together_decided_in_order_and_written_then_published_then_marked() -> None:
    world = World()
    first = contact_mail("Proposal")
    reply = mail(OWNER, [CONTACT], "Re: Proposal", reply_to=first)  # no provider thread: In-Reply-To
    again = contact_mail("Re: Proposal", reply_to=reply)
    a = delivered(first, thread="gt-1")
    batch = [
        a,
        delivered(reply, ["SENT"]),
        delivered(again, thread="gt-1"),
        a,  # the same provider copy twice in one batch
        delivered(mail("sam@elsewhere.test", [OWNER], "Hello")),  # a stranger's new thread: skipped
        malformed(),
        delivered(contact_mail("Other")),
    ]
    outcomes = world.engine.ingest_many(world.account, batch)
    assert [o.status for o in outcomes] == [
        "synced",
        "synced",
        "synced",
        "updated",
        "skipped",
        "skipped",
        "synced",
    ]
    assert outcomes[3].crm_message_id == outcomes[0].crm_message_id
    assert (outcomes[5].reason or "").startswith("malformed_mime")
    thread_id = outcomes[0].crm_thread_id
    assert outcomes[1].crm_thread_id == outcomes[2].crm_thread_id == thread_id  # threaded within the batch
    assert outcomes[6].crm_thread_id != thread_id
    thread = world.store.get_thread(world.tenant, thread_id or "")
    assert thread is not None and (thread.message_count, thread.version) == (3, 3)
    records = world.records()
    assert len(records) == 4 and all(r.published for r in records)
    assert all(r.deal_id == "d1" and r.contact_ids == ["c1"] for r in records)
    assert sorted(world.synced_events().values()) == [1, 1, 1, 1]
    assert len([e for e in world.publisher.events if isinstance(e, MessageSkipped)]) == 2
    # reads in batches only; the writes in the crash-safe order; one publish, then the marks
    # (no thread and no message was there before the batch: nothing more to read)
    assert world.log.names(READS) == ["find_provider_messages", "find_message_ids", "find_provider_threads"]
    writes = world.log.names(WRITES)
    assert writes[-3:] == ["publish", "mark_published", "mark_skip_told"]
    assert writes[:-3] == [
        "put",
        "record_message",
        "put",
        "record_message",
        "put",
        "record_message",
        "record_skip",
        "record_skip",
        "put",
        "record_message",
    ]
    # the directory: each address read once for the whole batch
    owners = Counter(c for c in world.log.calls if c == "owners_of")
    assert owners["owners_of"] == 2  # carla and sam; the owner's own address is never looked up


@pytest.mark.rule("MAIL-7")
def test_a_redelivered_batch_writes_nothing_and_reads_in_batches() -> None:
    world = World()
    batch = [delivered(contact_mail(f"Order {n}"), thread=f"gt-{n}") for n in range(5)]
    first = world.engine.ingest_many(world.account, batch)
    world.log.calls.clear()
    again = world.engine.ingest_many(world.account, batch)
    assert [o.status for o in again] == ["updated"] * 5
    assert [o.crm_message_id for o in again] == [o.crm_message_id for o in first]
    assert world.log.names(WRITES) == []
    assert world.log.names(READS) == ["find_provider_messages", "get_messages"]


@pytest.mark.rule("MAIL-3")
@pytest.mark.rule("MAIL-7")
def test_a_thread_another_worker_moved_meanwhile_is_read_again_and_the_message_kept() -> None:
    world = World()
    first = contact_mail("Proposal")
    world.engine.ingest(world.account, delivered(first, thread="gt-1"))
    world.log.calls.clear()
    other = MailSync(world.store, world.raw, world.directory, world.publisher)  # unlogged
    racing = delivered(contact_mail("Re: Proposal", reply_to=first), thread="gt-1")
    raced: list[Any] = []

    def another_worker_first(record: Any, thread: Any, previous: int) -> None:
        if not raced:  # between this batch's reads and its transaction, another worker threads a message
            raced.append(other.ingest(world.account, racing))

    world.log.before_call["record_message"] = another_worker_first
    mine = delivered(mail(OWNER, [CONTACT], "Re: Proposal", reply_to=first), ["SENT"], thread="gt-1")
    outcomes = world.engine.ingest_many(
        world.account, [mine, delivered(contact_mail("Later"), thread="gt-1")]
    )
    assert raced[0].status == "synced" and [o.status for o in outcomes] == ["synced", "synced"]
    assert world.log.calls.count("record_message") == 3  # mine cancelled, then mine again, then the next
    thread = world.store.get_thread(world.tenant, outcomes[0].crm_thread_id or "")
    assert thread is not None and (thread.message_count, thread.version) == (4, 4)
    records = world.records()
    assert len(records) == 4 and all(r.published for r in records)
    assert sorted(world.synced_events().values()) == [1, 1, 1, 1]


@pytest.mark.rule("MAIL-7")
def test_a_second_conflict_fails_the_job_and_the_redelivery_finishes_it() -> None:
    world = World()
    batch = [delivered(contact_mail(f"Order {n}"), thread=f"gt-{n}") for n in range(3)]
    conflicts: list[Any] = []

    def conflict(record: Any, thread: Any, previous: int) -> None:
        if record.provider_message_id == batch[1].provider_message_id and len(conflicts) < 2:
            conflicts.append(record)
            raise TransientError("the thread changed meanwhile; the job is retried")

    world.log.before_call["record_message"] = conflict
    with pytest.raises(TransientError):
        world.engine.ingest_many(world.account, batch)
    assert len(world.records()) == 1 and not world.records()[0].published  # stored, its event not out yet
    outcomes = world.engine.ingest_many(world.account, batch)  # SQS redelivers the job
    assert [o.status for o in outcomes] == ["updated", "synced", "synced"]
    assert len(world.records()) == 3 and all(r.published for r in world.records())
    assert sorted(world.synced_events().values()) == [1, 1, 1]


def _batch(world: World) -> list[ProviderMessage]:
    first = contact_mail("Proposal")
    return [
        delivered(first, thread="gt-1"),
        delivered(mail(OWNER, [CONTACT], "Re: Proposal", reply_to=first), ["SENT"]),
        delivered(mail("sam@elsewhere.test", [OWNER], "Hello")),
        delivered(contact_mail("Other"), thread="gt-2"),
    ]


@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SYNC-2")
@pytest.mark.parametrize("after", [False, True])
def test_a_crash_at_any_write_of_a_batch_then_redelivery_ends_exactly_once_and_published(after: bool) -> None:
    clean = World()
    clean.engine.ingest_many(clean.account, _batch(clean))
    total = clean.log.writes
    assert total == 10  # 3 x (S3, transaction), a skip, the events, the marks, the told skip
    for crash_at in range(1, total + 1):
        world = World()
        batch = _batch(world)
        world.log.crash_at, world.log.after = crash_at, after
        with pytest.raises(Crash):
            world.engine.ingest_many(world.account, batch)
        world.log.crash_at = None
        outcomes = world.engine.ingest_many(world.account, batch)  # the redelivery
        assert [o.status for o in outcomes] in (
            ["synced", "synced", "skipped", "synced"],
            ["updated", "synced", "skipped", "synced"],
            ["updated", "updated", "skipped", "synced"],
            ["updated", "updated", "skipped", "updated"],
        ), crash_at
        records = world.records()
        assert len(records) == 3 and all(r.published for r in records), crash_at
        assert set(world.synced_events()) == {r.crm_message_id for r in records}, crash_at
        skipped = [e for e in world.publisher.events if isinstance(e, MessageSkipped)]
        assert skipped and {e.provider_message_id for e in skipped} == {batch[2].provider_message_id}
        assert world.engine.ingest_many(world.account, batch)[2].status == "skipped"
        assert len([e for e in world.publisher.events if isinstance(e, MessageSkipped)]) == len(skipped)


@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("MAIL-10")
def test_settled_many_and_remove_many_read_in_batches_and_publish_what_a_crash_left_out() -> None:
    world = World()
    batch = [delivered(contact_mail(f"Order {n}"), thread=f"gt-{n}") for n in range(3)]
    world.log.crash_at = 7  # before the batch's events: stored, never published
    with pytest.raises(Crash):
        world.engine.ingest_many(world.account, batch)
    world.log.crash_at = None
    world.log.calls.clear()
    ids = [m.provider_message_id for m in batch]
    assert world.engine.settled_many(world.account, [*ids, "unknown"]) == set(ids)
    assert world.log.names(READS) == ["find_provider_messages", "get_messages"]
    assert world.log.names(WRITES) == ["publish", "mark_published"]
    assert all(r.published for r in world.records()) and sorted(world.synced_events().values()) == [1, 1, 1]
    assert world.engine.settled_many(world.account, ["unknown"]) == set()
    assert world.engine.settled(world.account, ids[0]) is True

    # a removal of a message stored but unpublished publishes it first
    late = delivered(contact_mail("Late"), thread="gt-9")
    world.log.crash_at = world.log.writes + 3  # S3, transaction, then the events: crash
    with pytest.raises(Crash):
        world.engine.ingest_many(world.account, [late])
    world.log.crash_at = None
    world.log.calls.clear()
    removals = [
        Removal(item_id=ids[0], how="trashed"),
        Removal(item_id=ids[0], how="deleted"),  # twice in the batch: once
        Removal(item_id=late.provider_message_id, how="deleted"),
        Removal(item_id="unknown", how="deleted"),
    ]
    assert world.engine.remove_many(world.account, removals) == 2
    assert world.log.names(READS) == ["find_provider_messages", "get_messages"]
    assert world.log.names(WRITES) == ["publish", "mark_published", "mark_removed"]
    removed = [e for e in world.publisher.events if isinstance(e, MessageRemovedInMailbox)]
    assert [e.how for e in removed] == ["trashed", "deleted"]
    records = {r.provider_message_id: r for r in world.records()}
    assert records[ids[0]].removed_in_mailbox and records[late.provider_message_id].removed_in_mailbox
    assert records[late.provider_message_id].published and not records[ids[1]].removed_in_mailbox
    assert world.engine.remove_many(world.account, removals) == 0  # told once
    assert world.engine.mark_removed(world.account, ids[1], "deleted") is True


def test_one_bad_batched_read_sends_each_message_alone() -> None:
    world = World()
    batch = [delivered(contact_mail(f"Order {n}"), thread=f"gt-{n}") for n in range(3)]
    refused: list[Any] = []

    def refuse_big_batches(account_id: str, ids: Any) -> None:
        if len(ids) > 1:
            refused.append(ids)
            raise ValueError("a key DynamoDB refused")

    world.log.before_call["find_provider_messages"] = refuse_big_batches
    outcomes = world.engine.ingest_many(world.account, batch)
    assert refused and [o.status for o in outcomes] == ["synced"] * 3
    assert all(r.published for r in world.records())


class FakeEvents:
    """An EventBridge client: counts PutEvents; the first entry of the first call fails once."""

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.failed_once = False

    def put_events(self, Entries: list[dict[str, Any]]) -> dict[str, Any]:
        assert len(Entries) <= 10
        self.calls.append(len(Entries))
        if not self.failed_once:
            self.failed_once = True
            return {
                "FailedEntryCount": 1,
                "Entries": [{"ErrorCode": "InternalFailure"}] + [{"EventId": "x"}] * (len(Entries) - 1),
            }
        return {"FailedEntryCount": 0, "Entries": [{"EventId": "x"}] * len(Entries)}


def test_a_batch_of_25_messages_goes_out_in_three_putevents_and_a_failed_entry_is_put_again() -> None:
    world = World()
    events = FakeEvents()
    engine = MailSync(world.store, world.raw, world.directory, EventBridgePublisher("bus", "crmsync", events))
    outcomes = engine.ingest_many(
        world.account, [delivered(contact_mail(f"Order {n}"), thread=f"gt-{n}") for n in range(25)]
    )
    assert [o.status for o in outcomes] == ["synced"] * 25
    assert events.calls == [10, 1, 10, 5]  # the failed entry alone, again
    assert all(r.published for r in world.records())


# ---------------------------------------------------------------- on DynamoDB (moto): request counts


class AwsCalls:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __call__(self, model: Any, **_: Any) -> None:
        self.counts[model.name] += 1


@pytest.mark.rule("MAIL-7")
def test_a_batch_of_50_new_messages_costs_at_most_one_and_a_half_dynamodb_requests_each(
    stack: LocalStack,
) -> None:
    from crmsync.stores import aws
    from crmsync.stores.directory import DynamoDirectoryStore
    from crmsync.stores.mail import DynamoMailStore

    world = World()
    directory = Directory(DynamoDirectoryStore(stack.tables["DirectoryTable"]), memory.MemoryEventPublisher())
    admin = Principal(tenant_id=world.tenant, user_id="admin", role="admin")
    directory.upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=[CONTACT]))
    store = DynamoMailStore(stack.tables["ThreadsTable"], stack.tables["MessagesTable"])
    engine = MailSync(store, world.raw, directory, world.publisher)
    first = contact_mail("Order 0")
    batch = [delivered(first, thread="gt-0")]
    batch += [delivered(contact_mail(f"Order {n}"), thread=f"gt-{n}") for n in range(1, 49)]
    batch += [delivered(contact_mail("Re: Order 0", reply_to=first))]  # threads by In-Reply-To
    calls = AwsCalls()
    client = aws.dynamodb().meta.client
    client.meta.events.register("before-call.dynamodb", calls)
    try:
        outcomes = engine.ingest_many(world.account, batch)
        new = sum(calls.counts.values())
        calls.counts.clear()
        again = engine.ingest_many(world.account, batch)  # a redelivery: all known and published
    finally:
        client.meta.events.unregister("before-call.dynamodb", calls)
    assert [o.status for o in outcomes] == ["synced"] * 50
    assert outcomes[-1].crm_thread_id == outcomes[0].crm_thread_id
    assert [o.status for o in again] == ["updated"] * 50
    assert new <= 75, new  # 50 transactions, one for the 50 marks, the batched reads, the directory
    assert sum(calls.counts.values()) <= 2, calls.counts  # the map, then the messages
    records = store.get_messages(world.tenant, [("u1", o.crm_message_id or "") for o in outcomes])
    assert len(records) == 50 and all(r.published for r in records.values())


# ---------------------------------------------------------------- the directory's batched lookups


@pytest.mark.rule("LINK-1")
@pytest.mark.rule("LINK-2")
def test_lookup_many_answers_as_lookup_does_and_keeps_answers_a_minute() -> None:
    log = Log()
    store = memory.MemoryDirectoryStore()
    clock = [1000.0]
    directory = Directory(Logged(store, log), memory.MemoryEventPublisher(), clock=lambda: clock[0])
    elsewhere = Directory(store, memory.MemoryEventPublisher())  # another Lambda instance
    admin = Principal(tenant_id="t-dir", user_id="admin", role="admin")
    directory.upsert(admin, "users", "u1", UserEntry(name="Owner", email=OWNER))
    directory.upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=[CONTACT, "c@two.test"]))
    directory.upsert(admin, "deals", "d1", DealEntry(name="Deal", contact_ids=["c1"], updated_at=NOW))
    addresses = [CONTACT, "Carla@Client.test", OWNER, "nobody@else.test"]
    log.calls.clear()
    found = directory.lookup_many("t-dir", addresses)
    assert found == {a: directory.lookup("t-dir", a) for a in addresses}
    assert [d.id for d in found[CONTACT].deals] == ["d1"] and found[OWNER].is_tenant_user
    assert Counter(log.calls)["get_many"] == 1 + 4  # one for the batch (then one per `lookup` above)
    log.calls.clear()
    assert directory.lookup_many("t-dir", [CONTACT, "nobody@else.test"]) == {
        CONTACT: found[CONTACT],
        "nobody@else.test": found["nobody@else.test"],
    }
    assert log.calls == []  # answered from memory
    elsewhere.upsert(admin, "leads", "l1", LeadEntry(name="Nobody", emails=["nobody@else.test"]))
    assert directory.lookup_many("t-dir", ["nobody@else.test"])["nobody@else.test"].leads == []
    clock[0] += 61  # a minute on, the change made elsewhere applies
    assert [
        lead.id for lead in directory.lookup_many("t-dir", ["nobody@else.test"])["nobody@else.test"].leads
    ] == ["l1"]
    directory.delete(admin, "deals", "d1")  # a change through this instance applies at once
    assert directory.lookup_many("t-dir", [CONTACT])[CONTACT].deals == []

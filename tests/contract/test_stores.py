"""One contract for each store port, run against the DynamoDB store (on the local stack's moto)
and against the in-memory store (crmsync.stores.memory), so that the in-memory stores the
model-based test relies on cannot drift from the ones that run in AWS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError

from crmsync.accounts.models import Account, AccountSettings
from crmsync.errors import TransientError
from crmsync.mail.models import MessageRecord, MessageRef, ProviderMessage, ThreadRecord
from crmsync.resync import ResyncProgress
from crmsync.stores import memory
from local.stack import LocalStack

KINDS = ["dynamodb", "memory"]
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def _stack(request: pytest.FixtureRequest) -> LocalStack:
    stack: LocalStack = request.getfixturevalue("stack")
    return stack


@pytest.fixture(params=KINDS)
def mail_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return memory.MemoryMailStore()
    from crmsync.stores.mail import DynamoMailStore

    stack = _stack(request)
    return DynamoMailStore(stack.tables["ThreadsTable"], stack.tables["MessagesTable"])


@pytest.fixture(params=KINDS)
def cursor_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return memory.MemoryCursorStore()
    from crmsync.stores.cursors import DynamoCursorStore

    return DynamoCursorStore(_stack(request).tables["CursorsTable"])


@pytest.fixture(params=KINDS)
def state_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return memory.MemorySyncStateStore()
    from crmsync.stores.cursors import DynamoSyncStateStore

    return DynamoSyncStateStore(_stack(request).tables["CursorsTable"])


@pytest.fixture(params=KINDS)
def directory_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return memory.MemoryDirectoryStore()
    from crmsync.stores.directory import DynamoDirectoryStore

    return DynamoDirectoryStore(_stack(request).tables["DirectoryTable"])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Mailbox:
    """A tenant, a user and an account of their own, so that runs on the shared stack do not meet."""

    def __init__(self) -> None:
        self.tenant = _id("t")
        self.user = "u1"
        self.account = Account(
            account_id=_id("acc"),
            tenant_id=self.tenant,
            user_id=self.user,
            provider="google",
            purpose="both",
            address="owner@corp.test",
            status="connected",
            settings=AccountSettings(),
            connected_at=NOW,
            updated_at=NOW,
        )

    def record(
        self,
        provider_message_id: str | None = None,
        message_id: str | None = None,
        thread_id: str | None = None,
        date: datetime = NOW,
        user: str | None = None,
        provider_thread_id: str | None = None,
    ) -> MessageRecord:
        return MessageRecord(
            crm_message_id=_id("m"),
            crm_thread_id=thread_id or _id("thr"),
            tenant_id=self.tenant,
            user_id=user or self.user,
            account_id=self.account.account_id,
            provider="google",
            provider_message_id=provider_message_id,
            provider_thread_id=provider_thread_id,
            message_id=message_id,
            direction="inbound",
            subject="Proposal",
            sender="carla@client.test",
            to=["owner@corp.test"],
            cc=[],
            date=date,
            preview="hello",
            labels=["INBOX"],
            attachments=[],
            contact_ids=["c1"],
            lead_ids=[],
            deal_id=None,
            raw_key="raw/x.eml",
            synced_at=NOW,
        )

    def thread(self, record: MessageRecord, previous: ThreadRecord | None = None) -> ThreadRecord:
        base = previous or ThreadRecord(
            crm_thread_id=record.crm_thread_id,
            tenant_id=self.tenant,
            user_id=record.user_id,
            subject="Proposal",
        )
        return base.model_copy(
            update={
                "message_count": base.message_count + 1,
                "version": base.version + 1,
                "last_message_at": NOW,
            }
        )


def _ref(record: MessageRecord) -> MessageRef:
    return MessageRef(
        crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id, user_id=record.user_id
    )


# ---------------------------------------------------------------- the mail store


def test_a_new_message_is_created_with_its_maps_and_thread(mail_store: Any) -> None:
    box = Mailbox()
    record = box.record("p-1", "<a@mail.test>", provider_thread_id="gt-1")
    thread = box.thread(record)
    assert mail_store.record_message(record, thread, 0) is True
    assert mail_store.find_provider_message(box.account.account_id, "p-1") == _ref(record)
    assert mail_store.find_message_id(box.tenant, box.user, "<a@mail.test>") == _ref(record)
    assert mail_store.find_provider_thread(box.account.account_id, "gt-1") == record.crm_thread_id
    assert mail_store.get_thread(box.tenant, record.crm_thread_id) == thread
    stored = mail_store.get_message(box.tenant, box.user, record.crm_message_id)
    assert stored == record.model_copy(update={"published": False})
    # nothing is found under ids that were never stored
    assert mail_store.find_provider_message(box.account.account_id, "p-2") is None
    assert mail_store.find_message_id(box.tenant, box.user, "<b@mail.test>") is None
    assert mail_store.find_provider_thread(box.account.account_id, "gt-2") is None
    assert mail_store.get_thread(box.tenant, "nothing") is None
    assert mail_store.get_message(box.tenant, box.user, "nothing") is None


@pytest.mark.rule("MAIL-7")
def test_a_second_record_of_the_same_provider_copy_returns_false_and_changes_nothing(mail_store: Any) -> None:
    box = Mailbox()
    first = box.record("p-1", "<a@mail.test>")
    assert mail_store.record_message(first, box.thread(first), 0) is True
    # a duplicate with its own (other) Message-ID and thread: the map's condition decides alone
    duplicate = box.record("p-1", "<other@mail.test>")
    assert mail_store.record_message(duplicate, box.thread(duplicate), 0) is False
    assert mail_store.find_provider_message(box.account.account_id, "p-1") == _ref(first)
    assert mail_store.find_message_id(box.tenant, box.user, "<other@mail.test>") is None
    assert mail_store.get_message(box.tenant, box.user, duplicate.crm_message_id) is None
    assert mail_store.get_thread(box.tenant, duplicate.crm_thread_id) is None


@pytest.mark.rule("MAIL-7")
def test_a_duplicate_provider_copy_returns_false_even_when_its_thread_also_conflicts(mail_store: Any) -> None:
    box = Mailbox()
    first = box.record("p-1", "<a@mail.test>")
    thread = box.thread(first)
    assert mail_store.record_message(first, thread, 0) is True
    again = first.model_copy(update={"crm_message_id": _id("m")})
    assert mail_store.record_message(again, box.thread(again, thread), 0) is False


def test_a_message_id_this_user_has_already_is_a_transient_conflict(mail_store: Any) -> None:
    box = Mailbox()
    first = box.record("p-1", "<a@mail.test>")
    assert mail_store.record_message(first, box.thread(first), 0) is True
    second = box.record("p-2", "<a@mail.test>")
    with pytest.raises(TransientError):
        mail_store.record_message(second, box.thread(second), 0)
    assert mail_store.find_provider_message(box.account.account_id, "p-2") is None  # all or nothing
    assert mail_store.get_thread(box.tenant, second.crm_thread_id) is None


def test_without_a_provider_id_an_existing_message_id_is_a_transient_conflict(mail_store: Any) -> None:
    box = Mailbox()  # the send path records before the provider has an id
    first = box.record(None, "<sent@mail.test>")
    assert mail_store.record_message(first, box.thread(first), 0) is True
    second = box.record(None, "<sent@mail.test>")
    with pytest.raises(TransientError):
        mail_store.record_message(second, box.thread(second), 0)


@pytest.mark.rule("MAIL-2")
def test_message_ids_are_looked_up_per_user(mail_store: Any) -> None:
    box = Mailbox()
    mine = box.record("p-1", "<shared@mail.test>", user="u1")
    theirs = box.record("p-2", "<shared@mail.test>", user="u2")
    assert mail_store.record_message(mine, box.thread(mine), 0) is True
    assert mail_store.find_message_id(box.tenant, "u2", "<shared@mail.test>") is None
    assert mail_store.record_message(theirs, box.thread(theirs), 0) is True  # each user has a copy
    assert mail_store.find_message_id(box.tenant, "u1", "<shared@mail.test>") == _ref(mine)
    assert mail_store.find_message_id(box.tenant, "u2", "<shared@mail.test>") == _ref(theirs)
    assert mail_store.find_message_id(box.tenant, "u3", "<shared@mail.test>") is None
    assert mail_store.find_message_id(_id("t"), "u1", "<shared@mail.test>") is None


def test_long_ids_are_bounded_and_still_found(mail_store: Any) -> None:
    box = Mailbox()
    long_mid = "<" + "x" * 3000 + "@mail.test>"
    long_pid = "p" * 3000
    record = box.record(long_pid, long_mid, provider_thread_id="t" * 3000)
    assert mail_store.record_message(record, box.thread(record), 0) is True
    assert mail_store.find_message_id(box.tenant, box.user, long_mid) == _ref(record)
    assert mail_store.find_provider_message(box.account.account_id, long_pid) == _ref(record)
    assert mail_store.find_provider_thread(box.account.account_id, "t" * 3000) == record.crm_thread_id
    assert mail_store.find_message_id(box.tenant, box.user, long_mid[:-2] + "y>") is None


def test_the_in_memory_id_key_is_the_dynamodb_one() -> None:
    from crmsync.stores.mail import MAX_ID_KEY_BYTES, id_key

    assert memory.MAX_ID_KEY_BYTES == MAX_ID_KEY_BYTES
    for value in ["<a@b>", "x" * 400, "x" * 401, "é" * 200, "é" * 201, ""]:
        assert memory.id_key(value) == id_key(value)


def test_a_thread_that_moved_on_is_a_transient_conflict(mail_store: Any) -> None:
    box = Mailbox()
    first = box.record("p-1", "<a@mail.test>")
    thread1 = box.thread(first)
    assert mail_store.record_message(first, thread1, 0) is True
    second = box.record("p-2", "<b@mail.test>", thread_id=first.crm_thread_id)
    thread2 = box.thread(second, thread1)
    assert mail_store.record_message(second, thread2, thread1.version) is True
    # a writer that read version 1 (before the second message) loses, and writes nothing
    late = box.record("p-3", "<c@mail.test>", thread_id=first.crm_thread_id)
    with pytest.raises(TransientError):
        mail_store.record_message(late, box.thread(late, thread1), thread1.version)
    assert mail_store.find_provider_message(box.account.account_id, "p-3") is None
    assert mail_store.find_message_id(box.tenant, box.user, "<c@mail.test>") is None
    assert mail_store.get_thread(box.tenant, first.crm_thread_id) == thread2
    # a writer that takes the thread for new when another created it meanwhile loses too
    fresh = box.record("p-4", "<d@mail.test>", thread_id=first.crm_thread_id)
    with pytest.raises(TransientError):
        mail_store.record_message(fresh, box.thread(fresh), 0)
    # and so does one that expects a version of a thread that does not exist
    orphan = box.record("p-5", "<e@mail.test>")
    with pytest.raises(TransientError):
        mail_store.record_message(orphan, box.thread(orphan), 3)
    assert mail_store.get_thread(box.tenant, orphan.crm_thread_id) is None


def test_an_existing_message_is_a_transient_conflict(mail_store: Any) -> None:
    box = Mailbox()
    first = box.record("p-1", None)
    assert mail_store.record_message(first, box.thread(first), 0) is True
    same = first.model_copy(update={"provider_message_id": "p-2", "crm_thread_id": _id("thr")})
    with pytest.raises(TransientError):
        mail_store.record_message(same, box.thread(same), 0)
    assert mail_store.find_provider_message(box.account.account_id, "p-2") is None


@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("MAIL-10")
def test_published_removed_and_delivery_marks(mail_store: Any) -> None:
    box = Mailbox()
    record = box.record(None, "<sent@mail.test>")
    assert mail_store.record_message(record, box.thread(record), 0) is True
    mail_store.mark_published(record)
    assert mail_store.get_message(box.tenant, box.user, record.crm_message_id).published is True
    marked = mail_store.mark_removed(record, True)
    assert marked.removed_in_mailbox is True
    stored = mail_store.get_message(box.tenant, box.user, record.crm_message_id)
    assert (stored.removed_in_mailbox, stored.published) == (True, True)
    sent = mail_store.set_delivery(record, "sent", None, provider_message_id="p-9", provider_thread_id="gt-9")
    assert (sent.delivery, sent.provider_message_id, sent.provider_thread_id) == ("sent", "p-9", "gt-9")
    stored = mail_store.get_message(box.tenant, box.user, record.crm_message_id)
    assert (stored.delivery, stored.delivery_error, stored.provider_message_id) == ("sent", None, "p-9")
    assert (stored.published, stored.removed_in_mailbox) == (True, True)  # earlier marks stay
    failed = mail_store.set_delivery(stored, "failed", "refused")
    assert (failed.delivery, failed.delivery_error, failed.provider_message_id) == (
        "failed",
        "refused",
        "p-9",
    )
    stored = mail_store.get_message(box.tenant, box.user, record.crm_message_id)
    assert (stored.delivery, stored.delivery_error, stored.provider_message_id) == (
        "failed",
        "refused",
        "p-9",
    )
    assert mail_store.mark_removed(stored, False).removed_in_mailbox is False
    assert mail_store.get_message(box.tenant, box.user, record.crm_message_id).removed_in_mailbox is False


def test_marks_of_a_message_that_is_not_there_fail(mail_store: Any) -> None:
    box = Mailbox()
    missing = box.record("p-1", "<a@mail.test>")
    for mark in (
        lambda: mail_store.mark_published(missing),
        lambda: mail_store.mark_removed(missing, True),
        lambda: mail_store.set_delivery(missing, "sent", None),
    ):
        with pytest.raises((ClientError, memory.ConditionFailed)):
            mark()
    assert mail_store.get_message(box.tenant, box.user, missing.crm_message_id) is None


def test_a_skip_is_told_once(mail_store: Any) -> None:
    box = Mailbox()
    account = box.account.account_id
    assert mail_store.record_skip(account, "p-1", "blocked: x") is True
    # not told yet (the worker died before the event): the redelivery tells it
    assert mail_store.record_skip(account, "p-1", "blocked: x") is True
    mail_store.mark_skip_told(account, "p-1")
    assert mail_store.record_skip(account, "p-1", "blocked: x") is False
    assert mail_store.record_skip(account, "p-1", "other reason") is False
    assert mail_store.record_skip(account, "p-2", "blocked: x") is True
    assert mail_store.record_skip(_id("acc"), "p-1", "blocked: x") is True
    assert mail_store.record_skip(account, "q" * 3000, "x" * 5000) is True
    mail_store.mark_skip_told(account, "q" * 3000)
    assert mail_store.record_skip(account, "q" * 3000, "x") is False


@pytest.mark.rule("MAIL-2")
def test_attach_copy_maps_another_provider_copy_to_the_message(mail_store: Any) -> None:
    box = Mailbox()
    record = box.record(None, "<sent@mail.test>")
    assert mail_store.record_message(record, box.thread(record), 0) is True
    copy = ProviderMessage(provider_message_id="p-sent", provider_thread_id="gt-sent", raw=b"")
    mail_store.attach_copy(box.account, copy, _ref(record))
    assert mail_store.find_provider_message(box.account.account_id, "p-sent") == _ref(record)
    assert mail_store.find_provider_thread(box.account.account_id, "gt-sent") == record.crm_thread_id
    # the copy now mapped, recording it again is a duplicate
    again = box.record("p-sent", "<other@mail.test>")
    assert mail_store.record_message(again, box.thread(again), 0) is False


@pytest.mark.rule("MAIL-3")
def test_thread_messages_in_date_order_within_the_tenant(mail_store: Any) -> None:
    box = Mailbox()
    first = box.record("p-1", "<a@mail.test>", date=NOW)
    thread = box.thread(first)
    assert mail_store.record_message(first, thread, 0) is True
    later = box.record("p-2", "<b@mail.test>", thread_id=first.crm_thread_id, date=NOW + timedelta(hours=1))
    thread2 = box.thread(later, thread)
    assert mail_store.record_message(later, thread2, 1) is True
    earlier = box.record("p-3", "<c@mail.test>", thread_id=first.crm_thread_id, date=NOW - timedelta(hours=1))
    assert mail_store.record_message(earlier, box.thread(earlier, thread2), 2) is True
    mail_store.mark_published(later)
    found = mail_store.thread_messages(box.tenant, first.crm_thread_id)
    assert [m.crm_message_id for m in found] == [
        earlier.crm_message_id,
        first.crm_message_id,
        later.crm_message_id,
    ]
    assert [m.published for m in found] == [False, False, True]
    assert mail_store.thread_messages(_id("t"), first.crm_thread_id) == []
    assert mail_store.thread_messages(box.tenant, _id("thr")) == []


def _stored(mail_store: Any, box: Mailbox, count: int, **kwargs: Any) -> list[MessageRecord]:
    records = []
    for n in range(count):
        record = box.record(f"p-{n}", f"<m{n}@mail.test>", provider_thread_id=f"gt-{n}", **kwargs)
        assert mail_store.record_message(record, box.thread(record), 0) is True
        records.append(record)
    return records


def test_batched_reads_answer_as_the_single_reads_do(mail_store: Any) -> None:
    box = Mailbox()
    records = _stored(mail_store, box, 3)
    account = box.account.account_id
    provider_ids = ["p-0", "p-2", "p-missing", "p-0"]  # one not there, one asked twice
    assert mail_store.find_provider_messages(account, provider_ids) == {
        "p-0": _ref(records[0]),
        "p-2": _ref(records[2]),
    }
    assert mail_store.find_provider_threads(account, ["gt-1", "gt-missing"]) == {
        "gt-1": records[1].crm_thread_id
    }
    assert mail_store.find_message_ids(box.tenant, box.user, ["<m0@mail.test>", "<none@mail.test>"]) == {
        "<m0@mail.test>": _ref(records[0])
    }
    assert mail_store.find_message_ids(box.tenant, "u2", ["<m0@mail.test>"]) == {}  # per user
    assert mail_store.find_message_ids(_id("t"), box.user, ["<m0@mail.test>"]) == {}
    threads = mail_store.get_threads(box.tenant, [records[0].crm_thread_id, "nothing"])
    assert threads == {records[0].crm_thread_id: mail_store.get_thread(box.tenant, records[0].crm_thread_id)}
    mail_store.mark_published(records[1])
    keys = [(box.user, r.crm_message_id) for r in records] + [
        (box.user, "nothing"),
        ("u2", records[0].crm_message_id),
    ]
    found = mail_store.get_messages(box.tenant, keys)
    assert found == {
        (box.user, r.crm_message_id): mail_store.get_message(box.tenant, box.user, r.crm_message_id)
        for r in records
    }
    assert [found[(box.user, r.crm_message_id)].published for r in records] == [False, True, False]
    for read in (
        lambda: mail_store.find_provider_messages(account, []),
        lambda: mail_store.find_provider_threads(account, []),
        lambda: mail_store.find_message_ids(box.tenant, box.user, []),
        lambda: mail_store.get_threads(box.tenant, []),
        lambda: mail_store.get_messages(box.tenant, []),
    ):
        assert read() == {}


@pytest.mark.rule("MAIL-2")
def test_batched_message_id_reads_find_entries_from_before_per_user_keys(stack: LocalStack) -> None:
    """DynamoDB only: entries from before per-user keys were never written by the in-memory store."""
    from crmsync.stores.mail import DynamoMailStore, _mid_pk

    mail_store = DynamoMailStore(stack.tables["ThreadsTable"], stack.tables["MessagesTable"])

    box = Mailbox()
    record = box.record("p-1", "<old@mail.test>")
    old = {"pk": _mid_pk(box.tenant, "<old@mail.test>"), "sk": "MID", **_ref(record).model_dump()}
    mail_store._threads.put_item(Item=old)
    theirs = {**old, "pk": _mid_pk(box.tenant, "<theirs@mail.test>"), "user_id": "u2"}
    mail_store._threads.put_item(Item=theirs)
    found = mail_store.find_message_ids(box.tenant, box.user, ["<old@mail.test>", "<theirs@mail.test>"])
    assert found == {"<old@mail.test>": _ref(record)}
    assert mail_store.find_message_id(box.tenant, box.user, "<old@mail.test>") == _ref(record)
    assert mail_store.find_message_id(box.tenant, box.user, "<theirs@mail.test>") is None


def test_batched_reads_of_more_than_a_hundred_keys_and_long_ids(mail_store: Any) -> None:
    box = Mailbox()
    long_pid, long_mid = "p" * 3000, "<" + "x" * 3000 + "@mail.test>"
    record = box.record(long_pid, long_mid, provider_thread_id="t" * 3000)
    assert mail_store.record_message(record, box.thread(record), 0) is True
    records = _stored(mail_store, box, 120)  # past BatchGetItem's 100 keys per call
    account = box.account.account_id
    found = mail_store.find_provider_messages(account, [long_pid, *(f"p-{n}" for n in range(120))])
    assert found == {long_pid: _ref(record), **{f"p-{n}": _ref(r) for n, r in enumerate(records)}}
    mids = [long_mid, *(f"<m{n}@mail.test>" for n in range(120))]
    assert mail_store.find_message_ids(box.tenant, box.user, mids) == dict(
        zip(mids, [_ref(record), *map(_ref, records)], strict=True)
    )
    assert mail_store.find_provider_threads(account, ["t" * 3000]) == {"t" * 3000: record.crm_thread_id}
    threads = mail_store.get_threads(box.tenant, [r.crm_thread_id for r in records])
    assert sorted(threads) == sorted(r.crm_thread_id for r in records)
    messages = mail_store.get_messages(box.tenant, [(box.user, r.crm_message_id) for r in records])
    assert len(messages) == 120


@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("MAIL-10")
def test_marks_in_batches(mail_store: Any) -> None:
    box = Mailbox()
    records = _stored(mail_store, box, 130)  # past TransactWriteItems' 100 actions per call
    mail_store.mark_published(*records, records[0])  # the same message twice is marked once
    found = mail_store.get_messages(box.tenant, [(box.user, r.crm_message_id) for r in records])
    assert all(m.published and not m.removed_in_mailbox for m in found.values()) and len(found) == 130
    marked = mail_store.mark_removed(records[0], True, *records[1:])
    assert marked.removed_in_mailbox is True and marked.crm_message_id == records[0].crm_message_id
    found = mail_store.get_messages(box.tenant, [(box.user, r.crm_message_id) for r in records])
    assert all(m.published and m.removed_in_mailbox for m in found.values())
    mail_store.mark_removed(records[5], False, records[6])
    assert [
        mail_store.get_message(box.tenant, box.user, r.crm_message_id).removed_in_mailbox
        for r in records[4:8]
    ] == [True, False, False, True]
    mail_store.mark_published()  # nothing to mark: nothing asked


@pytest.mark.rule("MAIL-7")
def test_unpublished_lists_the_accounts_messages_not_marked_published(mail_store: Any) -> None:
    box = Mailbox()
    records = _stored(mail_store, box, 5)
    other = Mailbox()  # another account of another user: never listed here
    _stored(mail_store, other, 1)
    mail_store.mark_published(records[0], records[2])
    found = mail_store.unpublished(box.tenant, box.user, box.account.account_id)
    assert sorted(r.crm_message_id for r in found) == sorted(
        r.crm_message_id for r in (records[1], records[3], records[4])
    )
    assert all(not r.published for r in found)
    assert mail_store.unpublished(box.tenant, box.user, "another-account") == []
    mail_store.mark_published(*records)
    assert mail_store.unpublished(box.tenant, box.user, box.account.account_id) == []


def test_a_batch_of_marks_naming_a_message_that_is_not_there_fails_whole(mail_store: Any) -> None:
    box = Mailbox()
    records = _stored(mail_store, box, 3)
    missing = box.record("p-9", "<nine@mail.test>")
    with pytest.raises((ClientError, memory.ConditionFailed)):
        mail_store.mark_published(records[0], missing, records[1])
    with pytest.raises((ClientError, memory.ConditionFailed)):
        mail_store.mark_removed(records[2], True, missing)
    found = mail_store.get_messages(box.tenant, [(box.user, r.crm_message_id) for r in records])
    assert not any(m.published or m.removed_in_mailbox for m in found.values())  # all or nothing
    assert mail_store.get_message(box.tenant, box.user, missing.crm_message_id) is None


def test_skips_are_told_in_batches(mail_store: Any) -> None:
    box = Mailbox()
    account = box.account.account_id
    ids = [f"p-{n}" for n in range(130)] + ["q" * 3000]
    assert all(mail_store.record_skip(account, i, "blocked: x") for i in ids)
    mail_store.mark_skip_told(account, *ids[:-1], ids[0])
    assert not any(mail_store.record_skip(account, i, "blocked: x") for i in ids[:-1])
    assert mail_store.record_skip(account, ids[-1], "blocked: x") is True  # not among those told
    mail_store.mark_skip_told(account, ids[-1])
    assert mail_store.record_skip(account, ids[-1], "blocked: x") is False
    mail_store.mark_skip_told(account)  # nothing to tell


# ---------------------------------------------------------------- cursors


@pytest.mark.rule("SYNC-1")
def test_a_cursor_is_created_only_where_there_is_none(cursor_store: Any) -> None:
    account = _id("acc")
    assert cursor_store.get(account, "mail") is None
    assert cursor_store.advance(account, "mail", "100", expected="50") is False  # nothing to move
    assert cursor_store.get(account, "mail") is None
    assert cursor_store.advance(account, "mail", "100", expected=None) is True
    assert cursor_store.advance(account, "mail", "200", expected=None) is False  # someone made it first
    assert cursor_store.get(account, "mail") == "100"


@pytest.mark.rule("SYNC-1")
def test_a_cursor_moves_only_from_the_value_it_was_read_as(cursor_store: Any) -> None:
    account = _id("acc")
    cursor_store.set(account, "mail", "100")
    assert cursor_store.advance(account, "mail", "150", expected="100") is True
    assert cursor_store.get(account, "mail") == "150"
    # a run that read 100 finishes after: its write loses and the newer value stands
    assert cursor_store.advance(account, "mail", "120", expected="100") is False
    assert cursor_store.get(account, "mail") == "150"
    assert cursor_store.get(account, "calendar") is None  # names are separate
    assert cursor_store.get(_id("acc"), "mail") is None


def test_set_replaces_whatever_is_there(cursor_store: Any) -> None:
    account = _id("acc")
    cursor_store.set(account, "mail", "delta-a")
    cursor_store.set(account, "mail", "delta-b")  # a resync's fresh baseline
    assert cursor_store.get(account, "mail") == "delta-b"
    assert cursor_store.advance(account, "mail", "delta-c", expected="delta-a") is False
    assert cursor_store.advance(account, "mail", "delta-c", expected="delta-b") is True
    assert cursor_store.get(account, "mail") == "delta-c"


# ---------------------------------------------------------------- resync progress


def _progress(account: str, items: int = 0) -> ResyncProgress:
    return ResyncProgress(
        account_id=account,
        kind="mail_resync",
        status="running",
        pages=items,
        items=items,
        started_at=NOW,
        updated_at=NOW,
    )


@pytest.mark.rule("SYNC-6")
def test_progress_writes_name_the_version_they_read(state_store: Any) -> None:
    account = _id("acc")
    assert state_store.get_progress(account, "mail_resync") is None
    assert state_store.put_progress(_progress(account), expected_version=3) is False  # no such version
    assert state_store.put_progress(_progress(account), expected_version=None) is True
    stored = state_store.get_progress(account, "mail_resync")
    assert (stored.version, stored.items) == (1, 0)
    assert state_store.put_progress(_progress(account, 9), expected_version=None) is False  # exists
    assert state_store.put_progress(_progress(account, 9), expected_version=0) is False
    assert state_store.put_progress(_progress(account, 5), expected_version=1) is True
    assert state_store.put_progress(_progress(account, 6), expected_version=1) is False  # lost race
    stored = state_store.get_progress(account, "mail_resync")
    assert (stored.version, stored.items) == (2, 5)
    assert state_store.get_progress(account, "mail_import") is None


def test_version_zero_creates_a_record_where_there_is_none(state_store: Any) -> None:
    account = _id("acc")
    assert state_store.put_progress(_progress(account, 2), expected_version=0) is True
    assert state_store.get_progress(account, "mail_resync").version == 1


# ---------------------------------------------------------------- directory


def _entry(kind: str, entry_id: str, version: int, addresses: list[str], **data: Any) -> Any:
    from crmsync.directory import DirectoryRecord

    return DirectoryRecord(
        kind=kind,
        id=entry_id,
        data=data,
        addresses=addresses,
        version=version,
        updated_at=NOW,  # type: ignore[arg-type]
    )


@pytest.mark.rule("LINK-1")
def test_directory_entries_change_only_from_the_version_read(directory_store: Any) -> None:
    from crmsync.directory import ConcurrentUpdate

    tenant = _id("t")
    first = _entry("contacts", "c1", 1, ["carla@client.test"])
    directory_store.put(tenant, first, None, [])
    with pytest.raises(ConcurrentUpdate):
        directory_store.put(tenant, first, None, [])
    second = _entry("contacts", "c1", 2, ["carla@new.test"])
    directory_store.put(tenant, second, first, [])
    with pytest.raises(ConcurrentUpdate):
        directory_store.put(tenant, _entry("contacts", "c1", 2, []), first, [])
    assert directory_store.get(tenant, "contacts", "c1") == second
    assert directory_store.owners_of(tenant, "carla@client.test") == []
    assert directory_store.owners_of(tenant, "carla@new.test") == [("contacts", "c1")]
    with pytest.raises(ConcurrentUpdate):
        directory_store.delete(tenant, first, [])
    directory_store.delete(tenant, second, [])
    assert directory_store.get(tenant, "contacts", "c1") is None
    assert directory_store.owners_of(tenant, "carla@new.test") == []


@pytest.mark.rule("LINK-2")
def test_directory_addresses_and_deals(directory_store: Any) -> None:
    tenant = _id("t")
    directory_store.put(tenant, _entry("users", "u1", 1, ["a@corp.test"]), None, [])
    directory_store.put(tenant, _entry("contacts", "c1", 1, ["a@corp.test", "c@client.test"]), None, [])
    deal = _entry("deals", "d1", 1, [], contact_ids=["c1"])
    directory_store.put(tenant, deal, None, ["c1"])
    directory_store.put(tenant, _entry("deals", "d0", 1, [], contact_ids=["c1"]), None, ["c1"])
    assert directory_store.owners_of(tenant, "a@corp.test") == [("contacts", "c1"), ("users", "u1")]
    assert directory_store.deals_of(tenant, [("contacts", "c1")]) == ["d0", "d1"]
    moved = _entry("deals", "d1", 2, [], contact_ids=["c2"])
    directory_store.put(tenant, moved, deal, ["c2"])
    assert directory_store.deals_of(tenant, [("contacts", "c1")]) == ["d0"]
    assert directory_store.deals_of(tenant, [("contacts", "c2")]) == ["d1"]
    found = directory_store.get_many(tenant, [("users", "u1"), ("deals", "d1"), ("leads", "none")])
    assert sorted((r.kind, r.id, r.version) for r in found) == [("deals", "d1", 2), ("users", "u1", 1)]


def test_directory_settings_and_blocklists(directory_store: Any) -> None:
    from crmsync.directory import Blocklist, TenantSettings

    tenant = _id("t")
    assert directory_store.get_settings(tenant) is None
    assert directory_store.get_blocklist(tenant, "u1") is None
    directory_store.put_settings(tenant, TenantSettings(plan="power"))
    directory_store.put_blocklist(tenant, "u1", Blocklist(entries=["@spam.test"]))
    assert directory_store.get_settings(tenant) == TenantSettings(plan="power")
    assert directory_store.get_blocklist(tenant, "u1") == Blocklist(entries=["@spam.test"])
    assert directory_store.get_blocklist(tenant, "u2") is None


# ---------------------------------------------------------------- the in-memory extras


def test_the_in_memory_publisher_and_raw_store_keep_what_they_were_given() -> None:
    from crmsync.events import MessageSkipped

    publisher = memory.MemoryEventPublisher()
    event = MessageSkipped(
        tenant_id="t", user_id="u", account_id="a", provider_message_id="p", reason="x", detail="x: y"
    )
    publisher.publish([event])
    publisher.publish([])
    assert publisher.events == [event]
    raw = memory.MemoryRawStore()
    raw.put("raw/a.eml", b"one")
    raw.put("raw/a.eml", b"two")  # a retry rewrites the same object
    assert (raw.get("raw/a.eml"), raw.keys()) == (b"two", ["raw/a.eml"])

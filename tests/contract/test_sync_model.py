"""The mail sync against a model, at scale: Hypothesis plays random histories of a scripted
mailbox through the real engine (MailSync) and loop (CursorLoop) over the in-memory stores
(which pass the same contract as the DynamoDB ones, tests/contract/test_stores.py).

A history interleaves arrivals (mail from a contact, the user's replies, the user's own mail,
mail from strangers and colleagues), removals in the mailbox, notifications that come twice
or never (a sync runs, or does not), a crash before or after any write of a sync (the next
sync is the redelivery), and cursors the provider expires or the service loses (the resync
path: a full re-read, then a fresh cursor). After a last quiet sync:
- every message the rules sync is in the CRM exactly once, published, and nothing else is;
- every synced message removed from the mailbox is marked `removed_in_mailbox`, unless a
  resync jumped over its removal (a resync reads what is there, not what went);
  (KNOWN_GAP: and so is the event of a message stored, then crashed before its event went out,
  then deleted in the mailbox before the redelivery, if a resync jumped over the deletion);
- the stored cursor never went back, and covers the whole mailbox;
- nothing raised but the injected crashes.

Two provider kinds: Gmail-like (a numbered history, removals as events, the newest history id
as the cursor) and Outlook-like (opaque delta links: only "not the same" is known about two
cursors, and a delta reports each changed message once, as it is now).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crmsync.accounts.models import Account, AccountSettings
from crmsync.auth import Principal
from crmsync.directory import ContactEntry, DealEntry, Directory, UserEntry
from crmsync.events import MessageRemovedInMailbox, MessageSynced
from crmsync.mail.engine import MailSync
from crmsync.mail.models import ProviderMessage, RemovalKind
from crmsync.stores import memory
from crmsync.sync.core import ChangePage, CursorExpired, CursorLoop, Removal

TENANT = "t-model"
OWNER = "owner@corp.test"
CONTACT = "carla@client.test"
SENDERS = {"stranger": "sam@elsewhere.test", "colleague": "colleague@corp.test"}
NOW = datetime(2026, 11, 30, 5, 0, tzinfo=UTC)
KINDS = ["contact", "reply", "own", "stranger", "colleague"]


def _directory() -> Directory:
    """The World of tests/integration/test_mail_engine.py, on the in-memory directory store."""
    directory = Directory(memory.MemoryDirectoryStore(), memory.MemoryEventPublisher())
    admin = Principal(tenant_id=TENANT, user_id="admin", role="admin")
    directory.upsert(admin, "users", "u1", UserEntry(name="Owner", email=OWNER))
    directory.upsert(admin, "users", "u2", UserEntry(name="Colleague", email=SENDERS["colleague"]))
    directory.upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=[CONTACT]))
    directory.upsert(admin, "deals", "d1", DealEntry(name="Deal", contact_ids=["c1"], updated_at=NOW))
    return directory


DIRECTORY = _directory()  # only read by the sync: shared by every example


class Crash(Exception):
    """The injected crash: the worker died at a write (before it, or after it returned)."""


@dataclass
class Crasher:
    """Counts the writes of one sync run and crashes at the n-th."""

    at: int | None = None
    after: bool = False
    writes: int = 0

    def write(self, call: Callable[[], Any]) -> Any:
        self.writes += 1
        if self.writes == self.at and not self.after:
            raise Crash(f"before write {self.writes}")
        result = call()
        if self.writes == self.at:
            raise Crash(f"after write {self.writes}")
        return result


class Crashing:
    """A store whose writes go through the crasher; reads pass straight through."""

    def __init__(self, inner: Any, writes: set[str], crasher: Crasher) -> None:
        self._inner = inner
        self._writes = writes
        self._crasher = crasher

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if name not in self._writes:
            return attribute
        return lambda *args, **kwargs: self._crasher.write(lambda: attribute(*args, **kwargs))


@dataclass
class Mail:
    """One message of the scripted mailbox."""

    pmid: str
    thread: str
    kind: str
    parent: Mail | None
    message_id: str
    raw: bytes
    added: int
    removed: int | None = None
    how: RemovalKind = "deleted"


def _raw(sender: str, to: str, subject: str, message_id: str, parent: Mail | None) -> bytes:
    lines = [
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
        "Date: Mon, 30 Nov 2026 05:00:00 +0000",
        f"Message-ID: {message_id}",
    ]
    if parent is not None:
        lines += [f"In-Reply-To: {parent.message_id}", f"References: {parent.message_id}"]
    lines += [
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"{subject}, said {sender}",
        "",
    ]
    return "\r\n".join(lines).encode()


@dataclass
class Mailbox:
    """The provider's side: the mailbox as a history of changes at increasing positions."""

    page_size: int
    position: int = 0
    mails: list[Mail] = field(default_factory=list)
    events: list[tuple[int, str, Mail]] = field(default_factory=list)  # (position, add|remove, mail)
    ids: itertools.count[int] = field(default_factory=itertools.count)

    def arrive(self, kind: str, pick: int) -> None:
        n = next(self.ids)
        roots = [m for m in self.mails if m.kind == "contact"]
        parent = roots[pick % len(roots)] if kind == "reply" and roots else None
        if kind == "reply" and parent is None:
            kind = "own"
        sender, to = {
            "contact": (CONTACT, OWNER),
            "reply": (OWNER, CONTACT),
            "own": (OWNER, CONTACT),
        }.get(kind, (SENDERS.get(kind, ""), OWNER))
        message_id = f"<m{n}@mail.test>"
        self.position += 1
        mail = Mail(
            pmid=f"p{n}",
            thread=parent.thread if parent else f"thr{n}",
            kind=kind,
            parent=parent,
            message_id=message_id,
            raw=_raw(sender, to, f"Mail {n}", message_id, parent),
            added=self.position,
        )
        self.mails.append(mail)
        self.events.append((self.position, "add", mail))

    def remove(self, pick: int, how: RemovalKind) -> None:
        present = self.present()
        if not present:
            return
        mail = present[pick % len(present)]
        self.position += 1
        mail.removed, mail.how = self.position, how
        self.events.append((self.position, "remove", mail))

    def present(self) -> list[Mail]:
        return [m for m in self.mails if m.removed is None]

    @staticmethod
    def message(mail: Mail) -> ProviderMessage:
        return ProviderMessage(
            provider_message_id=mail.pmid, provider_thread_id=mail.thread, labels=["INBOX"], raw=mail.raw
        )

    def pages(self, items: list[Any], page_token: str | None) -> tuple[list[Any], str | None]:
        start = int(page_token or 0)
        following = start + self.page_size
        return items[start:following], str(following) if following < len(items) else None


class GmailLike:
    """history.list: the changes after a history id, as events; the mailbox's newest history id
    as the cursor. History older than the oldest kept history id is gone (a 404)."""

    kind = "gmail"

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.oldest = 0

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[ProviderMessage]:
        if int(cursor) < self.oldest:
            raise CursorExpired("history id too old")
        events = [e for e in self.mailbox.events if e[0] > int(cursor)]
        chunk, following = self.mailbox.pages(events, page_token)
        return ChangePage(
            # an added message already deleted again cannot be fetched: the source leaves it out
            items=[Mailbox.message(m) for _, what, m in chunk if what == "add" and m.removed is None],
            removed=[Removal(item_id=m.pmid, how=m.how) for _, what, m in chunk if what == "remove"],
            next_page=following,
            cursor=str(self.mailbox.position),
        )

    def is_newer(self, candidate: str, current: str) -> bool:
        return int(candidate) > int(current)

    def fresh(self) -> str:
        return str(self.mailbox.position)

    def expire(self) -> None:
        self.oldest = self.mailbox.position

    def position_of(self, cursor: str) -> int:
        return int(cursor)


class OutlookLike:
    """Graph delta: opaque delta links; a delta reports each message changed since, once, as it
    is now (present, or @removed); the last page carries a new delta link."""

    kind = "outlook"

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.links: dict[str, int] = {}
        self.valid: set[str] = set()
        self.tokens = itertools.count()

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[ProviderMessage]:
        if cursor not in self.valid:
            raise CursorExpired("syncStateNotFound")
        since = self.links[cursor]
        changed = sorted(
            (m for m in self.mailbox.mails if max(m.added, m.removed or 0) > since),
            key=lambda m: max(m.added, m.removed or 0),
        )
        chunk, following = self.mailbox.pages(changed, page_token)
        return ChangePage(
            items=[Mailbox.message(m) for m in chunk if m.removed is None],
            removed=[Removal(item_id=m.pmid, how=m.how) for m in chunk if m.removed is not None],
            next_page=following,
            cursor=cursor if following else self.fresh(),
        )

    def is_newer(self, candidate: str, current: str) -> bool:
        return candidate != current

    def fresh(self) -> str:
        token = f"delta-{next(self.tokens)}"
        self.links[token] = self.mailbox.position
        self.valid.add(token)
        return token

    def expire(self) -> None:
        self.valid.clear()

    def position_of(self, cursor: str) -> int:
        return self.links[cursor]


class RecordingCursors:
    """The cursor store, remembering every value written (to check it never goes back)."""

    def __init__(self, inner: memory.MemoryCursorStore) -> None:
        self.inner = inner
        self.written: list[str] = []

    def get(self, account_id: str, name: str) -> str | None:
        return self.inner.get(account_id, name)

    def set(self, account_id: str, name: str, value: str) -> None:
        self.inner.set(account_id, name, value)
        self.written.append(value)

    def advance(self, account_id: str, name: str, new: str, expected: str | None) -> bool:
        moved = self.inner.advance(account_id, name, new, expected)
        if moved:
            self.written.append(new)
        return moved


class Run:
    """One history: the mailbox, the source, the stores, the engine and the loop."""

    def __init__(self, provider: str, page_size: int) -> None:
        self.mailbox = Mailbox(page_size)
        self.source: GmailLike | OutlookLike = (GmailLike if provider == "gmail" else OutlookLike)(
            self.mailbox
        )
        self.account = Account(
            account_id="acc-model",
            tenant_id=TENANT,
            user_id="u1",
            provider="google" if provider == "gmail" else "microsoft",
            purpose="both",
            address=OWNER,
            status="connected",
            settings=AccountSettings(),
            connected_at=NOW,
            updated_at=NOW,
        )
        self.crasher = Crasher()
        self.store = memory.MemoryMailStore()
        self.publisher = memory.MemoryEventPublisher()
        self.cursor_store = memory.MemoryCursorStore()
        self.cursors = RecordingCursors(self.cursor_store)
        mail_writes = {
            "record_message",
            "attach_copy",
            "mark_published",
            "mark_removed",
            "record_skip",
            "mark_skip_told",
            "set_delivery",
        }
        self.engine = MailSync(
            Crashing(self.store, mail_writes, self.crasher),
            Crashing(memory.MemoryRawStore(), {"put"}, self.crasher),
            DIRECTORY,
            Crashing(self.publisher, {"publish"}, self.crasher),
        )
        self.loop = CursorLoop(
            self.engine, Crashing(self.cursors, {"advance", "set"}, self.crasher), self.resync, "mail"
        )
        self.excused: set[str] = set()  # removals a resync jumped over
        self.crashes = 0
        self.resyncs = 0

    def resync(self, account: Account, reason: str) -> None:
        """SYNC-3 as the state machine does it: every message there is, then a fresh cursor."""
        self.resyncs += 1
        for mail in self.mailbox.present():
            self.engine.ingest(account, Mailbox.message(mail))
        self.engine.settle(account)  # as ImportPages does after the last page
        for mail in self.mailbox.mails:  # the fresh cursor is past these removals: they are never read
            if mail.removed is not None and not self._marked(mail):
                self.excused.add(mail.pmid)
        self.crasher.write(lambda: self.cursors.set(account.account_id, "mail", self.source.fresh()))

    def _marked(self, mail: Mail) -> bool:
        ref = self.store.find_provider_message(self.account.account_id, mail.pmid)
        record = self.store.get_message(TENANT, "u1", ref.crm_message_id) if ref else None
        return record is not None and record.removed_in_mailbox

    def sync(self, crash: tuple[int, bool] | None) -> None:
        self.crasher.at, self.crasher.after = crash if crash else (None, False)
        self.crasher.writes = 0
        try:
            self.loop.run(self.account, self.source)
        except Crash:
            self.crashes += 1
        finally:
            self.crasher.at = None

    def play(self, action: tuple[Any, ...]) -> None:
        match action:
            case ("arrive", kind, pick):
                self.mailbox.arrive(kind, pick)
            case ("remove", pick, how):
                self.mailbox.remove(pick, how)
            case ("sync", crash):
                self.sync(crash)
            case ("expire",):
                self.source.expire()
            case ("lose",):
                self.cursor_store.forget(self.account.account_id, "mail")

    def settle(self) -> None:
        """The last, quiet sync (no crash): one run, and one more if it had to resync."""
        for _ in range(3):
            result = self.loop.run(self.account, self.source)
            if result.status == "synced":
                return
        raise AssertionError(f"no quiet sync after three runs: {result}")

    def check(self) -> None:
        records = self.store.messages(TENANT, "u1")
        by_message_id: dict[str | None, list[Any]] = {}
        for record in records:
            by_message_id.setdefault(record.message_id, []).append(record)
        assert all(len(copies) == 1 for copies in by_message_id.values()), "a message is in the CRM twice"
        held = {message_id: copies[0] for message_id, copies in by_message_id.items()}
        events = self.publisher.events
        synced_events = {e.message_id for e in events if isinstance(e, MessageSynced)}
        removed_events = {e.message_id for e in events if isinstance(e, MessageRemovedInMailbox)}
        skipped = self.store.skipped(self.account.account_id)
        for mail in self.mailbox.mails:
            record = held.pop(mail.message_id, None)
            if mail.kind == "contact":  # MAIL-4: a contact's mail starts a CRM thread
                expected = mail.removed is None or record is not None
            elif mail.kind == "reply":  # MAIL-3: the user's reply syncs if the thread does
                expected = mail.parent is not None and mail.parent.message_id in {
                    r.message_id for r in self.store.messages(TENANT, "u1")
                }
            else:  # MAIL-1, MAIL-5: the user's own new thread, strangers, colleagues
                expected = False
            if mail.removed is not None and mail.kind in ("contact", "reply"):
                expected = expected and record is not None  # removed before any sync read it: not there
            assert (record is not None) == expected, (
                f"{mail.kind} {mail.pmid}: in the CRM is {record is not None}"
            )
            if record is None:
                if mail.removed is None:  # MAIL-11: what is there is synced or skipped, never missing
                    assert mail.pmid in skipped, f"{mail.kind} {mail.pmid} neither synced nor skipped"
                continue
            assert record.provider_message_id == mail.pmid
            if mail.pmid not in self.excused:  # see KNOWN_GAP
                assert record.published and record.crm_message_id in synced_events, (
                    f"{mail.pmid} not published"
                )
            if mail.removed is None:
                assert not record.removed_in_mailbox, f"{mail.pmid} is in the mailbox, marked removed"
            elif mail.pmid not in self.excused:
                assert record.removed_in_mailbox, f"{mail.pmid} left the mailbox, not marked (MAIL-10)"
                assert record.crm_message_id in removed_events, f"the CRM was not told {mail.pmid} left"
        assert not held, f"the CRM holds messages the mailbox never had: {list(held)}"
        positions = [self.source.position_of(c) for c in self.cursors.written]
        assert positions == sorted(positions), f"the cursor went back: {positions}"
        stored = self.cursor_store.get(self.account.account_id, "mail")
        assert stored is not None and self.source.position_of(stored) == self.mailbox.position


_ARRIVE = st.tuples(st.just("arrive"), st.sampled_from(KINDS), st.integers(0, 20))
_THREAD = st.tuples(st.just("arrive"), st.sampled_from(["contact", "reply"]), st.integers(0, 20))
_REMOVE = st.tuples(
    st.just("remove"), st.integers(0, 20), st.sampled_from(["deleted", "trashed", "left_synced_folders"])
)
# a notification that arrives runs a sync; one that comes twice runs two; a lost one runs none.
# Half the syncs crash at one of their first writes (before it, or after it returned).
_SYNC = st.tuples(st.just("sync"), st.none() | st.tuples(st.integers(1, 8), st.booleans()))
_CURSOR = st.sampled_from([("expire",), ("lose",)])
# by weight: arrivals 4, syncs 4, removals 2, cursor trouble 1
_WEIGHTED = [_ARRIVE, _THREAD, _THREAD, _THREAD, _SYNC, _SYNC, _SYNC, _SYNC, _REMOVE, _REMOVE, _CURSOR]
ACTIONS = st.lists(
    st.integers(0, len(_WEIGHTED) - 1).flatmap(lambda n: _WEIGHTED[n]), min_size=6, max_size=30
)


def _scenario(provider: str, page_size: int, actions: list[tuple[Any, ...]]) -> Run:
    run = Run(provider, page_size)
    for action in actions:
        run.play(action)
    run.settle()
    run.check()
    return run


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("SYNC-3")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("MAIL-10")
@pytest.mark.parametrize("provider", ["gmail", "outlook"])
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_size=st.integers(1, 4), actions=ACTIONS)
def test_any_history_converges(provider: str, page_size: int, actions: list[tuple[Any, ...]]) -> None:
    run = _scenario(provider, page_size, actions)
    held = run.store.messages(TENANT, "u1")
    event(f"crashes: {min(run.crashes, 3)}")
    event(f"resyncs: {min(run.resyncs, 3)}")
    event(f"messages in the CRM: {min(len(held), 4)}")
    event(f"marked removed: {min(sum(r.removed_in_mailbox for r in held), 2)}")


@pytest.mark.parametrize("provider", ["gmail", "outlook"])
def test_the_model_catches_what_it_should(provider: str) -> None:
    """The model itself: a history that exercises every path ends as expected, and a cursor
    that skips past a stored message is caught."""
    actions: list[tuple[Any, ...]] = [
        ("sync", None),
        ("arrive", "contact", 0),
        ("arrive", "stranger", 0),
        ("sync", (2, True)),
        ("arrive", "reply", 0),
        ("sync", None),
        ("remove", 0, "trashed"),
        ("arrive", "colleague", 0),
        ("expire",),
        ("arrive", "contact", 0),
        ("sync", None),
        ("lose",),
        ("arrive", "own", 0),
        ("sync", (1, False)),
    ]
    run = _scenario(provider, 1, actions)
    assert run.crashes == 2 and run.resyncs >= 3
    assert sorted(r.message_id for r in run.store.messages(TENANT, "u1")) == [
        "<m0@mail.test>",
        "<m2@mail.test>",
        "<m4@mail.test>",
    ]
    # a cursor moved past a message the CRM never stored: the check fails
    run.mailbox.arrive("contact", 0)
    run.cursors.set(run.account.account_id, "mail", run.source.fresh())
    with pytest.raises(AssertionError):
        run.check()


@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("MAIL-10")
@pytest.mark.parametrize("provider", ["gmail", "outlook"])
def test_a_message_stored_then_removed_before_its_event_went_out_is_published_first(provider: str) -> None:
    """Found by the model: the crash came after the message was stored and before its event;
    the redelivery saw only its removal. The CRM hears of the message, then of its removal."""
    # writes of the second sync: the raw MIME (1), the transaction (2), the event (3)
    run = _scenario(
        provider,
        1,
        [("sync", None), ("arrive", "contact", 0), ("sync", (3, False)), ("remove", 0, "deleted")],
    )
    (record,) = run.store.messages(TENANT, "u1")
    assert (record.published, record.removed_in_mailbox) == (True, True)
    kinds = [
        type(e).__name__
        for e in run.publisher.events
        if getattr(e, "message_id", None) == record.crm_message_id
    ]
    assert kinds == ["MessageSynced", "MessageRemovedInMailbox"]


@pytest.mark.rule("SYNC-8")
def test_a_skip_whose_event_did_not_go_out_is_told_on_redelivery() -> None:
    """The skip record is written first (write 1) and the crash comes after it; the redelivery
    finds the record not yet told and publishes the skip then."""
    run = _scenario("gmail", 1, [("sync", None), ("arrive", "stranger", 0), ("sync", (1, True))])
    assert list(run.store.skipped(run.account.account_id)) == ["p0"]
    assert [type(e).__name__ for e in run.publisher.events] == ["MessageSkipped"]


@pytest.mark.rule("MAIL-7")
def test_a_message_stored_unpublished_and_removed_behind_a_resync_is_published() -> None:
    """The message is stored and the worker dies before its event (write 3); it is deleted in
    the mailbox, and the cursor expires before the redelivery: the resync does not list it, and
    its fresh cursor is past the deletion; the resync's end publishes what was stored untold."""
    actions = [
        ("sync", None),
        ("arrive", "contact", 0),
        ("sync", (3, False)),
        ("remove", 0, "deleted"),
        ("expire",),
    ]
    run = _scenario("gmail", 1, actions)
    (record,) = run.store.messages(TENANT, "u1")
    assert record.published

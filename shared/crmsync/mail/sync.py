"""One mailbox's incremental sync from its stored cursor (SYNC-1, SYNC-3, SYNC-4).

A ChangeSource (Gmail history.list, Graph delta, IMAP CONDSTORE: the provider issues) pages
through what changed since a cursor. Every message of every page goes through the engine
first; the cursor moves only after that, with a conditional write on the value it was read
as, and only forwards. Throttling and 5xx raise TransientError before anything moves; a cursor
the provider no longer accepts starts a resync instead of an error loop.

A run may be given a deadline (the worker's share of its invocation's time): past it, the run
stops between two pages and says where to go on (`Resume`: the cursor it started from and the
next page). The cursor does not move until a later run, started from that point, reaches the
last page, so a backlog of any size is worked through in bounded steps without ever moving
the cursor past something not stored (SYNC-1).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, Protocol

from pydantic import BaseModel, Field

from crmsync.accounts.models import Account
from crmsync.mail.engine import MailSync
from crmsync.mail.models import ProviderMessage, RemovalKind


class CursorExpired(Exception):
    """The provider no longer accepts the cursor (Gmail 404, Graph 410/syncStateNotFound, …)."""


class Removal(BaseModel):
    """A message that left the mailbox, or the synced labels or folders (MAIL-10)."""

    provider_message_id: str
    how: RemovalKind


class ChangePage(BaseModel):
    messages: list[ProviderMessage] = Field(default_factory=list)
    removed: list[Removal] = Field(default_factory=list)
    next_page: str | None = None
    cursor: str = Field(
        description="Where the next sync starts once this page and those before it are stored"
    )


class ChangeSource(Protocol):
    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage: ...

    def is_newer(self, candidate: str, current: str) -> bool: ...


class CursorStore(Protocol):
    def get(self, account_id: str, name: str) -> str | None: ...

    def advance(self, account_id: str, name: str, new: str, expected: str | None) -> bool: ...


class Resume(BaseModel):
    """Where a run that ran out of time goes on: valid while the stored cursor is `cursor`."""

    cursor: str
    page_token: str
    newest: str


class SyncResult(BaseModel):
    status: Literal["synced", "resync_started", "no_cursor", "continued"]
    pages: int = 0
    synced: int = 0
    skipped: int = 0
    updated: int = 0
    removed: int = 0
    cursor: str | None = None
    resume: Resume | None = None


class MailboxSync:
    def __init__(
        self, engine: MailSync, cursors: CursorStore, start_resync: Callable[[Account, str], None]
    ) -> None:
        self._engine = engine
        self._cursors = cursors
        self._start_resync = start_resync

    def run(
        self,
        account: Account,
        source: ChangeSource,
        name: str = "mail",
        deadline: float | None = None,
        resume: Resume | None = None,
        replaced: bool = False,
    ) -> SyncResult:
        """Sync from the stored cursor (or from `resume`, where an earlier run stopped). With a
        `deadline` (time.monotonic()), the run stops between pages once it has passed."""
        cursor = self._cursors.get(account.account_id, name)
        if cursor is None:  # never synced: a full sync establishes the cursor
            self._start_resync(account, "no stored cursor")
            return SyncResult(status="no_cursor")
        result = SyncResult(status="synced", cursor=cursor)
        page_token: str | None = None
        newest = cursor
        if resume is not None and resume.cursor == cursor:  # else the cursor moved since: start over
            page_token, newest = resume.page_token, resume.newest
        while True:
            try:
                page = source.changes(account, cursor, page_token)
            except CursorExpired as error:
                if self._cursors.get(account.account_id, name) != cursor and not replaced:
                    # a resync stored a fresh cursor while this run held the old one: go on from it
                    return self.run(account, source, name, deadline, replaced=True)
                self._start_resync(account, str(error) or "the provider no longer accepts the cursor")
                return result.model_copy(update={"status": "resync_started"})
            result.pages += 1
            for message in page.messages:
                outcome = self._engine.ingest(account, message)
                setattr(result, outcome.status, getattr(result, outcome.status) + 1)
            for removal in page.removed:  # after the page's arrivals: a message added then trashed
                result.removed += int(
                    self._engine.mark_removed(account, removal.provider_message_id, removal.how)
                )
            if source.is_newer(page.cursor, newest):
                newest = page.cursor
            if page.next_page is None:
                break
            page_token = page.next_page
            if deadline is not None and time.monotonic() >= deadline:
                go_on = Resume(cursor=cursor, page_token=page_token, newest=newest)
                return result.model_copy(update={"status": "continued", "resume": go_on})
        # everything the new cursor covers is stored: only now may it move, and only forwards
        if newest != cursor and self._cursors.advance(account.account_id, name, newest, expected=cursor):
            result.cursor = newest
        return result

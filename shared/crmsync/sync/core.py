"""One loop for every provider and item kind (SYNC-1, SYNC-3, SYNC-4).

A provider only reads: its `ChangeSource` pages through what changed since a cursor (Gmail
history.list, Graph delta, IMAP CONDSTORE, Calendar sync tokens, CalDAV sync-collection) and its
`ImportSource` pages through what a resync or back-import lists. Neither ever calls an engine.
The engines (mail now, calendar next) are `Sink`s: they take a page's items in one batch, then
its removals. This module drives the one into the other:

- `CursorLoop` is the incremental sync. Every item of every page goes into the sink first; the
  cursor moves only after the last page, with a conditional write on the value it was read as,
  and only forwards. Throttling and 5xx raise TransientError before anything moves; a cursor the
  provider no longer accepts starts a resync instead of an error loop. Given a deadline, a run
  stops between two pages and says where to go on (`Resume`); the cursor does not move until a
  later run, started from that point, reaches the last page.
- `ImportPages` is the resync state machine's page step: one provider page into the sink.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field

from crmsync.errors import Paused, PermanentError

if TYPE_CHECKING:
    from crmsync.accounts.models import Account
    from crmsync.resync import Page, ResyncJob


class CursorExpired(Exception):
    """The provider no longer accepts the cursor (Gmail 404, Graph 410/syncStateNotFound, …)."""


class Removal(BaseModel):
    """An item that left the synced set: deleted, trashed, moved out of what syncs (MAIL-10)."""

    item_id: str = Field(description="The provider's id of the item")
    how: str = Field(description="deleted, trashed, left_synced_folders, …: the engine's vocabulary")


@dataclass
class ChangePage[T]:
    """One page of a provider's changes, or of what a resync lists."""

    items: list[T] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    next_page: str | None = None
    cursor: str | None = None  # where the next sync starts once this page and those before it are in
    listed: int | None = None  # items the provider listed on the page (some may be gone by the fetch)


class ChangeSource[T](Protocol):
    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[T]: ...

    def is_newer(self, candidate: str, current: str) -> bool: ...


class ImportSource[T](Protocol):
    """A resync's or back-import's pages (`job.kind`, `job.since`, `job.page_token`); the last
    page of a resync carries the fresh cursor."""

    def page(self, account: Account, job: ResyncJob) -> ChangePage[T]: ...


class Outcome(Protocol):
    @property
    def status(self) -> str: ...  # "synced" | "skipped" | "updated"


class Sink[T](Protocol):
    """Port: an engine taking a page's items (all of them, in one call) and then its removals."""

    def ingest_many(self, account: Account, items: Sequence[T]) -> Sequence[Outcome]: ...

    def remove_many(self, account: Account, removals: Sequence[Removal]) -> int: ...

    def settle(self, account: Account) -> int:
        """After a full listing (a resync's or import's last page): whatever the engine stored
        but never told the CRM of is told now, listed or not. How many items."""
        ...


class CursorStore(Protocol):
    def get(self, account_id: str, name: str) -> str | None: ...

    def advance(self, account_id: str, name: str, new: str, expected: str | None) -> bool: ...


class Resume(BaseModel):
    """Where a run that ran out of time goes on: valid while the stored cursor is `cursor`."""

    cursor: str
    page_token: str
    newest: str


class ItemFailure(BaseModel):
    """An item the sink did not sync, and why (its outcome's reason): counted in health (SYNC-9)."""

    item_id: str
    reason: str


class SyncResult(BaseModel):
    status: Literal["synced", "resync_started", "no_cursor", "continued"]
    pages: int = 0
    synced: int = 0
    skipped: int = 0
    updated: int = 0
    removed: int = 0
    cursor: str | None = None
    resume: Resume | None = None
    failed: list[ItemFailure] = Field(default_factory=list)  # the skipped items, in order


def _item_id(item: object) -> str:
    for name in ("provider_message_id", "provider_event_id"):
        value = getattr(item, name, None)
        if value:
            return str(value)
    return ""


def apply_page[T](account: Account, page: ChangePage[T], sink: Sink[T], result: SyncResult) -> None:
    """A page's items, then its removals (a message added then trashed within the page ends
    removed), counted into `result`."""
    if page.items:
        for item, outcome in zip(page.items, sink.ingest_many(account, page.items), strict=False):
            if outcome.status in ("synced", "skipped", "updated"):
                setattr(result, outcome.status, getattr(result, outcome.status) + 1)
            if outcome.status == "skipped":
                reason = str(getattr(outcome, "reason", None) or "skipped")
                result.failed.append(ItemFailure(item_id=_item_id(item), reason=reason))
    if page.removed:
        result.removed += sink.remove_many(account, page.removed)


class CursorLoop[T]:
    """The incremental sync of one account's items of one kind, from the cursor `name`."""

    def __init__(
        self,
        sink: Sink[T],
        cursors: CursorStore,
        start_resync: Callable[[Account, str], None],
        name: str,
    ) -> None:
        self._sink = sink
        self._cursors = cursors
        self._start_resync = start_resync
        self.name = name

    def run(
        self,
        account: Account,
        source: ChangeSource[T],
        deadline: float | None = None,
        resume: Resume | None = None,
        replaced: bool = False,
    ) -> SyncResult:
        """Sync from the stored cursor (or from `resume`, where an earlier run stopped). With a
        `deadline` (time.monotonic()), the run stops between pages once it has passed."""
        cursor = self._cursors.get(account.account_id, self.name)
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
                if self._cursors.get(account.account_id, self.name) != cursor and not replaced:
                    # a resync stored a fresh cursor while this run held the old one: go on from it
                    return self.run(account, source, deadline, replaced=True)
                self._start_resync(account, str(error) or "the provider no longer accepts the cursor")
                return result.model_copy(update={"status": "resync_started"})
            result.pages += 1
            apply_page(account, page, self._sink, result)
            if page.cursor is not None and source.is_newer(page.cursor, newest):
                newest = page.cursor
            if page.next_page is None:
                break
            page_token = page.next_page
            if deadline is not None and time.monotonic() >= deadline:
                go_on = Resume(cursor=cursor, page_token=page_token, newest=newest)
                return result.model_copy(update={"status": "continued", "resume": go_on})
        # everything the new cursor covers is stored: only now may it move, and only forwards
        if newest != cursor and self._cursors.advance(account.account_id, self.name, newest, expected=cursor):
            result.cursor = newest
        return result


class AccountById(Protocol):
    def get_by_id(self, account_id: str) -> Account | None: ...


class ImportPages[T]:
    """The resync state machine's page step for one item kind: the account's provider lists a
    page, the sink takes it. A provider without an import source has nothing to import."""

    def __init__(
        self,
        accounts: AccountById,
        sources: Mapping[str, ImportSource[T]],
        sink: Sink[T],
        failed: Callable[[str, Sequence[ItemFailure]], None] | None = None,
    ) -> None:
        self._accounts = accounts
        self._sources = sources  # provider → ImportSource, built on first use (registry.ByProvider)
        self._sink = sink
        self._failed = failed  # (account id, the page's skipped items): kept in health (SYNC-9)

    def fetch_page(self, job: ResyncJob) -> Page:
        from crmsync.resync import Page

        account = self._accounts.get_by_id(job.account_id)
        if account is None or account.tenant_id != job.tenant_id:
            raise PermanentError(f"no account {job.account_id} in tenant {job.tenant_id}")
        if not account.can_sync:
            raise Paused(f"account {account.account_id} is {account.status}")
        source = self._sources.get(account.provider)
        if source is None:
            return Page(items=0)
        page = source.page(account, job)
        result = SyncResult(status="synced")
        apply_page(account, page, self._sink, result)
        if result.failed and self._failed is not None:
            self._failed(account.account_id, result.failed)
        if page.next_page is None:  # the whole mailbox was listed: nothing stored stays untold
            self._sink.settle(account)
        listed = page.listed if page.listed is not None else len(page.items)
        return Page(items=listed, next_token=page.next_page, cursor=page.cursor)

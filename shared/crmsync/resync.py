"""Back-imports and resyncs (SYNC-6, ACC-5, CAL-10), one step per state of the state machine.

statemachines/resync.asl.json runs: begin -> page (repeated until done) -> finish, and
fail when a step gives up. Each step takes the job as it stands and returns it advanced;
progress is written after every page so the API can report it. Providers plug in a
PageSource per resync kind; a kind with no source has nothing to import.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field

from crmsync.errors import PermanentError
from crmsync.events import EventPublisher, ResyncFinished

ResyncKind = Literal["mail_import", "mail_resync", "calendar_resync"]
Step = Literal["begin", "page", "finish", "fail"]


class ResyncJob(BaseModel):
    """The state machine's state: what to import and how far it has come."""

    model_config = ConfigDict(extra="forbid")

    tenant_id: str
    user_id: str
    account_id: str
    kind: ResyncKind
    since: datetime | None = Field(default=None, description="Import what is newer than this.")
    page_token: str | None = None
    cursor: str | None = Field(default=None, description="The provider cursor to store when done.")
    pages: int = 0
    items: int = 0
    done: bool = False
    error: dict[str, Any] | None = None


class Page(BaseModel):
    items: int
    next_token: str | None = None
    cursor: str | None = None


class ResyncProgress(BaseModel):
    account_id: str
    kind: ResyncKind
    status: Literal["running", "succeeded", "failed"]
    pages: int
    items: int
    started_at: datetime
    updated_at: datetime
    error: str | None = None


class PageSource(Protocol):
    """Port: one page of a provider's history for a job (the provider issues implement it)."""

    def fetch_page(self, job: ResyncJob) -> Page: ...


class SyncStateStore(Protocol):
    def get_progress(self, account_id: str, kind: str) -> ResyncProgress | None: ...

    def put_progress(self, progress: ResyncProgress) -> None: ...


class _NothingToImport:
    def fetch_page(self, job: ResyncJob) -> Page:
        return Page(items=0)


class Resync:
    def __init__(
        self,
        store: SyncStateStore,
        publisher: EventPublisher,
        sources: Mapping[str, PageSource] | None = None,
        cursor_sink: Callable[[ResyncJob], None] | None = None,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._sources: dict[str, PageSource] = dict(sources or {})
        self._cursor_sink = cursor_sink  # stores the fresh cursor a resync ends with (SYNC-3)

    def register(self, kind: ResyncKind, source: PageSource) -> None:
        self._sources[kind] = source

    def step(self, step: str, state: Mapping[str, Any]) -> dict[str, Any]:
        job = ResyncJob.model_validate(state)
        match step:
            case "begin":
                job = self._begin(job)
            case "page":
                job = self._page(job)
            case "finish":
                job = self._finish(job)
            case "fail":
                job = self._fail(job)
            case _:
                raise PermanentError(f"unknown resync step {step!r}")
        return job.model_dump(mode="json")

    def progress(self, account_id: str, kind: ResyncKind) -> ResyncProgress | None:
        return self._store.get_progress(account_id, kind)

    def progress_of(self, account_id: str) -> list[ResyncProgress]:
        """Every import or resync the account has had, whatever its kind."""
        found = (self._store.get_progress(account_id, kind) for kind in get_args(ResyncKind))
        return [p for p in found if p is not None]

    def _save(
        self, job: ResyncJob, status: Literal["running", "succeeded", "failed"], error: str | None = None
    ) -> None:
        now = datetime.now(UTC)
        previous = self._store.get_progress(job.account_id, job.kind)
        started = previous.started_at if previous and job.pages else now
        self._store.put_progress(
            ResyncProgress(
                account_id=job.account_id,
                kind=job.kind,
                status=status,
                pages=job.pages,
                items=job.items,
                started_at=started,
                updated_at=now,
                error=error,
            )
        )

    def _begin(self, job: ResyncJob) -> ResyncJob:
        job = job.model_copy(
            update={"pages": 0, "items": 0, "done": False, "page_token": None, "error": None}
        )
        self._save(job, "running")
        return job

    def _page(self, job: ResyncJob) -> ResyncJob:
        page = self._sources.get(job.kind, _NothingToImport()).fetch_page(job)
        job = job.model_copy(
            update={
                "pages": job.pages + 1,
                "items": job.items + page.items,
                "page_token": page.next_token,
                "cursor": page.cursor or job.cursor,
                "done": page.next_token is None,
            }
        )
        self._save(job, "running")
        return job

    def _finish(self, job: ResyncJob) -> ResyncJob:
        if job.cursor and self._cursor_sink is not None:
            self._cursor_sink(job)
        self._save(job, "succeeded")
        self._publisher.publish([self._event(job, "succeeded")])
        return job

    def _fail(self, job: ResyncJob) -> ResyncJob:
        reason = _reason(job.error)
        self._save(job, "failed", reason)
        self._publisher.publish([self._event(job, "failed", reason)])
        return job

    def _event(
        self, job: ResyncJob, status: Literal["succeeded", "failed"], error: str | None = None
    ) -> ResyncFinished:
        return ResyncFinished(
            tenant_id=job.tenant_id,
            account_id=job.account_id,
            user_id=job.user_id,
            kind=job.kind,
            status=status,
            pages=job.pages,
            items=job.items,
            error=error,
        )


def _reason(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    return f"{error.get('Error', 'Error')}: {error.get('Cause', '')}"[:1000]

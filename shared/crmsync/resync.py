"""Back-imports and resyncs (SYNC-6, ACC-5, CAL-10), one step per state of the state machine.

statemachines/resync.asl.json runs: begin -> page (repeated until done) -> finish, and
fail when a step gives up. Each step takes the job as it stands and returns it advanced;
progress is written after every page so the API can report it. Providers plug in a
PageSource per resync kind; a kind with no source has nothing to import.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from pydantic import BaseModel, ConfigDict, Field

from crmsync.errors import PermanentError, TransientError
from crmsync.events import EventPublisher, ResyncFinished
from crmsync.jobtypes import JobType

if TYPE_CHECKING:
    from crmsync.accounts.models import Account
    from crmsync.jobs import Job

ResyncKind = Literal["mail_import", "mail_resync", "calendar_resync"]
Step = Literal["begin", "page", "finish", "fail"]

# A running resync that has written no progress for this long is taken as dead (an execution
# stopped from outside, a lost start): a new request may take over.
RUNNING_STALE_S = 3600
# After a failed resync the next one waits 5 min, doubling with each failure in a row, up to a day.
FAILED_BACKOFF_S = 300
FAILED_BACKOFF_MAX_S = 86400


def failure_backoff(failures: int) -> timedelta:
    return timedelta(seconds=min(FAILED_BACKOFF_MAX_S, FAILED_BACKOFF_S * 2 ** max(0, failures - 1)))


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
    request_id: str | None = Field(
        default=None, description="The request that started this run; a run taken over by a newer one stops."
    )


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
    failures: int = Field(default=0, description="Failed runs in a row; reset by a run that succeeds")
    retry_at: datetime | None = Field(
        default=None, description="After a failure: no new run starts before this (backoff)"
    )
    request_id: str | None = Field(default=None, description="The request the current run answers")
    version: int = Field(default=0, description="Optimistic lock: each write names the version it read")


class PageSource(Protocol):
    """Port: one page of a provider's history for a job (the provider issues implement it)."""

    def fetch_page(self, job: ResyncJob) -> Page: ...


class SyncStateStore(Protocol):
    def get_progress(self, account_id: str, kind: str) -> ResyncProgress | None: ...

    def put_progress(self, progress: ResyncProgress, expected_version: int | None) -> bool:
        """Writes version expected_version + 1 if the stored one is still expected_version
        (None: none stored); False when another write came first."""
        ...


class ResyncStarter(Protocol):
    def start(self, name: str, job: ResyncJob) -> None: ...


class ResyncRequests:
    """Starting resyncs, one per account and kind at a time (SYNC-3, SYNC-6).

    A request claims the account's progress record with a conditional write: while a run is
    going (and still writing progress) or a failed one is backing off, further requests are
    absorbed, whoever sends them (every push and catch-up that meets an expired cursor). The
    same request delivered again restarts nothing: the execution's name comes from it, and
    Step Functions keeps one execution per name."""

    def __init__(
        self,
        store: SyncStateStore,
        starter: ResyncStarter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._starter = starter
        self._now = now

    def wanted(self, account_id: str, kind: ResyncKind) -> bool:
        """Whether a request now would start a run (a cheap check before queueing one)."""
        return self._blocked_by(self._store.get_progress(account_id, kind), None) is None

    def request(self, job: ResyncJob, request_id: str) -> bool:
        """Start a run for this request, unless one is going or backing off. True if started."""
        previous = self._store.get_progress(job.account_id, job.kind)
        if self._blocked_by(previous, request_id) is not None:
            return False
        now = self._now()
        job = job.model_copy(update={"request_id": request_id})
        if previous is None or previous.request_id != request_id or previous.status != "running":
            claim = ResyncProgress(
                account_id=job.account_id,
                kind=job.kind,
                status="running",
                pages=0,
                items=0,
                started_at=now,
                updated_at=now,
                failures=previous.failures if previous else 0,
                request_id=request_id,
            )
            if not self._store.put_progress(claim, previous.version if previous else None):
                return False  # another request claimed it first
        digest = hashlib.sha256(f"{job.account_id}|{job.kind}|{request_id}".encode()).hexdigest()[:32]
        self._starter.start(f"{job.kind}-{digest}", job)
        return True

    def _blocked_by(self, progress: ResyncProgress | None, request_id: str | None) -> str | None:
        if progress is None:
            return None
        now = self._now()
        if progress.status == "running":
            if request_id is not None and progress.request_id == request_id:
                return None  # this very request, delivered again: make sure its run exists
            if now - progress.updated_at < timedelta(seconds=RUNNING_STALE_S):
                return "running"
        if progress.status == "failed" and progress.retry_at is not None and progress.retry_at > now:
            return "backing off"
        return None


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
        self,
        job: ResyncJob,
        status: Literal["running", "succeeded", "failed"],
        error: str | None = None,
        begin: bool = False,
        previous: ResyncProgress | None = None,
    ) -> bool:
        """Writes the run's progress; False when a newer request has taken the account over
        (this run then stops without writing anything else)."""
        now = datetime.now(UTC)
        if previous is None:
            previous = self._store.get_progress(job.account_id, job.kind)
        if _taken_over(previous, job):
            return False
        failures = previous.failures if previous else 0
        retry_at = previous.retry_at if previous else None
        if status == "failed":
            failures += 1
            retry_at = now + failure_backoff(failures)
        elif status == "succeeded":
            failures, retry_at = 0, None
        progress = ResyncProgress(
            account_id=job.account_id,
            kind=job.kind,
            status=status,
            pages=job.pages,
            items=job.items,
            started_at=previous.started_at if previous and not begin else now,
            updated_at=now,
            error=error,
            failures=failures,
            retry_at=retry_at,
            request_id=job.request_id or (previous.request_id if previous else None),
        )
        if not self._store.put_progress(progress, previous.version if previous else None):
            raise TransientError("the resync's progress changed meanwhile; the step is retried")
        return True

    def _begin(self, job: ResyncJob) -> ResyncJob:
        job = job.model_copy(
            update={"pages": 0, "items": 0, "done": False, "page_token": None, "error": None}
        )
        if not self._save(job, "running", begin=True):
            raise PermanentError("a newer resync of this account took over")
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
        if not self._save(job, "running"):
            raise PermanentError("a newer resync of this account took over")
        return job

    def _finish(self, job: ResyncJob) -> ResyncJob:
        previous = self._store.get_progress(job.account_id, job.kind)
        if _taken_over(previous, job):
            return job  # the newer run stores the cursor
        if job.cursor and self._cursor_sink is not None:
            self._cursor_sink(job)
        self._save(job, "succeeded", previous=previous)  # the sink writes no progress: one read
        self._publisher.publish([self._event(job, "succeeded")])
        return job

    def _fail(self, job: ResyncJob) -> ResyncJob:
        reason = _reason(job.error)
        if self._save(job, "failed", reason):
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


def _taken_over(previous: ResyncProgress | None, job: ResyncJob) -> bool:
    """Whether a newer request has claimed the account since this run started."""
    return previous is not None and bool(job.request_id) and previous.request_id not in (None, job.request_id)


def _reason(error: dict[str, Any] | None) -> str:
    if not error:
        return "unknown error"
    return f"{error.get('Error', 'Error')}: {error.get('Cause', '')}"[:1000]


# Which cursor a resync of each kind ends with, and the job that syncs on from it.
CURSOR_OF: dict[str, str] = {"mail_resync": "mail", "mail_import": "mail", "calendar_resync": "calendar"}
FOLLOW_UP: dict[str, str] = {"mail": JobType.MAIL_SYNC, "calendar": JobType.CALENDAR_SYNC}


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str) -> None: ...


class CursorSetter(Protocol):
    def set(self, account_id: str, name: str, value: str) -> None: ...


class ResyncTrigger:
    """SYNC-3 from the sync loop's side: an account with no cursor, or one the provider no longer
    accepts, gets a resync through the state machine, queued as the account's `resync.start`
    job. Nothing is queued while a run is going or backing off, and requests within five minutes
    share one deduplication id, so every push that meets the expired cursor makes one request."""

    def __init__(
        self,
        requests: ResyncRequests,
        queue: JobQueue,
        kind: ResyncKind,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._requests = requests
        self._queue = queue
        self._kind = kind
        self._clock = clock

    def __call__(self, account: Account, reason: str) -> None:
        from crmsync.jobs import Job

        if not self._requests.wanted(account.account_id, self._kind):
            return
        job = Job(
            type=JobType.RESYNC_START,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"user_id": account.user_id, "kind": self._kind},
        )
        window = int(self._clock() // 300)
        self._queue.send(job, f"resync-{account.account_id}-{window}")


class CursorHandover:
    """A resync's end (SYNC-3): the fresh cursor is stored under its kind's name, then one
    incremental sync from it is queued, so that what arrived while the resync ran (whose sync
    requests were absorbed) is read at once."""

    def __init__(self, cursors: CursorSetter, queue: JobQueue) -> None:
        self._cursors = cursors
        self._queue = queue

    def __call__(self, job: ResyncJob) -> None:
        from crmsync.jobs import Job

        name = CURSOR_OF[job.kind]
        self._cursors.set(job.account_id, name, job.cursor or "")
        follow = FOLLOW_UP.get(name)
        if follow is None:
            return
        digest = hashlib.sha256(f"{job.account_id}|{job.request_id}|{job.cursor}".encode()).hexdigest()
        self._queue.send(
            Job(type=follow, tenant_id=job.tenant_id, account_id=job.account_id),
            f"after-resync-{digest[:40]}",
        )

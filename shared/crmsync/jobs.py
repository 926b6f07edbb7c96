"""Sync jobs: what the sync queue carries and how the worker runs each one.

Messages are grouped by account (MessageGroupId = account id), so one account is worked by
one worker at a time (SYNC-5). A job that can never succeed (unreadable, unknown type, a
PermanentError) goes straight to the dead-letter queue with its reason and blocks nothing
else (SYNC-8); any other failure is retried by SQS and, after maxReceiveCount, redriven
to the same DLQ.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crmsync.errors import Paused, PermanentError
from crmsync.jobtypes import JobType
from crmsync.resync import ResyncJob

_DEADLINE: ContextVar[float | None] = ContextVar("job_deadline", default=None)


def current_deadline() -> float | None:
    """When the job being run should stop taking on more work (time.monotonic()), if the
    worker gave it a share of its invocation's time; None: no limit."""
    return _DEADLINE.get()


def set_deadline(deadline: float | None) -> None:
    _DEADLINE.set(deadline)


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64)
    tenant_id: str
    account_id: str
    payload: dict[str, Any] = Field(default_factory=dict)


class ResyncRequester(Protocol):
    def request(self, job: ResyncJob, request_id: str) -> bool: ...


class DeadLetters(Protocol):
    def send(self, body: str, group_id: str, dedup_id: str, reason: str) -> None: ...


JobHandler = Callable[[Job, str], None]


class JobRunner:
    def __init__(self, resyncs: ResyncRequester, dead_letters: DeadLetters) -> None:
        self._resyncs = resyncs
        self._dead = dead_letters
        self._handlers: dict[str, JobHandler] = {JobType.RESYNC_START: self._start_resync}

    def register(self, job_type: str, handler: JobHandler) -> None:
        self._handlers[job_type] = handler

    def handle(self, body: str, message_id: str, group_id: str) -> str:
        """Run one queued job. Returns what became of it: 'done' or 'dead-lettered'."""
        try:
            job = Job.model_validate_json(body)
        except ValidationError as error:
            return self._dead_letter(
                body, message_id, group_id, f"unreadable job: {error.errors()[0]['msg']}"
            )
        handler = self._handlers.get(job.type)
        if handler is None:
            return self._dead_letter(body, message_id, group_id, f"unknown job type {job.type!r}")
        try:
            handler(job, message_id)
        except Paused:
            return "dropped"  # the account may not sync now: its queued work goes (ACC-8, ACC-9)
        except PermanentError as error:
            return self._dead_letter(body, message_id, group_id, f"{job.type}: {error}")
        return "done"

    def dead_letter(self, body: str, message_id: str, group_id: str, reason: str) -> str:
        """Send a job to the dead-letter queue with its reason (SYNC-8)."""
        return self._dead_letter(body, message_id, group_id, reason)

    def _dead_letter(self, body: str, message_id: str, group_id: str, reason: str) -> str:
        self._dead.send(body, group_id or "unknown", message_id, reason)
        return "dead-lettered"

    def _start_resync(self, job: Job, message_id: str) -> None:
        try:
            resync = ResyncJob.model_validate(
                {**job.payload, "tenant_id": job.tenant_id, "account_id": job.account_id}
            )
        except ValidationError as error:
            raise PermanentError(f"bad resync payload: {error.errors()[0]['msg']}") from error
        # One run per account and kind at a time: while one is going or backing off after a
        # failure, the request is absorbed (SYNC-3); a redelivered request starts nothing new.
        self._resyncs.request(resync, message_id)

"""Reading synced mail back: a user's own threads, newest first (LINK-4), and one thread."""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel

from crmsync.auth import Principal
from crmsync.errors import NotFound, Unprocessable
from crmsync.ids import check_id
from crmsync.mail.models import MessageRecord, ThreadRecord
from crmsync.pagetoken import PageTokens


class ThreadReader(Protocol):
    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None: ...

    def thread_messages(self, tenant_id: str, crm_thread_id: str) -> list[MessageRecord]: ...

    def list_threads(
        self, tenant_id: str, user_id: str, limit: int, after: dict[str, Any] | None, account_id: str | None
    ) -> tuple[list[ThreadRecord], dict[str, Any] | None]: ...


class ThreadPage(BaseModel):
    threads: list[ThreadRecord]
    next: str | None = None


class ThreadView(BaseModel):
    thread: ThreadRecord
    messages: list[MessageRecord]


class Mailbox:
    def __init__(self, store: ThreadReader, tokens: PageTokens) -> None:
        self._store = store
        self._tokens = tokens

    def threads(
        self, principal: Principal, limit: int = 25, after: str | None = None, account_id: str | None = None
    ) -> ThreadPage:
        if not 1 <= limit <= 100:
            raise Unprocessable("limit must be between 1 and 100")
        if account_id:
            check_id(account_id, "account_id")
        # a page token is good for the caller's own listing only, with the same filter (SEC-4)
        scope = (principal.tenant_id, principal.user_id, account_id or "")
        start = self._tokens.read("threads", scope, after) if after else None
        tenant, user = principal.tenant_id, principal.user_id
        found, last = self._store.list_threads(tenant, user, limit, start, account_id)
        following = self._tokens.issue("threads", scope, last) if last else None
        return ThreadPage(threads=found, next=following)

    def thread(self, principal: Principal, thread_id: str) -> ThreadView:
        check_id(thread_id, "thread id")
        thread = self._store.get_thread(principal.tenant_id, thread_id)
        if thread is None or thread.user_id != principal.user_id:
            raise NotFound(f"no thread {thread_id!r} in your mail")
        messages = sorted(
            self._store.thread_messages(principal.tenant_id, thread_id),
            key=lambda m: (m.date is None, m.date, m.synced_at),
        )
        return ThreadView(thread=thread, messages=messages)

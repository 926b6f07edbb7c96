"""Reading synced mail back: a user's own threads, newest first (LINK-4), and one thread."""

from __future__ import annotations

import binascii
import json
from typing import Protocol

from pydantic import BaseModel

from crmsync.auth import Principal
from crmsync.errors import NotFound, Unprocessable
from crmsync.ids import check_id
from crmsync.mail.models import MessageRecord, ThreadRecord


class ThreadReader(Protocol):
    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None: ...

    def thread_messages(self, tenant_id: str, crm_thread_id: str) -> list[MessageRecord]: ...

    def list_threads(
        self, tenant_id: str, user_id: str, limit: int, after: str | None, account_id: str | None
    ) -> tuple[list[ThreadRecord], str | None]: ...


class ThreadPage(BaseModel):
    threads: list[ThreadRecord]
    next: str | None = None


class ThreadView(BaseModel):
    thread: ThreadRecord
    messages: list[MessageRecord]


class Mailbox:
    def __init__(self, store: ThreadReader) -> None:
        self._store = store

    def threads(
        self, principal: Principal, limit: int = 25, after: str | None = None, account_id: str | None = None
    ) -> ThreadPage:
        if not 1 <= limit <= 100:
            raise Unprocessable("limit must be between 1 and 100")
        if account_id:
            check_id(account_id, "account_id")
        try:
            found, following = self._store.list_threads(
                principal.tenant_id, principal.user_id, limit, after, account_id
            )
        except (ValueError, binascii.Error, json.JSONDecodeError) as error:
            raise Unprocessable("next: not a page token this API gave out") from error
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

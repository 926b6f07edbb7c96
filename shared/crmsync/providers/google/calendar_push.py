"""Google Calendar's push notifications (POST /webhooks/google-calendar; spec/providers.md §4):
what a channel record holds, and what one push becomes. Answers fast; the work happens behind
the queue.

A push is an empty body and X-Goog-* headers. It is checked in this order, and nothing is
queued unless every check passes:
1. no X-Goog-Channel-Token → 401, before anything is read;
2. a missing channel id, an unknown resource state or a message number that is not a number
   → 400 (not a push Google sends);
3. a channel id we do not keep (never ours, stopped, or replaced by a renewal) → 200 and
   dropped (Google would otherwise retry it), logged by channel id only;
4. a token (compared by SHA-256, in constant time) that does not match the channel → 403; a
   resource id that is not the channel's → 200 and dropped (spec/calendar.md);
5. `sync` (Google's greeting when a channel opens) → 200, nothing queued;
6. `exists` / `not_exists` → one `calendar.sync` job for the account, its deduplication id made
   of the channel id and the message number, so a push Google delivers twice is queued once;
   unless the account may not sync its calendar any more (`Account.calendar_syncing`: not
   paused, disconnected or stopped), then 200 and dropped.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from crmsync.jobtypes import JobType
from crmsync.providers.google.client import headers_get

if TYPE_CHECKING:
    from crmsync.accounts.models import Account
    from crmsync.schedule import JobQueue

MAX_TOKEN_CHARS = 256  # Google's limit on a channel token
MAX_ID_CHARS = 200  # channel ids are our UUIDs; resource ids are Google's short opaque ids
SYNCING_STATES = ("exists", "not_exists")


class ChannelRecord(BaseModel):
    """What is kept of one channel: never its token, only the token's SHA-256."""

    channel_id: str
    account_id: str
    tenant_id: str
    resource_id: str
    expires_at: int  # epoch seconds (Google answers milliseconds)
    token_sha256: str


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(given: object, record: ChannelRecord) -> bool:
    """In constant time. The token is 43 random URL-safe characters (256 bits), so a plain
    SHA-256 of it cannot be reversed by guessing."""
    if not isinstance(given, str) or not given or len(given) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(token_digest(given), record.token_sha256)


class ChannelStore(Protocol):
    """Port: stores/calendar_channels.py."""

    def get(self, channel_id: str) -> ChannelRecord | None: ...

    def current(self, account_id: str) -> ChannelRecord | None: ...

    def replace(self, old: ChannelRecord | None, new: ChannelRecord) -> bool: ...

    def forget(self, record: ChannelRecord) -> None: ...


class ChannelLookup(Protocol):
    def get(self, channel_id: str) -> ChannelRecord | None: ...


class AccountById(Protocol):
    def get_by_id(self, account_id: str) -> Account | None: ...


@dataclass(frozen=True)
class CalendarPushOutcome:
    status: int  # the HTTP status to answer
    result: str  # queued | ignored | dropped | refused | bad
    reason: str
    channel_id: str | None = None
    account_id: str | None = None


def _plain_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_ID_CHARS or not value.isascii() or not value.isprintable():
        return None
    return value


class CalendarPush:
    def __init__(self, channels: ChannelLookup, accounts: AccountById, queue: JobQueue) -> None:
        self._channels = channels
        self._accounts = accounts
        self._queue = queue

    def accept(self, headers: Mapping[str, str] | None) -> CalendarPushOutcome:
        from crmsync.jobs import Job

        token = headers_get(headers, "X-Goog-Channel-Token")
        if not token:
            return CalendarPushOutcome(401, "refused", "no channel token")
        channel_id = _plain_id(headers_get(headers, "X-Goog-Channel-ID"))
        if channel_id is None:
            return CalendarPushOutcome(400, "bad", "no readable X-Goog-Channel-ID")
        state = (headers_get(headers, "X-Goog-Resource-State") or "").strip()
        if state != "sync" and state not in SYNCING_STATES:
            return CalendarPushOutcome(400, "bad", "unknown X-Goog-Resource-State", channel_id)
        number = (headers_get(headers, "X-Goog-Message-Number") or "").strip()
        if not number.isascii() or not number.isdigit() or len(number) > 20:
            return CalendarPushOutcome(400, "bad", "no readable X-Goog-Message-Number", channel_id)

        record = self._channels.get(channel_id)
        if record is None:
            return CalendarPushOutcome(
                200, "dropped", "unknown channel (not ours, stopped or replaced)", channel_id
            )
        if not token_matches(token, record):
            return CalendarPushOutcome(403, "refused", "channel token does not match", channel_id)
        resource_id = _plain_id(headers_get(headers, "X-Goog-Resource-ID"))
        if resource_id != record.resource_id:  # spec/calendar.md: drop unknown resource ids
            return CalendarPushOutcome(
                200, "dropped", "resource id is not the channel's", channel_id, record.account_id
            )
        if state == "sync":
            return CalendarPushOutcome(200, "ignored", "channel opened", channel_id, record.account_id)

        account = self._accounts.get_by_id(record.account_id)
        if account is None or account.tenant_id != record.tenant_id or not account.calendar_syncing:
            return CalendarPushOutcome(
                200, "dropped", "the account does not sync its calendar", channel_id, record.account_id
            )
        job = Job(
            type=JobType.CALENDAR_SYNC,
            tenant_id=record.tenant_id,
            account_id=record.account_id,
            payload={"reason": "push"},
        )
        dedup = hashlib.sha256(f"gcal-push|{channel_id}|{int(number)}".encode()).hexdigest()
        self._queue.send(job, dedup)  # a push delivered twice has the same id: queued once
        return CalendarPushOutcome(200, "queued", state, channel_id, record.account_id)

"""Gmail's side of SYNC-7: `users.watch` on the configured Pub/Sub topic, and the account
hooks that give a new mailbox its watch, its first cursor and its renewal schedule.

Without a topic there is no watch to keep: the hooks only record the first cursor (through
GmailHooks) and schedule the catch-up poll, which is then what keeps the mailbox in sync."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from crmsync.accounts.models import Account, TokenSet
from crmsync.errors import PermanentError, TransientError
from crmsync.mail.watch import SyncSchedule
from crmsync.providers.google.gmail import GmailHooks, gmail_service
from crmsync.sync.core import CursorStore


class WatchStarted(BaseModel):
    history_id: str
    expires_at: int  # epoch seconds, as Gmail returned it (it answers in milliseconds)


class GmailWatcher:
    """A Watcher (mail/watch.py) for Gmail mailboxes."""

    def __init__(
        self,
        access_token: Callable[[str], str],
        api_base: str,
        topic: str | None,
        refused: Callable[[str, str], str] | None = None,
    ) -> None:
        self._token = access_token  # Credentials.access_token: refreshes, or raises AccountPaused
        self._base = api_base
        self._topic = topic or None
        self._refused = refused  # Credentials.refused: a new token after a 401, or AccountPaused

    @property
    def watches(self) -> bool:
        return self._topic is not None

    def start(self, access_token: str, refresh: Callable[[str], str] | None = None) -> WatchStarted:
        """users.watch (a new watch, or the renewal of the current one: Gmail keeps one per
        mailbox and topic). Only called when a topic is configured."""
        from googleapiclient.errors import HttpError

        if self._topic is None:
            raise PermanentError("no Pub/Sub topic is configured for Gmail watches")
        gmail = gmail_service(access_token, self._base, refresh)
        body = {"topicName": self._topic, "labelFilterBehavior": "include"}
        try:
            answer: dict[str, Any] = gmail.users().watch(userId="me", body=body).execute()
        except HttpError as error:
            status = int(getattr(error.resp, "status", 0) or 0)
            content = getattr(error, "content", b"") or b""
            if status in (429, 500, 502, 503, 504) or (status == 403 and b"ateLimitExceeded" in content):
                raise TransientError(f"gmail answered {status} to users.watch") from error
            raise PermanentError(f"gmail refused users.watch ({status})") from error
        return WatchStarted(history_id=str(answer["historyId"]), expires_at=int(answer["expiration"]) // 1000)

    def renew(self, account: Account) -> int | None:
        if self._topic is None:
            return None
        refused = self._refused
        refresh = (lambda old: refused(account.account_id, old)) if refused is not None else None
        return self.start(self._token(account.account_id), refresh).expires_at


class GmailWatchHooks:
    """ProviderHooks for Gmail: on connect, the watch (when a topic is configured) gives the
    first cursor and the expiry the renewal is scheduled by, and the catch-up poll starts;
    on disconnect, the schedule goes first, then GmailHooks stops the watch (ACC-8)."""

    def __init__(
        self, base: GmailHooks, watcher: GmailWatcher, cursors: CursorStore, schedule: SyncSchedule
    ) -> None:
        self._base = base  # first cursor without a watch (getProfile), and users.stop
        self._watcher = watcher
        self._cursors = cursors
        self._schedule = schedule

    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        if not account.is_mailbox or not tokens.access_token:
            return
        expires_at: int | None = None
        if self._watcher.watches:
            started = self._watcher.start(tokens.access_token)
            # a reconnect keeps the cursor it had (ACC-9); a new account starts from now
            self._cursors.advance(account.account_id, "mail", started.history_id, expected=None)
            expires_at = started.expires_at
        else:
            self._base.on_connected(account, tokens)
        self._schedule.started(account, expires_at)

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None:
        self._schedule.stopped(account)
        self._base.on_disconnected(account, tokens)

"""Google Calendar push channels (SYNC-7, ACC-8; spec/providers.md §4): one channel per calendar
connection, on its primary calendar's events.

- Open: `events.watch` with our own channel id (a UUID), type `web_hook`, the configured webhook
  address (GOOGLE_CALENDAR_WEBHOOK_URL, `/webhooks/google-calendar`) and a random token. Google
  answers the channel's resourceId and expiration (ms). Only the token's SHA-256 is stored.
- Renew: Google has no renewal. A new channel is opened, recorded as the connection's current
  one in the same write that forgets the old one, and only then is the old one stopped
  (`channels.stop` with id and resourceId); a stop that fails is logged, not fatal: the old
  channel lapses on its own and its pushes no longer match anything kept.
- Stop (disconnect): `channels.stop`, and the records go.

Without a webhook URL nothing is opened: the connection's poll alone keeps it in sync
(calendar/schedule.py), and a channel kept from before is stopped at its next renewal."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger

from crmsync.accounts.models import Account, TokenSet
from crmsync.errors import Paused, PermanentError, TransientError
from crmsync.providers.google.calendar import PRIMARY, _raise_transient, calendar_service
from crmsync.providers.google.calendar_push import ChannelRecord, ChannelStore, token_digest
from crmsync.providers.google.client import AccountClients, status_of

logger = Logger()

CHANNEL_TTL_S = 7 * 86_400  # a long life asked for (spec/calendar.md); Google's answer is trusted


class GoogleCalendarChannels:
    """events.watch and channels.stop with an account's token. The token never reaches a log
    or an exception message."""

    def __init__(self, api_base: str, webhook_url: str | None) -> None:
        self._base = api_base
        self._url = webhook_url or None

    def open(
        self, access_token: str, refresh: Callable[[str], str] | None = None
    ) -> tuple[dict[str, Any], str]:
        """A new channel on the primary calendar: Google's answer, and the token it was given."""
        from googleapiclient.errors import HttpError

        if self._url is None:
            raise PermanentError("no webhook URL is configured for Google Calendar channels")
        token = secrets.token_urlsafe(32)
        body = {
            "id": str(uuid.uuid4()),
            "type": "web_hook",
            "address": self._url,
            "token": token,
            "params": {"ttl": str(CHANNEL_TTL_S)},  # asked for; the expiration Google answers counts
        }
        try:
            answer: dict[str, Any] = (
                calendar_service(access_token, self._base, refresh)
                .events()
                .watch(calendarId=PRIMARY, body=body)
                .execute()
            )
        except HttpError as error:
            _raise_transient(error, "events.watch")
            raise PermanentError(f"google calendar refused events.watch ({status_of(error)})") from error
        if not answer.get("resourceId") or not answer.get("expiration"):
            raise PermanentError("google calendar answered events.watch without resourceId or expiration")
        return {**answer, "id": body["id"]}, token

    def stop(
        self,
        access_token: str,
        channel_id: str,
        resource_id: str,
        refresh: Callable[[str], str] | None = None,
    ) -> None:
        """channels.stop; a channel Google no longer knows (404) is stopped already."""
        from googleapiclient.errors import HttpError

        try:
            calendar_service(access_token, self._base, refresh).channels().stop(
                body={"id": channel_id, "resourceId": resource_id}
            ).execute()
        except HttpError as error:
            if status_of(error) == 404:
                return
            _raise_transient(error, "channels.stop")
            raise PermanentError(f"google calendar refused channels.stop ({status_of(error)})") from error


class GoogleCalendarWatcher(AccountClients):
    """A CalendarWatcher (calendar/watch.py) over Google Calendar channels."""

    def __init__(
        self,
        access_token: Callable[[str], str],
        api_base: str,
        webhook_url: str | None,
        store: ChannelStore,
        refused: Callable[[str, str], str] | None = None,
    ) -> None:
        super().__init__(access_token, api_base, refused)
        self._api = GoogleCalendarChannels(api_base, webhook_url)
        self._watches = bool(webhook_url)
        self._store = store

    @property
    def watches(self) -> bool:
        return self._watches

    def _open(self, account: Account, access_token: str) -> ChannelRecord:
        answer, token = self._api.open(access_token, self._refresh_for(account.account_id))
        return ChannelRecord(
            channel_id=str(answer["id"]),
            account_id=account.account_id,
            tenant_id=account.tenant_id,
            resource_id=str(answer["resourceId"]),
            expires_at=int(answer["expiration"]) // 1000,
            token_sha256=token_digest(token),
        )

    def start(self, account: Account, access_token: str) -> int | None:
        """Connect (or reconnect): the connection's channel, in place of one kept from before."""
        if not self._watches:
            logger.info("no calendar webhook URL: no push channel; the poll syncs the calendar")
            return None
        old = self._store.current(account.account_id)
        lost = TransientError("the calendar's channel changed while a new one was opened")
        return self._swap(account, old, access_token, lost)

    def renew(self, account: Account) -> int | None:
        """SYNC-7: a new channel first, recorded as current (the old one forgotten in the same
        write), then the old one stopped. Without a webhook URL, a channel kept from before is
        stopped and none is made."""
        old = self._store.current(account.account_id)
        access_token = self._token(account.account_id)
        if not self._watches:
            if old is not None:
                self._remove(account, old, access_token)
            return None
        # disconnected (or renewed) meanwhile: nothing more to do for this renewal
        lost = Paused(f"account {account.account_id}'s calendar channel changed during the renewal")
        return self._swap(account, old, access_token, lost)

    def _swap(self, account: Account, old: ChannelRecord | None, access_token: str, lost: Exception) -> int:
        """A new channel opened and recorded as current in place of `old` (forgotten in the same
        write), then `old` stopped at Google; `lost` is raised, the new one stopped, when the
        current channel is no longer `old`."""
        record = self._open(account, access_token)
        if not self._store.replace(old, record):
            self._stop_at_google(account, record, access_token)
            raise lost
        logger.info(
            "calendar channel opened",
            extra={
                "account_id": account.account_id,
                "channel_id": record.channel_id,
                "replaced": old.channel_id if old else None,
            },
        )
        if old is not None:
            self._stop_at_google(account, old, access_token)
        return record.expires_at

    def stop(self, account: Account, tokens: TokenSet | None) -> None:
        """ACC-8: the channel stopped at Google (when a token is at hand) and forgotten."""
        record = self._store.current(account.account_id)
        if record is None:
            return
        token: str | None
        try:
            token = self._token(account.account_id)
        except Exception:  # paused, refused: the token the account still holds, if any
            token = tokens.access_token if tokens else None
        self._remove(account, record, token)

    def _remove(self, account: Account, record: ChannelRecord, access_token: str | None) -> None:
        self._store.forget(record)  # first: its pushes are dropped from now on
        if access_token:
            self._stop_at_google(account, record, access_token)

    def _stop_at_google(self, account: Account, record: ChannelRecord, access_token: str) -> None:
        try:
            self._api.stop(
                access_token, record.channel_id, record.resource_id, self._refresh_for(account.account_id)
            )
        except Exception as error:  # a failed stop is not fatal: the channel lapses on its own
            logger.warning(
                "calendar channel not stopped; it lapses on its own and its pushes are dropped",
                extra={"channel_id": record.channel_id, "error": type(error).__name__},
            )

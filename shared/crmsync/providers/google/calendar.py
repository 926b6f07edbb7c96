"""Google Calendar through google-api-python-client (static calendar.v3 discovery document).

Only the account's primary calendar is read and written (CAL-3). GoogleCalendarSource pages
`events.list` from a sync token; GoogleCalendarImport lists the whole calendar with the same
query and ends on the sync token the next incremental sync starts from; GoogleCalendarWriter
creates under our own id, patches only what changed and deletes, never notifying attendees
(CAL-15, CAL-17), and looks for a moved event in the user's other calendars (CAL-12). The
adapters only read and write: what a change means is the calendar engine's to decide.

Throttling (403 or 429 in the usageLimits domain) and 5xx raise TransientError with the
Retry-After Google gave; nothing here holds or moves a cursor."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from crmsync.accounts.models import Account, TokenSet
from crmsync.calendar.models import CalendarEvent, SyncedFields
from crmsync.calendar.ports import EventChanged
from crmsync.providers.google.calendar_events import ACTIVITY_PROPERTY, from_google, to_google
from crmsync.providers.google.client import AccountClients, google_service, raise_transient, status_of
from crmsync.sync.core import ChangePage, CursorExpired, CursorStore

if TYPE_CHECKING:
    from crmsync.calendar.schedule import CalendarPolls
    from crmsync.calendar.watch import CalendarWatcher
    from crmsync.resync import ResyncJob

PRIMARY = "primary"
PAGE_SIZE = 250  # Google's default; kept explicit so every listing asks the same
NO_NOTIFICATIONS = "none"  # CAL-17: sendUpdates on every write


@cache
def _discovery() -> Any:
    from googleapiclient.discovery_cache import get_static_doc

    return get_static_doc("calendar", "v3")


@cache
def _service_path() -> str:
    return str(json.loads(_discovery()).get("servicePath") or "calendar/v3/")


def calendar_service(access_token: str, api_base: str, refresh: Callable[[str], str] | None = None) -> Any:
    """A calendar.v3 client on `api_base` (the Google API root, as for Gmail: the service path
    of the discovery document is added here). After a 401, `refresh(refused token)` gives a new
    token once (client._bearer)."""
    endpoint = api_base.rstrip("/") + "/" + _service_path()
    return google_service(_discovery(), access_token, endpoint, refresh, "google calendar")


class _Client(AccountClients):
    """What the three adapters share: an account's calendar.v3 client."""

    def _service(self, account: Account) -> Any:
        return calendar_service(
            self._token(account.account_id), self._base, self._refresh_for(account.account_id)
        )


def _is_usage_limit(error: Any) -> bool:
    content = getattr(error, "content", b"") or b""
    return status_of(error) == 429 or (
        status_of(error) == 403 and (b'"usageLimits"' in content or b"ateLimitExceeded" in content)
    )


def _raise_transient(error: Any, what: str) -> None:
    raise_transient(error, what, "google calendar", _is_usage_limit)


def _listing(service: Any, sync_token: str | None, page_token: str | None) -> dict[str, Any]:
    """One page of the primary calendar's events. The query is the same for the full listing
    and the incremental one (Google wants it kept constant across a sync token's life): every
    event as stored, recurring series as their master (no expansion), cancelled ones included."""
    query: dict[str, Any] = {
        "calendarId": PRIMARY,
        "maxResults": PAGE_SIZE,
        "singleEvents": False,
        "showDeleted": True,
    }
    if sync_token is not None:
        query["syncToken"] = sync_token
    if page_token is not None:
        query["pageToken"] = page_token
    result: dict[str, Any] = service.events().list(**query).execute()
    return result


def _page(account: Account, listed: dict[str, Any]) -> ChangePage[CalendarEvent]:
    items = [
        from_google(found, primary_id(account), listed.get("updated")) for found in listed.get("items", [])
    ]
    return ChangePage(
        items=items,
        next_page=listed.get("nextPageToken"),
        cursor=listed.get("nextSyncToken"),  # on the last page only
        listed=len(items),
    )


def primary_id(account: Account) -> str:
    """The primary calendar's id: the account's address (Google names it so)."""
    return account.address.strip().lower()


class GoogleCalendarSource(_Client):
    """ChangeSource[CalendarEvent]: what changed in the primary calendar since a sync token."""

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[CalendarEvent]:
        from googleapiclient.errors import HttpError

        try:
            listed = _listing(self._service(account), cursor, page_token)
        except HttpError as error:
            if status_of(error) == 410:  # fullSyncRequired: the token expired
                raise CursorExpired("google calendar no longer accepts the sync token (410)") from error
            _raise_transient(error, "the changed events")
            raise
        return _page(account, listed)

    def is_newer(self, candidate: str, current: str) -> bool:
        return candidate != current  # sync tokens are opaque: any new one is where to go on


class GoogleCalendarImport(_Client):
    """ImportSource[CalendarEvent]: a calendar resync lists every event of the primary calendar
    (none left out by its start: the engine judges CAL-6 by `created`); the last page carries
    the sync token the incremental sync goes on from."""

    def page(self, account: Account, job: ResyncJob) -> ChangePage[CalendarEvent]:
        from googleapiclient.errors import HttpError

        try:
            listed = _listing(self._service(account), None, job.page_token)
        except HttpError as error:
            _raise_transient(error, "a page of events")
            raise
        return _page(account, listed)


class GoogleCalendarWriter(_Client):
    """CalendarWriter on the primary calendar, every write with sendUpdates=none (CAL-17)."""

    def create(
        self, account: Account, event_id: str, fields: SyncedFields, activity_id: str
    ) -> CalendarEvent:
        """events.insert under our id (CAL-15): a 409 means a retried create already made it, and
        the event there is returned as it is."""
        from googleapiclient.errors import HttpError

        service = self._service(account)
        body = {
            **to_google(fields),
            "id": event_id,
            "extendedProperties": {"private": {ACTIVITY_PROPERTY: activity_id}},
        }
        try:
            made = (
                service.events().insert(calendarId=PRIMARY, body=body, sendUpdates=NO_NOTIFICATIONS).execute()
            )
        except HttpError as error:
            if status_of(error) != 409:
                _raise_transient(error, "an event insert")
                raise
            made = self._get(service, event_id)
        return from_google(made, primary_id(account))

    def patch(
        self,
        account: Account,
        provider_event_id: str,
        fields: SyncedFields,
        changed: Sequence[str],
        if_match: str | None = None,
    ) -> CalendarEvent:
        """events.patch with only the Google fields the changed synced fields rewrite; never
        events.update, which would replace what the sync does not own. With `if_match`, the
        request carries If-Match: Google answers 412 when the event has another etag now."""
        from googleapiclient.errors import HttpError

        body = to_google(fields, changed)
        request = (
            self._service(account)
            .events()
            .patch(calendarId=PRIMARY, eventId=provider_event_id, body=body, sendUpdates=NO_NOTIFICATIONS)
        )
        if if_match:
            request.headers["If-Match"] = if_match
        try:
            patched = request.execute()
        except HttpError as error:
            if status_of(error) == 412:
                raise EventChanged(
                    f"event {provider_event_id} changed in the calendar since it was read"
                ) from error
            _raise_transient(error, "an event patch")
            raise
        return from_google(patched, primary_id(account))

    def get(self, account: Account, provider_event_id: str) -> CalendarEvent | None:
        """events.get on the primary calendar; 404 (never there, or moved away) is None."""
        from googleapiclient.errors import HttpError

        try:
            found = (
                self._service(account).events().get(calendarId=PRIMARY, eventId=provider_event_id).execute()
            )
        except HttpError as error:
            if status_of(error) == 404:
                return None
            _raise_transient(error, "an event")
            raise
        return from_google(found, primary_id(account))

    def delete(self, account: Account, provider_event_id: str) -> None:
        """events.delete; an event already gone (404) or already deleted (410) is done."""
        from googleapiclient.errors import HttpError

        try:
            self._service(account).events().delete(
                calendarId=PRIMARY, eventId=provider_event_id, sendUpdates=NO_NOTIFICATIONS
            ).execute()
        except HttpError as error:
            if status_of(error) in (404, 410):
                return
            _raise_transient(error, "an event delete")
            raise

    def find_elsewhere(self, account: Account, ical_uid: str) -> CalendarEvent | None:
        """The live event with this iCalUID in one of the user's other calendars (CAL-12): the
        calendar list, then events.list(iCalUID) on each calendar but the primary one."""
        from googleapiclient.errors import HttpError

        service = self._service(account)
        try:
            for calendar_id in self._other_calendars(service, account):
                listed = service.events().list(calendarId=calendar_id, iCalUID=ical_uid).execute()
                for found in listed.get("items", []):
                    if found.get("status") != "cancelled":
                        return from_google(found, calendar_id, listed.get("updated"))
        except HttpError as error:
            _raise_transient(error, "the user's other calendars")
            raise
        return None

    @staticmethod
    def _other_calendars(service: Any, account: Account) -> list[str]:
        found: list[str] = []
        page_token: str | None = None
        while True:
            query: dict[str, Any] = {"maxResults": PAGE_SIZE}
            if page_token is not None:
                query["pageToken"] = page_token
            listed = service.calendarList().list(**query).execute()
            for entry in listed.get("items", []):
                if entry.get("primary") or str(entry.get("id", "")).lower() == primary_id(account):
                    continue
                found.append(str(entry["id"]))
            page_token = listed.get("nextPageToken")
            if page_token is None:
                return found

    @staticmethod
    def _get(service: Any, event_id: str) -> dict[str, Any]:
        from googleapiclient.errors import HttpError

        try:
            found: dict[str, Any] = service.events().get(calendarId=PRIMARY, eventId=event_id).execute()
        except HttpError as error:
            _raise_transient(error, "an event already created")
            raise
        return found


class GoogleCalendarHooks:
    """A new calendar connection's first cursor: the sync token at the end of the primary
    calendar's full listing, read and not imported (nothing in it was created after the original
    connection date, CAL-6). A reconnect keeps the cursor it has. Then its push channel (when a
    webhook URL is configured), its poll and the channel's renewal (SYNC-2, SYNC-7); on
    disconnect the schedule goes first, then the channel is stopped (ACC-8)."""

    def __init__(
        self,
        api_base: str,
        cursors: CursorStore,
        polls: CalendarPolls,
        watcher: CalendarWatcher | None = None,
    ) -> None:
        self._base = api_base
        self._cursors = cursors
        self._polls = polls  # the catch-up poll of the connection (SYNC-2) and the channel's renewal
        self._watcher = watcher  # the push channel (providers/google/calendar_watch.py)

    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        if "calendar" not in account.purposes or not tokens.access_token:
            return
        from crmsync.resync import ResyncJob

        token = tokens.access_token
        listing = GoogleCalendarImport(lambda _: token, self._base)
        job = ResyncJob(
            tenant_id=account.tenant_id,
            user_id=account.user_id,
            account_id=account.account_id,
            kind="calendar_resync",
        )
        page = listing.page(account, job)
        while page.next_page is not None:
            page = listing.page(account, job.model_copy(update={"page_token": page.next_page}))
        if page.cursor:
            self._cursors.advance(account.account_id, "calendar", page.cursor, expected=None)
        # the channel after the cursor: a push it sends finds a cursor to sync from
        expires_at = self._watcher.start(account, token) if self._watcher is not None else None
        self._polls.started(account, expires_at)

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None:
        if "calendar" in account.purposes:
            self._polls.stopped(account)  # nothing is polled or renewed any more (ACC-8)
            if self._watcher is not None:
                self._watcher.stop(account, tokens)

"""An in-memory Google Calendar: a fast stand-in for the emulator (local/emulators/gcal/) behind
the calendar engine's ports, for the model test (tests/contract/test_calendar_model.py).

It keeps what the sync relies on, as Google Calendar does it: events as Google's JSON (the same
body the real adapter writes, read back through the same `from_google`), an etag and `updated`
that change on every write, `created` (back-datable), a change number per write that sync tokens
count by, tokens a control can expire, visibility, recurring series as one master with its
RRULE (listings never expand it: the adapter asks for `singleEvents=false`), the user's other
calendars, deletes and moves that leave a cancelled event behind, creates under a client id
where a taken id (a cancelled one too) is the event already there, and throttling as the
adapter reports it (TransientError). It passes the same contract as the Google emulator
(tests/contract/test_calendar_contract.py), so what the model test finds holds for the real one.

The clock is the caller's: the model test gives a deterministic one, so that "the most recent
change wins" (CAL-14) is decided by times the test chose.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crmsync.accounts.models import Account
from crmsync.calendar.models import CalendarEvent, SyncedFields
from crmsync.calendar.ports import EventChanged
from crmsync.errors import PermanentError, TransientError
from crmsync.providers.google.calendar_events import ACTIVITY_PROPERTY, from_google, to_google
from crmsync.resync import ResyncJob
from crmsync.sync.core import ChangePage, CursorExpired
from local.emulators.gcal.recurrence import format_rfc3339, instant_of

PRIMARY = "primary"


class Refused(PermanentError):
    """A write Google Calendar answers with a 4xx the adapter does not turn into success."""


@dataclass
class _Calendar:
    id: str
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)  # event id → change number of its last write
    generation: int = 0  # tokens of an older generation are expired


def _check_times(event: dict[str, Any]) -> None:
    """What the emulator refuses with a 400: times of two kinds, an empty range, no time."""
    start, end = event.get("start"), event.get("end")
    if not start or not end or ("date" in start) != ("date" in end):
        raise Refused("start and end must both be dates or both dateTimes")
    begins, ends = instant_of(start), instant_of(end)
    if ends < begins or ("date" in start and ends == begins):
        raise Refused("the time range is empty")


class MemoryCalendar:
    """One Google user's calendars. `address` is the primary calendar's id, as Google names it."""

    def __init__(self, address: str, now: Callable[[], datetime], page_size: int = 250) -> None:
        self.address = address.lower()
        self.now = now
        self.page_size = page_size
        self.calendars: dict[str, _Calendar] = {PRIMARY: _Calendar(self.address)}
        self.writes: list[dict[str, Any]] = []  # the adapter's writes, as the emulator logs them
        self._change = itertools.count(1)
        self._last_change = 0
        self._etags = itertools.count(1000)
        self._ids = itertools.count(1)
        self._throttled: dict[str, int] = {}  # method → how many more calls are refused

    # ------------------------------------------------------------------ the user, in the client
    def add_calendar(self, calendar_id: str) -> None:
        self.calendars.setdefault(calendar_id, _Calendar(calendar_id))

    def create_in_client(
        self, body: dict[str, Any], calendar_id: str = PRIMARY, created: datetime | None = None
    ) -> dict[str, Any]:
        event = self._insert(self._calendar(calendar_id), copy.deepcopy(body))
        if created is not None:
            event["created"] = format_rfc3339(created)
        return copy.deepcopy(event)

    def edit_in_client(
        self, event_id: str, changes: dict[str, Any], calendar_id: str = PRIMARY
    ) -> dict[str, Any]:
        calendar = self._calendar(calendar_id)
        return copy.deepcopy(self._patch(calendar, self._event(calendar, event_id), changes))

    def delete_in_client(self, event_id: str, calendar_id: str = PRIMARY) -> None:
        calendar = self._calendar(calendar_id)
        event = self._event(calendar, event_id)
        if event.get("status") != "cancelled":
            event["status"] = "cancelled"
            self._stamp(calendar, event)

    def move_in_client(self, event_id: str, destination: str, calendar_id: str = PRIMARY) -> dict[str, Any]:
        """events.move: cancelled in the source, the same id live in the destination (a live event
        of that id there already is a 409)."""
        source, target = self._calendar(calendar_id), self._calendar(destination)
        event = self._event(source, event_id)
        if event.get("status") == "cancelled":
            raise Refused("404: a cancelled event cannot move")
        there = target.events.get(event_id)
        if there is not None and there.get("status") != "cancelled":
            raise Refused("409: the destination has a live event of that id")
        moved = {**copy.deepcopy(event), "organizer": {"email": target.id, "self": True}}
        event["status"] = "cancelled"
        self._stamp(source, event)
        target.events[event_id] = moved
        self._stamp(target, moved)
        return copy.deepcopy(moved)

    # ------------------------------------------------------------------ controls
    def expire_sync_tokens(self, calendar_id: str = PRIMARY) -> None:
        self._calendar(calendar_id).generation += 1

    def throttle(self, method: str, requests: int = 1) -> None:
        """The next `requests` calls of `method` (list, insert, patch, delete) are refused as
        Google's usage limits are: the adapter's TransientError."""
        self._throttled[method] = requests

    def events_of(self, calendar_id: str = PRIMARY) -> list[dict[str, Any]]:
        return [copy.deepcopy(e) for e in self._calendar(calendar_id).events.values()]

    # ------------------------------------------------------------------ what the adapter calls
    def listing(
        self, calendar_id: str, sync_token: str | None, page_token: str | None
    ) -> tuple[list[dict[str, Any]], str | None, str | None]:
        """events.list(singleEvents=false, showDeleted=true): (items, nextPageToken, nextSyncToken)."""
        self._call("list")
        calendar = self._calendar(calendar_id)
        since: int | None = None
        if sync_token is not None:
            name, generation, number = sync_token.split(":")
            if name != calendar.id or int(generation) != calendar.generation:
                raise CursorExpired("google calendar no longer accepts the sync token (410)")
            since = int(number)
        # a page token holds the listing's last change and the last one listed so far: an event
        # written meanwhile moved past the listing's end, and the next sync token brings it
        high, low = self._last_change, since or 0
        if page_token is not None:
            high_s, low_s = page_token.split(":")
            high, low = int(high_s), int(low_s)
        events = sorted(
            (e for e in calendar.events.values() if low < calendar.changed[e["id"]] <= high),
            key=lambda e: calendar.changed[e["id"]],
        )
        page = events[: self.page_size]
        items = [copy.deepcopy(e) for e in page]
        if len(events) > self.page_size:
            return items, f"{high}:{calendar.changed[page[-1]['id']]}", None
        return items, None, f"{calendar.id}:{calendar.generation}:{high}"

    def insert(self, body: dict[str, Any]) -> dict[str, Any]:
        """events.insert in the primary calendar; a taken id (even a cancelled event's) is a 409."""
        self._call("insert")
        calendar = self._calendar(PRIMARY)
        if body.get("id") in calendar.events:
            raise _Duplicate(copy.deepcopy(calendar.events[body["id"]]))
        event = self._insert(calendar, copy.deepcopy(body))
        self._log("insert", event["id"])
        return copy.deepcopy(event)

    def patch(self, event_id: str, body: dict[str, Any], if_match: str | None = None) -> dict[str, Any]:
        """events.patch; with If-Match, a 412 (the adapter's EventChanged) unless the etag is it."""
        self._call("patch")
        calendar = self._calendar(PRIMARY)
        event = self._event(calendar, event_id)
        if if_match is not None and if_match != "*" and if_match != event.get("etag"):
            raise EventChanged(f"event {event_id} changed in the calendar since it was read")
        event = self._patch(calendar, event, body)
        self._log("patch", event_id, sorted(body))
        return copy.deepcopy(event)

    def delete(self, event_id: str) -> None:
        """events.delete; the adapter takes 404 and 410 (gone, or cancelled already) as done."""
        self._call("delete")
        calendar = self._calendar(PRIMARY)
        event = calendar.events.get(event_id)
        if event is None or event.get("status") == "cancelled":
            return
        event["status"] = "cancelled"
        self._stamp(calendar, event)
        self._log("delete", event_id)

    # ------------------------------------------------------------------ inside
    def _calendar(self, calendar_id: str) -> _Calendar:
        key = PRIMARY if calendar_id in (PRIMARY, self.address) else calendar_id
        found = self.calendars.get(key)
        if found is None:
            raise Refused(f"404: no calendar {calendar_id}")
        return found

    @staticmethod
    def _event(calendar: _Calendar, event_id: str) -> dict[str, Any]:
        found = calendar.events.get(event_id)
        if found is None:
            raise Refused(f"404: no event {event_id}")
        return found

    def _call(self, method: str) -> None:
        left = self._throttled.get(method, 0)
        if left > 0:
            self._throttled[method] = left - 1
            raise TransientError(f"google calendar usage limits ({method}): rateLimitExceeded", 1.0)

    def _stamp(self, calendar: _Calendar, event: dict[str, Any]) -> None:
        self._last_change = next(self._change)
        event["etag"] = f'"{next(self._etags)}"'
        event["updated"] = format_rfc3339(self.now())
        calendar.changed[event["id"]] = self._last_change

    def _insert(self, calendar: _Calendar, body: dict[str, Any]) -> dict[str, Any]:
        event_id = body.get("id") or f"mem{next(self._ids):06d}"
        if event_id in calendar.events:
            raise Refused("409: the requested identifier already exists")
        _check_times(body)
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "status": "confirmed",
            **body,
            "id": event_id,
            "created": format_rfc3339(self.now()),
            "organizer": {"email": calendar.id, "self": True},
            "iCalUID": body.get("iCalUID") or f"{event_id}@google.com",
        }
        calendar.events[event_id] = event
        self._stamp(calendar, event)
        return event

    def _patch(self, calendar: _Calendar, event: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
        """Patch semantics: given fields replace (start and end whole), None removes one."""
        merged = copy.deepcopy(event)
        for key, value in changes.items():
            if key in ("id", "created", "etag", "updated"):
                continue
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = copy.deepcopy(value)
        _check_times(merged)
        event.clear()
        event.update(merged)
        self._stamp(calendar, event)
        return event

    def _log(self, method: str, event_id: str, fields: Sequence[str] = ()) -> None:
        # the adapter's writes always carry sendUpdates=none; here there is no other way to write
        self.writes.append(
            {"method": method, "eventId": event_id, "sendUpdates": "none", "fields": list(fields)}
        )


class _Duplicate(Exception):
    def __init__(self, there: dict[str, Any]) -> None:
        super().__init__("409")
        self.there = there


def _page(
    calendar: MemoryCalendar, listed: tuple[list[dict[str, Any]], str | None, str | None]
) -> ChangePage[CalendarEvent]:
    items, next_page, cursor = listed
    updated = format_rfc3339(calendar.now())
    events = [from_google(found, calendar.address, updated) for found in items]
    return ChangePage(items=events, next_page=next_page, cursor=cursor, listed=len(events))


class MemoryCalendarSource:
    """ChangeSource[CalendarEvent], as GoogleCalendarSource reads the primary calendar."""

    def __init__(self, calendar: MemoryCalendar) -> None:
        self.calendar = calendar

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[CalendarEvent]:
        return _page(self.calendar, self.calendar.listing(PRIMARY, cursor, page_token))

    def is_newer(self, candidate: str, current: str) -> bool:
        return candidate != current  # opaque, as Google's sync tokens are


class MemoryCalendarImport:
    """ImportSource[CalendarEvent]: the full listing, ending on a fresh sync token."""

    def __init__(self, calendar: MemoryCalendar) -> None:
        self.calendar = calendar

    def page(self, account: Account, job: ResyncJob) -> ChangePage[CalendarEvent]:
        return _page(self.calendar, self.calendar.listing(PRIMARY, None, job.page_token))


class MemoryCalendarWriter:
    """CalendarWriter, as GoogleCalendarWriter writes: the same JSON bodies (to_google)."""

    def __init__(self, calendar: MemoryCalendar) -> None:
        self.calendar = calendar

    def create(
        self, account: Account, event_id: str, fields: SyncedFields, activity_id: str
    ) -> CalendarEvent:
        body = {
            **to_google(fields),
            "id": event_id,
            "extendedProperties": {"private": {ACTIVITY_PROPERTY: activity_id}},
        }
        try:
            made = self.calendar.insert(body)
        except _Duplicate as duplicate:
            made = duplicate.there
        return from_google(made, self.calendar.address)

    def patch(
        self,
        account: Account,
        provider_event_id: str,
        fields: SyncedFields,
        changed: Sequence[str],
        if_match: str | None = None,
    ) -> CalendarEvent:
        patched = self.calendar.patch(provider_event_id, to_google(fields, changed), if_match)
        return from_google(patched, self.calendar.address)

    def get(self, account: Account, provider_event_id: str) -> CalendarEvent | None:
        """events.get in the primary calendar (a cancelled event too); None when there is none."""
        found = self.calendar.calendars[PRIMARY].events.get(provider_event_id)
        return from_google(copy.deepcopy(found), self.calendar.address) if found is not None else None

    def delete(self, account: Account, provider_event_id: str) -> None:
        self.calendar.delete(provider_event_id)

    def find_elsewhere(self, account: Account, ical_uid: str) -> CalendarEvent | None:
        for key, calendar in self.calendar.calendars.items():
            if key == PRIMARY:
                continue
            for found in calendar.events.values():
                if found.get("iCalUID") == ical_uid and found.get("status") != "cancelled":
                    return from_google(copy.deepcopy(found), calendar.id)
        return None

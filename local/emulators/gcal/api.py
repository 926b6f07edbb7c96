"""Google Calendar API v3 events, as much as a two-way sync uses, checked against calendar.v3.

Each user (the account the bearer token belongs to) has a `primary` calendar, also reachable
by the account's address, and any others a control adds. Events are kept with their
`created`/`updated` times (from a clock a test can set), an etag that changes on every write,
and a change number the sync tokens count by. Deleting an event cancels it (it stays readable
with status `cancelled` and reaches incremental syncs); moving it cancels it in the source.
Every write records which method made it and its `sendUpdates`, so tests can assert the sync
never notified attendees and never used a full update."""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from werkzeug.wrappers import Request, Response

from local.emulators.discovery import DiscoveryValidator, Violation, discovery_document
from local.emulators.faults import FaultState, Throttle
from local.emulators.gcal.push import Channel, Pusher
from local.emulators.gcal.recurrence import Unsupported, expand, format_rfc3339, instant_of, parse_rfc3339

EVENT_ID = re.compile(r"[a-v0-9]{5,1024}")
VISIBILITIES = ("default", "public", "private", "confidential")
DEFAULT_PAGE, MAX_PAGE = 250, 2500
SYNC_EXCLUSIVE = ("timeMin", "timeMax", "q", "orderBy", "iCalUID", "updatedMin")
WATCH_TTL_S = 7 * 86400
WRITES = ("insert", "patch", "update", "delete", "move")


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, message: str, reason: str, domain: str = "global") -> Response:
    errors = [{"domain": domain, "reason": reason, "message": message}]
    return _json({"error": {"errors": errors, "code": status, "message": message}}, status)


class Refused(Exception):
    """A request Google Calendar refuses; carries the answer."""

    def __init__(self, status: int, message: str, reason: str, domain: str = "global") -> None:
        super().__init__(message)
        self.response = _error(status, message, reason, domain)


def _encode(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(token: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error) as error:
        raise ValueError(token) from error
    if not isinstance(data, dict):
        raise ValueError(token)
    return data


@dataclass
class Calendar:
    id: str
    summary: str
    time_zone: str = "UTC"
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, int] = field(default_factory=dict)  # event id -> change number of its last write
    generation: int = 0  # sync tokens of older generations are expired (410)


@dataclass
class Account(FaultState):
    """One user's calendars, and the faults set on the user's requests."""

    address: str
    calendars: dict[str, Calendar] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # discovery method ids, in order
    writes: list[dict[str, Any]] = field(default_factory=list)
    throttle_status: int = 403
    failures: int = 0  # the next N requests answer `failure_status`
    failure_status: int = 503


class CalendarEmulator:
    def __init__(self, owner_of: Callable[[str | None], str | None]) -> None:
        self.validator = DiscoveryValidator(discovery_document("calendar.v3"))
        self._owner_of = owner_of
        self.accounts: dict[str, Account] = {}
        self.lock = threading.RLock()
        self.push = Pusher()
        self.clock: float | None = None  # None: real time; else the fixed epoch seconds
        self._change = 0
        self._etag = int(time.time() * 1_000_000)

    # ------------------------------------------------------------------ controls
    def now(self) -> float:
        return self.clock if self.clock is not None else time.time()

    def set_clock(self, moment: float | str | None) -> None:
        """Fix the clock at `moment` (epoch seconds or RFC 3339); None gives real time back."""
        self.clock = parse_rfc3339(moment).timestamp() if isinstance(moment, str) else moment

    def account(self, address: str) -> Account:
        address = address.lower()
        with self.lock:
            account = self.accounts.get(address)
            if account is None:
                account = Account(address=address)
                account.calendars["primary"] = Calendar(address, address)
                self.accounts[address] = account
            return account

    def add_calendar(self, address: str, calendar_id: str, summary: str = "") -> None:
        with self.lock:
            self.account(address).calendars[calendar_id] = Calendar(calendar_id, summary or calendar_id)

    def calendar(self, address: str, calendar_id: str) -> Calendar:
        account = self.account(address)
        key = "primary" if calendar_id in ("primary", account.address) else calendar_id
        found = account.calendars.get(key)
        if found is None:
            raise Refused(404, "Not Found", "notFound")
        return found

    def create_in_client(
        self, address: str, event: dict[str, Any], calendar_id: str = "primary", created: str | None = None
    ) -> dict[str, Any]:
        """The user creates an event in Google Calendar; `created` backdates it (RFC 3339)."""
        with self.lock:
            stored = self._insert(self.calendar(address, calendar_id), copy.deepcopy(event), address)
            if created is not None:
                stored["created"] = format_rfc3339(parse_rfc3339(created))
            return copy.deepcopy(stored)

    def edit_in_client(
        self, address: str, event_id: str, changes: dict[str, Any], calendar_id: str = "primary"
    ) -> dict[str, Any]:
        with self.lock:
            calendar = self.calendar(address, calendar_id)
            return copy.deepcopy(self._patch(calendar, self._event(calendar, event_id), changes, address))

    def delete_in_client(self, address: str, event_id: str, calendar_id: str = "primary") -> None:
        with self.lock:
            calendar = self.calendar(address, calendar_id)
            self._delete(calendar, self._event(calendar, event_id), address)

    def move_in_client(
        self, address: str, event_id: str, destination: str, calendar_id: str = "primary"
    ) -> dict[str, Any]:
        with self.lock:
            source = self.calendar(address, calendar_id)
            return copy.deepcopy(
                self._move(
                    source, self._event(source, event_id), self.calendar(address, destination), address
                )
            )

    def expire_sync_tokens(self, address: str, calendar_id: str = "primary") -> None:
        """Every sync token given out so far for the calendar answers 410 from now on."""
        with self.lock:
            self.calendar(address, calendar_id).generation += 1

    def throttle(
        self,
        address: str,
        requests: int,
        status: int = 403,
        reason: str = "rateLimitExceeded",
        method: str | None = None,
        skip: int = 0,
        retry_after: int = 1,
    ) -> None:
        """The next `requests` calls are refused: 403 usageLimits with `reason`
        (rateLimitExceeded or userRateLimitExceeded), or 429; `method` limits it to one
        discovery method id, `skip` lets that many pass first."""
        account = self.account(address)
        with self.lock:
            account.throttle = Throttle(requests, retry_after, only=method, skip=skip, code=reason)
            account.throttle_status = status

    def fail(self, address: str, requests: int, status: int = 503) -> None:
        """The next `requests` calls answer `status` (500 or 503: backendError)."""
        account = self.account(address)
        with self.lock:
            account.failures, account.failure_status = requests, status

    def writes_of(self, address: str) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(w) for w in self.account(address).writes]

    def events_of(self, address: str, calendar_id: str = "primary") -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(e) for e in self.calendar(address, calendar_id).events.values()]

    def close(self) -> None:
        self.push.close()

    # ------------------------------------------------------------------ storage
    def _stamp(self, calendar: Calendar, event: dict[str, Any], address: str) -> None:
        """A write happened: new etag, `updated`, change number; watchers are told."""
        self._change += 1
        self._etag += 1 + secrets.randbelow(1000)
        event["etag"] = f'"{self._etag}"'
        event["updated"] = format_rfc3339(datetime.fromtimestamp(self.now(), UTC))
        calendar.changed[event["id"]] = self._change
        self.push.changed(address, calendar.id, int(self.now() * 1000))

    def _log(
        self, address: str, method: str, calendar: Calendar, event_id: str, query: dict[str, str]
    ) -> None:
        self.account(address).writes.append(
            {
                "method": method,
                "calendarId": calendar.id,
                "eventId": event_id,
                "sendUpdates": query.get("sendUpdates"),
                "sendNotifications": query.get("sendNotifications"),
            }
        )

    def _event(self, calendar: Calendar, event_id: str) -> dict[str, Any]:
        found = calendar.events.get(event_id)
        if found is None:
            raise Refused(404, "Not Found", "notFound")
        return found

    @staticmethod
    def _check_times(event: dict[str, Any]) -> None:
        start, end = event.get("start"), event.get("end")
        if not start:
            raise Refused(400, "Missing start time.", "required")
        if not end:
            raise Refused(400, "Missing end time.", "required")
        if ("date" in start) != ("date" in end) or ("date" in start) == ("dateTime" in start):
            raise Refused(400, "Start and end times must either both be date or both be dateTime.", "invalid")
        for which, value in (("start", start), ("end", end)):
            zone = value.get("timeZone")
            if zone is not None:
                try:
                    ZoneInfo(zone)
                except (ZoneInfoNotFoundError, ValueError) as error:
                    raise Refused(
                        400, f"Invalid time zone definition for {which} time.", "timeRangeEmpty"
                    ) from error
            if "dateTime" in value:
                try:
                    instant_of(value)
                except ValueError as error:
                    raise Refused(
                        400, f"Missing time zone definition for {which} time.", "required"
                    ) from error
        begins, ends = instant_of(start), instant_of(end)
        if ends < begins or ("date" in start and ends == begins):  # an all-day event lasts a day at least
            raise Refused(400, "The specified time range is empty.", "timeRangeEmpty")
        if event.get("recurrence") and "dateTime" in start and not start.get("timeZone"):
            raise Refused(400, "Missing time zone definition for start time.", "required")
        if event.get("visibility", "default") not in VISIBILITIES:
            raise Refused(400, "Invalid value for: visibility", "invalid")

    def _insert(self, calendar: Calendar, body: dict[str, Any], address: str) -> dict[str, Any]:
        event_id = body.get("id") or base64.b32hexencode(secrets.token_bytes(15)).decode().lower()
        if not EVENT_ID.fullmatch(event_id):
            raise Refused(400, "Invalid resource id value.", "invalid")
        if event_id in calendar.events:  # a cancelled event keeps its id taken
            raise Refused(409, "The requested identifier already exists.", "duplicate")
        self._check_times(body)
        created = format_rfc3339(datetime.fromtimestamp(self.now(), UTC))
        event: dict[str, Any] = {
            "kind": "calendar#event",
            "status": "confirmed",
            "reminders": {"useDefault": True},
            "eventType": "default",
            "sequence": 0,
            **body,
            "id": event_id,
            "htmlLink": f"https://www.google.com/calendar/event?eid={event_id}",
            "created": created,
            "creator": {"email": address, "self": True},
            "organizer": {"email": calendar.id, "self": True},
            "iCalUID": body.get("iCalUID") or f"{event_id}@google.com",
        }
        calendar.events[event_id] = event
        self._stamp(calendar, event, address)
        return event

    def _patch(
        self, calendar: Calendar, event: dict[str, Any], changes: dict[str, Any], address: str
    ) -> dict[str, Any]:
        """Patch semantics: given fields replace, nested objects merge, arrays are replaced whole."""

        def merge(into: dict[str, Any], update: dict[str, Any]) -> None:
            for key, value in update.items():
                if value is None:
                    into.pop(key, None)
                elif (
                    isinstance(value, dict)
                    and isinstance(into.get(key), dict)
                    and key not in ("start", "end")
                ):
                    merge(into[key], value)
                else:
                    into[key] = copy.deepcopy(value)

        merged = copy.deepcopy(event)
        merge(merged, {k: v for k, v in changes.items() if k not in ("id", "created", "etag", "updated")})
        self._check_times(merged)
        event.clear()
        event.update(merged)
        self._stamp(calendar, event, address)
        return event

    def _delete(self, calendar: Calendar, event: dict[str, Any], address: str) -> None:
        if event.get("status") == "cancelled":
            raise Refused(410, "Resource has been deleted", "deleted")
        event["status"] = "cancelled"
        self._stamp(calendar, event, address)

    def _move(
        self, source: Calendar, event: dict[str, Any], destination: Calendar, address: str
    ) -> dict[str, Any]:
        if event.get("status") == "cancelled":
            raise Refused(404, "Not Found", "notFound")
        if event.get("recurringEventId"):
            raise Refused(
                400, "Cannot change the organizer of an instance.", "cannotChangeOrganizerOfInstance"
            )
        there = destination.events.get(event["id"])
        if there is not None and there.get("status") != "cancelled":
            raise Refused(409, "The requested identifier already exists.", "duplicate")
        moved = {**copy.deepcopy(event), "organizer": {"email": destination.id, "self": True}}
        event["status"] = "cancelled"
        self._stamp(source, event, address)
        destination.events[moved["id"]] = moved
        self._stamp(destination, moved, address)
        return moved

    def _instances(self, master: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            occurrences = expand(master)
        except Unsupported as error:
            raise Refused(501, f"Not emulated: {error}", "notImplemented") from error
        base = {k: v for k, v in master.items() if k not in ("recurrence", "id", "start", "end")}
        return [
            {
                **copy.deepcopy(base),
                "id": f"{master['id']}_{o.suffix}",
                "recurringEventId": master["id"],
                "originalStartTime": dict(o.start),
                "start": dict(o.start),
                "end": dict(o.end),
            }
            for o in occurrences
        ]

    # ------------------------------------------------------------------ HTTP
    def dispatch(self, request: Request) -> Response:
        query = parse_qs(request.query_string.decode(), keep_blank_values=True)
        body = request.get_data() if request.method in ("POST", "PUT", "PATCH") else None
        try:
            method, path = self.validator.match(request.method, request.path, query, body)
        except Violation as violation:
            return _error(400, f"Invalid request (emulator): {violation}", "invalid")
        address = self._owner_of(request.headers.get("Authorization"))
        if address is None:
            return _error(401, "Invalid Credentials", "authError")
        account = self.account(address)
        with self.lock:
            account.requests.append(method.id)
            if account.failures > 0:
                account.failures -= 1
                return _error(account.failure_status, "Backend Error", "backendError")
            refused = account.throttle.refuses(method.id)
        if refused:
            if account.throttle_status == 429:
                response = _error(429, "Too Many Requests", "rateLimitExceeded", "usageLimits")
            else:
                reason = account.throttle.code or "rateLimitExceeded"
                message = (
                    "User Rate Limit Exceeded" if reason == "userRateLimitExceeded" else "Rate Limit Exceeded"
                )
                response = _error(403, message, reason, "usageLimits")
            response.headers["Retry-After"] = str(account.throttle.retry_after)
            return response
        handler = getattr(self, "_" + method.id.removeprefix("calendar.").replace(".", "_"), None)
        if handler is None:
            return _error(501, f"{method.id} is not emulated", "notImplemented")
        flat = {k: ",".join(v) for k, v in query.items()}
        try:
            with self.lock:
                if "calendarId" in path:
                    calendar: Calendar | None = self.calendar(address, path["calendarId"])
                else:
                    calendar = None
                result: Response = handler(
                    address, calendar, path, flat, json.loads(body) if body else {}, request
                )
                return result
        except Refused as refusal:
            return refusal.response
        except ValueError as error:  # a time or token the handler could not read
            return _error(400, f"Bad Request: {error}", "badRequest")

    @staticmethod
    def _if_match(request: Request, event: dict[str, Any]) -> None:
        wanted = request.headers.get("If-Match")
        if wanted is not None and wanted != "*" and wanted != event.get("etag"):
            raise Refused(412, "Precondition Failed", "conditionNotMet")

    def _calendarList_list(
        self,
        address: str,
        calendar: Calendar | None,
        path: dict[str, str],
        query: dict[str, str],
        body: dict[str, Any],
        request: Request,
    ) -> Response:
        """The user's calendars (one page: users here have few), the primary one marked."""
        account = self.account(address)
        items = [
            {
                "kind": "calendar#calendarListEntry",
                "id": found.id,
                "summary": found.summary,
                "accessRole": "owner",
                **({"primary": True} if key == "primary" else {}),
            }
            for key, found in account.calendars.items()
        ]
        return _json({"kind": "calendar#calendarList", "items": items})

    def _events_insert(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        event = self._insert(calendar, body, address)
        self._log(address, "insert", calendar, event["id"], query)
        return _json(event)

    def _events_get(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        event_id = path["eventId"]
        master_id, _, suffix = event_id.partition("_")
        if event_id not in calendar.events and suffix and master_id in calendar.events:
            found = [i for i in self._instances(calendar.events[master_id]) if i["id"] == event_id]
            if found:
                return _json(found[0])
        event = self._event(calendar, event_id)
        if request.headers.get("If-None-Match") == event.get("etag"):
            return Response(status=304)
        return _json(event)

    def _events_patch(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        event = self._event(calendar, path["eventId"])
        self._if_match(request, event)
        self._patch(calendar, event, body, address)
        self._log(address, "patch", calendar, event["id"], query)
        return _json(event)

    def _events_update(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        event = self._event(calendar, path["eventId"])
        self._if_match(request, event)
        kept = {k: event[k] for k in ("kind", "id", "created", "creator", "organizer", "iCalUID", "htmlLink")}
        replaced = {
            "status": "confirmed",
            "eventType": "default",
            "sequence": event.get("sequence", 0),
            **body,
            **kept,
        }
        self._check_times(replaced)
        event.clear()
        event.update(replaced)
        self._stamp(calendar, event, address)
        self._log(address, "update", calendar, event["id"], query)
        return _json(event)

    def _events_delete(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        event = self._event(calendar, path["eventId"])
        self._if_match(request, event)
        self._delete(calendar, event, address)
        self._log(address, "delete", calendar, event["id"], query)
        return Response(status=204)

    def _events_move(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        destination = self.calendar(address, query["destination"])
        moved = self._move(calendar, self._event(calendar, path["eventId"]), destination, address)
        self._log(address, "move", calendar, moved["id"], query)
        return _json(moved)

    def _events_instances(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        master = self._event(calendar, path["eventId"])
        items = self._instances(master) if master.get("recurrence") else [master]
        items = self._window(items, query)
        return self._page(calendar, items, query, None)

    def _events_list(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        since: int | None = None
        if "syncToken" in query:
            clash = [p for p in SYNC_EXCLUSIVE if p in query]
            if clash:
                raise Refused(400, f"syncToken cannot be combined with {', '.join(clash)}.", "invalid")
            try:
                token = _decode(query["syncToken"])
            except ValueError as error:
                raise Refused(400, "Invalid sync token value.", "invalid") from error
            if token.get("c") != calendar.id or token.get("g") != calendar.generation:
                raise Refused(
                    410, "Sync token is no longer valid, a full sync is required.", "fullSyncRequired"
                )
            since = int(token["s"])
        if query.get("orderBy") == "startTime" and query.get("singleEvents") != "true":
            raise Refused(400, "The requested ordering is not available for the particular query.", "invalid")
        high = self._change
        if "pageToken" in query:
            try:
                high = int(_decode(query["pageToken"])["h"])
            except (ValueError, KeyError) as error:
                raise Refused(400, "Invalid page token value.", "invalid") from error
        events = [
            e
            for e in calendar.events.values()
            if calendar.changed[e["id"]] <= high and (since is None or calendar.changed[e["id"]] > since)
        ]
        if since is None and query.get("showDeleted") != "true":
            events = [e for e in events if e.get("status") != "cancelled"]
        if "iCalUID" in query:
            events = [e for e in events if e.get("iCalUID") == query["iCalUID"]]
        if "updatedMin" in query:
            events = [e for e in events if e["updated"] >= format_rfc3339(parse_rfc3339(query["updatedMin"]))]
        if "q" in query:
            needle = query["q"].lower()
            events = [e for e in events if needle in json.dumps(e).lower()]
        for name in ("privateExtendedProperty", "sharedExtendedProperty"):
            for condition in filter(None, query.get(name, "").split(",")):
                key, _, value = condition.partition("=")
                scope = "private" if name.startswith("private") else "shared"
                events = [
                    e for e in events if e.get("extendedProperties", {}).get(scope, {}).get(key) == value
                ]
        events.sort(key=lambda e: calendar.changed[e["id"]])
        if query.get("singleEvents") == "true":
            expanded: list[dict[str, Any]] = []
            for event in events:
                if event.get("recurrence") and event.get("status") != "cancelled":
                    expanded.extend(self._instances(event))
                else:
                    expanded.append(event)
            events = expanded
        events = self._window(events, query)
        if query.get("orderBy") == "startTime":
            events.sort(key=lambda e: instant_of(e["start"]))
        elif query.get("orderBy") == "updated":
            events.sort(key=lambda e: e["updated"])
        # in change order, one item per event (no orderBy, no expanded instances): paged by change
        in_change_order = "orderBy" not in query and query.get("singleEvents") != "true"
        return self._page(calendar, events, query, high, keyed=in_change_order)

    def _window(self, events: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
        """timeMin/timeMax: events that end after timeMin and start before timeMax."""
        low = parse_rfc3339(query["timeMin"]) if "timeMin" in query else None
        high = parse_rfc3339(query["timeMax"]) if "timeMax" in query else None
        return [
            e
            for e in events
            if "start" not in e
            or (
                (low is None or instant_of(e["end"]) > low)
                and (high is None or instant_of(e["start"]) < high)
            )
        ]

    def _page(
        self,
        calendar: Calendar,
        items: list[dict[str, Any]],
        query: dict[str, str],
        high: int | None,
        keyed: bool = False,
    ) -> Response:
        """One page; `nextSyncToken` only on the last page of a list (high is its change number)."""
        size = min(int(query.get("maxResults", DEFAULT_PAGE)), MAX_PAGE)  # larger asks get the most
        if size < 1:
            raise Refused(400, f"Invalid value '{size}' for maxResults.", "invalid")
        token = _decode(query["pageToken"]) if "pageToken" in query else {}
        if keyed and "o" not in token:
            # in change order: the next page starts after the last change listed, so an event
            # changed between two pages (it leaves this listing for the next sync's) shifts nothing
            after = int(token.get("k", -1))
            items = [e for e in items if calendar.changed[e["id"]] > after]
            page = items[:size]
            more = len(items) > size
            next_token = {"k": calendar.changed[page[-1]["id"]]} if more and page else None
        else:
            offset = int(token.get("o", 0))
            page = items[offset : offset + size]
            more = offset + size < len(items)
            next_token = {"o": offset + size} if more else None
        result: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{self._etag}"',
            "summary": calendar.summary,
            "updated": format_rfc3339(datetime.fromtimestamp(self.now(), UTC)),
            "timeZone": calendar.time_zone,
            "accessRole": "owner",
            "defaultReminders": [],
            "items": page,
        }
        if next_token is not None:
            result["nextPageToken"] = _encode({**next_token, "h": high if high is not None else self._change})
        elif high is not None:
            result["nextSyncToken"] = _encode({"c": calendar.id, "s": high, "g": calendar.generation})
        return _json(result)

    def _events_watch(
        self,
        address: str,
        calendar: Calendar,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        if not body.get("id") or not body.get("address"):
            raise Refused(400, "Required: the channel's id and address.", "required")
        if body.get("type") not in ("web_hook", "webhook"):
            raise Refused(400, "Unknown channel type.", "invalid")
        if body["id"] in self.push.channels:
            raise Refused(400, f"Channel id {body['id']} not unique", "channelIdNotUnique", "push")
        ttl = int((body.get("params") or {}).get("ttl", WATCH_TTL_S))
        resource_id = base64.urlsafe_b64encode(f"{address}/{calendar.id}".encode()).decode().rstrip("=")[:27]
        channel = Channel(
            id=body["id"],
            address=address,
            calendar_id=calendar.id,
            resource_id=resource_id,
            resource_uri=f"https://www.googleapis.com/calendar/v3/calendars/{quote(calendar.id)}/events?alt=json",
            url=body["address"],
            token=body.get("token"),
            expiration_ms=int((self.now() + ttl) * 1000),
        )
        self.push.open(channel)
        answer = {
            "kind": "api#channel",
            "id": channel.id,
            "resourceId": channel.resource_id,
            "resourceUri": channel.resource_uri,
            "expiration": str(channel.expiration_ms),
        }
        if channel.token is not None:
            answer["token"] = channel.token
        return _json(answer)

    def _channels_stop(
        self,
        address: str,
        calendar: Calendar | None,
        path: dict[str, str],
        query: dict[str, str],
        body: Any,
        request: Request,
    ) -> Response:
        channel = self.push.channels.get(body.get("id", ""))
        if channel is None or channel.address != address or channel.resource_id != body.get("resourceId"):
            raise Refused(404, f"Channel '{body.get('id')}' not found for project", "notFound")
        if not channel.stopped:
            self.push.stop(channel)
        return Response(status=204)

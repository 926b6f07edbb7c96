"""Google Calendar's event JSON and the calendar engine's models, both ways (CAL-18).

Reading: an all-day time is Google's `date` (the end is exclusive, as in SyncedFields); a timed
one is `dateTime` (RFC 3339, with an offset, or a wall-clock time read in its `timeZone`) and
the `timeZone` it is shown in. Writing: SyncedFields go through fingerprint.to_event_fields
(the instant shown in its zone) and come out as the JSON an insert or a patch carries; the
attendees carry only what a client may write (Google sets `self` and `organizer` itself)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from crmsync.calendar.fingerprint import to_event_fields
from crmsync.calendar.models import Attendee, CalendarEvent, EventTime, SyncedFields

ACTIVITY_PROPERTY = "crmsync_activity"  # extendedProperties.private: the activity an event is ours for

# which Google fields a changed synced field rewrites; the times go as a pair, so start and end
# never disagree on being dates or dateTimes
_GOOGLE_FIELDS = {
    "subject": ("summary",),
    "start": ("start", "end"),
    "end": ("start", "end"),
    "all_day": ("start", "end"),
    "time_zone": ("start", "end"),
    "location": ("location",),
    "description": ("description",),
    "attendees": ("attendees",),
}


def _rfc3339(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))


def event_time(found: dict[str, Any] | None) -> EventTime | None:
    if not found:
        return None
    zone = found.get("timeZone") or None
    if found.get("date"):
        return EventTime(day=date.fromisoformat(found["date"]), time_zone=zone)
    if found.get("dateTime"):
        return EventTime(date_time=_rfc3339(found["dateTime"]), time_zone=zone)
    return None


def _attendee(found: dict[str, Any]) -> Attendee:
    return Attendee(
        email=str(found.get("email") or ""),
        name=found.get("displayName") or None,
        is_self=bool(found.get("self")),
        organizer=bool(found.get("organizer")),
        resource=bool(found.get("resource")),
    )


def from_google(found: dict[str, Any], calendar_id: str, listed_at: str | None = None) -> CalendarEvent:
    """One item of events.list or an events.get/insert/patch answer. `calendar_id` is the
    calendar it was read from (the primary one's id is the user's address); `listed_at` (the
    listing's `updated`) stands in for the times a bare cancelled item may lack."""
    fallback = listed_at or datetime.now(UTC).isoformat()
    updated = _rfc3339(str(found.get("updated") or found.get("created") or fallback))
    private = (found.get("extendedProperties") or {}).get("private") or {}
    return CalendarEvent(
        provider_event_id=str(found["id"]),
        ical_uid=found.get("iCalUID"),
        calendar_id=calendar_id,
        status=found.get("status") or "confirmed",
        visibility=found.get("visibility") or "default",
        created=_rfc3339(str(found["created"])) if found.get("created") else updated,
        updated=updated,
        summary=str(found.get("summary") or ""),
        start=event_time(found.get("start")),
        end=event_time(found.get("end")),
        location=found.get("location") or None,
        description=found.get("description") or None,
        recurrence=list(found.get("recurrence") or []),
        recurring_event_id=found.get("recurringEventId"),
        original_start=event_time(found.get("originalStartTime")),
        attendees=[_attendee(a) for a in found.get("attendees") or [] if a.get("email")],
        organizer=(found.get("organizer") or {}).get("email"),
        activity_id=private.get(ACTIVITY_PROPERTY),
        etag=found.get("etag"),
    )


def to_google_time(value: EventTime) -> dict[str, str]:
    if value.day is not None:
        return {"date": value.day.isoformat()}
    assert value.date_time is not None
    written = {"dateTime": value.date_time.isoformat()}
    if value.time_zone:
        written["timeZone"] = value.time_zone
    return written


def _attendee_json(attendee: Attendee) -> dict[str, Any]:
    written: dict[str, Any] = {"email": attendee.email}
    if attendee.name:
        written["displayName"] = attendee.name
    if attendee.resource:
        written["resource"] = True
    return written


def to_google(fields: SyncedFields, changed: Sequence[str] | None = None) -> dict[str, Any]:
    """The event JSON of `fields` (CAL-18): every synced field for an insert, or (with `changed`,
    synced field names as fingerprint.differing gives them) only what they rewrite, for a patch.
    A location or description taken away is written empty, which clears it."""
    event = to_event_fields(fields)
    every: dict[str, Any] = {
        "summary": event.summary,
        "start": to_google_time(event.start),
        "end": to_google_time(event.end),
        "location": event.location or "",
        "description": event.description or "",
        "attendees": [_attendee_json(a) for a in event.attendees if not a.is_self],
    }
    if changed is None:
        return {k: v for k, v in every.items() if v not in ("", [])} | {"summary": event.summary}
    wanted = {name for field in changed for name in _GOOGLE_FIELDS.get(field, ())}
    return {k: v for k, v in every.items() if k in wanted}

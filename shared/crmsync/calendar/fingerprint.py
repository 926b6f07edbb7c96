"""The synced fields both ways (CAL-18) and their fingerprint (CAL-15).

The conversions are faithful: an activity's fields made into an event's and back are the same
fields. The fingerprint is forgiving: it is equal for two versions that only differ in what
providers rewrite (trailing whitespace, line endings, the case of an email, the offset a time is
written with, the order of attendees, the calendar's own account among them), so an item the
sync itself wrote never comes back as a change.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field

from crmsync.calendar.models import Activity, Attendee, CalendarEvent, EventTime, SyncedFields

# names providers use for the same zone
_UTC_NAMES = frozenset({"utc", "etc/utc", "z", "gmt", "etc/gmt", "zulu", "etc/zulu", "uct", "etc/uct"})
_UTC_NAMES |= {"universal", "etc/universal", "etc/gmt+0", "etc/gmt-0", "etc/gmt0", "gmt0", "gmt+0", "gmt-0"}

FIELDS = ("subject", "start", "end", "all_day", "time_zone", "location", "description", "attendees")


class EventFields(BaseModel):
    """The writable part of an event, as a PATCH would carry it."""

    summary: str = ""
    start: EventTime
    end: EventTime
    location: str | None = None
    description: str | None = None
    attendees: list[Attendee] = Field(default_factory=list)


def _zone(name: str | None) -> ZoneInfo | None:
    if not name or canonical_zone(name) == "UTC":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def canonical_zone(name: str | None) -> str | None:
    if name is None or not name.strip():
        return None
    return "UTC" if name.strip().lower() in _UTC_NAMES else name.strip()


def to_event_time(value: date | datetime, all_day: bool, time_zone: str | None) -> EventTime:
    if all_day:
        assert not isinstance(value, datetime)
        return EventTime(day=value, time_zone=time_zone)
    assert isinstance(value, datetime)
    zone = _zone(time_zone)
    shown = value.astimezone(zone) if zone is not None else value.astimezone(UTC)
    return EventTime(date_time=shown, time_zone=time_zone)


def instant(t: EventTime) -> datetime:
    """The instant of a timed event time; a time without an offset is read in its zone."""
    assert t.date_time is not None
    value = t.date_time
    if value.utcoffset() is None:
        value = value.replace(tzinfo=_zone(t.time_zone) or UTC)
    return value.astimezone(UTC)


def to_event_fields(fields: SyncedFields) -> EventFields:
    """CAL-18, CRM → calendar: all-day as dates (end exclusive), timed as the instant in its zone."""
    return EventFields(
        summary=fields.subject,
        start=to_event_time(fields.start, fields.all_day, fields.time_zone),
        end=to_event_time(fields.end, fields.all_day, fields.time_zone),
        location=fields.location,
        description=fields.description,
        attendees=[a.model_copy() for a in fields.attendees],
    )


def to_synced_fields(event: EventFields | CalendarEvent) -> SyncedFields:
    """CAL-18, calendar → CRM. The calendar's own account is left out of the attendees."""
    if event.start is None or event.end is None:
        raise ValueError("an event without a start or an end has no synced fields")
    all_day = event.start.day is not None
    start: date | datetime
    end: date | datetime
    if all_day:
        assert event.start.day is not None and event.end.day is not None
        start, end = event.start.day, event.end.day
    else:
        start, end = instant(event.start), instant(event.end)
    return SyncedFields(
        subject=event.summary,
        start=start,
        end=end,
        all_day=all_day,
        time_zone=event.start.time_zone or event.end.time_zone,
        location=event.location,
        description=event.description,
        attendees=[a.model_copy() for a in event.attendees if not a.is_self],
    )


def _text(value: str | None) -> str:
    if not value:
        return ""
    lines = value.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).strip()


def _when(value: date | datetime) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return value.isoformat()


def normalised(fields: SyncedFields) -> dict[str, Any]:
    """The synced fields as providers cannot tell apart. An all-day item's zone is not part of it
    (providers drop it); a timed item is its UTC instant plus its zone's canonical name."""
    emails = sorted({a.email.strip().lower() for a in fields.attendees if not a.is_self and a.email.strip()})
    return {
        "subject": _text(fields.subject),
        "start": _when(fields.start),
        "end": _when(fields.end),
        "all_day": fields.all_day,
        "time_zone": None if fields.all_day else canonical_zone(fields.time_zone),
        "location": _text(fields.location),
        "description": _text(fields.description),
        "attendees": emails,
    }


def fingerprint(item: SyncedFields | EventFields | CalendarEvent) -> str:
    fields = item if isinstance(item, SyncedFields) else to_synced_fields(item)
    if isinstance(fields, Activity):
        fields = fields.fields()
    canonical = json.dumps(normalised(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def differing(a: SyncedFields, b: SyncedFields) -> list[str]:
    """The synced fields that differ once normalised, in a fixed order (what a PATCH carries)."""
    na, nb = normalised(a), normalised(b)
    return [name for name in FIELDS if na[name] != nb[name]]

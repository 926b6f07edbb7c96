"""Expanding an event's RRULE into occurrences, the part of RFC 5545 the emulator supports:
FREQ=DAILY or WEEKLY, with INTERVAL, COUNT, UNTIL, and BYDAY for weekly rules. The rule is
read in the event's own time zone (`start.timeZone`), as Google Calendar expands it, so a
weekly 09:00 meeting stays at 09:00 local time across a daylight-saving change."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

WEEKDAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
MAX_OCCURRENCES = 730  # an open-ended series is cut here (about two years of a daily rule)


class Unsupported(ValueError):
    """A rule the emulator does not expand (another FREQ, or parts it does not know)."""


@dataclass(frozen=True)
class Occurrence:
    start: dict[str, str]  # an EventDateTime: {"date"} or {"dateTime", "timeZone"}
    end: dict[str, str]
    suffix: str  # what follows `<master>_` in the instance id


def parse_rfc3339(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"{value!r} has no offset")
    return parsed


def instant_of(when: dict[str, str]) -> datetime:
    """The moment an EventDateTime names: a date is its midnight UTC; a dateTime without an
    offset is wall-clock time in its `timeZone` (ValueError if it has neither)."""
    if "date" in when:
        return datetime.combine(date.fromisoformat(when["date"]), time(), tzinfo=UTC)
    moment = datetime.fromisoformat(when["dateTime"].replace("Z", "+00:00"))
    if moment.tzinfo is None:
        if not when.get("timeZone"):
            raise ValueError(f"{when['dateTime']!r} has neither an offset nor a timeZone")
        moment = moment.replace(tzinfo=ZoneInfo(when["timeZone"]))
    return moment


def format_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _rule(lines: list[str]) -> dict[str, str]:
    rules = [line.removeprefix("RRULE:") for line in lines if line.startswith("RRULE:")]
    if len(rules) != 1:
        raise Unsupported("exactly one RRULE line is expanded")
    parts = dict(part.split("=", 1) for part in rules[0].split(";") if "=" in part)
    if parts.get("FREQ") not in ("DAILY", "WEEKLY"):
        raise Unsupported(f"FREQ={parts.get('FREQ')} is not expanded")
    unknown = set(parts) - {"FREQ", "INTERVAL", "COUNT", "UNTIL", "BYDAY", "WKST"}
    if unknown or ("BYDAY" in parts and parts["FREQ"] != "WEEKLY"):
        raise Unsupported(f"rule parts {sorted(unknown) or ['BYDAY']} are not expanded")
    return parts


def _until(value: str | None, zone: ZoneInfo | None) -> datetime | None:
    if value is None:
        return None
    if "T" in value:
        moment = datetime.strptime(value.rstrip("Z"), "%Y%m%dT%H%M%S")
        return moment.replace(tzinfo=UTC if value.endswith("Z") else zone)
    day = datetime.strptime(value, "%Y%m%d")
    return datetime.combine(day.date(), time.max, tzinfo=zone)


def _local_starts(first: datetime, parts: dict[str, str]) -> list[datetime]:
    """Local start times (aware, in the rule's zone) of every occurrence, bounded."""
    interval = int(parts.get("INTERVAL", "1"))
    count = int(parts["COUNT"]) if "COUNT" in parts else None
    until = _until(parts.get("UNTIL"), first.tzinfo)  # type: ignore[arg-type]
    limit = min(count or MAX_OCCURRENCES, MAX_OCCURRENCES)
    found: list[datetime] = []

    def take(candidate: datetime) -> bool:
        if until is not None and candidate > until:
            return False
        found.append(candidate)
        return len(found) < limit

    if parts["FREQ"] == "DAILY":
        offset = 0
        while take(_at(first, first.date() + timedelta(days=offset))):
            offset += interval
        return found
    days = sorted(WEEKDAYS.index(d[-2:]) for d in parts.get("BYDAY", WEEKDAYS[first.weekday()]).split(","))
    week_start = first.date() - timedelta(days=first.weekday())
    week = 0
    while True:
        for weekday in days:
            day = week_start + timedelta(days=7 * week + weekday)
            if day < first.date():
                continue
            if not take(_at(first, day)):
                return found
        week += interval


def _at(first: datetime, day: date) -> datetime:
    """`first`'s wall-clock time on `day`, in its zone (the offset follows daylight saving)."""
    return datetime.combine(day, first.timetz().replace(tzinfo=None), tzinfo=first.tzinfo)


def expand(event: dict[str, Any]) -> list[Occurrence]:
    """The occurrences of a recurring event, in order. Raises Unsupported for other rules."""
    parts = _rule(list(event.get("recurrence") or []))
    start, end = event["start"], event["end"]
    if "date" in start:
        first_day = date.fromisoformat(start["date"])
        length = date.fromisoformat(end["date"]) - first_day
        first = datetime.combine(first_day, time(), tzinfo=UTC)
        occurrences = []
        for moment in _local_starts(first, parts):
            day = moment.date()
            occurrences.append(
                Occurrence(
                    {"date": day.isoformat()},
                    {"date": (day + length).isoformat()},
                    day.strftime("%Y%m%d"),
                )
            )
        return occurrences
    zone = ZoneInfo(start["timeZone"])
    first_at = instant_of(start).astimezone(zone)
    duration = instant_of(end) - instant_of(start)
    result = []
    for local in _local_starts(first_at, parts):
        begins = local.astimezone(UTC)
        result.append(
            Occurrence(
                {"dateTime": local.isoformat(), "timeZone": start["timeZone"]},
                {
                    "dateTime": (local + duration).isoformat(),
                    "timeZone": end.get("timeZone", start["timeZone"]),
                },
                begins.strftime("%Y%m%dT%H%M%SZ"),
            )
        )
    return result

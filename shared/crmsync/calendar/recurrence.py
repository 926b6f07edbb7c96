"""CAL-7: a recurring series is one activity, made from its first occurrence.

Google names an occurrence `<master>_<YYYYMMDD[THHMMSSZ]>` and, when a user edits "this and
following", makes a new master `<master>_R<YYYYMMDD[THHMMSS]>` for the tail. Both keep the
original master's id in front, which is the series key: it stays the same when the series is
edited, split, or when a single event becomes recurring (Google keeps the id then).
"""

from __future__ import annotations

import re
from typing import Literal

from crmsync.calendar.models import CalendarEvent

Role = Literal["single", "series", "occurrence", "split_tail"]

_STAMP = r"\d{8}(?:T\d{6}Z?)?"
_OCCURRENCE = re.compile(rf"^(?P<base>.+?)_{_STAMP}$")
_SPLIT = re.compile(rf"^(?P<base>.+?)(?:_R{_STAMP})+$")


def _strip(event_id: str) -> tuple[str, bool]:
    """The master id behind an occurrence or split id, and whether a split suffix was removed."""
    base = event_id
    occ = _OCCURRENCE.match(base)
    if occ:
        base = occ["base"]
    split = _SPLIT.match(base)
    if split:
        return split["base"], True
    return base, False


def series_key(event: CalendarEvent) -> str:
    """The key of the state row an event belongs to: the same for a series, its occurrences, its
    split tails, and for the single event it was before it became recurring."""
    base, _ = _strip(event.recurring_event_id or event.provider_event_id)
    return base


def role(event: CalendarEvent) -> Role:
    if event.recurring_event_id is not None:
        return "occurrence"
    base, split = _strip(event.provider_event_id)
    if split:
        return "split_tail"
    if base != event.provider_event_id:
        return "occurrence"  # an occurrence id seen without its master (a cancelled instance)
    return "series" if event.recurrence else "single"


def is_first_occurrence(event: CalendarEvent, master: CalendarEvent | None) -> bool:
    """An occurrence stands for the series' activity only if it is the first one: the occurrence
    whose original start is the master's start."""
    if role(event) != "occurrence" or master is None:
        return False
    first = master.start
    return first is not None and event.original_start == first


def carries_activity(event: CalendarEvent, master: CalendarEvent | None = None) -> bool:
    """Whether this event's fields are the activity's: a single event or a master (its start is
    the first occurrence), or the first occurrence itself; never a later occurrence or a split
    tail, whose changes do not touch the activity."""
    kind = role(event)
    if kind in ("single", "series"):
        return True
    return kind == "occurrence" and is_first_occurrence(event, master)

"""The CRM's activities, the provider's events, and what the engine keeps between syncs."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Self

from pydantic import BaseModel, Field, model_validator

EventStatus = Literal["confirmed", "tentative", "cancelled"]
Visibility = Literal["default", "public", "private", "confidential"]
Side = Literal["crm", "provider"]
TrashReason = Literal["deleted_in_calendar", "moved_to_other_calendar", "made_private", "owner_changed"]


class Attendee(BaseModel):
    email: str
    name: str | None = None
    is_self: bool = Field(default=False, description="the calendar's own account (providers list it)")
    organizer: bool = False
    resource: bool = Field(default=False, description="a room or a piece of equipment, not a person")


class SyncedFields(BaseModel):
    """What an activity and its event share, in the CRM's terms.

    All-day: `start` and `end` are dates and `end` is exclusive (a one-day item ends the next day).
    Timed: `start` and `end` are aware datetimes and `time_zone` is the IANA zone they are shown in.
    """

    subject: str = ""
    start: date | datetime
    end: date | datetime
    all_day: bool = False
    time_zone: str | None = None
    location: str | None = None
    description: str | None = None
    attendees: list[Attendee] = Field(default_factory=list)

    @model_validator(mode="after")
    def _times_match_kind(self) -> Self:
        for t in (self.start, self.end):
            if self.all_day and isinstance(t, datetime):
                raise ValueError("an all-day item has dates, not datetimes")
            if not self.all_day and not isinstance(t, datetime):
                raise ValueError("a timed item has datetimes, not dates")
            if isinstance(t, datetime) and t.utcoffset() is None:
                raise ValueError("a timed item needs aware datetimes")
        if self.end < self.start:
            raise ValueError("end before start")
        return self


class Activity(SyncedFields):
    """An activity as the CRM keeps it (PUT /v1/activities/{id})."""

    id: str
    tenant_id: str
    owner_user_id: str
    type: str
    created_at: datetime
    updated_at: datetime
    trashed: bool = False
    origin_event_id: str | None = Field(
        default=None, description="the calendar event the sync made this activity from, if it did"
    )
    written_by_sync: bool = Field(
        default=False, description="this version was written by the sync from the calendar, not by the CRM"
    )

    def fields(self) -> SyncedFields:
        return SyncedFields.model_validate(self.model_dump(include=set(SyncedFields.model_fields)))


class EventTime(BaseModel):
    """A provider's start or end: a `day` for all-day (Google's `date`), or a `date_time` (with or
    without an offset) in `time_zone`."""

    day: date | None = None
    date_time: datetime | None = None
    time_zone: str | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if (self.day is None) == (self.date_time is None):
            raise ValueError("an event time is either a date or a date_time")
        return self


class CalendarEvent(BaseModel):
    """One event as a provider adapter read it, in no provider's shape."""

    provider_event_id: str
    ical_uid: str | None = None
    calendar_id: str
    status: EventStatus = "confirmed"
    visibility: Visibility = "default"
    created: datetime
    updated: datetime
    summary: str = ""
    start: EventTime | None = Field(default=None, description="absent on some cancelled events")
    end: EventTime | None = None
    location: str | None = None
    description: str | None = None
    recurrence: list[str] = Field(default_factory=list, description="RRULE, EXDATE, RDATE lines")
    recurring_event_id: str | None = Field(default=None, description="the master, on an occurrence")
    original_start: EventTime | None = Field(default=None, description="where an occurrence was due")
    attendees: list[Attendee] = Field(default_factory=list)
    organizer: str | None = None
    activity_id: str | None = Field(default=None, description="our private extended property")
    etag: str | None = None

    @property
    def all_day(self) -> bool:
        return self.start is not None and self.start.day is not None


class SyncState(BaseModel):
    """One row per synced item: what both sides looked like when they last agreed."""

    tenant_id: str
    activity_id: str
    provider_event_id: str
    calendar_id: str
    series_key: str
    ical_uid: str | None = Field(default=None, description="where a moved event is looked for (CAL-12)")
    crm_version: datetime | None = Field(default=None, description="the activity's updated_at last synced")
    provider_etag: str | None = None
    fingerprint: str
    last_synced_at: datetime
    trashed_by_sync: TrashReason | None = Field(
        default=None, description="set while the sync keeps the activity in the CRM trash, and why"
    )
    gap_fingerprint: str | None = Field(
        default=None,
        description="CAL-11: the calendar's version made while sync was stopped, reported and not "
        "applied; seeing it again is no change",
    )


class Conflict(BaseModel):
    """CAL-14: both sides changed; the winner was applied and the loser is kept here."""

    activity_id: str
    provider_event_id: str
    crm_version: SyncedFields
    provider_version: SyncedFields
    differing: list[str]
    winner: Side
    crm_changed_at: datetime
    provider_changed_at: datetime
    decided_at: datetime


class CalendarSettings(BaseModel):
    """CAL-4, CAL-5, CAL-16 settings of one calendar connection."""

    save_events_as: str = Field(default="meeting", description="CAL-4: activity type events become")
    activity_types: list[str] = Field(default_factory=lambda: ["meeting"], description="CAL-5")
    max_trash_share: float = Field(default=0.2, ge=0, le=1, description="CAL-16")
    min_trash_refused: int = Field(default=10, ge=1, description="CAL-16: smaller batches always run")


class StopGap(BaseModel):
    """CAL-9 to CAL-11: the time sync was stopped. A change the calendar made to an already synced
    event inside it is reported to the CRM, and applied only when `apply` (the tenant's
    `apply_gap_changes`)."""

    stopped_at: datetime
    resumed_at: datetime | None = Field(default=None, description="None: still stopped")
    apply: bool = False

    def holds(self, changed_at: datetime) -> bool:
        return self.stopped_at < changed_at and (self.resumed_at is None or changed_at <= self.resumed_at)


class CalendarLink(BaseModel):
    """The connection an item is planned for."""

    tenant_id: str
    owner_user_id: str
    calendar_id: str = Field(description="CAL-3: the primary calendar's id")
    original_connection_date: datetime = Field(description="CAL-6: recorded at the first connect")
    settings: CalendarSettings = Field(default_factory=CalendarSettings)
    gap: StopGap | None = Field(default=None, description="the last stop, if sync was ever stopped")

    @property
    def stopped(self) -> bool:
        """CAL-9: nothing changes on either side while stopped."""
        return self.gap is not None and self.gap.resumed_at is None

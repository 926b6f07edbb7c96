"""Google Calendar: a user of the calendar emulator (local/emulators/gcal/, served over HTTP), read
and written through the real adapter (providers/google/calendar.py, google-api-python-client).
The user's edits go through the emulator's client controls, in Google's event JSON."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from crmsync.calendar.fingerprint import FIELDS
from crmsync.calendar.models import CalendarEvent, SyncedFields, Visibility
from crmsync.providers.google.calendar_events import from_google, to_google
from local.emulators.gcal.recurrence import format_rfc3339
from local.emulators.servers import Emulators
from tests.contract.calendar_providers import ContractCalendar, Where
from tests.integration.test_gcal_adapter import User


def google_body(
    fields: SyncedFields | None,
    visibility: Visibility | None = None,
    recurrence: Sequence[str] | None = None,
    color: str | None = None,
    every: bool = False,
) -> dict[str, Any]:
    """The event JSON of a user's edit in the client (`every`: all synced fields, emptied ones
    too, as an edit that clears a location writes it)."""
    body: dict[str, Any] = {}
    if fields is not None:
        body |= to_google(fields, list(FIELDS)) if every else to_google(fields)
    if visibility is not None:
        body["visibility"] = visibility
    if recurrence is not None:
        body["recurrence"] = list(recurrence) or None
    if color is not None:
        body["colorId"] = color
    return body


class GoogleCalendar(ContractCalendar):
    name = "google"

    def __init__(self, fixture: Callable[[str], Any]) -> None:
        emulators: Emulators = fixture("emulators")
        self.user = User(emulators)
        self.emulator = self.user.calendar
        self.address = self.user.address
        self.other = f"team-{uuid.uuid4().hex[:8]}@group.calendar.test"
        self.emulator.add_calendar(self.address, self.other, "Team")
        self.account = self.user.account
        self.source, self.importer, self.writer = self.user.source, self.user.importer, self.user.writer
        self._clock: datetime | None = None

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.emulator.now(), UTC)

    def set_clock(self, moment: datetime | None) -> None:
        self.emulator.set_clock(None if moment is None else moment.timestamp())

    def _calendar(self, where: Where) -> str:
        return "primary" if where == "primary" else self.other

    def user_creates(
        self,
        fields: SyncedFields,
        *,
        visibility: Visibility = "default",
        recurrence: Sequence[str] = (),
        created: datetime | None = None,
        color: str | None = None,
        where: Where = "primary",
    ) -> str:
        body = google_body(fields, visibility, recurrence or None, color)
        made = self.emulator.create_in_client(
            self.address, body, self._calendar(where), format_rfc3339(created) if created else None
        )
        return str(made["id"])

    def user_edits(
        self,
        event_id: str,
        fields: SyncedFields | None = None,
        *,
        visibility: Visibility | None = None,
        recurrence: Sequence[str] | None = None,
    ) -> None:
        self.emulator.edit_in_client(
            self.address, event_id, google_body(fields, visibility, recurrence, every=True)
        )

    def user_deletes(self, event_id: str) -> None:
        self.emulator.delete_in_client(self.address, event_id)

    def user_moves(self, event_id: str, to: Where) -> None:
        source = self._calendar("other" if to == "primary" else "primary")
        self.emulator.move_in_client(self.address, event_id, self._calendar(to), source)

    def expire_cursor(self) -> None:
        self.emulator.expire_sync_tokens(self.address)

    def throttle_listing(self) -> None:
        self.emulator.throttle(self.address, 1, method="calendar.events.list")

    def primary_events(self) -> list[CalendarEvent]:
        return [from_google(e, self.address) for e in self.emulator.events_of(self.address)]

    def color_of(self, event_id: str) -> str | None:
        (found,) = [e for e in self.emulator.events_of(self.address) if e["id"] == event_id]
        return found.get("colorId")

    def writes(self) -> list[dict[str, Any]]:
        return self.emulator.writes_of(self.address)


FIXTURE = GoogleCalendar

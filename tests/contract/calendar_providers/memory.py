"""The in-memory Google Calendar of the model test (tests/contract/calendar_memory.py): the same
scenarios as the emulator's fixture, so the model test's provider is known to behave like it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from crmsync.calendar.models import CalendarEvent, SyncedFields, Visibility
from crmsync.providers.google.calendar_events import from_google
from tests.contract.calendar_memory import (
    MemoryCalendar,
    MemoryCalendarImport,
    MemoryCalendarSource,
    MemoryCalendarWriter,
)
from tests.contract.calendar_providers import ContractCalendar, Where
from tests.contract.calendar_providers.google import google_body
from tests.contract.calendar_rig import calendar_account

OTHER = "team@group.calendar.test"


class InMemoryCalendar(ContractCalendar):
    name = "memory"

    def __init__(self, fixture: Callable[[str], Any]) -> None:
        self._clock: datetime | None = None
        self.address = f"cal-{uuid.uuid4().hex[:8]}@gmail.test"
        self.calendar = MemoryCalendar(
            self.address, self.now, page_size=3
        )  # small pages: paging is exercised
        self.calendar.add_calendar(OTHER)
        self.account = calendar_account(f"acc-{uuid.uuid4().hex[:8]}", self.address, self.now())
        self.source = MemoryCalendarSource(self.calendar)
        self.importer = MemoryCalendarImport(self.calendar)
        self.writer = MemoryCalendarWriter(self.calendar)

    def now(self) -> datetime:
        return self._clock or datetime.now(UTC)

    def set_clock(self, moment: datetime | None) -> None:
        self._clock = moment

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
        made = self.calendar.create_in_client(body, "primary" if where == "primary" else OTHER, created)
        return str(made["id"])

    def user_edits(
        self,
        event_id: str,
        fields: SyncedFields | None = None,
        *,
        visibility: Visibility | None = None,
        recurrence: Sequence[str] | None = None,
    ) -> None:
        self.calendar.edit_in_client(event_id, google_body(fields, visibility, recurrence, every=True))

    def user_deletes(self, event_id: str) -> None:
        self.calendar.delete_in_client(event_id)

    def user_moves(self, event_id: str, to: Where) -> None:
        if to == "primary":
            self.calendar.move_in_client(event_id, "primary", OTHER)
        else:
            self.calendar.move_in_client(event_id, OTHER)

    def expire_cursor(self) -> None:
        self.calendar.expire_sync_tokens()

    def throttle_listing(self) -> None:
        self.calendar.throttle("list")

    def primary_events(self) -> list[CalendarEvent]:
        return [from_google(e, self.address) for e in self.calendar.events_of()]

    def color_of(self, event_id: str) -> str | None:
        (found,) = [e for e in self.calendar.events_of() if e["id"] == event_id]
        return found.get("colorId")

    def writes(self) -> list[dict[str, Any]]:
        return list(self.calendar.writes)


FIXTURE = InMemoryCalendar

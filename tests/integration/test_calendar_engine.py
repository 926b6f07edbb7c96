"""The calendar engine, two ways, on the sync core's loop: Google Calendar (the emulator, over
HTTP, through the real adapter) into CRM activities and back. The activity store is the
in-memory one, which passes the same contract as the DynamoDB store
(tests/contract/test_activity_store.py); what the CRM is told is read from the publisher."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crmsync.calendar.engine import CalendarSync, MassTrashRefused
from crmsync.calendar.models import Activity, CalendarLink, CalendarSettings
from crmsync.events import (
    ActivityCreatedFromCalendar,
    ActivityTrashed,
    ActivityUpdatedFromCalendar,
    CalendarConflictRecorded,
)
from crmsync.stores.memory import MemoryCursorStore, MemoryEventPublisher
from crmsync.stores.memory_activities import MemoryActivityStore
from crmsync.sync.core import CursorLoop
from local.emulators.servers import Emulators
from tests.integration.test_gcal_adapter import User


class Calendar:
    """A connected Google calendar: the engine, its loop and what the CRM was told."""

    def __init__(self, emulators: Emulators, settings: CalendarSettings | None = None) -> None:
        self.user = User(emulators)
        self.connected = datetime.now(UTC) - timedelta(minutes=5)
        self.store = MemoryActivityStore()
        self.told = MemoryEventPublisher()
        self.link = CalendarLink(
            tenant_id=self.user.account.tenant_id,
            owner_user_id=self.user.account.user_id,
            calendar_id=self.user.address,
            original_connection_date=self.connected,
            settings=settings or CalendarSettings(),
        )
        self.engine = CalendarSync(
            self.store, {"google": self.user.writer}, self.told, lambda _account: self.link
        )
        self.cursors = MemoryCursorStore()
        self.resyncs: list[str] = []
        self.loop = CursorLoop(
            self.engine, self.cursors, lambda _a, why: self.resyncs.append(why), "calendar"
        )
        # the connect: the full listing, whose last page gives the first cursor
        pages, cursor = self.user.full_listing()
        for page in pages:
            self.engine.ingest_many(self.user.account, page.items)
        self.cursors.advance(self.user.account.account_id, "calendar", cursor, expected=None)

    def sync(self) -> None:
        result = self.loop.run(self.user.account, self.user.source)
        assert result.status == "synced", result

    def make(self, summary: str, created: str | None = None, **extra: Any) -> dict[str, Any]:
        body = {
            "summary": summary,
            "start": {"dateTime": "2026-12-10T09:00:00+01:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2026-12-10T10:00:00+01:00", "timeZone": "Europe/Paris"},
            **extra,
        }
        return self.user.calendar.create_in_client(self.user.address, body, created=created)

    def events(self, kind: type) -> list[Any]:
        return [e for e in self.told.events if isinstance(e, kind)]

    def activity(self, activity_id: str) -> Activity:
        found = self.store.get_activity(self.user.account.tenant_id, activity_id)
        assert found is not None
        return found


@pytest.fixture
def calendar(emulators: Emulators) -> Calendar:
    return Calendar(emulators)


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-4")
@pytest.mark.rule("CAL-6")
def test_events_made_in_the_calendar_become_activities_and_older_ones_never_do(emulators: Emulators) -> None:
    cal = Calendar(emulators, CalendarSettings(save_events_as="call"))
    before = (cal.connected - timedelta(days=30)).isoformat()
    cal.make("Made before we were connected, moved into the future", created=before)
    made = cal.make("Kick-off with Carla", attendees=[{"email": "carla@client.test"}])
    cal.sync()
    (created,) = cal.events(ActivityCreatedFromCalendar)
    assert created.provider_event_id == made["id"] and created.type == "call"
    assert created.fields.subject == "Kick-off with Carla"
    assert created.fields.time_zone == "Europe/Paris" and not created.fields.all_day
    assert cal.activity(created.activity_id).fields() == created.fields


@pytest.mark.rule("CAL-15")
@pytest.mark.rule("CAL-17")
def test_nothing_echoes_and_a_crm_change_is_patched_without_notifying_anyone(calendar: Calendar) -> None:
    made = calendar.make("Review")
    calendar.sync()
    (created,) = calendar.events(ActivityCreatedFromCalendar)
    calendar.sync()  # the same event again: nothing new either side
    assert len(calendar.told.events) == 1
    # the CRM renames the activity: the event is patched, and the patch does not come back
    activity = calendar.activity(created.activity_id)
    renamed = activity.model_copy(
        update={
            "subject": "Review of the offer",
            "updated_at": activity.updated_at + timedelta(minutes=1),
            "written_by_sync": False,  # the CRM's own change, as its PUT makes it
        }
    )
    calendar.store.put_activity(renamed)
    outcome = calendar.engine.push(calendar.user.account, renamed)
    assert (outcome.action, outcome.status) == ("update_event", "synced")
    (stored,) = [e for e in calendar.user.calendar.events_of(calendar.user.address) if e["id"] == made["id"]]
    assert stored["summary"] == "Review of the offer"
    writes = calendar.user.calendar.writes_of(calendar.user.address)
    assert writes and all(w.get("sendUpdates") == "none" for w in writes)
    assert {w["method"] for w in writes} == {"patch"}  # never a full update
    calendar.sync()  # the engine's own patch comes back as a change: it is no change
    assert calendar.events(ActivityUpdatedFromCalendar) == []
    assert calendar.engine.push(calendar.user.account, renamed).action == "nothing"


@pytest.mark.rule("CAL-1")
def test_an_edit_in_the_calendar_updates_the_activity(calendar: Calendar) -> None:
    made = calendar.make("Demo")
    calendar.sync()
    calendar.user.calendar.edit_in_client(calendar.user.address, made["id"], {"location": "Room 4"})
    calendar.sync()
    (updated,) = calendar.events(ActivityUpdatedFromCalendar)
    assert updated.changed == ["location"] and updated.fields.location == "Room 4"
    assert calendar.activity(updated.activity_id).location == "Room 4"


@pytest.mark.rule("CAL-8")
def test_an_event_made_private_later_leaves_the_crm_and_a_private_one_never_enters(
    calendar: Calendar,
) -> None:
    calendar.make("Doctor", visibility="private")
    shared = calendar.make("Team lunch")
    calendar.sync()
    (created,) = calendar.events(ActivityCreatedFromCalendar)
    assert created.provider_event_id == shared["id"]
    calendar.user.calendar.edit_in_client(calendar.user.address, shared["id"], {"visibility": "private"})
    calendar.sync()
    (trashed,) = calendar.events(ActivityTrashed)
    assert (trashed.activity_id, trashed.reason) == (created.activity_id, "made_private")
    assert calendar.activity(created.activity_id).trashed


@pytest.mark.rule("CAL-14")
def test_when_both_sides_changed_the_most_recent_wins_and_the_other_is_kept(calendar: Calendar) -> None:
    made = calendar.make("Budget")
    calendar.sync()
    (created,) = calendar.events(ActivityCreatedFromCalendar)
    activity = calendar.activity(created.activity_id)
    # the CRM changed it a while ago; the calendar changes it now: the calendar's wins
    older = activity.model_copy(
        update={"subject": "Budget (CRM)", "updated_at": activity.updated_at, "written_by_sync": False}
    )
    calendar.store.put_activity(
        older.model_copy(update={"updated_at": activity.updated_at + timedelta(seconds=1)})
    )
    calendar.user.calendar.set_clock(time.time() + 60)  # the calendar's edit is a minute later
    try:
        calendar.user.calendar.edit_in_client(
            calendar.user.address, made["id"], {"summary": "Budget (calendar)"}
        )
    finally:
        calendar.user.calendar.set_clock(None)
    calendar.sync()
    (conflict,) = calendar.events(CalendarConflictRecorded)
    assert conflict.winner == "provider" and conflict.differing == ["subject"]
    assert conflict.crm_version.subject == "Budget (CRM)"
    assert calendar.activity(created.activity_id).subject == "Budget (calendar)"
    kept = calendar.store.conflicts(calendar.user.account.tenant_id, created.activity_id)
    assert [c.winner for c in kept] == ["provider"]


@pytest.mark.rule("CAL-16")
def test_a_page_that_would_trash_too_many_activities_stops_and_acts_on_none(calendar: Calendar) -> None:
    made = [calendar.make(f"Meeting {n}") for n in range(12)]
    calendar.sync()
    assert len(calendar.events(ActivityCreatedFromCalendar)) == 12
    for event in made:
        calendar.user.calendar.delete_in_client(calendar.user.address, event["id"])
    cursor = calendar.cursors.get(calendar.user.account.account_id, "calendar")
    with pytest.raises(MassTrashRefused, match="12"):
        calendar.loop.run(calendar.user.account, calendar.user.source)
    assert calendar.events(ActivityTrashed) == []  # nothing acted on
    assert calendar.cursors.get(calendar.user.account.account_id, "calendar") == cursor  # nor moved on

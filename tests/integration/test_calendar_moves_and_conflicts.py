"""Two defects the demo found, fixed and kept fixed, on the engine over the Google Calendar
emulator (through the real adapter):
- a move to another calendar is listed by Google as a cancel at the source; it must trash the
  activity as moved (CAL-12), not as deleted, and moving it back restores it;
- a CRM change pushed while the calendar's newer change is not synced yet must not overwrite it
  unseen: the patch carries the etag last synced, Google answers 412, and the item is planned
  again against the event as it is, so the most recent change wins and the other is kept (CAL-14).
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from crmsync.calendar.fingerprint import to_synced_fields
from crmsync.calendar.models import Activity, CalendarEvent
from crmsync.events import (
    ActivityCreatedFromCalendar,
    ActivityRestored,
    ActivityTrashed,
    CalendarConflictRecorded,
)
from local.emulators.servers import Emulators
from tests.integration.test_calendar_engine import Calendar


@pytest.mark.rule("CAL-12")
def test_an_event_moved_to_another_calendar_is_trashed_as_moved_and_restored_when_moved_back(
    emulators: Emulators,
) -> None:
    cal = Calendar(emulators)
    cal.user.calendar.add_calendar(cal.user.address, "team", "Team")
    made = cal.make("Offsite planning")
    cal.sync()
    (created,) = cal.events(ActivityCreatedFromCalendar)

    cal.user.calendar.move_in_client(cal.user.address, made["id"], "team")
    cal.sync()
    (trashed,) = cal.events(ActivityTrashed)
    assert trashed.activity_id == created.activity_id and trashed.reason == "moved_to_other_calendar"
    assert cal.activity(created.activity_id).trashed
    cal.sync()  # listed again: nothing more
    assert len(cal.events(ActivityTrashed)) == 1

    cal.user.calendar.move_in_client(cal.user.address, made["id"], "primary", calendar_id="team")
    cal.sync()
    (restored,) = cal.events(ActivityRestored)
    assert restored.activity_id == created.activity_id
    assert not cal.activity(created.activity_id).trashed


@pytest.mark.rule("CAL-1")
def test_an_event_deleted_in_the_calendar_is_still_trashed_as_deleted(emulators: Emulators) -> None:
    cal = Calendar(emulators)
    cal.user.calendar.add_calendar(cal.user.address, "team", "Team")  # another calendar, not holding it
    made = cal.make("Cancelled call")
    cal.sync()
    cal.user.calendar.delete_in_client(cal.user.address, made["id"])
    cal.sync()
    (trashed,) = cal.events(ActivityTrashed)
    assert trashed.reason == "deleted_in_calendar"


def _synced_then_edited_in_google(cal: Calendar, later_by_s: float) -> tuple[str, str]:
    """An event synced into the CRM, then renamed in Google (not synced yet) `later_by_s` from now."""
    made = cal.make("Budget")
    cal.sync()
    (created,) = cal.events(ActivityCreatedFromCalendar)
    cal.user.calendar.set_clock(time.time() + later_by_s)
    try:
        cal.user.calendar.edit_in_client(cal.user.address, made["id"], {"summary": "Budget (Google)"})
    finally:
        cal.user.calendar.set_clock(None)
    return made["id"], created.activity_id


@pytest.mark.rule("CAL-14")
def test_a_crm_change_pushed_over_a_newer_unsynced_calendar_change_loses_and_is_kept(
    emulators: Emulators,
) -> None:
    cal = Calendar(emulators)
    event_id, activity_id = _synced_then_edited_in_google(cal, later_by_s=60)
    crm = cal.activity(activity_id)
    crm = crm.model_copy(
        update={
            "subject": "Budget (CRM)",
            "updated_at": crm.updated_at + timedelta(seconds=1),
            "written_by_sync": False,
        }
    )
    cal.store.put_activity(crm)
    outcome = cal.engine.push(cal.user.account, crm)
    assert outcome.action == "update_activity"
    (conflict,) = cal.events(CalendarConflictRecorded)
    assert conflict.winner == "provider" and conflict.crm_version.subject == "Budget (CRM)"
    assert cal.activity(activity_id).subject == "Budget (Google)"
    (event,) = [e for e in cal.user.calendar.events_of(cal.user.address) if e["id"] == event_id]
    assert event["summary"] == "Budget (Google)"  # the newer change stands in the calendar too
    assert [c.winner for c in cal.store.conflicts(cal.user.account.tenant_id, activity_id)] == ["provider"]


@pytest.mark.rule("CAL-14")
def test_a_newer_crm_change_over_an_unsynced_calendar_change_wins_and_the_calendars_is_kept(
    emulators: Emulators,
) -> None:
    cal = Calendar(emulators)
    event_id, activity_id = _synced_then_edited_in_google(cal, later_by_s=-30)
    crm = cal.activity(activity_id)
    crm = crm.model_copy(
        update={
            "subject": "Budget (CRM)",
            "updated_at": crm.updated_at + timedelta(minutes=5),
            "written_by_sync": False,
        }
    )
    cal.store.put_activity(crm)
    outcome = cal.engine.push(cal.user.account, crm)
    assert outcome.action == "update_event"
    (conflict,) = cal.events(CalendarConflictRecorded)
    assert conflict.winner == "crm" and conflict.provider_version.subject == "Budget (Google)"
    (event,) = [e for e in cal.user.calendar.events_of(cal.user.address) if e["id"] == event_id]
    assert event["summary"] == "Budget (CRM)"
    cal.sync()  # the calendar's change, listed now, is no change any more: nothing more is told
    assert len(cal.events(CalendarConflictRecorded)) == 1
    assert cal.activity(activity_id).subject == "Budget (CRM)"


@pytest.mark.rule("SYNC-8")
def test_an_event_whose_activity_is_synced_with_another_event_is_a_skip_not_a_stuck_sync(
    emulators: Emulators,
) -> None:
    """An activity the sync made from an event, whose row a crash left unwritten, found synced
    with another event by then (data from before the push learnt the origin): the event is a
    recorded skip with its reason, the page's other events sync, and the cursor moves on."""
    from crmsync.calendar.engine import activity_id_for
    from crmsync.calendar.fingerprint import fingerprint
    from crmsync.calendar.models import SyncState
    from crmsync.providers.google.calendar_events import from_google

    cal = Calendar(emulators)
    orphan = cal.make("Made, told, row lost")
    other = cal.make("Another event")
    account = cal.user.account
    activity_id = activity_id_for(account.account_id, orphan["id"])
    made = from_google(orphan, cal.user.address)
    cal.store.put_activity(_activity(cal, made, activity_id))
    elsewhere = SyncState(
        tenant_id=account.tenant_id,
        activity_id=activity_id,
        provider_event_id=other["id"] + "x",
        calendar_id=cal.user.address,
        series_key="x",
        fingerprint=fingerprint(made),
        last_synced_at=made.updated,
    )
    assert cal.store.put_state(account.account_id, elsewhere, None)
    before = cal.cursors.get(account.account_id, "calendar")
    result = cal.loop.run(account, cal.user.source)
    assert result.status == "synced"
    assert [(f.item_id, f.reason.split(":")[0]) for f in result.failed] == [(orphan["id"], "duplicate_event")]
    (created,) = cal.events(ActivityCreatedFromCalendar)
    assert created.provider_event_id == other["id"]  # the page's other event synced
    assert cal.cursors.get(account.account_id, "calendar") != before


def _activity(cal: Calendar, made: CalendarEvent, activity_id: str) -> Activity:
    return Activity(
        id=activity_id,
        tenant_id=cal.user.account.tenant_id,
        owner_user_id=cal.user.account.user_id,
        type="meeting",
        created_at=made.created,
        updated_at=made.updated,
        origin_event_id=made.provider_event_id,
        **to_synced_fields(made).model_dump(),
    )

"""The Google Calendar adapter against the calendar emulator, over HTTP with the real
google-api-python-client: the incremental listing by sync token and its expiry, the full
listing and its final cursor, the event mapping both ways (CAL-18), idempotent creates
(CAL-15), writes that never notify and are never full updates (CAL-17), deletes, usage limits,
and a moved event found in another calendar (CAL-12)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from crmsync.accounts.models import Account, AccountSettings
from crmsync.calendar.fingerprint import fingerprint, to_synced_fields
from crmsync.calendar.models import Attendee, CalendarEvent, SyncedFields
from crmsync.errors import TransientError
from crmsync.providers.google.calendar import (
    PAGE_SIZE,
    GoogleCalendarImport,
    GoogleCalendarSource,
    GoogleCalendarWriter,
    calendar_service,
)
from crmsync.providers.google.calendar_events import from_google, to_google
from crmsync.resync import ResyncJob
from crmsync.sync.core import ChangePage, CursorExpired
from local.emulators.gcal import CalendarEmulator
from local.emulators.servers import Emulators

TEAM = "team@group.calendar.test"
PARIS = ZoneInfo("Europe/Paris")
TIMED = SyncedFields(
    subject="Call Carla",
    start=datetime(2026, 12, 1, 9, 0, tzinfo=PARIS),
    end=datetime(2026, 12, 1, 10, 30, tzinfo=PARIS),
    time_zone="Europe/Paris",
    location="Lyon office",
    description="Renewal\nand pricing",
    attendees=[Attendee(email="carla@client.test", name="Carla")],
)
ALL_DAY = SyncedFields(subject="Offsite", start=date(2026, 12, 2), end=date(2026, 12, 4), all_day=True)


class User:
    """One Google user in the emulator, as an account, with the three adapters on its token."""

    def __init__(self, emulators: Emulators) -> None:
        self.address = f"cal-{uuid.uuid4().hex[:8]}@gmail.test"
        self.calendar: CalendarEmulator = emulators.google.calendar
        self.token = token = emulators.google.issue_access_token(self.address)
        self.url = emulators.google_url
        now = datetime.now(UTC)
        self.account = Account(
            account_id=f"acc-{uuid.uuid4().hex[:8]}",
            tenant_id="t-gcal",
            user_id="u1",
            provider="google",
            purpose="calendar",
            address=self.address,
            status="connected",
            settings=AccountSettings(),
            connected_at=now,
            updated_at=now,
        )
        self.source = GoogleCalendarSource(lambda _: token, emulators.google_url)
        self.importer = GoogleCalendarImport(lambda _: token, emulators.google_url)
        self.writer = GoogleCalendarWriter(lambda _: token, emulators.google_url)

    def full_listing(self) -> tuple[list[ChangePage[CalendarEvent]], str]:
        job = ResyncJob(
            tenant_id="t-gcal", user_id="u1", account_id=self.account.account_id, kind="calendar_resync"
        )
        pages = [self.importer.page(self.account, job)]
        while pages[-1].next_page is not None:
            job = job.model_copy(update={"page_token": pages[-1].next_page})
            pages.append(self.importer.page(self.account, job))
        cursor = pages[-1].cursor
        assert cursor is not None
        return pages, cursor

    def changes(self, cursor: str) -> tuple[list[CalendarEvent], str]:
        """Every page from `cursor`; the cursor the last one gives."""
        items: list[CalendarEvent] = []
        page = self.source.changes(self.account, cursor, None)
        items += page.items
        while page.next_page is not None:
            assert page.cursor is None  # the sync token only comes with the last page
            page = self.source.changes(self.account, cursor, page.next_page)
            items += page.items
        assert page.cursor is not None
        return items, page.cursor

    def stored(self, event_id: str, calendar_id: str = "primary") -> list[dict[str, Any]]:
        return [e for e in self.calendar.events_of(self.address, calendar_id) if e["id"] == event_id]


@pytest.fixture
def user(emulators: Emulators) -> User:
    return User(emulators)


def _own_id() -> str:
    return "crm" + uuid.uuid4().hex  # base32hex, as the engine makes them


@pytest.mark.rule("CAL-3")
@pytest.mark.rule("CAL-6")
def test_the_full_listing_pages_through_everything_and_ends_on_the_sync_token(user: User) -> None:
    made = [
        user.calendar.create_in_client(user.address, {"summary": f"e{n}", **_timed_json(n % 28 + 1)})
        for n in range(PAGE_SIZE + 5)
    ]
    # an event long in the past is listed too: CAL-6 is the engine's, judged by `created`
    old = user.calendar.create_in_client(
        user.address,
        {"summary": "old", "start": {"date": "2019-01-01"}, "end": {"date": "2019-01-02"}},
        created="2019-01-01T00:00:00Z",
    )
    gone = user.calendar.create_in_client(user.address, {"summary": "gone", **_timed_json(3)})
    user.calendar.delete_in_client(user.address, gone["id"])
    user.calendar.add_calendar(user.address, TEAM, "Team")
    user.calendar.create_in_client(user.address, {"summary": "not primary", **_timed_json(4)}, TEAM)

    pages, cursor = user.full_listing()
    assert len(pages) == 2 and [p.cursor for p in pages[:-1]] == [None]
    listed = {e.provider_event_id: e for p in pages for e in p.items}
    assert set(listed) == {e["id"] for e in made} | {old["id"], gone["id"]}  # the primary calendar only
    assert listed[gone["id"]].status == "cancelled"  # the engine decides what a cancelled one means
    assert listed[old["id"]].created == datetime(2019, 1, 1, tzinfo=UTC)
    assert {e.calendar_id for e in listed.values()} == {user.address}

    # the resync's cursor is where the incremental sync goes on: nothing has changed since
    assert user.changes(cursor)[0] == []


@pytest.mark.rule("CAL-1")
def test_incremental_changes_follow_the_sync_token_and_an_expired_one_is_cursor_expired(user: User) -> None:
    first = user.calendar.create_in_client(user.address, {"summary": "first", **_timed_json(1)})
    second = user.calendar.create_in_client(user.address, {"summary": "second", **_timed_json(2)})
    _, cursor = user.full_listing()

    user.calendar.edit_in_client(user.address, first["id"], {"summary": "first, moved"})
    user.calendar.delete_in_client(user.address, second["id"])
    changed, newer = user.changes(cursor)
    assert {(e.provider_event_id, e.status, e.summary) for e in changed} == {
        (first["id"], "confirmed", "first, moved"),
        (second["id"], "cancelled", "second"),
    }
    assert user.source.is_newer(newer, cursor) and not user.source.is_newer(newer, newer)
    assert user.changes(newer)[0] == []

    # many changes page through, the sync token on the last page only
    many = [
        user.calendar.create_in_client(user.address, {"summary": f"m{n}", **_timed_json(5)})
        for n in range(PAGE_SIZE + 1)
    ]
    changed, latest = user.changes(newer)
    assert [e.provider_event_id for e in changed] == [e["id"] for e in many]

    user.calendar.expire_sync_tokens(user.address)
    with pytest.raises(CursorExpired):
        user.source.changes(user.account, latest, None)


@pytest.mark.rule("CAL-18")
@pytest.mark.parametrize("fields", [TIMED, ALL_DAY], ids=["timed-with-zone", "all-day"])
def test_fields_written_come_back_the_same(user: User, fields: SyncedFields) -> None:
    event_id = _own_id()
    made = user.writer.create(user.account, event_id, fields, "act-1")
    assert made.provider_event_id == event_id and made.activity_id == "act-1"
    assert to_synced_fields(made) == fields

    stored = user.stored(event_id)[0]
    if fields.all_day:  # dates, the end exclusive, as the CRM keeps them
        assert (stored["start"], stored["end"]) == ({"date": "2026-12-02"}, {"date": "2026-12-04"})
    else:  # the instant, shown in its zone
        assert stored["start"] == {"dateTime": "2026-12-01T09:00:00+01:00", "timeZone": "Europe/Paris"}
        assert stored["end"] == {"dateTime": "2026-12-01T10:30:00+01:00", "timeZone": "Europe/Paris"}
    assert stored["extendedProperties"]["private"] == {"crmsync_activity": "act-1"}

    pages, _ = user.full_listing()
    [read] = [e for p in pages for e in p.items if e.provider_event_id == event_id]
    assert to_synced_fields(read) == fields and fingerprint(read) == fingerprint(fields)
    assert (read.etag, read.ical_uid, read.activity_id) == (stored["etag"], stored["iCalUID"], "act-1")
    assert read.organizer == user.address and read.all_day == fields.all_day


@pytest.mark.rule("CAL-18")
@pytest.mark.rule("CAL-7")
def test_events_made_in_google_calendar_read_as_the_engine_expects(user: User) -> None:
    wall_clock = user.calendar.create_in_client(
        user.address,
        {
            "summary": "Standup",
            "start": {"dateTime": "2026-07-01T09:00:00", "timeZone": "Europe/Paris"},
            "end": {"dateTime": "2026-07-01T09:15:00", "timeZone": "Europe/Paris"},
            "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
            "visibility": "private",
            "attendees": [
                {"email": user.address, "self": True, "organizer": True},
                {"email": "room@resource.test", "resource": True, "displayName": "Room 1"},
            ],
        },
    )
    pages, _ = user.full_listing()
    [read] = [e for p in pages for e in p.items]
    assert read.provider_event_id == wall_clock["id"] and read.recurrence == ["RRULE:FREQ=DAILY;COUNT=3"]
    assert read.visibility == "private" and read.recurring_event_id is None  # the master, not expanded
    fields = to_synced_fields(read)
    assert fields.start == datetime(2026, 7, 1, 7, 0, tzinfo=UTC)  # summer time: UTC+2
    assert fields.time_zone == "Europe/Paris"
    assert [(a.email, a.is_self, a.organizer) for a in read.attendees] == [
        (user.address, True, True),
        ("room@resource.test", False, False),
    ]
    assert read.attendees[1].resource and read.attendees[1].name == "Room 1"
    # an occurrence as Google gives it (events.get of an instance id): its master and where it was due
    events = calendar_service(user.token, user.url).events()
    occurrence = events.get(
        calendarId="primary", eventId=read.provider_event_id + "_20260702T070000Z"
    ).execute()
    one = from_google(occurrence, user.address)
    assert one.recurring_event_id == read.provider_event_id
    assert one.original_start is not None and one.original_start.date_time is not None
    assert one.original_start.date_time.astimezone(UTC) == datetime(2026, 7, 2, 7, 0, tzinfo=UTC)


@pytest.mark.rule("CAL-15")
def test_a_retried_create_returns_the_event_already_there_and_makes_no_second(user: User) -> None:
    event_id = _own_id()
    first = user.writer.create(user.account, event_id, TIMED, "act-2")
    again = user.writer.create(user.account, event_id, TIMED, "act-2")
    assert again == first
    assert len(user.stored(event_id)) == 1 and len(user.calendar.events_of(user.address)) == 1
    # the changes the sync itself wrote come back as its own (the activity id), with its etag
    listed = user.full_listing()[0][0].items
    assert [(e.activity_id, e.etag) for e in listed] == [("act-2", first.etag)]


@pytest.mark.rule("CAL-17")
def test_every_write_sends_no_notifications_and_none_is_a_full_update(user: User) -> None:
    event_id = _own_id()
    user.writer.create(user.account, event_id, TIMED, "act-3")
    user.writer.create(user.account, event_id, TIMED, "act-3")  # retried: 409, then a read
    moved = TIMED.model_copy(update={"subject": "Call Carla (moved)", "attendees": []})
    user.writer.patch(user.account, event_id, moved, ["subject", "attendees"])
    user.writer.delete(user.account, event_id)
    writes = user.calendar.writes_of(user.address)
    assert [(w["method"], w["sendUpdates"]) for w in writes] == [
        ("insert", "none"),
        ("patch", "none"),
        ("delete", "none"),
    ]
    requests = user.calendar.account(user.address).requests
    assert "calendar.events.update" not in requests and "calendar.events.patch" in requests


@pytest.mark.rule("CAL-17")
def test_a_patch_carries_only_the_changed_fields(user: User) -> None:
    event_id = _own_id()
    user.writer.create(user.account, event_id, TIMED, "act-4")
    # meanwhile the user rewrote the description and gave the event a colour in Google Calendar
    user.calendar.edit_in_client(user.address, event_id, {"description": "user's notes", "colorId": "5"})

    later = TIMED.model_copy(
        update={
            "subject": "Call Carla again",
            "start": datetime(2026, 12, 1, 14, 0, tzinfo=PARIS),
            "end": datetime(2026, 12, 1, 15, 0, tzinfo=PARIS),
        }
    )
    body = to_google(later, ["subject", "start", "end"])
    assert set(body) == {"summary", "start", "end"}
    patched = user.writer.patch(user.account, event_id, later, ["subject", "start", "end"])
    assert patched.summary == "Call Carla again" and patched.description == "user's notes"
    stored = user.stored(event_id)[0]
    assert stored["colorId"] == "5" and stored["start"]["dateTime"] == "2026-12-01T14:00:00+01:00"

    # an all-day change rewrites both times as dates; a location taken away is cleared
    all_day = SyncedFields(
        subject="Call Carla again", start=date(2026, 12, 1), end=date(2026, 12, 2), all_day=True
    )
    patched = user.writer.patch(user.account, event_id, all_day, ["all_day", "start", "end", "location"])
    assert patched.all_day and patched.location is None and patched.description == "user's notes"


@pytest.mark.rule("CAL-1")
def test_deleting_an_event_already_deleted_or_never_there_is_done(user: User) -> None:
    event_id = _own_id()
    user.writer.create(user.account, event_id, ALL_DAY, "act-5")
    user.writer.delete(user.account, event_id)
    user.writer.delete(user.account, event_id)  # 410: deleted already
    user.writer.delete(user.account, _own_id())  # 404: never there
    assert [e["status"] for e in user.stored(event_id)] == ["cancelled"]
    assert [w["method"] for w in user.calendar.writes_of(user.address)] == ["insert", "delete"]


@pytest.mark.parametrize(
    ("status", "reason"),
    [(403, "rateLimitExceeded"), (403, "userRateLimitExceeded"), (429, "rateLimitExceeded")],
)
def test_usage_limits_and_backend_errors_are_transient_with_retry_after(
    user: User, status: int, reason: str
) -> None:
    _, cursor = user.full_listing()
    user.calendar.throttle(user.address, 1, status=status, reason=reason, retry_after=7)
    with pytest.raises(TransientError) as raised:
        user.source.changes(user.account, cursor, None)
    assert raised.value.retry_after == 7
    user.calendar.throttle(user.address, 1, status=status, reason=reason, method="calendar.events.insert")
    with pytest.raises(TransientError):
        user.writer.create(user.account, _own_id(), TIMED, "act-6")
    assert user.calendar.events_of(user.address) == []

    user.calendar.fail(user.address, 1, 503)
    job = ResyncJob(
        tenant_id="t-gcal", user_id="u1", account_id=user.account.account_id, kind="calendar_resync"
    )
    with pytest.raises(TransientError):
        user.importer.page(user.account, job)
    assert user.changes(cursor)[0] == []  # the same cursor still works once the limits pass


@pytest.mark.rule("CAL-12")
def test_an_event_moved_to_another_calendar_is_found_there(user: User) -> None:
    user.calendar.add_calendar(user.address, TEAM, "Team")
    event_id = _own_id()
    made = user.writer.create(user.account, event_id, TIMED, "act-7")
    user.calendar.move_in_client(user.address, event_id, TEAM)
    assert user.writer.find_elsewhere(user.account, "nobody@google.com") is None
    found = user.writer.find_elsewhere(user.account, str(made.ical_uid))
    assert found is not None and (found.calendar_id, found.provider_event_id) == (TEAM, event_id)
    assert found.activity_id == "act-7" and found.status == "confirmed"


def _timed_json(day: int) -> dict[str, Any]:
    return {
        "start": {"dateTime": f"2026-12-{day:02d}T09:00:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": f"2026-12-{day:02d}T10:00:00+01:00", "timeZone": "Europe/Paris"},
    }

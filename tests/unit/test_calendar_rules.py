"""The calendar engine's pure rules: `crmsync.calendar.rules.plan` and the rules it is made of,
one row per rule (and per branch), plus Hypothesis properties of the fingerprint and the planner."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmsync.calendar.fingerprint import (
    differing,
    fingerprint,
    to_event_fields,
    to_synced_fields,
)
from crmsync.calendar.models import (
    Activity,
    Attendee,
    CalendarEvent,
    CalendarLink,
    CalendarSettings,
    EventTime,
    SyncedFields,
    SyncState,
)
from crmsync.calendar.recurrence import role, series_key
from crmsync.calendar.rules import (
    Plan,
    activity_type_for_events,
    goes_out,
    guard_deletions,
    in_window,
    is_echo,
    new_contacts,
    own_event_id,
    plan,
)

CONNECTED = datetime(2026, 1, 1, tzinfo=UTC)
AFTER = CONNECTED + timedelta(days=1)
BEFORE = CONNECTED - timedelta(days=1)
NOW = datetime(2026, 3, 1, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
PRIMARY = "me@example.com"
LINK = CalendarLink(
    tenant_id="t1",
    owner_user_id="u1",
    calendar_id=PRIMARY,
    original_connection_date=CONNECTED,
    settings=CalendarSettings(save_events_as="meeting", activity_types=["meeting", "demo"]),
)


def activity(**kw: Any) -> Activity:
    base: dict[str, Any] = {
        "id": "a1",
        "tenant_id": "t1",
        "owner_user_id": "u1",
        "type": "meeting",
        "subject": "Kick-off",
        "start": datetime(2026, 2, 2, 9, 0, tzinfo=UTC),
        "end": datetime(2026, 2, 2, 10, 0, tzinfo=UTC),
        "time_zone": "Europe/Paris",
        "location": "Room 4",
        "attendees": [Attendee(email="ann@client.com", name="Ann")],
        "created_at": AFTER,
        "updated_at": AFTER,
    }
    return Activity(**{**base, **kw})


def event(**kw: Any) -> CalendarEvent:
    base: dict[str, Any] = {
        "provider_event_id": "ev1",
        "calendar_id": PRIMARY,
        "created": AFTER,
        "updated": AFTER,
        "summary": "Kick-off",
        "start": EventTime(date_time=datetime(2026, 2, 2, 10, 0, tzinfo=PARIS), time_zone="Europe/Paris"),
        "end": EventTime(date_time=datetime(2026, 2, 2, 11, 0, tzinfo=PARIS), time_zone="Europe/Paris"),
        "location": "Room 4",
        "attendees": [Attendee(email="ann@client.com", name="Ann")],
        "etag": '"1"',
    }
    return CalendarEvent(**{**base, **kw})


def state(**kw: Any) -> SyncState:
    base: dict[str, Any] = {
        "tenant_id": "t1",
        "activity_id": "a1",
        "provider_event_id": "ev1",
        "calendar_id": PRIMARY,
        "series_key": "ev1",
        "crm_version": AFTER,
        "provider_etag": '"1"',
        "fingerprint": fingerprint(activity()),
        "last_synced_at": AFTER,
    }
    return SyncState(**{**base, **kw})


LATER = AFTER + timedelta(hours=1)
LATEST = AFTER + timedelta(hours=2)


# --- plan(): one row per rule and branch ------------------------------------------------------


def row(
    rule: str,
    a: Activity | None,
    e: CalendarEvent | None,
    s: SyncState | None,
    action: str,
    reason: str,
    why: str,
    master: CalendarEvent | None = None,
) -> Any:
    return pytest.param(a, e, s, master, action, reason, id=f"{rule}: {why}", marks=pytest.mark.rule(rule))


SERIES = event(provider_event_id="ser1", recurrence=["RRULE:FREQ=WEEKLY"])
FIRST = event(
    provider_event_id="ser1_20260202T090000Z",
    recurring_event_id="ser1",
    original_start=SERIES.start,
    summary="Kick-off, moved",
)
LATER_OCCURRENCE = event(
    provider_event_id="ser1_20260209T090000Z",
    recurring_event_id="ser1",
    original_start=EventTime(date_time=datetime(2026, 2, 9, 9, 0, tzinfo=UTC), time_zone="Europe/Paris"),
    summary="Only this week",
)
SPLIT_TAIL = event(provider_event_id="ser1_R20260216T090000", recurrence=["RRULE:FREQ=WEEKLY"], summary="New")
SERIES_STATE = state(provider_event_id="ser1", series_key="ser1")

PLAN_ROWS = [
    row("CAL-1", activity(), None, None, "create_event", "new activity", "a new activity goes out"),
    row("CAL-1", None, event(), None, "create_activity", "new event", "a new event comes in"),
    row(
        "CAL-1",
        activity(subject="Kick-off (v2)", updated_at=LATER),
        event(),
        state(),
        "update_event",
        "changed in the CRM",
        "a CRM edit reaches the calendar",
    ),
    row(
        "CAL-1",
        activity(),
        event(summary="Kick-off, agenda", updated=LATER),
        state(),
        "update_activity",
        "changed in the calendar",
        "a calendar edit reaches the CRM",
    ),
    row(
        "CAL-1",
        activity(trashed=True, updated_at=LATER),
        event(),
        state(),
        "delete_event",
        "trashed in the CRM",
        "trashed in the CRM: deleted in the calendar",
    ),
    row(
        "CAL-1",
        activity(),
        event(status="cancelled"),
        state(),
        "trash_activity",
        "deleted_in_calendar",
        "an explicitly deleted event trashes its activity",
    ),
    row(
        "CAL-2",
        activity(owner_user_id="u2"),
        None,
        None,
        "nothing",
        "other_owner",
        "another user's activity",
    ),
    row(
        "CAL-2",
        activity(owner_user_id="u2", updated_at=LATER),
        event(),
        state(),
        "delete_event",
        "owner_changed",
        "an activity handed to another user leaves this calendar",
    ),
    row(
        "CAL-3",
        None,
        event(calendar_id="team@example.com"),
        None,
        "nothing",
        "other_calendar",
        "an event of a secondary calendar",
    ),
    row(
        "CAL-5",
        activity(type="call"),
        None,
        None,
        "nothing",
        "type_not_synced",
        "a type not chosen stays in the CRM",
    ),
    row("CAL-5", activity(type="demo"), None, None, "create_event", "new activity", "a chosen custom type"),
    row(
        "CAL-6",
        None,
        event(created=BEFORE, start=EventTime(day=date(2026, 5, 1)), end=EventTime(day=date(2026, 5, 2))),
        None,
        "nothing",
        "before_connection",
        "an event created before the connection, starting after it, stays out",
    ),
    row(
        "CAL-6",
        None,
        event(
            created=AFTER,
            start=EventTime(day=date(2025, 6, 1)),
            end=EventTime(day=date(2025, 6, 2)),
        ),
        None,
        "create_activity",
        "new event",
        "an event created after the connection, starting long before, comes in",
    ),
    row(
        "CAL-6",
        activity(created_at=BEFORE),
        None,
        None,
        "nothing",
        "before_connection",
        "an activity created before the connection stays out",
    ),
    row("CAL-7", None, SERIES, None, "create_activity", "new event", "a weekly series becomes one activity"),
    row(
        "CAL-7",
        None,
        LATER_OCCURRENCE,
        None,
        "nothing",
        "recurring",
        "a later occurrence is no activity of its own",
        SERIES,
    ),
    row("CAL-7", None, SPLIT_TAIL, None, "nothing", "recurring", "a split tail is no second activity"),
    row(
        "CAL-7",
        activity(),
        FIRST,
        SERIES_STATE,
        "update_activity",
        "changed in the calendar",
        "the first occurrence moved: the activity follows",
        SERIES,
    ),
    row(
        "CAL-7",
        activity(),
        LATER_OCCURRENCE,
        SERIES_STATE,
        "nothing",
        "no_change",
        "an edit of a later occurrence leaves the activity alone",
        SERIES,
    ),
    row(
        "CAL-7",
        activity(),
        event(provider_event_id="ser1_20260209T090000Z", recurring_event_id="ser1", status="cancelled"),
        SERIES_STATE,
        "nothing",
        "no_change",
        "deleting one occurrence trashes nothing",
    ),
    row(
        "CAL-7",
        activity(),
        SPLIT_TAIL,
        SERIES_STATE,
        "nothing",
        "no_change",
        "this and following: the new master leaves the activity alone",
    ),
    row(
        "CAL-7",
        activity(),
        event(recurrence=["RRULE:FREQ=DAILY;COUNT=5"], etag='"2"', updated=LATER),
        state(),
        "nothing",
        "no_change",
        "a single event turned recurring stays the same activity",
    ),
    row(
        "CAL-8",
        None,
        event(visibility="private"),
        None,
        "nothing",
        "private",
        "a private event stays out",
    ),
    row(
        "CAL-8",
        None,
        event(visibility="confidential"),
        None,
        "nothing",
        "private",
        "a confidential event stays out",
    ),
    row(
        "CAL-8",
        activity(),
        event(visibility="private", updated=LATER),
        state(),
        "trash_activity",
        "made_private",
        "an event made private later leaves the CRM",
    ),
    row(
        "CAL-8",
        activity(trashed=True),
        event(visibility="public", updated=LATEST),
        state(trashed_by_sync="made_private"),
        "restore_activity",
        "back after made_private",
        "made public again: restored",
    ),
    row(
        "CAL-12",
        activity(),
        event(calendar_id="team@example.com", updated=LATER),
        state(),
        "trash_activity",
        "moved_to_other_calendar",
        "moved to another calendar: trashed",
    ),
    row(
        "CAL-12",
        activity(trashed=True),
        event(calendar_id="team@example.com", updated=LATER),
        state(trashed_by_sync="moved_to_other_calendar"),
        "nothing",
        "moved_to_other_calendar",
        "seen again in the other calendar: nothing more",
    ),
    row(
        "CAL-12",
        activity(trashed=True),
        event(updated=LATEST),
        state(trashed_by_sync="moved_to_other_calendar"),
        "restore_activity",
        "back after moved_to_other_calendar",
        "moved back while in the trash: restored",
    ),
    row(
        "CAL-12",
        None,
        event(updated=LATEST),
        state(trashed_by_sync="moved_to_other_calendar"),
        "create_activity",
        "back after moved_to_other_calendar",
        "moved back after the trash was emptied: made again",
    ),
    row(
        "CAL-12",
        activity(trashed=True),
        None,
        state(trashed_by_sync="moved_to_other_calendar"),
        "nothing",
        "kept in the CRM trash by the sync",
        "the sync's own trash is no CRM deletion",
    ),
    row(
        "CAL-14",
        activity(subject="CRM title", updated_at=LATEST),
        event(summary="Calendar title", updated=LATER),
        state(),
        "update_event",
        "conflict: the CRM's change is the most recent",
        "both changed, the CRM last: the CRM wins",
    ),
    row(
        "CAL-14",
        activity(subject="CRM title", updated_at=LATER),
        event(summary="Calendar title", updated=LATEST),
        state(),
        "update_activity",
        "conflict: the calendar's change is the most recent",
        "both changed, the calendar last: the calendar wins",
    ),
    row(
        "CAL-15",
        activity(updated_at=LATER),
        event(etag='"9"', updated=LATER),
        state(),
        "nothing",
        "no_change",
        "both versions moved but the synced fields did not: no echo",
    ),
    row(
        "CAL-15",
        activity(subject="Same", updated_at=LATER),
        event(summary="Same", updated=LATEST),
        state(),
        "link",
        "both sides made the same change",
        "both made the same change: no conflict, the row records it",
    ),
    row(
        "CAL-15",
        activity(),
        event(activity_id="a1", provider_event_id=own_event_id("t1", "a1")),
        None,
        "link",
        "own event found",
        "a create that went through before a crash is adopted, not repeated",
    ),
    row(
        "CAL-16",
        activity(),
        None,
        state(),
        "nothing",
        "no_change",
        "the event was not seen (lost cursor, left the window): no deletion",
    ),
    row(
        "CAL-16",
        None,
        None,
        state(),
        "nothing",
        "no_change",
        "neither side was read: nothing",
    ),
]


@pytest.mark.parametrize(("a", "e", "s", "master", "action", "reason"), PLAN_ROWS)
def test_plan(
    a: Activity | None,
    e: CalendarEvent | None,
    s: SyncState | None,
    master: CalendarEvent | None,
    action: str,
    reason: str,
) -> None:
    got = plan(a, e, s, LINK, NOW, master)
    assert (got.action, got.reason[: len(reason)]) == (action, reason), got


@pytest.mark.rule("CAL-15")
def test_creates_use_our_own_id_the_same_on_every_retry() -> None:
    first = plan(activity(), None, None, LINK, NOW)
    again = plan(activity(), None, None, LINK, NOW + timedelta(minutes=5))
    assert first.event_id == again.event_id == own_event_id("t1", "a1")
    assert first.event_id is not None
    assert 5 <= len(first.event_id) <= 1024
    assert set(first.event_id) <= set("0123456789abcdefghijklmnopqrstuv")
    assert own_event_id("t1", "a2") != first.event_id


@pytest.mark.rule("CAL-14")
def test_a_conflict_keeps_both_versions_and_what_differs() -> None:
    got = plan(
        activity(subject="CRM title", location="Room 5", updated_at=LATEST),
        event(summary="Calendar title", updated=LATER),
        state(),
        LINK,
        NOW,
    )
    assert got.conflict is not None
    assert got.conflict.winner == "crm"
    assert got.conflict.crm_version.subject == "CRM title"
    assert got.conflict.provider_version.subject == "Calendar title"
    assert got.conflict.differing == ["subject", "location"]
    assert got.changed == ["subject", "location"]
    assert got.conflict.decided_at == NOW


@pytest.mark.rule("CAL-14")
def test_a_tie_goes_to_the_crm() -> None:
    got = plan(activity(subject="X", updated_at=LATER), event(summary="Y", updated=LATER), state(), LINK, NOW)
    assert got.conflict is not None and got.conflict.winner == "crm"


@pytest.mark.rule("CAL-17")
def test_an_update_patches_only_the_fields_that_changed() -> None:
    got = plan(activity(subject="Kick-off (v2)", updated_at=LATER), event(), state(), LINK, NOW)
    assert got.changed == ["subject"]
    unseen = plan(activity(subject="Kick-off (v2)", updated_at=LATER), None, state(), LINK, NOW)
    assert unseen.action == "update_event" and unseen.event_id == "ev1"


@pytest.mark.rule("CAL-4")
def test_events_come_in_as_the_chosen_type() -> None:
    link = LINK.model_copy(update={"settings": CalendarSettings(save_events_as="visit")})
    got = plan(None, event(), None, link, NOW)
    assert (got.action, got.activity_type) == ("create_activity", "visit")
    assert activity_type_for_events(link.settings) == "visit"


@pytest.mark.rule("CAL-5")
def test_the_type_filter_is_for_activities_going_out() -> None:
    chosen = CalendarSettings(activity_types=["meeting", "site visit"])
    assert goes_out(activity(type="site visit"), chosen)
    assert not goes_out(activity(type="call"), chosen)
    assert not goes_out(activity(type="meeting"), CalendarSettings(activity_types=[]))


# --- CAL-6: the window is judged by creation ---------------------------------------------------


@pytest.mark.rule("CAL-6")
@pytest.mark.parametrize(
    ("created", "starts", "inside"),
    [
        (AFTER, datetime(2020, 1, 1, tzinfo=UTC), True),
        (BEFORE, datetime(2030, 1, 1, tzinfo=UTC), False),
        (CONNECTED, CONNECTED, True),
    ],
    ids=["created after, starts long before", "created before, starts after", "created at the date"],
)
def test_in_window_by_creation(created: datetime, starts: datetime, inside: bool) -> None:
    e = event(
        created=created,
        start=EventTime(date_time=starts, time_zone="UTC"),
        end=EventTime(date_time=starts + timedelta(hours=1), time_zone="UTC"),
    )
    a = activity(created_at=created, start=starts, end=starts + timedelta(hours=1))
    assert in_window(e, CONNECTED) is inside
    assert in_window(a, CONNECTED) is inside


# --- CAL-7: the series key ---------------------------------------------------------------------


@pytest.mark.rule("CAL-7")
@pytest.mark.parametrize(
    ("kw", "kind"),
    [
        ({"provider_event_id": "abc"}, "single"),
        ({"provider_event_id": "abc", "recurrence": ["RRULE:FREQ=WEEKLY"]}, "series"),
        ({"provider_event_id": "abc_20260202T090000Z", "recurring_event_id": "abc"}, "occurrence"),
        ({"provider_event_id": "abc_20260202", "recurring_event_id": "abc"}, "occurrence"),
        ({"provider_event_id": "abc_20260202T090000Z", "status": "cancelled"}, "occurrence"),
        ({"provider_event_id": "abc_R20260301T090000", "recurrence": ["RRULE:FREQ=WEEKLY"]}, "split_tail"),
        ({"provider_event_id": "abc_R20260301T090000_R20260401T090000"}, "split_tail"),
        (
            {
                "provider_event_id": "abc_R20260301T090000_20260308T090000Z",
                "recurring_event_id": "abc_R20260301T090000",
            },
            "occurrence",
        ),
    ],
    ids=[
        "single",
        "made recurring (same id)",
        "timed occurrence",
        "all-day occurrence",
        "cancelled occurrence without its master",
        "this and following",
        "split twice",
        "occurrence of a split tail",
    ],
)
def test_series_key_is_stable(kw: dict[str, Any], kind: str) -> None:
    e = event(**kw)
    assert series_key(e) == "abc"
    assert role(e) == kind


# --- CAL-13: attendees who become contacts -----------------------------------------------------


@pytest.mark.rule("CAL-13")
def test_new_contacts() -> None:
    people = [
        Attendee(email="me@example.com", is_self=True, organizer=True),
        Attendee(email="colleague@example.com"),
        Attendee(email="Known@Client.com"),
        Attendee(email="New@Client.com", name="New Person"),
        Attendee(email="new@client.com", name="Same again"),
        Attendee(email="room-4@resource.example.com", resource=True),
        Attendee(email="made@client.com"),
        Attendee(email="other@client.com"),
    ]
    got = new_contacts(
        people,
        tenant_user_emails=["colleague@example.com"],
        contact_emails=["known@client.com"],
        already_made=["MADE@client.com"],
    )
    assert [(a.email, a.name) for a in got] == [("new@client.com", "New Person"), ("other@client.com", None)]


# --- CAL-15: the fingerprint forgives what providers rewrite -----------------------------------


@pytest.mark.rule("CAL-15")
@pytest.mark.parametrize(
    "kw",
    [
        {"summary": "Kick-off  \n"},
        {"location": "Room 4\r\n"},
        {"attendees": [Attendee(email="ANN@Client.com", name="Ann B.")]},
        {
            "attendees": [
                Attendee(email="ann@client.com"),
                Attendee(email="me@example.com", is_self=True, organizer=True),
            ]
        },
        {
            "start": EventTime(date_time=datetime(2026, 2, 2, 9, 0, tzinfo=UTC), time_zone="Europe/Paris"),
            "end": EventTime(date_time=datetime(2026, 2, 2, 10, 0, tzinfo=UTC), time_zone="Europe/Paris"),
        },
        {
            "start": EventTime(date_time=datetime(2026, 2, 2, 10, 0), time_zone="Europe/Paris"),
            "end": EventTime(date_time=datetime(2026, 2, 2, 11, 0), time_zone="Europe/Paris"),
        },
        {"description": ""},
    ],
    ids=[
        "trailing whitespace",
        "CRLF",
        "email case and a directory name",
        "the calendar's own account listed",
        "the instant written in UTC",
        "a local time without offset in its zone",
        "empty description is none",
    ],
)
def test_rewrites_are_no_change(kw: dict[str, Any]) -> None:
    assert fingerprint(event(**kw)) == fingerprint(activity())
    assert is_echo(event(**kw), state())


@pytest.mark.rule("CAL-15")
@pytest.mark.parametrize(
    "kw",
    [
        {"summary": "Kick off"},
        {"start": EventTime(date_time=datetime(2026, 2, 2, 10, 0, tzinfo=UTC), time_zone="Europe/Paris")},
        {
            "start": EventTime(
                date_time=datetime(2026, 2, 2, 10, 0, tzinfo=PARIS), time_zone="Europe/London"
            ),
            "end": EventTime(date_time=datetime(2026, 2, 2, 11, 0, tzinfo=PARIS), time_zone="Europe/London"),
        },
        {"attendees": []},
    ],
    ids=["subject", "start instant", "zone", "attendee removed"],
)
def test_real_changes_are_changes(kw: dict[str, Any]) -> None:
    assert fingerprint(event(**kw)) != fingerprint(activity())
    assert not is_echo(event(**kw), state())


@pytest.mark.rule("CAL-15")
def test_utc_aliases_are_one_zone() -> None:
    a = activity(time_zone="UTC")
    assert fingerprint(a) == fingerprint(activity(time_zone="Etc/UTC"))
    assert differing(a, activity(time_zone="Etc/UTC")) == []


# --- CAL-16: deletion safety -------------------------------------------------------------------


def trashes(n: int) -> list[Plan]:
    return [Plan(action="trash_activity", reason="deleted_in_calendar")] * n


@pytest.mark.rule("CAL-16")
@pytest.mark.parametrize(
    ("destructive", "synced", "allowed"),
    [
        (9, 10, True),
        (10, 100, True),
        (10, 40, False),
        (21, 100, False),
        (20, 100, True),
        (1, 1, True),
        (10, 10, False),
    ],
    ids=[
        "under ten items always runs",
        "ten of a hundred is within 20%",
        "ten of forty is too many",
        "21% refused",
        "exactly 20% runs",
        "the last item of a calendar",
        "all ten",
    ],
)
def test_mass_trash_is_refused(destructive: int, synced: int, allowed: bool) -> None:
    plans = [
        *trashes(destructive),
        Plan(action="update_event", reason="x"),
        Plan(action="nothing", reason="y"),
    ]
    got = guard_deletions(plans, synced, CalendarSettings())
    assert (got.allowed, got.destructive) == (allowed, destructive)
    assert got.report.startswith("refused") is not allowed


@pytest.mark.rule("CAL-16")
def test_the_share_is_configurable() -> None:
    loose = CalendarSettings(max_trash_share=0.5, min_trash_refused=3)
    assert guard_deletions(trashes(5), 10, loose).allowed
    assert not guard_deletions(trashes(6), 10, loose).allowed


# --- CAL-18: all-day and time zones, both ways -------------------------------------------------


@pytest.mark.rule("CAL-18")
def test_all_day_stays_dates_with_the_end_exclusive() -> None:
    a = activity(all_day=True, start=date(2026, 2, 2), end=date(2026, 2, 3), time_zone=None)
    e = to_event_fields(a)
    assert (e.start.day, e.end.day, e.start.date_time) == (date(2026, 2, 2), date(2026, 2, 3), None)
    back = to_synced_fields(e)
    assert back.all_day and (back.start, back.end) == (date(2026, 2, 2), date(2026, 2, 3))


@pytest.mark.rule("CAL-18")
def test_timed_keeps_instant_and_zone() -> None:
    e = to_event_fields(activity())
    assert e.start.date_time is not None
    assert e.start.date_time.utcoffset() == timedelta(hours=1)  # shown in Paris, winter
    assert e.start.date_time == datetime(2026, 2, 2, 9, 0, tzinfo=UTC)
    assert e.start.time_zone == "Europe/Paris"
    back = to_synced_fields(e)
    assert back.start == datetime(2026, 2, 2, 9, 0, tzinfo=UTC) and back.time_zone == "Europe/Paris"


@pytest.mark.rule("CAL-18")
def test_an_all_day_event_comes_in_all_day() -> None:
    got = plan(
        None,
        event(start=EventTime(day=date(2026, 4, 1)), end=EventTime(day=date(2026, 4, 3))),
        None,
        LINK,
        NOW,
    )
    assert got.fields is not None and got.fields.all_day
    assert (got.fields.start, got.fields.end) == (date(2026, 4, 1), date(2026, 4, 3))


@pytest.mark.rule("CAL-18")
@pytest.mark.parametrize(
    "kw",
    [
        {"all_day": True, "start": datetime(2026, 1, 1, tzinfo=UTC), "end": datetime(2026, 1, 2, tzinfo=UTC)},
        {"all_day": False, "start": date(2026, 1, 1), "end": date(2026, 1, 2)},
        {"start": datetime(2026, 1, 1, 9), "end": datetime(2026, 1, 1, 10)},
        {"start": datetime(2026, 1, 1, 10, tzinfo=UTC), "end": datetime(2026, 1, 1, 9, tzinfo=UTC)},
    ],
    ids=["all-day with times", "timed with dates", "timed without a zone", "end before start"],
)
def test_mixed_kinds_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SyncedFields(**kw)


# --- properties --------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe", "Pacific/Chatham"]
texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=30)
emails = st.from_regex(r"[a-zA-Z0-9]{1,8}@[a-z]{1,6}\.(com|org)", fullmatch=True)
attendees = st.lists(st.builds(Attendee, email=emails, name=st.none() | texts), max_size=4)


@st.composite
def synced(draw: st.DrawFn) -> Activity:
    all_day = draw(st.booleans())
    start: date | datetime
    end: date | datetime
    if all_day:
        day = draw(st.dates(date(2000, 1, 1), date(2100, 1, 1)))
        start, end = day, day + timedelta(days=draw(st.integers(1, 30)))
    else:
        moment = draw(st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)))
        start, end = moment, moment + timedelta(minutes=draw(st.integers(0, 10_000)))
    return activity(
        subject=draw(texts),
        start=start,
        end=end,
        all_day=all_day,
        time_zone=draw(st.none() | st.sampled_from(ZONES)),
        location=draw(st.none() | texts),
        description=draw(st.none() | texts),
        attendees=draw(attendees),
    )


@pytest.mark.rule("CAL-18")
@settings(max_examples=200, deadline=None)
@given(synced())
def test_round_trip_is_identity(a: Activity) -> None:
    assert to_synced_fields(to_event_fields(a)) == a.fields()


@pytest.mark.rule("CAL-15")
@settings(max_examples=200, deadline=None)
@given(synced())
def test_an_activity_and_the_event_made_from_it_share_a_fingerprint(a: Activity) -> None:
    made = to_event_fields(a)
    e = event(
        summary=made.summary,
        start=made.start,
        end=made.end,
        location=made.location,
        description=made.description,
        attendees=made.attendees,
    )
    assert fingerprint(e) == fingerprint(a)
    assert plan(a, e, state(fingerprint=fingerprint(a)), LINK, NOW).action == "nothing"


@pytest.mark.rule("CAL-16")
@settings(max_examples=300, deadline=None)
@given(
    a=st.none() | synced() | st.builds(lambda t: activity(trashed=t), st.booleans()),
    trashed_by=st.none()
    | st.sampled_from(["deleted_in_calendar", "moved_to_other_calendar", "made_private"]),
    known=st.booleans(),
)
def test_a_missing_event_never_trashes(a: Activity | None, trashed_by: Any, known: bool) -> None:
    s = state(trashed_by_sync=trashed_by) if known else None
    got = plan(a, None, s, LINK, NOW)
    assert got.action not in ("trash_activity", "restore_activity", "create_activity")
    if got.action == "delete_event":
        assert a is not None and a.trashed  # only an explicit CRM deletion removes the event


# --- found by the model test (tests/contract/test_calendar_model.py) ---------------------------
# A run that stopped between its writes leaves an activity without its state row, or a row that
# says less than both sides do; the retry plans from what is there and finishes the item.


@pytest.mark.rule("CAL-15")
def test_an_activity_made_from_an_event_whose_row_was_never_written_is_told_again() -> None:
    """The engine looks up the activity the sync makes from the event (by its id) when there is
    no row: it is told to the CRM again and recorded, not made twice."""
    made = activity(subject="Kick-off", id="made-from-ev1")
    got = plan(made, event(), None, LINK, NOW)
    assert (got.action, got.fields) == ("create_activity", to_synced_fields(event()))
    assert got.activity_type == "meeting"


@pytest.mark.rule("CAL-15")
@pytest.mark.rule("CAL-14")
def test_an_unrecorded_activity_the_crm_changed_since_goes_to_its_event_if_newer() -> None:
    """No row, the activity made from the event, and the CRM (told of it) changed it since: its
    change goes to that event when it is the newer one; an older one gives way to the event."""
    made = event(updated=AFTER)
    newer = activity(subject="Renamed in the CRM", id="made-from-ev1", updated_at=LATER)
    got = plan(newer, made, None, LINK, NOW)
    assert (got.action, got.event_id, got.changed) == ("update_event", made.provider_event_id, ["subject"])
    older = newer.model_copy(update={"updated_at": AFTER - timedelta(minutes=1)})
    assert plan(older, made, None, LINK, NOW).action == "create_activity"


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-8")
@pytest.mark.parametrize(
    ("changes", "reason"),
    [({"status": "cancelled"}, "deleted_in_calendar"), ({"visibility": "private"}, "made_private")],
)
def test_an_activity_made_from_an_event_that_left_before_its_row_was_written_is_trashed(
    changes: dict[str, Any], reason: str
) -> None:
    got = plan(activity(id="made-from-ev1"), event(**changes), None, LINK, NOW)
    assert (got.action, got.trash_reason) == ("trash_activity", reason)


@pytest.mark.rule("CAL-1")
def test_an_activity_trashed_in_the_crm_before_its_row_was_written_deletes_its_event() -> None:
    got = plan(activity(trashed=True), event(activity_id="a1"), None, LINK, NOW)
    assert (got.action, got.event_id) == ("delete_event", "ev1")


@pytest.mark.rule("CAL-12")
def test_a_restore_whose_row_was_never_written_is_told_again() -> None:
    """The activity is live again, the row still says the sync keeps it in the trash: the
    restore is finished (told again, the row cleared), never taken as no change."""
    got = plan(activity(), event(), state(trashed_by_sync="made_private"), LINK, NOW)
    assert got.action == "restore_activity"


@pytest.mark.rule("CAL-15")
def test_both_sides_alike_beyond_the_row_is_recorded_without_a_conflict() -> None:
    """A patch or an activity write that landed before its row: both sides agree, the row is
    older; the agreement is recorded (else the next change on one side looks like two)."""
    renamed = {"subject": "Kick-off, renamed"}
    got = plan(activity(**renamed, updated_at=LATER), event(summary=renamed["subject"]), state(), LINK, NOW)
    assert (got.action, got.conflict) == ("link", None)

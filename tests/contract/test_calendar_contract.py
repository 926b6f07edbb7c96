"""The calendar provider contract: what every calendar provider's adapter must do for the two-way
sync, written once and run for each fixture in tests/contract/calendar_providers/ (Google
Calendar over its emulator and the real adapter; the in-memory Google Calendar the model test
uses). Each scenario drives the real engine and sync loop (tests/contract/calendar_rig.py) and
ends on the same judgement: both sides agree on every in-scope item, nothing out of scope
crossed, nothing is there twice (`Rig.assert_converged`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from crmsync.calendar.fingerprint import to_synced_fields
from crmsync.calendar.models import Activity, CalendarEvent, SyncedFields
from crmsync.calendar.ports import EventChanged
from crmsync.calendar.rules import own_event_id
from crmsync.errors import TransientError
from crmsync.events import ActivityCreatedFromCalendar, ActivityRestored, ActivityTrashed
from crmsync.sync.core import CursorExpired
from tests.contract import calendar_providers
from tests.contract.calendar_providers import ContractCalendar
from tests.contract.calendar_rig import Rig

PARIS = ZoneInfo("Europe/Paris")


def timed(
    subject: str, day: int = 10, hour: int = 9, zone: str = "Europe/Paris", minutes: int = 60
) -> SyncedFields:
    start = datetime(2026, 12, day, hour, 0, tzinfo=ZoneInfo(zone))
    return SyncedFields(subject=subject, start=start, end=start + timedelta(minutes=minutes), time_zone=zone)


def all_day(subject: str, day: int = 10, days: int = 1) -> SyncedFields:
    first = date(2026, 12, day)
    return SyncedFields(subject=subject, start=first, end=first + timedelta(days=days), all_day=True)


class Connected:
    """A provider's calendar, connected (its first cursor read), and the worker around it."""

    def __init__(self, cal: ContractCalendar) -> None:
        self.cal = cal
        self.rig = Rig(cal.account, cal.source, cal.importer, cal.writer, cal.now)
        self.rig.connect()

    def converged(self) -> dict[str, Activity]:
        return self.rig.assert_converged(self.cal.primary_events())

    def told(self, kind: type) -> list[object]:
        return [e for e in self.rig.told.events if isinstance(e, kind)]

    def event(self, event_id: str) -> CalendarEvent:
        (found,) = [e for e in self.cal.primary_events() if e.provider_event_id == event_id]
        return found

    def listed_since(self, cursor: str) -> tuple[list[CalendarEvent], str]:
        """Every page of changes from `cursor`: the items, and the cursor the last page gives."""
        items: list[CalendarEvent] = []
        page = self.cal.source.changes(self.cal.account, cursor, None)
        items += page.items
        while page.next_page is not None:
            assert page.cursor is None, "a cursor before the last page"
            page = self.cal.source.changes(self.cal.account, cursor, page.next_page)
            items += page.items
        assert page.cursor is not None
        return items, page.cursor


@pytest.fixture(params=calendar_providers.names())
def calendar(request: pytest.FixtureRequest) -> Iterator[ContractCalendar]:
    cal = calendar_providers.fixture_class(request.param)(request.getfixturevalue)
    try:
        yield cal
    finally:
        cal.set_clock(None)


@pytest.fixture
def connected(calendar: ContractCalendar) -> Connected:
    return Connected(calendar)


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-6")
def test_the_changes_after_a_cursor_are_listed_once_each_as_they_are_now(calendar: ContractCalendar) -> None:
    old = calendar.user_creates(timed("Old"), created=calendar.now() - timedelta(days=30))
    kept = calendar.user_creates(timed("Kept", day=11), created=calendar.now() - timedelta(days=1))
    c = Connected(calendar)
    start = c.rig.cursor()
    assert start is not None
    made = [calendar.user_creates(timed(f"New {n}", day=12 + n)) for n in range(4)]
    calendar.user_edits(old, timed("Old, moved", day=20))
    calendar.user_edits(made[0], timed("New 0, renamed", day=12))
    calendar.user_deletes(made[1])

    items, cursor = c.listed_since(start)
    by_id = {e.provider_event_id: e for e in items}
    assert len(by_id) == len(items), "an event listed twice"
    assert set(by_id) == {old, *made} and kept not in by_id
    assert by_id[made[0]].summary == "New 0, renamed" and by_id[old].summary == "Old, moved"
    assert by_id[made[1]].status == "cancelled"
    assert all(e.calendar_id == calendar.account.address for e in items)
    assert c.listed_since(cursor)[0] == []  # nothing changed since

    assert c.rig.sync().status == "synced"
    assert c.rig.cursor() not in (None, start)
    subjects = sorted(e.fields.subject for e in c.told(ActivityCreatedFromCalendar))  # type: ignore[attr-defined]
    assert subjects == ["New 0, renamed", "New 2", "New 3"]  # not the old one, nor the deleted one
    c.converged()


@pytest.mark.rule("SYNC-3")
@pytest.mark.rule("CAL-15")
@pytest.mark.rule("CAL-16")
def test_an_expired_cursor_gives_a_full_listing_of_the_same_shape_and_nothing_doubles(
    connected: Connected,
) -> None:
    cal, rig = connected.cal, connected.rig
    first = cal.user_creates(timed("First"), color="5")
    assert rig.sync().status == "synced"
    start = rig.cursor()
    assert start is not None
    cal.user_edits(first, timed("First, edited"))
    incremental, _ = connected.listed_since(start)
    cal.expire_cursor()
    with pytest.raises(CursorExpired):
        cal.source.changes(cal.account, start, None)
    second = cal.user_creates(timed("Second", day=12))

    assert rig.sync().status == "resync_started" and rig.resyncs == 1
    assert rig.cursor() != start
    # the full listing reads an event as the incremental one does
    job, listed = rig.resync_job(), []
    while True:
        page = cal.importer.page(cal.account, job)
        listed += page.items
        if page.next_page is None:
            break
        job = job.model_copy(update={"page_token": page.next_page})
    (full,) = [e for e in listed if e.provider_event_id == first]
    (incr,) = [e for e in incremental if e.provider_event_id == first]
    assert full == incr
    assert {second, first} <= {e.provider_event_id for e in listed}

    assert rig.sync().status == "synced"  # from the resync's cursor on
    paired = connected.converged()
    assert set(paired) == {first, second}  # the lost cursor trashed nothing (CAL-16)
    assert connected.told(ActivityTrashed) == []
    assert len(connected.told(ActivityCreatedFromCalendar)) == 2


@pytest.mark.rule("CAL-15")
def test_a_create_under_our_id_made_twice_is_one_event(connected: Connected) -> None:
    cal, rig = connected.cal, connected.rig
    event_id = own_event_id(rig.account.tenant_id, "act-twice")
    fields = timed("Made twice")
    made = cal.writer.create(cal.account, event_id, fields, "act-twice")
    again = cal.writer.create(cal.account, event_id, fields, "act-twice")
    assert made.provider_event_id == again.provider_event_id == event_id
    assert again.etag == made.etag and again.activity_id == "act-twice"  # the one there, as it is
    assert [e.provider_event_id for e in cal.primary_events()] == [event_id]

    # through the engine: a push delivered twice makes one event, one state row
    rig.crm_put("act-1", timed("From the CRM", day=11))
    assert len(rig.queued) == 1  # the PUT queued its push; it is delivered twice
    rig.push("act-1")
    rig.push("act-1")
    ours = [e for e in cal.primary_events() if e.activity_id == "act-1"]
    assert len(ours) == 1 and ours[0].provider_event_id == own_event_id(rig.account.tenant_id, "act-1")
    assert rig.sync().status == "synced"
    assert connected.told(ActivityCreatedFromCalendar) == []  # our own events never come back as new


@pytest.mark.rule("CAL-17")
@pytest.mark.rule("CAL-1")
def test_the_sync_writes_patches_of_what_changed_and_never_notifies(connected: Connected) -> None:
    cal, rig = connected.cal, connected.rig
    theirs = cal.user_creates(
        timed("Theirs").model_copy(update={"location": "Room 1", "description": "agenda"}), color="7"
    )
    rig.sync()
    (activity,) = connected.converged().values()
    rig.crm_put(activity.id, activity.fields().model_copy(update={"subject": "Theirs, renamed by the CRM"}))
    rig.crm_put("act-2", timed("Ours", day=12))
    rig.run_queued()
    renamed = connected.event(theirs)
    assert renamed.summary == "Theirs, renamed by the CRM"
    assert (renamed.location, renamed.description, cal.color_of(theirs)) == ("Room 1", "agenda", "7")
    rig.crm_delete("act-2")
    rig.run_queued()
    rig.sync()
    connected.converged()

    writes = cal.writes()
    assert [w["method"] for w in writes] == ["patch", "insert", "delete"]
    assert all(w["sendUpdates"] == "none" for w in writes)


@pytest.mark.rule("CAL-14")
def test_a_patch_over_an_older_version_is_refused_and_the_crm_change_becomes_a_conflict(
    connected: Connected,
) -> None:
    cal, rig = connected.cal, connected.rig
    made = cal.user_creates(timed("Offer"))
    rig.sync()
    (activity,) = connected.converged().values()
    seen = connected.event(made).etag
    cal.user_edits(made, timed("Offer, from the calendar"))
    with pytest.raises(EventChanged):
        cal.writer.patch(cal.account, made, timed("Offer, from the CRM"), ["subject"], if_match=seen)
    now = cal.writer.get(cal.account, made)
    assert now is not None and now.summary == "Offer, from the calendar" and now.etag != seen
    assert cal.writer.get(cal.account, "nosuchevent00") is None

    # through the engine: a CRM change pushed over the calendar's unsynced one is decided and kept
    renamed = activity.fields().model_copy(update={"subject": "Offer, from the CRM"})
    rig.crm_put(activity.id, renamed)
    rig.run_queued()
    rig.sync()
    assert connected.converged()[made].subject == "Offer, from the CRM"  # the later change
    (kept,) = rig.store.conflicts(rig.account.tenant_id, activity.id)
    assert (kept.winner, kept.provider_version.subject) == ("crm", "Offer, from the calendar")


@pytest.mark.rule("CAL-18")
def test_all_day_and_timed_items_keep_their_days_instants_and_zones_both_ways(connected: Connected) -> None:
    cal, rig = connected.cal, connected.rig
    sent = {
        "act-day": all_day("Offsite", day=14, days=2),
        "act-kolkata": timed("Call Mumbai", hour=15, zone="Asia/Kolkata", minutes=45),
        "act-ny": SyncedFields(  # across New York's change to summer time
            subject="Overnight",
            start=datetime(2027, 3, 14, 0, 30, tzinfo=ZoneInfo("America/New_York")),
            end=datetime(2027, 3, 14, 4, 30, tzinfo=ZoneInfo("America/New_York")),
            time_zone="America/New_York",
        ),
    }
    for activity_id, fields in sent.items():
        rig.crm_put(activity_id, fields)
    rig.run_queued()
    by_activity = {e.activity_id: e for e in cal.primary_events()}
    for activity_id, fields in sent.items():
        assert to_synced_fields(by_activity[activity_id]) == fields, activity_id
        assert by_activity[activity_id].all_day == fields.all_day

    made = {
        cal.user_creates(all_day("Holiday", day=24, days=3)): all_day("Holiday", day=24, days=3),
        cal.user_creates(timed("Chatham", hour=8, zone="Pacific/Chatham")): timed(
            "Chatham", hour=8, zone="Pacific/Chatham"
        ),
    }
    rig.sync()
    paired = connected.converged()
    for event_id, fields in made.items():
        assert paired[event_id].fields() == fields
    # a timed event made all-day in the calendar is all-day in the CRM
    chatham = next(e for e, f in made.items() if not f.all_day)
    cal.user_edits(chatham, all_day("Chatham", day=10))
    rig.sync()
    assert connected.converged()[chatham].fields() == all_day("Chatham", day=10)


@pytest.mark.rule("CAL-12")
def test_an_event_moved_to_another_calendar_leaves_the_crm_and_comes_back_with_it(
    connected: Connected,
) -> None:
    """Google lists a move as a cancel in the primary calendar (the shape is checked here); the
    writer finds the event in the other calendar by its iCalUID, and the activity is trashed as
    moved, then restored when the event is moved back."""
    cal, rig = connected.cal, connected.rig
    moved = cal.user_creates(timed("Travels"))
    rig.sync()
    (activity,) = connected.converged().values()
    start = rig.cursor()
    assert start is not None
    cal.user_moves(moved, to="other")
    (seen,), _ = connected.listed_since(start)
    assert (seen.provider_event_id, seen.status) == (moved, "cancelled")
    assert seen.calendar_id == cal.account.address  # leaving the primary calendar
    assert seen.ical_uid is not None
    elsewhere = cal.writer.find_elsewhere(cal.account, seen.ical_uid)
    assert elsewhere is not None and elsewhere.provider_event_id == moved
    assert elsewhere.calendar_id != cal.account.address and elsewhere.status == "confirmed"

    rig.sync()
    (trashed,) = connected.told(ActivityTrashed)
    assert trashed.activity_id == activity.id  # type: ignore[attr-defined]
    assert trashed.reason == "moved_to_other_calendar"  # type: ignore[attr-defined]
    assert connected.converged() == {}
    assert (found := rig.activity(activity.id)) is not None and found.trashed

    cal.user_moves(moved, to="primary")
    rig.sync()
    (restored,) = connected.told(ActivityRestored)
    assert restored.activity_id == activity.id  # type: ignore[attr-defined]
    assert connected.converged()[moved].id == activity.id


@pytest.mark.rule("CAL-8")
def test_private_events_stay_out_and_one_made_private_leaves(connected: Connected) -> None:
    cal, rig = connected.cal, connected.rig
    cal.user_creates(timed("Doctor"), visibility="private")
    cal.user_creates(timed("Payroll", day=11), visibility="confidential")
    shared = cal.user_creates(timed("Team lunch", day=12))
    rig.sync()
    assert {e.visibility for e in cal.primary_events()} == {"private", "confidential", "default"}
    (activity,) = connected.converged().values()
    assert activity.subject == "Team lunch"

    cal.user_edits(shared, visibility="private")
    rig.sync()
    (trashed,) = connected.told(ActivityTrashed)
    assert (trashed.activity_id, trashed.reason) == (activity.id, "made_private")  # type: ignore[attr-defined]
    assert connected.converged() == {}
    cal.user_edits(shared, visibility="default")
    rig.sync()
    assert connected.converged()[shared].id == activity.id


@pytest.mark.rule("CAL-7")
def test_a_recurring_series_is_one_item_and_one_activity(connected: Connected) -> None:
    cal, rig = connected.cal, connected.rig
    weekly = ["RRULE:FREQ=WEEKLY;COUNT=5"]
    series = cal.user_creates(timed("Weekly sync", day=7), recurrence=weekly)
    single = cal.user_creates(timed("Becomes a series", day=8))
    start = rig.cursor()
    assert start is not None
    items, _ = connected.listed_since(start)
    assert sorted(e.provider_event_id for e in items) == sorted([series, single])  # never expanded
    (master,) = [e for e in items if e.provider_event_id == series]
    assert master.recurrence == weekly and master.recurring_event_id is None
    rig.sync()
    paired = connected.converged()
    assert paired[series].start == timed("", day=7).start  # the first occurrence

    cal.user_edits(series, timed("Weekly sync, renamed", day=7, hour=10))  # the whole series
    cal.user_edits(single, recurrence=["RRULE:FREQ=DAILY;COUNT=3"])
    rig.sync()
    after = connected.converged()
    assert {k: a.id for k, a in after.items()} == {k: a.id for k, a in paired.items()}
    assert after[series].subject == "Weekly sync, renamed"
    assert len(connected.told(ActivityCreatedFromCalendar)) == 2


@pytest.mark.rule("SYNC-4")
@pytest.mark.rule("SYNC-1")
def test_throttling_raises_transient_and_leaves_the_cursor(connected: Connected) -> None:
    cal, rig = connected.cal, connected.rig
    made = cal.user_creates(timed("Waits"))
    start = rig.cursor()
    cal.throttle_listing()
    with pytest.raises(TransientError):
        rig.sync()
    assert rig.cursor() == start and connected.told(ActivityCreatedFromCalendar) == []
    assert rig.sync().status == "synced"  # the retry
    assert rig.cursor() != start and set(connected.converged()) == {made}


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("CAL-14")
@pytest.mark.rule("CAL-15")
def test_a_crash_before_or_after_every_write_of_a_round_then_redelivery_converges(
    connected: Connected,
) -> None:
    """Each round, on both sides: the user makes an event and edits the previous round's; the CRM
    makes an activity and edits the previous round's; the pushes run, then a sync. The worker dies
    at its n-th write of the round, before it lands or just after, and the job that died is
    delivered again. The writes are counted on a round that does not crash: each is a crash point."""
    cal, rig = connected.cal, connected.rig
    plan = rig.plan
    rounds: list[tuple[str, str]] = []

    def round_(at: int, after: bool = False) -> tuple[int, list[str]]:
        """The round; the writes it counted (before the quiet sync that checks it)."""
        n = len(rounds)
        crashes = plan.crashes
        plan.arm(at, after)
        event_id = cal.user_creates(timed(f"Calendar {n}", day=1 + n % 28))
        activity_id = f"act-{n}"
        rig.crm_put(activity_id, timed(f"CRM {n}", day=1 + n % 28, hour=14))
        if rounds:
            before_event, before_activity = rounds[-1]
            cal.user_edits(before_event, timed(f"Calendar {n - 1}, edited", day=1 + (n - 1) % 28))
            found = rig.activity(before_activity)
            assert found is not None
            rig.crm_put(before_activity, found.fields().model_copy(update={"location": f"Room {n}"}))
        rig.run_queued()
        rig.redelivered(rig.sync)
        rounds.append((event_id, activity_id))
        if at:
            assert plan.crashes == crashes + 1, f"write {at} {'after' if after else 'before'}: no crash"
        counted = (plan.writes, list(plan.names))
        plan.arm(0)
        assert rig.sync().status == "synced"  # quiet
        paired = connected.converged()
        assert len(paired) == 2 * len(rounds)
        return counted

    round_(0)
    writes, names = round_(0)  # a full round: both sides' new items and both sides' edits
    assert {"create", "patch", "put_state", "publish", "put_activity", "advance"} <= set(names), names
    for at in range(1, writes + 1):
        for after in (False, True):
            round_(at, after)
    assert rig.crashes == 2 * writes
    subjects = {a.subject for a in connected.converged().values()}
    assert {f"CRM {n}" for n in range(len(rounds))} <= subjects
    assert all(w["sendUpdates"] == "none" for w in cal.writes())

"""The two-way calendar sync against a model, at scale, in the manner of vdirsyncer's sync state
machine: Hypothesis plays random histories of both sides through the real engine (CalendarSync),
loop (CursorLoop), resync (ImportPages), push job and activities API, over the in-memory activity
store and the in-memory Google Calendar (tests/contract/calendar_memory.py), which pass the same
contracts as the DynamoDB store and the Google Calendar emulator.

A history interleaves, on a deterministic clock (one second a step, so "the most recent change
wins" is decided by the order the test chose):
- the user in Google Calendar: create (timed or all-day, private, recurring, made before the
  connection, in another calendar), edit, delete, move to the other calendar and back, make
  private or public again, make recurring, edit the series' rule, make single again;
- the CRM: create (of a synced type or not, made before the connection), edit, delete (trash),
  change the type; each change queues a calendar.push job;
- the worker: a push job delivered (or delivered twice), a calendar.sync run (a provider push that
  arrived; one that came twice is two runs, a lost one is none), each possibly dying before or
  after any of its writes (the job is then delivered again later); the provider expiring the sync
  token (the next sync resyncs).

After every queued push and a last quiet sync (Rig.assert_converged):
- both sides agree on every in-scope item, and the CRM was told what the store holds;
- nothing out of scope crossed: nothing made before the connection (CAL-6), no private event
  (CAL-8), nothing of the other calendar (CAL-3, CAL-12), no activity of an unsynced type (CAL-5);
- each item exists once on each side (CAL-15); a series is one activity (CAL-7);
- every double change (both sides edited an item since they last agreed) is a recorded conflict,
  whichever run met both: a sync, or a push whose conditional patch met the calendar's change
  (CAL-14).

KNOWN_GAPs (questions of intended behaviour, not changed here; docs/architecture/calendar.md):
- a deletion on one side wins over an edit on the other, with no conflict recorded;
- an activity whose type changes to an unsynced one after it synced keeps syncing (CAL-5 is judged
  when it first goes out), so the model only judges the type of activities that never synced;
- a trash that died after marking its row and before trashing the activity, whose event then came
  back, is finished as a restore with the calendar's fields: a CRM change made meanwhile is not
  weighed against the calendar's as a conflict (the row cannot say whether the CRM was told of
  the trash, so the CRM is told of the restore). The model does not judge a double change met
  under such a row (`unfinished_trash` counts them).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from crmsync.calendar.fingerprint import fingerprint, to_synced_fields
from crmsync.calendar.models import CalendarSettings, SyncedFields
from crmsync.events import ActivityCreatedFromCalendar
from crmsync.providers.google.calendar_events import from_google
from tests.contract.calendar_memory import (
    MemoryCalendar,
    MemoryCalendarImport,
    MemoryCalendarSource,
    MemoryCalendarWriter,
)
from tests.contract.calendar_providers.google import google_body
from tests.contract.calendar_rig import Rig, calendar_account
from tests.contract.crash import Crash

START = datetime(2026, 11, 30, 6, 0, tzinfo=UTC)
ADDRESS = "owner@corp.test"
OTHER = "team@group.calendar.test"
SUBJECTS = ["Kick-off", "Review", "Demo", "Budget"]
ZONES = ["Europe/Paris", "UTC", "America/New_York", "Asia/Kolkata"]
LOCATIONS = [None, "Room 1", "Lyon"]
TYPES = ["meeting", "call", "task"]  # task is not synced (CAL-5)
RULES = ["RRULE:FREQ=WEEKLY;COUNT=4", "RRULE:FREQ=DAILY;COUNT=3"]


@dataclass
class Clock:
    ticks: int = 0

    def now(self) -> datetime:
        return START + timedelta(seconds=self.ticks)

    def tick(self) -> None:
        self.ticks += 1


def fields_of(n: int) -> SyncedFields:
    """A small space of synced fields, so that two sides sometimes make the same change."""
    subject, kind, day, hour, zone, location = (
        SUBJECTS[n % 4],
        (n // 4) % 3,  # 0, 1 timed; 2 all-day
        1 + (n // 12) % 3,
        8 + (n // 36) % 3,
        ZONES[(n // 108) % 4],
        LOCATIONS[(n // 432) % 3],
    )
    if kind == 2:
        first = date(2026, 12, day)
        return SyncedFields(
            subject=subject,
            start=first,
            end=first + timedelta(days=1 + hour % 2),
            all_day=True,
            location=location,
        )
    start = datetime(2026, 12, day, hour, 0, tzinfo=ZoneInfo(zone))
    return SyncedFields(
        subject=subject,
        start=start,
        end=start + timedelta(minutes=30 * (1 + kind)),
        time_zone=zone,
        location=location,
    )


class World:
    """One history: the clock, the user's Google calendars, the CRM and the worker."""

    def __init__(self, page_size: int) -> None:
        self.clock = Clock()
        self.calendar = MemoryCalendar(ADDRESS, self.clock.now, page_size)
        self.calendar.add_calendar(OTHER)
        account = calendar_account("acc-model", ADDRESS, self.clock.now())
        self.rig = Rig(
            account,
            MemoryCalendarSource(self.calendar),
            MemoryCalendarImport(self.calendar),
            MemoryCalendarWriter(self.calendar),
            self.clock.now,
            CalendarSettings(
                activity_types=["meeting", "call"], save_events_as="meeting", min_trash_refused=1000
            ),
        )
        self.rig.connect()
        self.connected = self.rig.link.original_connection_date
        self.ids = itertools.count()
        self.went_out: set[str] = set()  # CRM activities that ever had a synced type (CAL-5)
        self.agreed: dict[str, str] = {}  # activity → the fingerprint both sides last had alike
        self.pending: dict[str, int] = {}  # activity → its conflicts when a double change was seen
        self.seen_as: dict[str, tuple[str, str]] = {}  # activity → the double change (CRM's, calendar's)
        self.decided: dict[str, str] = {}  # activity → the CRM's version in the double change last decided
        self.conflicts_seen = {"sync": 0, "push": 0}  # double changes decided, by the run that did
        self.unfinished_trash = 0

    # ------------------------------------------------------------------ reading both sides
    def events(self, calendar_id: str = "primary") -> list[dict[str, Any]]:
        return self.calendar.events_of(calendar_id)

    def primary(self) -> list[Any]:
        return [from_google(e, ADDRESS) for e in self.events()]

    def pairs(self) -> dict[str, tuple[str, str]]:
        """Live synced items: activity → (its fingerprint, its event's), for in-scope events."""
        found: dict[str, tuple[str, str]] = {}
        for e in self.primary():
            if not self.rig.in_scope(e):
                continue
            state = self.rig.store.state_of_event(self.rig.account.account_id, e.provider_event_id)
            activity = self.rig.activity(state.activity_id) if state else None
            if activity is not None and not activity.trashed:
                found[activity.id] = (fingerprint(activity.fields()), fingerprint(e))
        return found

    def conflicts(self, activity_id: str) -> int:
        return len(self.rig.store.conflicts(self.rig.account.tenant_id, activity_id))

    def before_run(self) -> None:
        """A double change: both sides differ from what they last agreed on, and from each other."""
        pairs = self.pairs()
        told = self.rig.crm_view()
        for activity_id, (stored, cal) in pairs.items():
            # the CRM's side is what the CRM holds (wrote, or was told): a version the sync wrote
            # into the store and died before telling is the calendar's, not a change of the CRM's
            crm = told.get(activity_id, (stored, False))[0] or stored
            agreed = self.agreed.get(activity_id)
            if crm == cal:  # the user made them alike again: nothing left to decide
                self._drop(activity_id)
                self.agreed[activity_id] = crm
            elif agreed in (crm, cal):
                # one side was changed back to what both agreed on: by content (the fingerprint,
                # CAL-15) only the other side changed, and no conflict is owed
                self._drop(activity_id)
            elif agreed is not None and crm != agreed and cal != agreed:
                state = self.rig.store.get_state(self.rig.account.tenant_id, activity_id)
                if state is not None and state.trashed_by_sync is not None:
                    self.unfinished_trash += 1  # KNOWN_GAP (module docstring): not judged
                    self._drop(activity_id)
                elif activity_id in self.pending:
                    self.seen_as[activity_id] = (crm, cal)  # still open, as the sides are now
                elif self.decided.get(activity_id) != crm:  # the CRM's side was not weighed already
                    self.pending[activity_id] = self.conflicts(activity_id)
                    self.seen_as[activity_id] = (crm, cal)

    def _drop(self, activity_id: str) -> None:
        self.pending.pop(activity_id, None)
        self.seen_as.pop(activity_id, None)

    def after_run(self, kind: str) -> None:
        pairs = self.pairs()
        for activity_id in list(self.pending):
            if activity_id not in pairs:
                del self.pending[activity_id]  # deleted, moved, made private: not an edit conflict
                self.seen_as.pop(activity_id, None)
                continue
            crm, cal = pairs[activity_id]
            if crm != cal:
                continue
            # the run that made both sides alike met both changes: CAL-14
            assert self.conflicts(activity_id) > self.pending[activity_id], (
                f"activity {activity_id}: both sides changed, and no conflict was recorded ({kind})"
            )
            self.conflicts_seen[kind] += 1
            del self.pending[activity_id]
            if activity_id in self.seen_as:  # decided: the CRM side it weighed is owed no second conflict
                self.decided[activity_id] = self.seen_as.pop(activity_id)[0]
        told = self.rig.crm_view()
        for activity_id, (crm, cal) in pairs.items():
            # agreed: both sides alike, and the CRM told so (a run that died before telling it
            # left the store ahead of the CRM: that is not an agreement yet)
            if crm == cal and told.get(activity_id, (None, False))[0] == crm:
                self.agreed[activity_id] = crm

    # ------------------------------------------------------------------ the user, in Google Calendar
    def pick(self, items: list[Any], n: int) -> Any:
        return items[n % len(items)] if items else None

    def cal_create(self, n: int, flags: int) -> None:
        private, recurring, old, other = (flags % 5 == 1, flags % 3 == 2, flags == 7, flags == 15)
        body = google_body(
            fields_of(n), "private" if private else None, [RULES[n % 2]] if recurring else None
        )
        created = self.connected - timedelta(days=1) if old else None
        self.calendar.create_in_client(body, OTHER if other else "primary", created)

    def live(self, calendar_id: str = "primary") -> list[dict[str, Any]]:
        return [e for e in self.events(calendar_id) if e.get("status") != "cancelled"]

    def cal_edit(self, pick: int, n: int) -> None:
        found = self.pick(self.live(), pick)
        if found is not None:
            self.calendar.edit_in_client(found["id"], google_body(fields_of(n), every=True))

    def cal_delete(self, pick: int) -> None:
        found = self.pick(self.live(), pick)
        if found is not None:
            self.calendar.delete_in_client(found["id"])

    def cal_move(self, pick: int) -> None:
        away = self.live(OTHER)
        if away and pick % 2:
            self.calendar.move_in_client(self.pick(away, pick)["id"], "primary", OTHER)
            return
        found = self.pick(self.live(), pick)
        if found is not None:
            self.calendar.move_in_client(found["id"], OTHER)

    def cal_visibility(self, pick: int, which: int) -> None:
        found = self.pick(self.live(), pick)
        if found is not None:
            visibility = ["private", "default", "confidential", "public"][which % 4]
            self.calendar.edit_in_client(found["id"], {"visibility": visibility})

    def cal_recurrence(self, pick: int, which: int) -> None:
        found = self.pick(self.live(), pick)
        if found is not None:  # make recurring, edit the series' rule, or make single again
            rule = [RULES[which % 2]] if which % 3 else None
            self.calendar.edit_in_client(found["id"], {"recurrence": rule})

    # ------------------------------------------------------------------ the CRM
    def crm_live(self) -> list[Any]:
        """The live activities the CRM knows of (it made them, or was told of them), including one
        the sync made and told whose row a crash left unwritten."""
        view = self.rig.crm_view()
        known = self.rig.known_activities(self.primary())
        return [a for i, a in sorted(known.items()) if i in view and not a.trashed]

    def crm_create(self, n: int, flags: int) -> None:
        activity_id = f"act-{next(self.ids)}"
        created = self.connected - timedelta(days=1) if flags % 5 == 4 else self.clock.now()
        self.rig.crm_put(activity_id, fields_of(n), TYPES[flags % 3], created_at=created)
        if TYPES[flags % 3] in self.rig.link.settings.activity_types:
            self.went_out.add(activity_id)

    def crm_edit(self, pick: int, n: int) -> None:
        found = self.pick(self.crm_live(), pick)
        if found is not None:
            self.rig.crm_put(found.id, fields_of(n), found.type)

    def crm_delete(self, pick: int) -> None:
        found = self.pick(self.crm_live(), pick)
        if found is not None:
            self.rig.crm_delete(found.id)

    def crm_type(self, pick: int, which: int) -> None:
        found = self.pick(self.crm_live(), pick)
        if found is not None:
            self.rig.crm_put(found.id, found.fields(), TYPES[which % 3])
            if TYPES[which % 3] in self.rig.link.settings.activity_types:
                self.went_out.add(found.id)

    # ------------------------------------------------------------------ the worker
    def push(self, crash: tuple[int, bool] | None, twice: bool) -> None:
        if not self.rig.queued:
            return
        job = self.rig.queued[0]
        for _ in range(2 if twice else 1):
            self.rig.plan.arm(*(crash or (0, False)))
            self.before_run()
            try:
                self.rig.push_job(job, "m")
            except Crash:
                self.rig.crashes += 1
                self.after_run("push")
                return  # the job stays queued: SQS delivers it again later
            self.after_run("push")
        self.rig.queued.pop(0)

    def sync(self, crash: tuple[int, bool] | None, twice: bool) -> None:
        """A provider push arrived (twice: two syncs); the first may die, the next is its redelivery."""
        for at in (crash, None) if twice else (crash,):
            self.rig.plan.arm(*(at or (0, False)))
            self.before_run()
            try:
                self.rig.sync()
            except Crash:
                self.rig.crashes += 1
            self.after_run("sync")

    def play(self, action: tuple[Any, ...]) -> None:
        self.clock.tick()
        match action:
            case ("cal_create", n, flags):
                self.cal_create(n, flags)
            case ("cal_edit", pick, n):
                self.cal_edit(pick, n)
            case ("cal_delete", pick):
                self.cal_delete(pick)
            case ("cal_move", pick):
                self.cal_move(pick)
            case ("cal_visibility", pick, which):
                self.cal_visibility(pick, which)
            case ("cal_recurrence", pick, which):
                self.cal_recurrence(pick, which)
            case ("crm_create", n, flags):
                self.crm_create(n, flags)
            case ("crm_edit", pick, n):
                self.crm_edit(pick, n)
            case ("crm_delete", pick):
                self.crm_delete(pick)
            case ("crm_type", pick, which):
                self.crm_type(pick, which)
            case ("push", crash, twice):
                self.push(crash, twice)
            case ("sync", crash, twice):
                self.sync(crash, twice)
            case ("expire",):
                self.calendar.expire_sync_tokens()

    def settle(self) -> None:
        """Every queued push delivered, then a last quiet sync (after a resync if it needs one)."""
        self.clock.tick()
        self.rig.plan.arm(0)
        while self.rig.queued:
            self.push(None, False)
        self.clock.tick()
        for _ in range(3):
            self.before_run()
            result = self.rig.sync()
            self.after_run("sync")
            if result.status == "synced":
                return
        raise AssertionError(f"no quiet sync after three runs: {result}")

    def check(self) -> None:
        paired = self.rig.assert_converged(self.primary())
        assert not self.pending, f"double changes never resolved: {self.pending}"
        account_id = self.rig.account.account_id
        # CAL-6: nothing made before the connection crossed, either way
        for e in self.primary():
            if e.created < self.connected:
                assert self.rig.store.state_of_event(account_id, e.provider_event_id) is None
        old_crm = {
            i for i in self.rig.crm_ids if (a := self.rig.activity(i)) and a.created_at < self.connected
        }
        assert not old_crm & {e.activity_id for e in self.primary()}, (
            "an activity older than the connection went out"
        )
        # CAL-5: no event for an activity that was never of a synced type
        ours = {e.activity_id for e in self.primary() if e.activity_id}
        assert ours <= self.went_out, f"activities of an unsynced type went out: {ours - self.went_out}"
        # CAL-7: a series is one activity, made from its master (its first occurrence)
        made = [e for e in self.rig.told.events if isinstance(e, ActivityCreatedFromCalendar)]
        assert all("_" not in e.provider_event_id for e in made)
        for e in self.primary():
            if e.recurrence and e.provider_event_id in paired:
                assert paired[e.provider_event_id].start == to_synced_fields(e).start
        # CAL-3, CAL-12: nothing of the other calendar is a live activity
        for found in self.live(OTHER):
            state = self.rig.store.state_of_event(account_id, found["id"])
            activity = self.rig.activity(state.activity_id) if state else None
            assert activity is None or activity.trashed, f"event {found['id']} in {OTHER} is a live activity"


def _n() -> st.SearchStrategy[int]:
    return st.integers(0, 1295)


_PICK = st.integers(0, 9)
_CRASH = st.none() | st.tuples(st.integers(1, 6), st.booleans())
STEPS: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
    "cal_create": st.tuples(st.just("cal_create"), _n(), st.integers(0, 15)),
    "cal_edit": st.tuples(st.just("cal_edit"), _PICK, _n()),
    "cal_delete": st.tuples(st.just("cal_delete"), _PICK),
    "cal_move": st.tuples(st.just("cal_move"), _PICK),
    "cal_visibility": st.tuples(st.just("cal_visibility"), _PICK, st.integers(0, 3)),
    "cal_recurrence": st.tuples(st.just("cal_recurrence"), _PICK, st.integers(0, 5)),
    "crm_create": st.tuples(st.just("crm_create"), _n(), st.integers(0, 14)),
    "crm_edit": st.tuples(st.just("crm_edit"), _PICK, _n()),
    "crm_delete": st.tuples(st.just("crm_delete"), _PICK),
    "crm_type": st.tuples(st.just("crm_type"), _PICK, st.integers(0, 2)),
    # a push job delivered (maybe twice); a sync run: a provider push that arrived (one that came
    # twice is two runs, a lost one none); half of them die at one of their first writes
    "push": st.tuples(st.just("push"), _CRASH, st.booleans()),
    "sync": st.tuples(st.just("sync"), _CRASH, st.booleans()),
    "expire": st.just(("expire",)),
}
# by weight: edits most, so that both sides often change one item between two runs
WEIGHTS = {
    "cal_create": 6,
    "cal_edit": 8,
    "cal_delete": 2,
    "cal_move": 2,
    "cal_visibility": 2,
    "cal_recurrence": 2,
    "crm_create": 6,
    "crm_edit": 8,
    "crm_delete": 2,
    "crm_type": 1,
    "push": 8,
    "sync": 10,
    "expire": 1,
}
ACTIONS = st.lists(
    st.sampled_from([name for name, weight in WEIGHTS.items() for _ in range(weight)]).flatmap(
        lambda name: STEPS[name]
    ),
    min_size=8,
    max_size=50,
)


def scenario(page_size: int, actions: list[tuple[Any, ...]]) -> World:
    world = World(page_size)
    for action in actions:
        world.play(action)
    world.settle()
    world.check()
    return world


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-3")
@pytest.mark.rule("CAL-5")
@pytest.mark.rule("CAL-6")
@pytest.mark.rule("CAL-7")
@pytest.mark.rule("CAL-8")
@pytest.mark.rule("CAL-12")
@pytest.mark.rule("CAL-14")
@pytest.mark.rule("CAL-15")
@pytest.mark.rule("CAL-18")
@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("SYNC-3")
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(page_size=st.integers(1, 4), actions=ACTIONS)
def test_any_two_way_history_converges(page_size: int, actions: list[tuple[Any, ...]]) -> None:
    world = scenario(page_size, actions)
    event(f"crashes: {min(world.rig.crashes, 3)}")
    event(f"resyncs: {min(world.rig.resyncs, 2)}")
    event(f"synced items: {min(len(world.pairs()), 4)}")
    event(f"conflicts decided by a sync: {min(world.conflicts_seen['sync'], 2)}")
    event(f"conflicts decided by a push: {min(world.conflicts_seen['push'], 2)}")
    event(f"double changes under a row marked trashed (KNOWN_GAP): {min(world.unfinished_trash, 1)}")


def test_the_model_catches_what_it_should() -> None:
    """The checks themselves: a history through every kind of step ends converged, and an event
    changed behind the sync's back (no change recorded, so no sync ever sees it) is caught."""
    actions: list[tuple[Any, ...]] = [
        ("cal_create", 0, 0),
        ("crm_create", 5, 0),
        ("cal_create", 13, 2),  # recurring
        ("cal_create", 26, 1),  # private
        ("sync", (2, True), False),
        ("push", None, True),
        ("crm_edit", 0, 40),
        ("cal_edit", 1, 41),
        ("expire",),
        ("sync", None, False),
        ("cal_move", 0),
        ("sync", None, False),
        ("cal_move", 1),
    ]
    world = scenario(2, actions)
    assert world.rig.crashes == 1 and world.rig.resyncs == 1
    assert len(world.pairs()) == 3
    synced = next(iter(world.rig.assert_converged(world.primary())))
    world.calendar.calendars["primary"].events[synced]["summary"] = "Changed where no sync can see it"
    with pytest.raises(AssertionError, match="disagree"):
        world.check()


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-15")
def test_a_calendar_edit_reaches_an_activity_the_crm_put_again_later() -> None:
    """Found by the model: the CRM repeated an activity's fields with a later `updated_at`, then
    the calendar changed the event. The activity written from the event was older than the
    stored one and the store dropped it, while the CRM was told of the change."""
    world = scenario(1, [("crm_create", 1, 0), ("push", None, False), ("cal_edit", 0, 0), ("crm_edit", 0, 1)])
    (activity,) = [a for a in world.rig.known_activities(world.primary()).values()]
    assert activity.subject == "Kick-off" and world.conflicts(activity.id) == 0


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("SYNC-1")
@pytest.mark.parametrize("crash", [(n, after) for n in (1, 2, 3, 4) for after in (False, True)])
def test_an_update_from_the_calendar_reaches_the_crm_whatever_write_the_sync_dies_at(
    crash: tuple[int, bool],
) -> None:
    """Found by the model: the sync wrote the activity and died before telling the CRM; the
    retry found both sides alike and told nothing. The CRM is told first now."""
    world = scenario(
        1, [("cal_create", 0, 0), ("sync", None, False), ("cal_edit", 0, 1), ("sync", crash, False)]
    )
    assert world.rig.crashes == 1
    assert [fields for fields, _ in world.rig.crm_view().values()] == [fingerprint(fields_of(1))]


@pytest.mark.rule("CAL-14")
@pytest.mark.parametrize("at", [1, 2, 3])
def test_a_double_change_is_kept_as_a_conflict_even_if_the_sync_dies_after_a_write(at: int) -> None:
    """Found by the model: the winner was written and the worker died before the conflict was
    kept; the retry found both sides alike. The conflict is kept before the write now."""
    actions = [
        ("cal_create", 0, 0),
        ("sync", None, False),
        ("cal_edit", 0, 2),
        ("crm_edit", 0, 1),
        ("sync", (at, True), False),
    ]
    world = scenario(1, actions)
    (activity_id,) = world.pairs()
    kept = world.rig.store.conflicts(world.rig.account.tenant_id, activity_id)
    assert kept and {c.winner for c in kept} == {"crm"} and world.rig.crashes == 1


@pytest.mark.rule("CAL-8")
@pytest.mark.rule("CAL-12")
@pytest.mark.parametrize("crash", [(n, after) for n in (1, 2, 3) for after in (False, True)])
def test_an_event_made_private_then_public_again_whatever_write_the_trash_dies_at(
    crash: tuple[int, bool],
) -> None:
    """Found by the model: the trash was written and the worker died before its row said the sync
    keeps it in the trash; when the event came back the activity read as trashed in the CRM, and
    its event was deleted. The row is marked before the activity is trashed now."""
    actions = [
        ("cal_create", 0, 0),
        ("sync", None, False),
        ("cal_visibility", 0, 0),  # private
        ("sync", crash, False),
        ("cal_visibility", 0, 1),  # public again
    ]
    world = scenario(1, actions)
    (event_,) = world.live()
    assert world.pairs() and event_.get("visibility") == "default"


@pytest.mark.rule("CAL-1")
def test_an_activity_newer_than_the_calendars_change_is_still_trashed() -> None:
    """Found by the contract suite: the CRM's clock ahead of the calendar's; the trash (stamped
    with the engine's clock) was older than the stored activity and dropped by the store."""
    world = World(1)
    ahead = world.clock.now() + timedelta(hours=1)
    world.rig.crm_put("act-ahead", fields_of(3), updated_at=ahead)
    world.went_out.add("act-ahead")
    world.rig.run_queued()
    (made,) = world.live()
    world.clock.tick()
    world.calendar.delete_in_client(made["id"])
    world.settle()
    world.check()
    found = world.rig.activity("act-ahead")
    assert found is not None and found.trashed


@pytest.mark.rule("CAL-15")
@pytest.mark.rule("SYNC-8")
def test_a_crm_change_of_an_activity_whose_row_a_crash_left_unwritten_patches_its_event() -> None:
    """Found by the model: the sync made an activity from an event, told the CRM and died before
    its row; the CRM changed the activity and its push, knowing no event, created a second one,
    and every later sync failed on the row. The activity keeps the event it was made from
    (`origin_event_id`), so the push patches that event, and the redelivered sync records it."""
    actions = [
        ("cal_create", 0, 0),
        ("sync", (2, True), False),  # dies after telling the CRM (its 2nd write), before the row
        ("crm_edit", 0, 1),
        ("push", None, False),
        ("sync", None, False),
    ]
    world = scenario(1, actions)
    assert world.rig.crashes == 1
    (event,) = [e for e in world.primary() if e.status != "cancelled"]  # one event, not two
    assert fingerprint(event) == fingerprint(fields_of(1))  # the CRM's change reached it
    (pair,) = world.pairs().values()  # and the redelivered sync recorded the item
    assert pair == (fingerprint(fields_of(1)), fingerprint(fields_of(1)))


@pytest.mark.rule("CAL-14")
@pytest.mark.rule("CAL-15")
def test_a_calendar_change_undone_before_any_sync_is_no_change_and_owes_no_conflict() -> None:
    """Found by the model: the calendar changed an event and changed it back before a sync saw
    it, while the CRM changed the activity; the push's conditional patch met a new etag, read the
    event, found it as agreed, and wrote the CRM's change with no conflict: right by content."""
    actions = [
        ("cal_create", 0, 0),
        ("cal_edit", 0, 1),
        ("crm_create", 0, 0),
        ("sync", None, False),
        ("cal_edit", 0, 2),
        ("crm_edit", 0, 0),
        ("push", None, False),
        ("cal_edit", 0, 1),
        ("push", (3, False), False),
    ]
    world = scenario(1, actions)
    assert world.rig.crashes == 1
    assert all(world.conflicts(activity_id) == 0 for activity_id in world.pairs())


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-15")
def test_a_calendar_change_written_but_never_told_then_changed_again_tells_the_last() -> None:
    """Found by the model (seed 312): the sync wrote a calendar change and died before telling;
    the calendar changed again; the redelivery finishes the item with the calendar's latest
    version and tells it, with no conflict (the CRM changed nothing)."""
    actions = [
        ("cal_create", 0, 0),
        ("cal_create", 0, 0),
        ("cal_create", 0, 0),
        ("cal_edit", 0, 2),
        ("sync", None, False),
        ("cal_edit", 0, 1),
        ("sync", (2, False), False),
        ("cal_edit", 0, 0),
    ]
    world = scenario(1, actions)
    assert world.rig.crashes == 1
    assert all(world.conflicts(activity_id) == 0 for activity_id in world.pairs())


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-15")
def test_a_calendar_change_told_then_undone_before_the_redelivery_is_told_again() -> None:
    """Found by the model: a sync wrote and told one calendar change and died before its row;
    the user changed the event back before the redelivery, which found the event as the row has
    it and told nothing, so the CRM kept the undone version. The activity is marked as the sync's
    own write (`written_by_sync`), so the redelivery finishes it with the calendar as it is now."""
    actions = [
        ("cal_create", 0, 0),
        ("cal_create", 0, 0),
        ("cal_edit", 0, 1),
        ("sync", None, False),
        ("cal_create", 0, 0),
        ("cal_edit", 0, 0),
        ("sync", (3, False), False),
        ("cal_edit", 0, 1),
    ]
    world = scenario(2, actions)
    assert world.rig.crashes == 1


@pytest.mark.rule("CAL-14")
def test_a_calendar_change_written_but_never_told_then_undone_is_no_side_of_a_conflict() -> None:
    """Found by the model: the sync wrote a calendar change into the activity and died before
    telling the CRM; the calendar undid it, and the CRM changed the activity: only the CRM
    changed what both sides last agreed on (the row), so its change goes out with no conflict."""
    actions = [
        ("cal_create", 0, 0),
        ("cal_create", 0, 1),
        ("cal_create", 0, 0),
        ("sync", None, False),
        ("cal_edit", 0, 2),
        ("sync", (2, False), False),
        ("cal_edit", 0, 0),
        ("crm_edit", 0, 1),
    ]
    world = scenario(1, actions)
    assert world.rig.crashes == 1
    assert all(world.conflicts(activity_id) == 0 for activity_id in world.pairs())

"""The calendar sync as the worker runs it, around any provider's calendar ports: what the contract
suite (test_calendar_contract.py) and the model test (test_calendar_model.py) drive.

The parts are the real ones: the CRM's side is `Activities` (PUT/DELETE /v1/activities/{id}) and
the worker's `calendar.push` job (`CalendarPushJob`), the provider's side is the sync core's
`CursorLoop` (a `calendar.sync` job) and a resync through `ImportPages` ending on a fresh cursor
(SYNC-3), the engine is `CalendarSync`, and the stores are the in-memory twins (which pass the
same contracts as the DynamoDB ones). Every write of the worker, to the activity store, the CRM's
bus, the cursor and the provider's calendar, goes through tests/contract/crash.py's plan, so a
test can make the worker die before or after any of them; a job that died is delivered again.

`assert_converged()` is the end state both suites judge, with no model of what happened: every
in-scope event of the primary calendar is one live activity with the same synced fields, and
every live activity that ever synced or should have is one such event; nothing out of scope
crossed; nothing is there twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from crmsync.accounts.models import Account, AccountSettings
from crmsync.auth import Principal
from crmsync.calendar.activities import Activities, ActivityPut, CalendarPushJob
from crmsync.calendar.engine import CalendarSync, activity_id_for
from crmsync.calendar.fingerprint import fingerprint
from crmsync.calendar.models import Activity, CalendarEvent, CalendarLink, CalendarSettings, SyncedFields
from crmsync.calendar.ports import CalendarWriter
from crmsync.calendar.recurrence import carries_activity
from crmsync.calendar.rules import goes_out, in_window, is_private
from crmsync.events import (
    ActivityCreatedFromCalendar,
    ActivityRestored,
    ActivityTrashed,
    ActivityUpdatedFromCalendar,
    CrmEvent,
)
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.resync import ResyncJob
from crmsync.stores.memory import MemoryCursorStore
from crmsync.stores.memory_activities import MemoryActivityStore
from crmsync.sync.core import ChangeSource, CursorLoop, ImportPages, ImportSource, SyncResult
from tests.contract.crash import READS, Crash, CrashingWrites, CrashPlan

TENANT = "t-cal"
OWNER = "u1"
CURSOR = "calendar"

# what the calendar's stores and writer answer without changing anything (beside crash.READS)
CALENDAR_READS = READS | {
    "get_activity",
    "get_activities",
    "get_state",
    "state_of_event",
    "states_of_events",
    "count_states",
    "conflicts",
    "find_elsewhere",
    "events",
    "held",
}


class CalendarCrashingWrites(CrashingWrites):
    """crash.CrashingWrites knowing the calendar stores' reads too."""

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name.startswith("_") or name in CALENDAR_READS or not callable(target):
            return target
        return lambda *args, **kwargs: self._plan.write(name, target, args, kwargs)


class _Told:
    """The CRM's bus: what it was told, in order, on the rig's timeline beside its own writes."""

    def __init__(self, timeline: list[tuple[str, object]]) -> None:
        self.timeline = timeline
        self.events: list[CrmEvent] = []

    def publish(self, events: Sequence[CrmEvent]) -> None:
        self.events.extend(events)
        self.timeline.extend(("told", e) for e in events)


@dataclass
class _Queue:
    """The sync queue as the CRM's side sends to it: every job, duplicates and all."""

    jobs: list[Job]

    def send(self, job: Job, dedup_id: str) -> None:
        self.jobs.append(job)


class _Accounts:
    def __init__(self, account: Account) -> None:
        self.account = account

    def list_for_user(self, tenant_id: str, user_id: str) -> list[Account]:
        return (
            [self.account] if (tenant_id, user_id) == (self.account.tenant_id, self.account.user_id) else []
        )

    def get_by_id(self, account_id: str) -> Account | None:
        return self.account if account_id == self.account.account_id else None


def calendar_account(account_id: str, address: str, at: datetime) -> Account:
    return Account(
        account_id=account_id,
        tenant_id=TENANT,
        user_id=OWNER,
        provider="google",
        purpose="calendar",
        address=address,
        status="connected",
        settings=AccountSettings(),
        connected_at=at,
        updated_at=at,
    )


class Rig:
    """One calendar connection of user u1, the CRM's activities, and the worker between them."""

    def __init__(
        self,
        account: Account,
        source: ChangeSource[CalendarEvent],
        importer: ImportSource[CalendarEvent],
        writer: CalendarWriter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        settings: CalendarSettings | None = None,
    ) -> None:
        self.account, self.source, self.importer, self.now = account, source, importer, now
        self.plan = CrashPlan()
        self.store = MemoryActivityStore()
        self.timeline: list[tuple[str, object]] = []  # the CRM's writes and what it was told, in order
        self.told = _Told(self.timeline)
        self.cursors = MemoryCursorStore()
        at = now()  # providers keep milliseconds: an event made in the same one is not older
        self.link = CalendarLink(
            tenant_id=account.tenant_id,
            owner_user_id=account.user_id,
            calendar_id=account.address.lower(),
            original_connection_date=at.replace(microsecond=at.microsecond // 1000 * 1000),
            settings=settings or CalendarSettings(),
        )
        w = self._wrap
        self.engine = CalendarSync(
            w(self.store), {account.provider: w(writer)}, w(self.told), lambda _a: self.link, now
        )
        self.loop = CursorLoop(self.engine, w(self.cursors), self._resync, CURSOR)
        accounts = _Accounts(account)
        self.imports = ImportPages(accounts, {account.provider: importer}, self.engine)
        self.queued: list[Job] = []
        self.activities = Activities(self.store, _Queue(self.queued))  # the API: not the worker's writes
        self.push_job = CalendarPushJob(w(self.store), accounts, self.engine)
        self.crm = Principal(tenant_id=account.tenant_id, user_id="crm-backend", role="service")
        self.crm_ids: list[str] = []  # activities the CRM made, in order
        self.resyncs = 0
        self.crashes = 0

    def _wrap(self, inner: Any) -> Any:
        return CalendarCrashingWrites(inner, self.plan)

    # ------------------------------------------------------------------ the connection
    def connect(self) -> None:
        """As GoogleCalendarHooks.on_connected: the full listing's last cursor, nothing imported
        (nothing in it was created after the original connection date, CAL-6)."""
        job = self.resync_job()
        page = self.importer.page(self.account, job)
        while page.next_page is not None:
            page = self.importer.page(self.account, job.model_copy(update={"page_token": page.next_page}))
        assert page.cursor is not None
        assert self.cursors.advance(self.account.account_id, CURSOR, page.cursor, expected=None)

    def resync_job(self) -> ResyncJob:
        return ResyncJob(
            tenant_id=self.account.tenant_id,
            user_id=self.account.user_id,
            account_id=self.account.account_id,
            kind="calendar_resync",
        )

    def _resync(self, account: Account, reason: str) -> None:
        """SYNC-3 as the resync state machine runs it: ImportPages page by page, then the fresh
        cursor stored (resync.py's cursor sink: a plain set)."""
        self.resyncs += 1
        job = self.resync_job()
        while True:
            page = self.imports.fetch_page(job)
            job = job.model_copy(update={"page_token": page.next_token, "cursor": page.cursor or job.cursor})
            if page.next_token is None:
                break
        assert job.cursor is not None
        self.plan.write("set", self.cursors.set, (account.account_id, CURSOR, job.cursor), {})

    def cursor(self) -> str | None:
        return self.cursors.get(self.account.account_id, CURSOR)

    # ------------------------------------------------------------------ the worker's jobs
    def sync(self) -> SyncResult:
        """A calendar.sync job (a push, or the poll); a resync it starts runs right away."""
        return self.loop.run(self.account, self.source)

    def push(self, activity_id: str) -> None:
        """The calendar.push job of one activity (the job reads it as it is now)."""
        job = Job(
            type=JobType.CALENDAR_PUSH,
            tenant_id=self.account.tenant_id,
            account_id=f"activity-{activity_id}",
            payload={"activity_id": activity_id},
        )
        self.push_job(job, "m")

    def run_queued(self) -> None:
        """Every queued push, in order; one that dies is delivered again."""
        while self.queued:
            self.redelivered(lambda: self.push_job(self.queued[0], "m"))
            self.queued.pop(0)

    def redelivered(self, run: Callable[[], object]) -> None:
        """Runs a job; if the armed crash kills it, SQS delivers it again (unarmed by then)."""
        try:
            run()
        except Crash:
            self.crashes += 1
            run()

    # ------------------------------------------------------------------ the CRM
    def crm_put(
        self, activity_id: str, fields: SyncedFields, type_: str = "meeting", **times: datetime
    ) -> Activity:
        """The CRM backend's PUT /v1/activities/{id} (its push is queued, not run)."""
        now = self.now()
        current = self.store.get_activity(self.account.tenant_id, activity_id)
        created = times.get("created_at") or (current.created_at if current else now)
        body = ActivityPut(
            **fields.model_dump(),
            owner_user_id=self.account.user_id,
            type=type_,
            created_at=created,
            updated_at=times.get("updated_at") or now,
        )
        if activity_id not in self.crm_ids:
            self.crm_ids.append(activity_id)
        stored = self.activities.put(self.crm, activity_id, body).activity
        self.timeline.append(("crm", stored))
        return stored

    def crm_delete(self, activity_id: str) -> None:
        self.activities.delete(self.crm, activity_id)
        found = self.activity(activity_id)
        if found is not None:
            self.timeline.append(("crm", found))

    def crm_view(self) -> dict[str, tuple[str | None, bool]]:
        """What the CRM holds of each activity, by what it wrote and was told last: (the
        fingerprint of its fields, trashed)."""
        view: dict[str, tuple[str | None, bool]] = {}
        for kind, item in self.timeline:
            if kind == "crm":
                assert isinstance(item, Activity)
                view[item.id] = (fingerprint(item.fields()), item.trashed)
            elif isinstance(
                item, ActivityCreatedFromCalendar | ActivityUpdatedFromCalendar | ActivityRestored
            ):
                view[item.activity_id] = (fingerprint(item.fields), False)
            elif isinstance(item, ActivityTrashed):
                view[item.activity_id] = (view.get(item.activity_id, (None, True))[0], True)
        return view

    def activity(self, activity_id: str) -> Activity | None:
        return self.store.get_activity(self.account.tenant_id, activity_id)

    def known_activities(self, events: Iterable[CalendarEvent]) -> dict[str, Activity]:
        """Every activity there is: the CRM's, and those the sync made (for any event it ever saw)."""
        ids = set(self.crm_ids)
        ids |= {e.activity_id for e in self.told.events if isinstance(e, ActivityCreatedFromCalendar)}
        ids |= {activity_id_for(self.account.account_id, e.provider_event_id) for e in events}
        return self.store.get_activities(self.account.tenant_id, sorted(ids))

    # ------------------------------------------------------------------ the end state
    def in_scope(self, event: CalendarEvent) -> bool:
        """An event of the primary calendar that syncs: live, made since the connection, not
        private (CAL-6, CAL-8), a single event or a series' master (CAL-7)."""
        return (
            event.status != "cancelled"
            and event.calendar_id == self.link.calendar_id
            and in_window(event, self.link.original_connection_date)
            and not is_private(event)
            and carries_activity(event)
        )

    def goes_out(self, activity: Activity) -> bool:
        """A live activity of a synced type made since the connection (CAL-5, CAL-6)."""
        return (
            not activity.trashed
            and goes_out(activity, self.link.settings)
            and in_window(activity, self.link.original_connection_date)
        )

    def assert_converged(self, primary: list[CalendarEvent]) -> dict[str, Activity]:
        """The four invariants on the primary calendar's events (cancelled ones too) and the
        CRM's activities. Returns the live activities by the event they are synced with."""
        by_id = {e.provider_event_id: e for e in primary}
        assert len(by_id) == len(primary), "an event id twice in one calendar"
        activities = self.known_activities(primary)
        account_id = self.account.account_id
        paired: dict[str, Activity] = {}
        # every in-scope event is one live activity with the same fields
        for event in primary:
            state = self.store.state_of_event(account_id, event.provider_event_id)
            if not self.in_scope(event):
                # nothing out of scope crossed: such an event has no live activity
                if state is not None:
                    linked = activities.get(state.activity_id)
                    assert linked is None or linked.trashed, (
                        f"out-of-scope event {event.provider_event_id} ({event.status}, "
                        f"{event.visibility}) has live activity {state.activity_id}"
                    )
                continue
            assert state is not None, (
                f"in-scope event {event.provider_event_id} {event.summary!r} never synced"
            )
            activity = activities.get(state.activity_id)
            assert activity is not None and not activity.trashed, (
                f"event {event.provider_event_id} {event.summary!r}: its activity {state.activity_id} "
                f"is {'trashed' if activity else 'missing'}"
            )
            assert fingerprint(activity.fields()) == fingerprint(event), (
                f"event {event.provider_event_id} and activity {activity.id} disagree: "
                f"{activity.fields()!r} != {event!r}"
            )
            assert event.activity_id in (None, activity.id), "the event names another activity"
            paired[event.provider_event_id] = activity
        # each item once on each side
        assert len({a.id for a in paired.values()}) == len(paired), "one activity for two events"
        ours = [e.activity_id for e in primary if e.activity_id and e.status != "cancelled"]
        assert len(ours) == len(set(ours)), f"an activity has two live events: {ours}"
        made: dict[str, set[str]] = {}
        for told in self.told.events:
            if isinstance(told, ActivityCreatedFromCalendar):
                made.setdefault(told.provider_event_id, set()).add(told.activity_id)
        assert all(len(ids) == 1 for ids in made.values()), f"an event became two activities: {made}"
        # the CRM was told: what it holds of each activity is what the store holds
        view = self.crm_view()
        for activity_id, (fields, trashed) in view.items():
            stored = activities.get(activity_id)
            assert stored is not None, f"the CRM was told of {activity_id}, which is not stored"
            assert trashed == stored.trashed, (
                f"the CRM holds activity {activity_id} {'trashed' if trashed else 'live'}, the store does not"
            )
            if not trashed:
                assert fields == fingerprint(stored.fields()), (
                    f"the CRM was not told the fields of {activity_id}"
                )
        # every live activity that synced, or should have, is one of those events
        live_paired = {a.id for a in paired.values()}
        for activity in activities.values():
            if activity.trashed or activity.id in live_paired:
                continue
            state = self.store.get_state(self.account.tenant_id, activity.id)
            assert state is None or activity.id in self.crm_ids, (
                f"live activity {activity.id} {activity.subject!r} synced from an event that is out of scope"
            )
            if state is None:
                assert not self.goes_out(activity), (
                    f"activity {activity.id} {activity.subject!r} never synced"
                )
            else:
                left = by_id.get(state.provider_event_id)
                assert left is None or not self.in_scope(left), state
                # a CRM activity whose event left the calendar is trashed by the sync (CAL-1, 8, 12)
                assert not self.goes_out(activity), (
                    f"live activity {activity.id} {activity.subject!r} lost its event "
                    f"{state.provider_event_id} ({left.status if left else 'gone'})"
                )
        return paired

"""The calendar engine: reads what an item needs, asks the pure planner (rules.plan), then acts.

Inbound it is the sync core's Sink of CalendarEvent: a provider page's events come in one call
(`ingest_many`), each is planned against its state row and activity, the whole page's plans pass
the mass-trash guard (CAL-16) before any of them acts, and then they act in turn. Outbound,
`push` plans one activity the CRM changed against its event and writes the calendar.

Writes are ordered so that a crash between any two is healed by the redelivery (a conflict is
kept before anything else, as a retry would find both sides alike and plan none):
- towards the CRM: the activity (idempotent by `updated_at`; marked `written_by_sync`), then its
  events on the bus, then the state row. A retry finds a new activity by its id, a restored one
  live under a row still marked trashed, a changed one as the sync's own write whose fields are
  not the row's; each is finished from the calendar as it is then (a change undone meanwhile
  included) and told again (at least once; the CRM de-duplicates by activity id). A trash marks
  the row, tells the CRM, then trashes the activity: a live activity under a marked row is
  trashed again, or restored if its event came back;
- towards the calendar: the provider write (a create under our own id, so a retry finds the
  event instead of making a second one, CAL-15), then the state row.
A page keeps each item's order but tells the CRM once for all of them (`_Round`): every item's
writes before telling, then the page's events in one publish (PutEvents of ten), then every
item's writes after telling. A run that dies anywhere leaves each item where one of its own
crash points would have, and the redelivery finishes it as above.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from crmsync.accounts.models import Account
from crmsync.calendar.fingerprint import fingerprint
from crmsync.calendar.models import Activity, CalendarEvent, CalendarLink, SyncedFields, SyncState
from crmsync.calendar.ports import ActivityStore, CalendarWriter, EventChanged, People
from crmsync.calendar.recurrence import series_key
from crmsync.calendar.rules import Plan, guard_deletions, new_contacts, plan
from crmsync.errors import PermanentError, TransientError
from crmsync.events import (
    ActivityCreatedFromCalendar,
    ActivityRestored,
    ActivityTrashed,
    ActivityUpdatedFromCalendar,
    CalendarConflictRecorded,
    CalendarGapChangeReported,
    ContactCreatedFromAttendee,
    CrmEvent,
    EventPublisher,
)
from crmsync.ids import is_address

_IDS = uuid.UUID("7d1b0c5e-2f4a-4b8e-9c1d-5a6e3f2b8c90")


def activity_id_for(account_id: str, provider_event_id: str) -> str:
    """The CRM id an event's activity gets: the same for a retried create (CAL-15)."""
    return str(uuid.uuid5(_IDS, f"{account_id}|{provider_event_id}"))


@dataclass(frozen=True)
class CalendarOutcome:
    """What happened to one item: the sync core counts `status`."""

    status: str  # "synced" (changed something), "updated" (nothing to do), "skipped"
    action: str
    reason: str
    activity_id: str | None = None


class MassTrashRefused(PermanentError):
    """CAL-16: the page would trash more than the allowed share of the calendar's activities."""


class _Round:
    """What one run tells the CRM, and the writes each item makes once it is told. A page's
    events go out together (one PutEvents per ten) before any of its items' after-writes (state
    rows, changed activities), so every item keeps its own order of writes; a push tells at once."""

    def __init__(self, publisher: EventPublisher, batched: bool) -> None:
        self._publisher = publisher
        self._batched = batched
        self._told: list[CrmEvent] = []
        self._after: list[Callable[[], None]] = []

    def tell(self, events: Sequence[CrmEvent], then: Callable[[], None]) -> None:
        if not self._batched:
            if events:
                self._publisher.publish(events)
            then()
            return
        self._told += events
        self._after.append(then)

    def finish(self) -> None:
        if self._told:
            self._publisher.publish(self._told)
        for write in self._after:
            write()


class CalendarSync:
    def __init__(
        self,
        store: ActivityStore,
        writers: Mapping[str, CalendarWriter],
        publisher: EventPublisher,
        link_of: Callable[[Account], CalendarLink],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        people: People | None = None,
    ) -> None:
        self._people = people  # CAL-13: None, no attendee becomes a contact
        self._store = store
        self._writers = writers  # provider → its calendar writer
        self._publisher = publisher
        self._link_of = link_of
        self._now = now

    # ------------------------------------------------------------------ the Sink port
    def ingest_many(self, account: Account, events: Sequence[CalendarEvent]) -> list[CalendarOutcome]:
        """A provider page's events, planned together, guarded (CAL-16), then acted on in order."""
        link = self._link_of(account)
        states = self._store.states_of_events(account.account_id, [e.provider_event_id for e in events])
        events = [self._moved(account, link, e, states.get(e.provider_event_id)) for e in events]

        def activity_id_of(event: CalendarEvent) -> str | None:
            state = states.get(event.provider_event_id)
            if state is not None:
                return state.activity_id
            # ours; or the one the sync makes from it, there already if a run stopped before its row
            return event.activity_id or activity_id_for(account.account_id, event.provider_event_id)

        wanted = [i for i in dict.fromkeys(activity_id_of(e) for e in events) if i]
        activities = self._store.get_activities(account.tenant_id, wanted) if wanted else {}
        planned: list[tuple[CalendarEvent, SyncState | None, Activity | None, Plan]] = []
        for event in events:
            state = states.get(event.provider_event_id)
            activity_id = activity_id_of(event)
            activity = activities.get(activity_id) if activity_id else None
            planned.append((event, state, activity, plan(activity, event, state, link, self._now())))
        guard = guard_deletions(
            [p for *_, p in planned], self._store.count_states(account.account_id), link.settings
        )
        if not guard.allowed:
            raise MassTrashRefused(guard.report)
        page = _Round(self._publisher, batched=True)
        outcomes = [
            self._act_on_one(account, link, event, state, activity, p, page)
            for event, state, activity, p in planned
        ]
        page.finish()
        return outcomes

    def _act_on_one(
        self,
        account: Account,
        link: CalendarLink,
        event: CalendarEvent,
        state: SyncState | None,
        activity: Activity | None,
        decided: Plan,
        page: _Round,
    ) -> CalendarOutcome:
        """One event of a page. An activity found with no row for this event (a run that stopped
        before its row) may meanwhile have been synced with another event: that one stands, and
        this event is a recorded skip, so one such item never holds up the calendar's sync."""
        if state is not None or activity is None or decided.action == "nothing":
            return self._act(account, link, event, state, activity, decided, page)
        other = self._store.get_state(account.tenant_id, activity.id)
        if other is not None and other.provider_event_id != event.provider_event_id:
            why = f"duplicate_event: activity {activity.id} is synced with event {other.provider_event_id}"
            return CalendarOutcome("skipped", "nothing", why, activity.id)
        return self._act(account, link, event, state, activity, decided, page)

    def _moved(
        self, account: Account, link: CalendarLink, event: CalendarEvent, state: SyncState | None
    ) -> CalendarEvent:
        """CAL-12: a synced event the primary calendar lists as cancelled may have been moved to
        another of the user's calendars (Google lists a move as a cancel at the source): looked
        up there by its iCalUID, the event found stands in for the cancel, so the activity is
        trashed as moved, not deleted. Under its id here, so it stays this item."""
        if (
            event.status != "cancelled"
            or state is None
            or state.trashed_by_sync is not None
            or event.recurring_event_id is not None
            or event.calendar_id != link.calendar_id
            or link.stopped
        ):
            return event
        uid = event.ical_uid or state.ical_uid
        found = self._writer(account).find_elsewhere(account, uid) if uid else None
        if found is None or found.calendar_id == link.calendar_id:
            return event
        return found.model_copy(update={"provider_event_id": event.provider_event_id})

    def remove_many(self, account: Account, removals: Sequence[object]) -> int:
        """Calendar providers report removals as cancelled events, which `ingest_many` plans; a
        removal without its event is never taken as a deletion (CAL-16)."""
        return 0

    def settle(self, account: Account) -> int:
        """After a full listing (the resync that resumes a stopped connection, CAL-10): the
        activities the CRM changed while stopped go out now, each released once it is written.
        Nothing else is held untold: each item's event goes out before its state row is written."""
        if self._link_of(account).stopped:
            return 0
        released = 0
        for activity_id in self._store.held(account.account_id):
            activity = self._store.get_activity(account.tenant_id, activity_id)
            if activity is not None:
                self.push(account, activity)
            self._store.release(account.account_id, activity_id)
            released += 1
        return released

    # ------------------------------------------------------------------ the CRM's side
    def push(self, account: Account, activity: Activity) -> CalendarOutcome:
        """An activity the CRM created or changed, towards its owner's calendar (CAL-1, CAL-2)."""
        link = self._link_of(account)
        if link.stopped:  # CAL-9: the calendar is left alone; the change goes out on resume
            self._store.hold(account.account_id, activity.id)
            return CalendarOutcome("skipped", "hold", "stopped: held until sync resumes", activity.id)
        state = self._store.get_state(account.tenant_id, activity.id)
        origin = None
        if state is None and activity.origin_event_id is not None:
            # made from an event by a sync that stopped before its row: planned against that
            # event, never given a second one (CAL-15)
            origin = self._writer(account).get(account, activity.origin_event_id)
        decided = plan(activity, origin, state, link, self._now())
        try:
            return self._act(account, link, origin, state, activity, decided, _Round(self._publisher, False))
        except EventChanged:
            # the patch carried the etag last synced, and the calendar has changed the event
            # since (its change not synced yet): planned again against it, so that a change on
            # both sides is a conflict, decided and kept (CAL-14), never a silent overwrite
            assert state is not None
            current = self._writer(account).get(account, state.provider_event_id)
            if current is None:
                raise TransientError(
                    f"event {state.provider_event_id} left the calendar; the sync will see"
                ) from None
            again = plan(activity, current, state, link, self._now())
            return self._act(account, link, current, state, activity, again, _Round(self._publisher, False))

    # ------------------------------------------------------------------ acting
    def _act(
        self,
        account: Account,
        link: CalendarLink,
        event: CalendarEvent | None,
        state: SyncState | None,
        activity: Activity | None,
        decided: Plan,
        told: _Round,
    ) -> CalendarOutcome:
        match decided.action:
            case "nothing":
                return CalendarOutcome(
                    "updated", "nothing", decided.reason, activity.id if activity else None
                )
            case "create_activity" | "update_activity" | "restore_activity":
                assert event is not None and decided.fields is not None
                return self._to_crm(account, link, event, state, activity, decided, told)
            case "trash_activity":
                assert activity is not None and event is not None
                return self._trash(account, state, activity, event, decided, told)
            case "create_event" | "update_event":
                assert activity is not None and decided.fields is not None
                return self._to_calendar(account, link, event, state, activity, decided, told)
            case "delete_event":
                assert decided.event_id is not None and (state is not None or activity is not None)
                self._writer(account).delete(account, decided.event_id)
                self._save(account, state, None, None, trashed=None, gone=True)
                gone = state.activity_id if state is not None else activity.id if activity else None
                return CalendarOutcome("synced", "delete_event", decided.reason, gone)
            case "link":
                assert event is not None and activity is not None
                self._save(account, state, activity, event, trashed=None)
                return CalendarOutcome("synced", "link", decided.reason, activity.id)
            case "keep_crm":
                assert event is not None and state is not None and activity is not None
                kept = state.model_copy(
                    update={
                        "provider_etag": event.etag,
                        "gap_fingerprint": fingerprint(event),
                        "last_synced_at": self._now(),
                    }
                )
                was = state

                def keep() -> None:
                    if not self._store.put_state(account.account_id, kept, was):
                        raise TransientError(
                            f"the sync state of activity {was.activity_id} changed meanwhile"
                        )

                told.tell(self._gap_events(account, activity, event, decided), keep)
                return CalendarOutcome("synced", "keep_crm", decided.reason, activity.id)
        raise PermanentError(f"no way to act on {decided.action!r}")

    def _to_crm(
        self,
        account: Account,
        link: CalendarLink,
        event: CalendarEvent,
        state: SyncState | None,
        activity: Activity | None,
        decided: Plan,
        told: _Round,
    ) -> CalendarOutcome:
        fields = decided.fields
        assert fields is not None
        activity_id = (
            activity.id
            if activity is not None
            else (
                state.activity_id if state else activity_id_for(account.account_id, event.provider_event_id)
            )
        )
        base = activity or Activity(
            id=activity_id,
            tenant_id=account.tenant_id,
            owner_user_id=link.owner_user_id,
            type=decided.activity_type or link.settings.save_events_as,
            created_at=event.created,
            updated_at=event.updated,
            origin_event_id=event.provider_event_id,
            **fields.model_dump(),
        )
        if decided.conflict is not None:  # kept before anything is written: a retry plans no conflict
            self._store.add_conflict(account.tenant_id, decided.conflict)
        unchanged = (
            activity is not None and not activity.trashed and fingerprint(activity) == fingerprint(fields)
        )
        written = (
            activity
            if activity is not None and unchanged  # already so (a retry): told again, nothing to write
            else base.model_copy(
                update={
                    **_field_values(fields),
                    "updated_at": _newer(event.updated, activity),
                    "trashed": False,
                    "written_by_sync": True,
                }
            )
        )
        # the activity is written before the CRM is told: a retry finds a new one by its id, or
        # live under a marked row, or a change marked as the sync's own write not yet recorded
        # (written_by_sync, its fields not the row's), and finishes it from the calendar as it is
        # then, telling the CRM (again)
        if not unchanged:
            self._store.put_activity(written)
        events: list[CrmEvent] = [self._told(account, written, event, decided)]
        if decided.conflict is not None:
            events.append(self._conflict_event(account, written, decided))
        events += self._gap_events(account, written, event, decided)
        claimed = self._new_contacts(account, written, event)

        def after() -> None:
            for contact in claimed:
                self._store.attendee_told(account.tenant_id, contact.email)
            self._save(account, state, written, event, trashed=None)

        told.tell([*events, *claimed], after)
        return CalendarOutcome("synced", decided.action, decided.reason, written.id)

    def _told(self, account: Account, activity: Activity, event: CalendarEvent, decided: Plan) -> CrmEvent:
        common = {
            "tenant_id": account.tenant_id,
            "user_id": activity.owner_user_id,
            "account_id": account.account_id,
            "activity_id": activity.id,
        }
        if decided.action == "create_activity":
            return ActivityCreatedFromCalendar(
                **common,
                provider_event_id=event.provider_event_id,
                type=activity.type,
                fields=activity.fields(),
            )
        if decided.action == "restore_activity":
            return ActivityRestored(
                **common, provider_event_id=event.provider_event_id, fields=activity.fields()
            )
        return ActivityUpdatedFromCalendar(
            **common,
            provider_event_id=event.provider_event_id,
            fields=activity.fields(),
            changed=decided.changed,
        )

    def _conflict_event(
        self, account: Account, activity: Activity, decided: Plan
    ) -> CalendarConflictRecorded:
        conflict = decided.conflict
        assert conflict is not None
        return CalendarConflictRecorded(
            tenant_id=account.tenant_id,
            user_id=activity.owner_user_id,
            account_id=account.account_id,
            activity_id=activity.id,
            winner=conflict.winner,
            differing=conflict.differing,
            crm_version=conflict.crm_version,
            provider_version=conflict.provider_version,
        )

    def _new_contacts(
        self, account: Account, activity: Activity, event: CalendarEvent
    ) -> list[ContactCreatedFromAttendee]:
        """CAL-13: the event's attendees who are neither tenant users nor contacts, each claimed
        for this activity before it is told (a redelivery tells again; no other item ever does),
        marked told once the event is out."""
        emails = [a.email.strip().lower() for a in event.attendees if not a.is_self and not a.resource]
        if self._people is None or not emails:
            return []
        users, contacts = self._people.known(account.tenant_id, emails)
        found: list[ContactCreatedFromAttendee] = []
        for attendee in new_contacts(event.attendees, users, contacts):
            if not is_address(attendee.email):
                continue
            if self._store.claim_attendee(account.tenant_id, attendee.email, activity.id):
                found.append(
                    ContactCreatedFromAttendee(
                        tenant_id=account.tenant_id,
                        user_id=activity.owner_user_id,
                        account_id=account.account_id,
                        email=attendee.email,
                        name=attendee.name,
                        activity_id=activity.id,
                    )
                )
        return found

    def _gap_events(
        self, account: Account, activity: Activity, event: CalendarEvent | None, decided: Plan
    ) -> list[CrmEvent]:
        """CAL-11: a change the calendar made while stopped, told whether applied or not."""
        gap = decided.gap
        if gap is None or event is None:
            return []
        return [
            CalendarGapChangeReported(
                tenant_id=account.tenant_id,
                user_id=activity.owner_user_id,
                account_id=account.account_id,
                activity_id=activity.id,
                provider_event_id=event.provider_event_id,
                applied=gap.applied,
                differing=gap.differing,
                calendar_version=gap.calendar_version,
                changed_at=gap.changed_at,
            )
        ]

    def _trash(
        self,
        account: Account,
        state: SyncState | None,
        activity: Activity,
        event: CalendarEvent,
        decided: Plan,
        told: _Round,
    ) -> CalendarOutcome:
        reason = decided.trash_reason
        assert reason is not None
        # the row is marked first: until the activity is trashed, a retry trashes it again (and
        # tells the CRM again), or restores it if the event came back
        if state is None:  # a create whose row was never written: the row is made, marked
            self._save(account, None, activity, event, trashed=reason)
        else:
            self._save(account, state, None, None, trashed=reason)

        def after() -> None:
            if not activity.trashed:
                trashed = activity.model_copy(
                    update={"trashed": True, "updated_at": _newer(event.updated, activity)}
                )
                self._store.put_activity(trashed)

        gone = ActivityTrashed(
            tenant_id=account.tenant_id,
            user_id=activity.owner_user_id,
            account_id=account.account_id,
            activity_id=activity.id,
            reason=reason,
        )
        told.tell([gone], after)
        return CalendarOutcome("synced", "trash_activity", decided.reason, activity.id)

    def _to_calendar(
        self,
        account: Account,
        link: CalendarLink,
        event: CalendarEvent | None,
        state: SyncState | None,
        activity: Activity,
        decided: Plan,
        told: _Round,
    ) -> CalendarOutcome:
        fields = decided.fields
        assert fields is not None and decided.event_id is not None
        writer = self._writer(account)
        if decided.conflict is not None:  # kept before the write: a retry plans no conflict
            self._store.add_conflict(account.tenant_id, decided.conflict)
        if decided.action == "create_event":
            written = writer.create(account, decided.event_id, fields, activity.id)
        else:
            # only over the version planned on: the event read, else the one last synced (CAL-14)
            seen = event.etag if event is not None else state.provider_etag if state is not None else None
            written = writer.patch(account, decided.event_id, fields, decided.changed, if_match=seen)
        events: list[CrmEvent] = self._gap_events(account, activity, event, decided)
        if decided.conflict is not None:
            events.insert(0, self._conflict_event(account, activity, decided))
        told.tell(events, lambda: self._save(account, state, activity, written, trashed=None))
        return CalendarOutcome("synced", decided.action, decided.reason, activity.id)

    # ------------------------------------------------------------------ state rows
    def _save(
        self,
        account: Account,
        state: SyncState | None,
        activity: Activity | None,
        event: CalendarEvent | None,
        trashed: str | None,
        gone: bool = False,
    ) -> None:
        """The row after an action: both sides as they now agree (the fingerprint of what was
        written), or, for a trash or a delete, the row as it was with why. A row another writer
        moved meanwhile makes the job retry from what is there now."""
        if state is None and (activity is None or event is None):
            return
        if activity is not None and event is not None:
            row = SyncState(
                tenant_id=account.tenant_id,
                activity_id=activity.id,
                provider_event_id=event.provider_event_id,
                calendar_id=event.calendar_id,
                series_key=series_key(event),
                ical_uid=event.ical_uid or (state.ical_uid if state is not None else None),
                crm_version=activity.updated_at,
                provider_etag=event.etag,
                fingerprint=fingerprint(activity.fields()),
                last_synced_at=self._now(),
                trashed_by_sync=trashed,
            )
        else:
            assert state is not None
            row = state.model_copy(
                update={"trashed_by_sync": None if gone else trashed, "last_synced_at": self._now()}
            )
        if not self._store.put_state(account.account_id, row, state):
            raise TransientError(f"the sync state of activity {row.activity_id} changed meanwhile")

    def _writer(self, account: Account) -> CalendarWriter:
        try:
            return self._writers[account.provider]
        except KeyError:
            raise PermanentError(f"no calendar writer for {account.provider} in this build") from None


def _newer(at: datetime, activity: Activity | None) -> datetime:
    """The `updated_at` of an activity the sync writes: the calendar's time of the change, made
    just newer than the stored version if that is not older (the store keeps the newest, and
    would drop the write: the CRM's clock ahead, or a PUT that repeated the fields later)."""
    if activity is not None and at <= activity.updated_at:
        return activity.updated_at + timedelta(microseconds=1)
    return at


def _field_values(fields: SyncedFields) -> dict[str, object]:
    return {name: getattr(fields, name) for name in SyncedFields.model_fields}

"""The calendar engine's ports: where activities, their sync state and conflicts are kept
(`ActivityStore`, stores/activities.py and its in-memory twin), and what a provider's calendar
adapter reads and writes (`CalendarWriter`; its reads are the sync core's ChangeSource and
ImportSource of CalendarEvent). Providers only read and write; the rules are in rules.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from crmsync.accounts.models import Account
from crmsync.calendar.models import Activity, CalendarEvent, Conflict, SyncedFields, SyncState
from crmsync.errors import TransientError


class EventChanged(TransientError):
    """A conditional write met a newer version of the event than the one it was planned on."""


class ActivityStore(Protocol):
    """Activities as the CRM keeps them current with us, one sync state row per (activity,
    calendar connection), the provider event → activity map, and the conflicts kept (CAL-14)."""

    def get_activity(self, tenant_id: str, activity_id: str) -> Activity | None: ...

    def get_activities(self, tenant_id: str, activity_ids: Sequence[str]) -> dict[str, Activity]:
        """`get_activity` for many (a page's items read together): those that exist, by id."""
        ...

    def put_activity(self, activity: Activity) -> bool:
        """Stores the activity unless the stored one is as new or newer (by `updated_at`); True
        if it was written."""
        ...

    def get_state(self, tenant_id: str, activity_id: str) -> SyncState | None: ...

    def state_of_event(self, account_id: str, provider_event_id: str) -> SyncState | None:
        """The state row of the activity this provider event is synced with, if any."""
        ...

    def states_of_events(
        self, account_id: str, provider_event_ids: Sequence[str]
    ) -> dict[str, SyncState]: ...

    def put_state(self, account_id: str, state: SyncState, expected: SyncState | None) -> bool:
        """Writes the row (and its event map) if the stored one is still `expected` (None: none
        stored); False when another writer came first."""
        ...

    def count_states(self, account_id: str) -> int:
        """How many items of this calendar connection are synced (CAL-16's share)."""
        ...

    def add_conflict(self, tenant_id: str, conflict: Conflict) -> None: ...

    def conflicts(self, tenant_id: str, activity_id: str) -> list[Conflict]: ...

    def hold(self, account_id: str, activity_id: str) -> None:
        """CAL-9: an activity the CRM changed while the connection's sync was stopped, kept to go
        out on resume (holding it twice keeps it once)."""
        ...

    def held(self, account_id: str) -> list[str]:
        """The activities held for the connection, oldest hold first."""
        ...

    def release(self, account_id: str, activity_id: str) -> None: ...

    def claim_attendee(self, tenant_id: str, email: str, activity_id: str) -> bool:
        """CAL-13: True when this activity's sync is the one to tell the CRM to make a contact of
        the address (lower case): nobody claimed it, or this activity did and has not told yet (a
        redelivery after a crash). False once told, and for any other activity."""
        ...

    def attendee_told(self, tenant_id: str, email: str) -> None:
        """The contact's event went out: no claim succeeds again."""
        ...


class People(Protocol):
    """Who the tenant's directory knows (CAL-13)."""

    def known(self, tenant_id: str, emails: Sequence[str]) -> tuple[set[str], set[str]]:
        """Of these addresses (lower case), the tenant's users and its contacts."""
        ...


class CalendarWriter(Protocol):
    """A provider's calendar writes (CAL-15, CAL-17): creates under our own id, so a retried
    create never makes a second event; changes as patches of the differing fields only; never
    a notification to attendees."""

    def create(
        self, account: Account, event_id: str, fields: SyncedFields, activity_id: str
    ) -> CalendarEvent:
        """Creates the event with `event_id` in the primary calendar; the event already there
        under that id (a retry) is returned as it is."""
        ...

    def patch(
        self,
        account: Account,
        provider_event_id: str,
        fields: SyncedFields,
        changed: Sequence[str],
        if_match: str | None = None,
    ) -> CalendarEvent:
        """Patches only the `changed` fields; with `if_match`, only if the event is still that
        version (its etag), else EventChanged (CAL-14: a change made since is never overwritten
        unseen)."""
        ...

    def get(self, account: Account, provider_event_id: str) -> CalendarEvent | None:
        """The event in the primary calendar as it is now (None: there is none)."""
        ...

    def delete(self, account: Account, provider_event_id: str) -> None:
        """Deletes the event; one gone already is done."""
        ...

    def find_elsewhere(self, account: Account, ical_uid: str) -> CalendarEvent | None:
        """The event with this iCalUID in another of the user's calendars (a move, CAL-12)."""
        ...

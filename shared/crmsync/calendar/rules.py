"""What one calendar item needs, as pure functions of what the engine read (no I/O).

The engine keeps a state row per item (the CRM version, the provider's etag, the fingerprint of
the synced fields when both sides last agreed), reads the activity and the event, and asks
`plan()`; then it acts. `guard_deletions()` looks at a whole run's plans before any of them acts.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from crmsync.calendar.fingerprint import FIELDS, differing, fingerprint, to_synced_fields
from crmsync.calendar.models import (
    Activity,
    Attendee,
    CalendarEvent,
    CalendarLink,
    CalendarSettings,
    Conflict,
    Side,
    SyncedFields,
    SyncState,
    TrashReason,
)
from crmsync.calendar.recurrence import carries_activity, role

Action = Literal[
    "create_event",
    "update_event",
    "delete_event",
    "create_activity",
    "update_activity",
    "trash_activity",
    "restore_activity",
    "link",
    "keep_crm",
    "nothing",
]
DESTRUCTIVE: frozenset[Action] = frozenset({"trash_activity", "delete_event"})


class GapChange(BaseModel):
    """CAL-11: what the calendar changed in an already synced event while sync was stopped, told
    to the CRM whether or not it was applied."""

    applied: bool
    differing: list[str]
    calendar_version: SyncedFields
    changed_at: datetime


class Plan(BaseModel):
    action: Action
    reason: str
    rule: str | None = None
    event_id: str | None = Field(default=None, description="our own id on a create; else the provider's")
    fields: SyncedFields | None = Field(default=None, description="what the written side gets")
    changed: list[str] = Field(default_factory=list, description="the fields an update PATCHes")
    activity_type: str | None = Field(default=None, description="on create_activity (CAL-4)")
    trash_reason: TrashReason | None = None
    conflict: Conflict | None = None
    gap: GapChange | None = Field(default=None, description="a change made while stopped (CAL-11)")


def nothing(reason: str, rule: str | None = None) -> Plan:
    return Plan(action="nothing", reason=reason, rule=rule)


# --- the rules one by one -------------------------------------------------------------------


def in_window(item: Activity | CalendarEvent, original_connection_date: datetime) -> bool:
    """CAL-6: judged by when the item was created, never by when it starts."""
    created = item.created_at if isinstance(item, Activity) else item.created
    return created >= original_connection_date


def is_private(event: CalendarEvent) -> bool:
    """CAL-8"""
    return event.visibility in ("private", "confidential")


def goes_out(activity: Activity, settings: CalendarSettings) -> bool:
    """CAL-5: a CRM activity of a type not chosen for the calendar stays in the CRM."""
    return activity.type in settings.activity_types


def activity_type_for_events(settings: CalendarSettings) -> str:
    """CAL-4"""
    return settings.save_events_as


def own_event_id(tenant_id: str, activity_id: str) -> str:
    """CAL-15: the id our create gives the event, the same on every retry (base32hex, as Google
    takes client ids), so a retried create meets a 409 instead of making a second event."""
    digest = hashlib.sha256(f"{tenant_id}\x00{activity_id}".encode()).digest()
    return base64.b32hexencode(digest).decode().rstrip("=").lower()


def is_echo(item: SyncedFields | CalendarEvent, state: SyncState) -> bool:
    """CAL-15: a version whose fingerprint is the one both sides last agreed on is no change."""
    return fingerprint(item) == state.fingerprint


def new_contacts(
    attendees: Iterable[Attendee],
    tenant_user_emails: Iterable[str],
    contact_emails: Iterable[str],
    already_made: Iterable[str] = (),
) -> list[Attendee]:
    """CAL-13: the attendees to make contacts of, each once: not the calendar's own account, not a
    room, not a tenant user, not a contact already (the engine looked these up)."""
    skip = {e.strip().lower() for e in (*tenant_user_emails, *contact_emails, *already_made)}
    out: list[Attendee] = []
    for a in attendees:
        email = a.email.strip().lower()
        if not email or a.is_self or a.resource or email in skip:
            continue
        skip.add(email)
        out.append(a.model_copy(update={"email": email}))
    return out


def resolve_conflict(activity: Activity, event: CalendarEvent, now: datetime) -> Conflict:
    """CAL-14: the most recent change wins (a tie goes to the CRM, the system of record)."""
    crm, provider = activity.fields(), to_synced_fields(event)
    winner: Side = "provider" if event.updated > activity.updated_at else "crm"
    return Conflict(
        activity_id=activity.id,
        provider_event_id=event.provider_event_id,
        crm_version=crm,
        provider_version=provider,
        differing=differing(crm, provider),
        winner=winner,
        crm_changed_at=activity.updated_at,
        provider_changed_at=event.updated,
        decided_at=now,
    )


class TrashGuard(BaseModel):
    allowed: bool
    destructive: int
    synced: int
    report: str


def guard_deletions(plans: Sequence[Plan], synced: int, settings: CalendarSettings) -> TrashGuard:
    """CAL-16: a run that would trash or delete more than the share of the calendar's synced items
    (and at least `min_trash_refused` of them) acts on none and reports instead."""
    count = sum(1 for p in plans if p.action in DESTRUCTIVE)
    refused = count >= settings.min_trash_refused and count > settings.max_trash_share * synced
    if refused:
        report = (
            f"refused: {count} of {synced} synced items would be trashed or deleted at once, "
            f"more than {settings.max_trash_share:.0%}; nothing was done"
        )
    else:
        report = f"{count} of {synced} synced items trashed or deleted"
    return TrashGuard(allowed=not refused, destructive=count, synced=synced, report=report)


# --- one item ---------------------------------------------------------------------------------


def _out_of_scope(event: CalendarEvent, link: CalendarLink, master: CalendarEvent | None) -> str | None:
    """Why a synced item's event no longer carries its activity: a TrashReason, "ignore" when
    the event is not the activity's (a later occurrence, a split tail), or None when it is."""
    if event.calendar_id != link.calendar_id:
        return "moved_to_other_calendar"
    if event.status == "cancelled":
        return "ignore" if role(event) in ("occurrence", "split_tail") else "deleted_in_calendar"
    if is_private(event):
        return "made_private"
    return None if carries_activity(event, master) else "ignore"


_TRASH_RULE = {"moved_to_other_calendar": "CAL-12", "made_private": "CAL-8", "deleted_in_calendar": "CAL-1"}


def _plan_new(
    activity: Activity | None, event: CalendarEvent | None, link: CalendarLink, master: CalendarEvent | None
) -> Plan:
    settings = link.settings
    if activity is not None and event is not None:
        if event.activity_id not in (None, activity.id):
            return nothing("unrelated: the event is not this activity's")
        # a create (of the event, or of the activity from it) went through, its row was never written
        why = _out_of_scope(event, link, master)
        if activity.trashed and why is None:
            return Plan(
                action="delete_event",
                reason="trashed in the CRM before its create was recorded",
                rule="CAL-1",
                event_id=event.provider_event_id,
            )
        if why == "ignore" or activity.trashed:
            return nothing("unfinished create: nothing of it is left to sync")
        if why is not None:
            reason: TrashReason = why  # type: ignore[assignment]
            return Plan(
                action="trash_activity",
                reason=f"{reason} before the create was recorded",
                rule=_TRASH_RULE[reason],
                trash_reason=reason,
                event_id=event.provider_event_id,
            )
        if event.activity_id is None:  # the activity the sync made from this event: the CRM is told again
            provider = to_synced_fields(event)
            edited = differing(activity.fields(), provider)
            if edited and activity.updated_at > event.updated:
                # and the CRM, told of it, changed it since: its change is the newer one
                return Plan(
                    action="update_event",
                    reason="activity made from the event, not recorded, changed in the CRM since",
                    rule="CAL-15",
                    event_id=event.provider_event_id,
                    fields=activity.fields(),
                    changed=edited,
                )
            return Plan(
                action="create_activity",
                reason="activity made from the event, not recorded: told again",
                rule="CAL-15",
                fields=to_synced_fields(event),
                changed=list(FIELDS),
                activity_type=activity.type,
            )
        # our create went through but its state row was never written: adopt it
        changed = differing(activity.fields(), to_synced_fields(event))
        if not changed:
            return Plan(action="link", reason="own event found: recorded", rule="CAL-15")
        return Plan(
            action="update_event",
            reason="own event found with other fields: the activity's are written",
            rule="CAL-15",
            event_id=event.provider_event_id,
            fields=activity.fields(),
            changed=changed,
        )
    if activity is not None:
        if activity.trashed:
            return nothing("trashed in the CRM before it ever synced")
        if not goes_out(activity, settings):
            return nothing(f"type_not_synced: {activity.type!r} is not among the synced types", "CAL-5")
        if not in_window(activity, link.original_connection_date):
            return nothing("before_connection: created before the original connection date", "CAL-6")
        return Plan(
            action="create_event",
            reason="new activity",
            rule="CAL-1",
            event_id=own_event_id(activity.tenant_id, activity.id),
            fields=activity.fields(),
            changed=list(FIELDS),
        )
    if event is None:
        return nothing("neither side has the item")
    if event.activity_id is not None:
        return nothing("own event whose activity was not given: look it up by its id", "CAL-15")
    if event.calendar_id != link.calendar_id:
        return nothing("other_calendar: only the primary calendar syncs", "CAL-3")
    if event.status == "cancelled":
        return nothing("cancelled before it ever synced")
    if not in_window(event, link.original_connection_date):
        return nothing("before_connection: created before the original connection date", "CAL-6")
    if is_private(event):
        return nothing(f"private: a {event.visibility} event stays out of the CRM", "CAL-8")
    if not carries_activity(event, master):
        return nothing(f"recurring: a {role(event).replace('_', ' ')} is not the series' activity", "CAL-7")
    return Plan(
        action="create_activity",
        reason="new event",
        rule="CAL-1",
        fields=to_synced_fields(event),
        changed=list(FIELDS),
        activity_type=activity_type_for_events(settings),
    )


def _plan_known(
    activity: Activity | None,
    event: CalendarEvent | None,
    state: SyncState,
    link: CalendarLink,
    now: datetime,
    master: CalendarEvent | None,
) -> Plan:
    if event is not None:
        why = _out_of_scope(event, link, master)
        if why == "ignore":
            event = None  # nothing the activity follows; the CRM side may still have changed
        elif why is not None:
            reason: TrashReason = why  # type: ignore[assignment]
            if activity is None or activity.trashed:
                return nothing(f"{reason}: the activity is already out of the CRM", _TRASH_RULE[reason])
            return Plan(
                action="trash_activity",
                reason=reason,
                rule=_TRASH_RULE[reason],
                trash_reason=reason,
                event_id=event.provider_event_id,
            )
        elif state.trashed_by_sync is not None:
            fields = to_synced_fields(event)
            if activity is None:
                return Plan(
                    action="create_activity",
                    reason=f"back after {state.trashed_by_sync}; the activity is gone from the trash",
                    rule="CAL-12",
                    fields=fields,
                    changed=list(FIELDS),
                    activity_type=activity_type_for_events(link.settings),
                )
            # trashed, or restored by a run that stopped before its row: the CRM is told (again)
            return Plan(
                action="restore_activity",
                reason=f"back after {state.trashed_by_sync}",
                rule="CAL-12",
                fields=fields,
                changed=differing(activity.fields(), fields),
            )
    if activity is not None and activity.trashed:
        if state.trashed_by_sync is not None:
            return nothing(f"kept in the CRM trash by the sync ({state.trashed_by_sync})")
        return Plan(
            action="delete_event",
            reason="trashed in the CRM",
            rule="CAL-1",
            event_id=state.provider_event_id,
        )

    if (
        activity is not None
        and activity.written_by_sync
        and fingerprint(activity.fields()) != state.fingerprint
    ):
        # the sync wrote the calendar's version into the activity and stopped before its row:
        # no change of the CRM's; finished with the calendar's version as it is now (told again)
        if event is None:
            return nothing("unrecorded sync write: the calendar's next sync finishes it", "CAL-15")
        found = to_synced_fields(event)
        return Plan(
            action="update_activity",
            reason="unrecorded sync write: finished with the calendar's version",
            rule="CAL-15",
            fields=found,
            changed=differing(found, activity.fields()),
        )
    crm = activity.fields() if activity is not None else None
    provider = to_synced_fields(event) if event is not None else None
    crm_changed = crm is not None and fingerprint(crm) != state.fingerprint
    provider_changed = provider is not None and fingerprint(provider) not in (
        state.fingerprint,
        state.gap_fingerprint,  # a change made while stopped, already reported (CAL-11)
    )
    gap = link.gap
    if not (provider_changed and event is not None and gap is not None and gap.holds(event.updated)):
        return _plan_changes(activity, event, state, now, crm, provider, crm_changed, provider_changed)
    assert provider is not None and event is not None
    told = GapChange(
        applied=gap.apply,
        differing=differing(crm, provider) if crm is not None else list(FIELDS),
        calendar_version=provider,
        changed_at=event.updated,
    )
    if gap.apply:  # the tenant's apply_gap_changes: planned as any change, and told as a gap change
        decided = _plan_changes(activity, event, state, now, crm, provider, crm_changed, provider_changed)
        return decided.model_copy(update={"gap": told})
    if crm_changed:
        assert crm is not None
        return Plan(
            action="update_event",
            reason="changed in the CRM; the calendar's change made while stopped is not applied",
            rule="CAL-11",
            event_id=state.provider_event_id,
            fields=crm,
            changed=differing(crm, provider),
            gap=told,
        )
    if crm is None:
        return nothing("changed in the calendar while stopped, but the activity was not given")
    return Plan(
        action="keep_crm",
        reason="changed in the calendar while sync was stopped: reported, not applied",
        rule="CAL-11",
        event_id=event.provider_event_id,
        gap=told,
    )


def _plan_changes(
    activity: Activity | None,
    event: CalendarEvent | None,
    state: SyncState,
    now: datetime,
    crm: SyncedFields | None,
    provider: SyncedFields | None,
    crm_changed: bool,
    provider_changed: bool,
) -> Plan:
    """Field changes of a synced item: one side, both (CAL-14), or none (CAL-15)."""
    if crm_changed and provider_changed:
        assert activity is not None and event is not None and crm is not None and provider is not None
        if fingerprint(crm) == fingerprint(provider):  # or a run that stopped before its row
            return Plan(action="link", reason="both sides made the same change: recorded", rule="CAL-15")
        conflict = resolve_conflict(activity, event, now)
        if conflict.winner == "crm":
            return Plan(
                action="update_event",
                reason="conflict: the CRM's change is the most recent",
                rule="CAL-14",
                event_id=event.provider_event_id,
                fields=crm,
                changed=conflict.differing,
                conflict=conflict,
            )
        return Plan(
            action="update_activity",
            reason="conflict: the calendar's change is the most recent",
            rule="CAL-14",
            fields=provider,
            changed=conflict.differing,
            conflict=conflict,
        )
    if crm_changed:
        assert crm is not None
        return Plan(
            action="update_event",
            reason="changed in the CRM",
            rule="CAL-1",
            event_id=state.provider_event_id,
            fields=crm,
            changed=differing(crm, provider) if provider is not None else list(FIELDS),
        )
    if provider_changed:
        assert provider is not None
        if crm is None:
            return nothing("changed in the calendar, but the activity was not given")
        return Plan(
            action="update_activity",
            reason="changed in the calendar",
            rule="CAL-1",
            fields=provider,
            changed=differing(provider, crm),
        )
    return nothing("no_change: what the sync last wrote or read", "CAL-15")


def plan(
    activity: Activity | None,
    event: CalendarEvent | None,
    state: SyncState | None,
    link: CalendarLink,
    now: datetime,
    master: CalendarEvent | None = None,
) -> Plan:
    """What one item needs. `activity` and `event` are what was read (None: not read, or not
    there, which is never taken as a deletion: CAL-16); `state` is its row, if it ever synced;
    `master` is the series' master when `event` is an occurrence (CAL-7)."""
    if link.stopped:
        return nothing("stopped: sync of this calendar was stopped", "CAL-9")
    if activity is not None and activity.owner_user_id != link.owner_user_id:
        if state is None:
            return nothing("other_owner: an activity syncs only with its owner's calendar", "CAL-2")
        if activity.trashed:
            return nothing("other_owner: trashed after leaving this calendar", "CAL-2")
        return Plan(
            action="delete_event",
            reason="owner_changed: the activity now belongs to another user",
            rule="CAL-2",
            event_id=state.provider_event_id,
        )
    if state is None:
        return _plan_new(activity, event, link, master)
    return _plan_known(activity, event, state, link, now, master)

"""The event contract: every event the CRM receives, as a pydantic model.

Each event is put on the EventBridge bus with source ``crmsync`` (EVENT_SOURCE) and the
model's class name as detail-type; the detail is the model's JSON. The JSON Schemas in
docs/events/ are generated from these models (``make schemas``) and checked by a test.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from crmsync.calendar.models import SyncedFields

DirectoryKind = Literal["users", "contacts", "leads", "deals"]


def _now() -> datetime:
    return datetime.now(UTC)


def _event_id() -> str:
    return str(uuid.uuid4())


class CrmEvent(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: ClassVar[int] = 1

    event_id: str = Field(default_factory=_event_id, description="Unique per event; use it to de-duplicate.")
    occurred_at: datetime = Field(default_factory=_now, description="When the change happened (UTC).")
    tenant_id: str = Field(description="The tenant the event belongs to.")

    @classmethod
    def detail_type(cls) -> str:
        return cls.__name__


class DirectoryEntryUpserted(CrmEvent):
    """A user, contact, lead or deal was created or changed in the service's directory."""

    kind: DirectoryKind = Field(description="Which collection of the directory.")
    id: str = Field(description="The CRM's id of the entry.")
    addresses: list[str] = Field(description="The entry's addresses, lower case.")
    version: int = Field(description="Increases by one with every change of this entry.")


class DirectoryEntryDeleted(CrmEvent):
    """A user, contact, lead or deal was removed from the service's directory."""

    kind: DirectoryKind = Field(description="Which collection of the directory.")
    id: str = Field(description="The CRM's id of the entry.")


class TenantSettingsChanged(CrmEvent):
    """The tenant's settings (plan, automation sender, gap changes) were replaced."""

    plan: str = Field(description="essential, advanced, professional, power or enterprise (ACC-4).")
    automation_sender: str = Field(description="tenant_provider or default_account (SEND-3).")
    apply_gap_changes: bool = Field(
        description="Whether a calendar resync applies changes made while stopped (CAL-11)."
    )


class ResyncFinished(CrmEvent):
    """A back-import or resync execution ended."""

    account_id: str = Field(description="The mailbox account or calendar connection.")
    user_id: str = Field(description="The account's owner.")
    kind: str = Field(description="mail_import, mail_resync or calendar_resync.")
    status: Literal["succeeded", "failed"]
    pages: int = Field(description="Provider pages read.")
    items: int = Field(description="Messages or events imported.")
    error: str | None = Field(default=None, description="Why it failed, when it did.")


class AccountStatusChanged(CrmEvent):
    """A mailbox account or calendar connection changed status: connected, reauth_required,
    replaced or disconnected (ACC-2, ACC-7, ACC-8, ACC-9)."""

    account_id: str = Field(description="The account.")
    user_id: str = Field(description="Its owner.")
    provider: Literal["google", "microsoft", "imap"]
    address: str = Field(description="The mailbox address, lower case.")
    status: Literal["connected", "syncing", "reauth_required", "replaced", "disconnected"]
    previous_status: Literal["connected", "syncing", "reauth_required", "replaced", "disconnected"] | None = (
        Field(default=None, description="None for a new account.")
    )
    reason: str | None = Field(default=None, description="Why, in words a user can read.")


class DefaultAccountChanged(CrmEvent):
    """A user's default sending account changed (ACC-6)."""

    user_id: str = Field(description="The user.")
    account_id: str = Field(description="The new default account.")
    previous_account_id: str | None = Field(default=None, description="The previous default, if any.")


class AccountSettingsChanged(CrmEvent):
    """A user changed an account's settings (sharing, labels or folders, scope, …)."""

    user_id: str = Field(description="The account's owner.")
    account_id: str = Field(description="The account.")
    settings: dict[str, object] = Field(description="The settings as they are now.")


class MessageSynced(CrmEvent):
    """A message reached the CRM from a mailbox, or was sent from it (MAIL-1 … MAIL-4, LINK-1, LINK-2)."""

    user_id: str = Field(description="The mailbox owner.")
    account_id: str = Field(description="The mailbox account.")
    message_id: str = Field(description="The service's id of the message (stable across retries).")
    thread_id: str = Field(description="The service's id of the thread.")
    direction: Literal["inbound", "outbound"]
    subject: str
    sender: str | None = Field(description="The From address, lower case.")
    to: list[str]
    cc: list[str]
    date: datetime | None = Field(description="The message's Date header.")
    contact_ids: list[str] = Field(description="LINK-1: contacts among the participants.")
    lead_ids: list[str] = Field(description="LINK-1: leads among the participants.")
    deal_id: str | None = Field(description="LINK-2: the open deal the thread is linked to.")
    raw_key: str | None = Field(description="Where the raw MIME is in the data bucket.")
    attachments_left_out: list[str] = Field(
        default_factory=list,
        description="ATT-2: attachments not synced because they broke the provider's limits, each with why.",
    )


class MessageSkipped(CrmEvent):
    """A message in a connected mailbox was not synced, and why."""

    user_id: str = Field(description="The mailbox owner.")
    account_id: str = Field(description="The mailbox account.")
    provider_message_id: str = Field(description="The provider's id of the message.")
    reason: str = Field(
        description="internal_mail, label_not_selected, not_a_crm_thread, malformed_mime, attachment_limit, …"
    )
    detail: str = Field(description="The reason in words.")


class MessageRemovedInMailbox(CrmEvent):
    """MAIL-10: a synced message was deleted in the mailbox, or left the synced labels or folders.
    The CRM copy stays; it is marked `removed_in_mailbox`."""

    user_id: str = Field(description="The mailbox owner.")
    account_id: str = Field(description="The mailbox account.")
    message_id: str = Field(description="The service's id of the message.")
    thread_id: str = Field(description="The service's id of the thread.")
    how: Literal["deleted", "trashed", "left_synced_folders"] = Field(description="What happened to it.")


class _ActivityEvent(CrmEvent):
    """Fields every calendar event to the CRM carries."""

    user_id: str = Field(description="The activity's owner, whose calendar it syncs with (CAL-2).")
    account_id: str = Field(description="The calendar connection.")
    activity_id: str = Field(description="The CRM's id of the activity.")


class ActivityCreatedFromCalendar(_ActivityEvent):
    """CAL-1: an event made in the user's calendar became an activity. The CRM creates it under
    `activity_id`; a PUT of it that repeats these fields changes nothing (CAL-15)."""

    provider_event_id: str = Field(description="The calendar's id of the event.")
    type: str = Field(description="The activity type events become (the `save_events_as` setting, CAL-4).")
    fields: SyncedFields = Field(description="Subject, times, location, description, attendees.")


class ActivityUpdatedFromCalendar(_ActivityEvent):
    """CAL-1: the event of a synced activity changed in the calendar; the CRM applies `fields`."""

    provider_event_id: str = Field(description="The calendar's id of the event.")
    fields: SyncedFields = Field(description="The activity's fields after the change.")
    changed: list[str] = Field(description="Which of them changed.")


class ActivityTrashed(_ActivityEvent):
    """The calendar side removed the activity's event (deleted, moved to another calendar, made
    private: CAL-8, CAL-12): the CRM moves the activity to its trash."""

    reason: Literal["deleted_in_calendar", "moved_to_other_calendar", "made_private", "owner_changed"] = (
        Field(description="Why.")
    )


class ActivityRestored(_ActivityEvent):
    """CAL-12: the event came back (moved back to the synced calendar): the CRM restores the activity
    from its trash."""

    provider_event_id: str = Field(description="The calendar's id of the event.")
    fields: SyncedFields = Field(description="The activity's fields as the event has them.")


class CalendarConflictRecorded(_ActivityEvent):
    """CAL-14: both sides changed the item since the last sync; the most recent change won and the
    other version is kept, readable at GET /v1/activities/{id}."""

    winner: Literal["crm", "provider"] = Field(description="Which side's version was applied.")
    differing: list[str] = Field(description="The fields the two versions differ in.")
    crm_version: SyncedFields = Field(description="The CRM's version.")
    provider_version: SyncedFields = Field(description="The calendar's version.")


class CalendarGapChangeReported(_ActivityEvent):
    """CAL-11: the calendar changed an already synced event while the connection's sync was stopped.
    Told on resume whether or not the change was applied (tenant setting `apply_gap_changes`), so
    nothing changes, or is left out, silently."""

    provider_event_id: str = Field(description="The calendar's id of the event.")
    applied: bool = Field(description="True: the activity took the change; false: it kept the CRM's version.")
    differing: list[str] = Field(description="The fields the calendar's version differs in.")
    calendar_version: SyncedFields = Field(description="The event as the calendar has it.")
    changed_at: datetime = Field(description="When the calendar changed it (inside the stop).")


class ContactCreatedFromAttendee(CrmEvent):
    """CAL-13: an attendee of a synced event who was neither a contact nor a tenant user; the CRM
    creates the contact (once per address)."""

    user_id: str = Field(description="The owner of the calendar the event is in.")
    account_id: str = Field(description="The calendar connection.")
    email: str = Field(description="The attendee's address, lower case.")
    name: str | None = Field(default=None, description="The attendee's name, when the calendar gives one.")
    activity_id: str = Field(description="The activity of the event the attendee was found in.")


EVENT_TYPES: tuple[type[CrmEvent], ...] = (
    DirectoryEntryUpserted,
    DirectoryEntryDeleted,
    TenantSettingsChanged,
    ResyncFinished,
    AccountStatusChanged,
    DefaultAccountChanged,
    AccountSettingsChanged,
    MessageSynced,
    MessageSkipped,
    MessageRemovedInMailbox,
    ActivityCreatedFromCalendar,
    ActivityUpdatedFromCalendar,
    ActivityTrashed,
    ActivityRestored,
    CalendarConflictRecorded,
    CalendarGapChangeReported,
    ContactCreatedFromAttendee,
)


class EventPublisher(Protocol):
    """Port: puts events on the bus. Delivery is at least once; consumers de-duplicate by event_id."""

    def publish(self, events: Sequence[CrmEvent]) -> None: ...

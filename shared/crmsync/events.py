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

    kind: DirectoryKind
    id: str
    addresses: list[str] = Field(description="The entry's addresses, lower case.")
    version: int = Field(description="Increases by one with every change of this entry.")


class DirectoryEntryDeleted(CrmEvent):
    """A user, contact, lead or deal was removed from the service's directory."""

    kind: DirectoryKind
    id: str


class TenantSettingsChanged(CrmEvent):
    """The tenant's settings (plan, automation sender, gap changes) were replaced."""

    plan: str
    automation_sender: str
    apply_gap_changes: bool


class ResyncFinished(CrmEvent):
    """A back-import or resync execution ended."""

    account_id: str
    user_id: str
    kind: str
    status: Literal["succeeded", "failed"]
    pages: int
    items: int
    error: str | None = None


EVENT_TYPES: tuple[type[CrmEvent], ...] = (
    DirectoryEntryUpserted,
    DirectoryEntryDeleted,
    TenantSettingsChanged,
    ResyncFinished,
)


class EventPublisher(Protocol):
    """Port: puts events on the bus. Delivery is at least once; consumers de-duplicate by event_id."""

    def publish(self, events: Sequence[CrmEvent]) -> None: ...

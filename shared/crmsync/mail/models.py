"""What providers hand the engine, and what the engine keeps."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from crmsync.mail.mime import Attachment

Direction = Literal["inbound", "outbound"]
RemovalKind = Literal["deleted", "trashed", "left_synced_folders"]


class ProviderMessage(BaseModel):
    """One message as a provider adapter fetched it."""

    provider_message_id: str
    provider_thread_id: str | None = None
    labels: list[str] = Field(default_factory=list, description="Gmail labels or the folder it is in")
    raw: bytes = Field(repr=False)


class MessageRef(BaseModel):
    """Where a message already is; whether its event went out is read from the message itself."""

    crm_message_id: str
    crm_thread_id: str
    user_id: str


class MessageRecord(BaseModel):
    """A synced message as the CRM sees it (metadata; the raw MIME is in S3)."""

    crm_message_id: str
    crm_thread_id: str
    tenant_id: str
    user_id: str
    account_id: str
    provider: str
    provider_message_id: str | None
    provider_thread_id: str | None
    message_id: str | None
    references: list[str] = Field(default_factory=list, description="RFC 5322 References, oldest first")
    direction: Direction
    subject: str
    sender: str | None
    to: list[str]
    cc: list[str]
    date: datetime | None
    preview: str
    labels: list[str]
    attachments: list[Attachment]
    attachments_left_out: list[str] = Field(
        default_factory=list, description="ATT-2: files not synced because of the provider's limits, and why"
    )
    contact_ids: list[str]
    lead_ids: list[str]
    deal_id: str | None
    raw_key: str | None
    removed_in_mailbox: bool = Field(
        default=False, description="MAIL-10: deleted or moved out of the synced folders in the mailbox"
    )
    crm_state: Literal["active", "archived", "deleted"] = Field(
        default="active", description="MAIL-9: what the CRM did with it"
    )
    delivery: Literal["sending", "sent", "failed"] | None = Field(
        default=None, description="Messages sent from the CRM: whether the provider took it"
    )
    delivery_error: str | None = None
    published: bool = False
    synced_at: datetime


class ThreadRecord(BaseModel):
    crm_thread_id: str
    tenant_id: str
    user_id: str
    subject: str
    contact_ids: list[str] = Field(default_factory=list)
    lead_ids: list[str] = Field(default_factory=list)
    deal_id: str | None = None
    account_ids: list[str] = Field(default_factory=list)
    message_count: int = 0
    last_message_at: datetime | None = None
    version: int = 0


class IngestOutcome(BaseModel):
    status: Literal["synced", "updated", "skipped"]
    crm_message_id: str | None = None
    crm_thread_id: str | None = None
    reason: str | None = None


def delivery_changes(
    delivery: str, error: str | None, provider_message_id: str | None, provider_thread_id: str | None
) -> dict[str, Any]:
    """What a change of a sent message's delivery sets (the stores' `set_delivery`): the
    provider's ids only when it gave them."""
    changes: dict[str, Any] = {"delivery": delivery, "delivery_error": error}
    if provider_message_id:
        changes["provider_message_id"] = provider_message_id
    if provider_thread_id:
        changes["provider_thread_id"] = provider_thread_id
    return changes

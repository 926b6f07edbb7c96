"""Attachment limits per provider (ATT-5), overridable by configuration.

Each vendor's mail bundle states its provider's limits (`MailBundle.limits`: Gmail's 25 MB in
total per message, ATT-2; Microsoft's 3 MB per file and type allowlist, ATT-3). A provider with
no bundle of its own (IMAP/SMTP servers, which set their own limits) gets 25 MB in total, the
common default. The environment variable ATTACHMENT_LIMITS holds a JSON object of provider →
fields to override, e.g. {"imap": {"total_bytes": 10485760}}.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MB = 1024 * 1024
SEND_MAX_BYTES = 35 * MB  # whatever a provider takes: what the send function can hold


class AttachmentLimits(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider_label: str = Field(description="How users know the provider, for messages")
    total_bytes: int | None = Field(default=None, ge=1, description="All attachments of one message")
    send_total_bytes: int | None = Field(
        default=None,
        ge=1,
        description="All attachments of one message sent from the CRM, when that is less than "
        "total_bytes (the send function's memory, not the provider, sets it)",
    )
    per_file_bytes: int | None = Field(default=None, ge=1, description="Any one file")
    allowed_types: frozenset[str] | None = Field(
        default=None, description="File kinds (see filetype.py) allowed; None: any but executables"
    )
    inbound: Literal["strip", "skip"] = Field(
        default="strip",
        description="An inbound message over the limits: synced without the files that break them "
        "(ATT-2), or not synced at all (ATT-3)",
    )

    @property
    def send_max_total(self) -> int:
        """The most a sent message's attachments may come to, all together."""
        return min(v for v in (self.total_bytes, self.send_total_bytes, SEND_MAX_BYTES) if v is not None)

    @property
    def upload_max_bytes(self) -> int:
        """The largest single upload that can ever be sent: what a staging policy allows."""
        return min(v for v in (self.per_file_bytes, self.send_max_total) if v is not None)


COMMON_TOTAL_BYTES = 25 * MB  # what most mail servers take, for a provider without a bundle


def default_limits(provider: str) -> AttachmentLimits:
    """The provider's limits as its mail bundle states them; a provider without one gets the
    common default."""
    from crmsync.providers import registry

    stated = registry.mail_limits(provider)
    if stated is not None:
        return stated
    return AttachmentLimits(provider_label=provider.upper(), total_bytes=COMMON_TOTAL_BYTES)


@cache
def limits_for(provider: str, overrides: str = "") -> AttachmentLimits:
    """The limits of a provider's accounts; `overrides` is ATTACHMENT_LIMITS' JSON."""
    base = default_limits(provider)
    fields = (json.loads(overrides) if overrides else {}).get(provider)
    return AttachmentLimits.model_validate({**base.model_dump(), **fields}) if fields else base

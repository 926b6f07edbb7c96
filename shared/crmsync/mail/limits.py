"""Attachment limits per provider (ATT-5): one table, overridable by configuration.

Gmail: 25 MB of attachments in total per message (ATT-2). Microsoft: 3 MB per file and a
type allowlist (ATT-3), and 35 MB in total per message sent from the CRM: Graph itself takes up
to 150 MB through upload sessions, but the send function holds the message in memory (the
staged files and its MIME), so its memory is the real bound. IMAP/SMTP servers set their own
limits; 25 MB in total is the common default and an operator can change it. The environment
variable ATTACHMENT_LIMITS holds a JSON object of provider → fields to override, e.g.
{"imap": {"total_bytes": 10485760}}.
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


DEFAULTS: dict[str, AttachmentLimits] = {
    "google": AttachmentLimits(provider_label="Gmail", total_bytes=25 * MB),
    "microsoft": AttachmentLimits(
        provider_label="Microsoft 365",
        per_file_bytes=3 * MB,
        send_total_bytes=SEND_MAX_BYTES,
        allowed_types=frozenset(
            {"jpg", "jpeg", "png", "mp4", "mpeg", "zip", "rar", "pdf", "doc", "docx", "txt"}
        ),
        inbound="skip",
    ),
    "imap": AttachmentLimits(provider_label="IMAP/SMTP", total_bytes=25 * MB),
}


@cache
def _overrides(raw: str) -> dict[str, AttachmentLimits]:
    table = dict(DEFAULTS)
    for provider, fields in (json.loads(raw) if raw else {}).items():
        base = table.get(provider, AttachmentLimits(provider_label=provider))
        table[provider] = AttachmentLimits.model_validate({**base.model_dump(), **fields})
    return table


def limits_for(provider: str, overrides: str = "") -> AttachmentLimits:
    """The limits of a provider's accounts; `overrides` is ATTACHMENT_LIMITS' JSON."""
    table = _overrides(overrides)
    if provider not in table:
        raise KeyError(f"no attachment limits for provider {provider!r}")
    return table[provider]

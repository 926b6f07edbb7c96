"""Attachment limits on inbound mail (ATT-2, ATT-3), as a pure function of the raw message.

`strip` providers (Gmail, IMAP) keep the message and leave out the files that break the
limits, largest first until the rest fits (the record and the event name them); `skip`
providers (Microsoft) do not sync the message at all, and the reason names the file."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage

from pydantic import BaseModel, Field

from crmsync.mail.filetype import FileRefused, check
from crmsync.mail.limits import AttachmentLimits


class InboundVerdict(BaseModel):
    raw: bytes = Field(repr=False)
    left_out: list[str] = Field(default_factory=list)
    refused: str | None = None


def _size(part: EmailMessage) -> int:
    payload = part.get_payload(decode=True)
    return len(payload) if isinstance(payload, bytes) else 0


def apply_limits(raw: bytes, limits: AttachmentLimits) -> InboundVerdict:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    if not isinstance(message, EmailMessage) or not message.is_multipart():
        return InboundVerdict(raw=raw)
    parts = list(message.iter_attachments())
    if not parts:
        return InboundVerdict(raw=raw)
    breaking: list[tuple[EmailMessage, str]] = []
    for part in parts:
        name = part.get_filename() or "(unnamed)"
        size = _size(part)
        if limits.per_file_bytes is not None and size > limits.per_file_bytes:
            breaking.append((part, f"{name}: {size} bytes, over {limits.per_file_bytes} per file"))
            continue
        if limits.allowed_types is not None:
            data = part.get_payload(decode=True)
            try:
                check(name, data if isinstance(data, bytes) else b"", limits.allowed_types)
            except FileRefused as refused:
                breaking.append((part, str(refused)))
    kept = [p for p in parts if all(p is not b for b, _ in breaking)]
    if limits.total_bytes is not None:
        for part in sorted(kept, key=_size, reverse=True):
            total = sum(_size(p) for p in kept)
            if total <= limits.total_bytes:
                break
            name = part.get_filename() or "(unnamed)"
            breaking.append(
                (part, f"{name}: {_size(part)} bytes; the files came to {total}, over {limits.total_bytes}")
            )
            kept.remove(part)
    if not breaking:
        return InboundVerdict(raw=raw)
    if limits.inbound == "skip":
        return InboundVerdict(raw=raw, refused="; ".join(reason for _, reason in breaking))
    gone = [part for part, _ in breaking]
    for container in message.walk():
        children = container.get_payload() if container.is_multipart() else None
        if isinstance(children, list):
            children[:] = [c for c in children if all(c is not g for g in gone)]
    return InboundVerdict(raw=message.as_bytes(), left_out=[reason for _, reason in breaking])

"""Attachment limits on inbound mail (ATT-2, ATT-3), as a pure function of the message read once.

`strip` providers (Gmail, IMAP) keep the message and leave out the files that break the
limits, largest first until the rest fits (the record and the event name them); `skip`
providers (Microsoft) do not sync the message at all, and the reason names the file.

The check is linear in the message: it works on the attachments as mime.read decoded them
(one decoding per part), and a message of a thousand parts costs a thousand part checks."""

from __future__ import annotations

from pydantic import BaseModel, Field

from crmsync.mail.filetype import FileRefused, check
from crmsync.mail.limits import AttachmentLimits
from crmsync.mail.mime import Attachment, ReadMessage, attachments_of


class InboundVerdict(BaseModel):
    raw: bytes = Field(repr=False)
    left_out: list[str] = Field(default_factory=list)
    refused: str | None = None
    attachments: list[Attachment] | None = Field(
        default=None, description="The attachments kept, when some were left out (else as parsed)"
    )


def limit(message: ReadMessage, raw: bytes, limits: AttachmentLimits) -> InboundVerdict:
    """The verdict on `message` (read from `raw`). Stripping changes `message.message` in place."""
    parts = message.parts
    if not parts:
        return InboundVerdict(raw=raw)
    breaking: dict[int, str] = {}  # part index -> why, in the order found
    for index, part in enumerate(parts):
        name = part.filename or "(unnamed)"
        size = len(part.payload)
        if limits.per_file_bytes is not None and size > limits.per_file_bytes:
            breaking[index] = f"{name}: {size} bytes, over {limits.per_file_bytes} per file"
            continue
        if limits.allowed_types is not None:
            try:
                check(name, part.payload, limits.allowed_types)
            except FileRefused as refused:
                breaking[index] = str(refused)
    if limits.total_bytes is not None:
        kept = [i for i in range(len(parts)) if i not in breaking]
        total = sum(len(parts[i].payload) for i in kept)
        for index in sorted(kept, key=lambda i: len(parts[i].payload), reverse=True):
            if total <= limits.total_bytes:
                break
            size = len(parts[index].payload)
            name = parts[index].filename or "(unnamed)"
            breaking[index] = f"{name}: {size} bytes; the files came to {total}, over {limits.total_bytes}"
            total -= size
    if not breaking:
        return InboundVerdict(raw=raw)
    reasons = list(breaking.values())
    if limits.inbound == "skip":
        return InboundVerdict(raw=raw, refused="; ".join(reasons))
    gone = {id(parts[i].part) for i in breaking}
    for container in message.message.walk():
        children = container.get_payload() if container.is_multipart() else None
        if isinstance(children, list):
            children[:] = [c for c in children if id(c) not in gone]
    return InboundVerdict(
        raw=message.message.as_bytes(),
        left_out=reasons,
        attachments=attachments_of([p for i, p in enumerate(parts) if i not in breaking]),
    )

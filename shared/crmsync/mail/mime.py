"""Reading raw RFC 5322 messages with the standard library (policy.default)."""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage

from pydantic import BaseModel, Field

from crmsync.ids import is_address, normalize_address

MAX_HEADER_BYTES = 256 * 1024
# Bounds on what one message may put in the CRM's records (each becomes part of a DynamoDB item,
# at most 400 KB, and the Message-IDs become keys): generous for real mail, closed to abuse.
MAX_MULTIPARTS = 100  # multipart containers in one message; real mail has a handful
MAX_ADDRESSES = 500  # per address header
MAX_REFERENCES = 50  # the thread's root and the newest 49 ...
MAX_REFERENCES_CHARS = 16 * 1024  # ... as far as they fit in this
MAX_ATTACHMENTS = 200
MAX_ID_CHARS = 4096  # longer than any real Message-ID; keys hold a digest of long ones
_MESSAGE_ID = re.compile(r"<[^<>\s]+>")
_MULTIPART = re.compile(rb"(?im)^content-type:[ \t]*(?:\r?\n[ \t]+)?multipart/")


class Malformed(Exception):
    """The message cannot be read; it is skipped with this reason, never retried."""


class Attachment(BaseModel):
    filename: str | None
    content_type: str
    size: int


class ParsedMessage(BaseModel):
    message_id: str | None = Field(description="RFC 5322 Message-ID with its angle brackets")
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    subject: str = ""
    sender: str | None = None
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    date: datetime | None = None
    preview: str = ""
    attachments: list[Attachment] = Field(default_factory=list)

    @property
    def participants(self) -> list[str]:
        found = [self.sender, *self.to, *self.cc]
        return list(dict.fromkeys(a for a in found if a))


def _addresses(values: list[str]) -> list[str]:
    pairs = email.utils.getaddresses(values)
    return list(dict.fromkeys(normalize_address(a) for _, a in pairs if a and is_address(a)))


def _ids(value: str | None) -> list[str]:
    """Message-IDs in a header, each of a bounded length."""
    return [i for i in _MESSAGE_ID.findall(value or "") if len(i) <= MAX_ID_CHARS]


def _bounded_references(references: list[str]) -> list[str]:
    """The thread's root and as many of the newest references as the bounds allow."""
    if not references:
        return references
    root, size = references[0], len(references[0])
    kept: list[str] = []
    for ref in reversed(references[1:]):
        if len(kept) + 1 >= MAX_REFERENCES or size + len(ref) > MAX_REFERENCES_CHARS:
            break
        kept.append(ref)
        size += len(ref)
    return [root, *reversed(kept)]


@dataclass(frozen=True)
class Part:
    """An attachment as read: the part, its file name and type, and its payload decoded once."""

    part: EmailMessage
    filename: str | None
    content_type: str
    payload: bytes

    def describe(self) -> Attachment:
        return Attachment(filename=self.filename, content_type=self.content_type, size=len(self.payload))


@dataclass(frozen=True)
class ReadMessage:
    """A message parsed once: what the CRM records of it, the parsed tree (which the attachment
    limits may strip, mail/inbound.py) and every attachment with its decoded payload."""

    parsed: ParsedMessage
    message: EmailMessage
    parts: list[Part]


def attachments_of(parts: list[Part]) -> list[Attachment]:
    return [p.describe() for p in parts[:MAX_ATTACHMENTS]]


def parse(raw: bytes) -> ParsedMessage:
    return read(raw).parsed


def read(raw: bytes) -> ReadMessage:
    """Parses `raw` once; each attachment's payload is decoded once (its size, its type check
    and the limits all use that one decoding)."""
    ends = [i for i in (raw.find(b"\r\n\r\n"), raw.find(b"\n\n")) if i >= 0]
    head_size = min(ends) if ends else len(raw)  # bare LF line ends are common in stored mail
    if head_size > MAX_HEADER_BYTES:
        raise Malformed("headers larger than 256 KiB")
    if len(_MULTIPART.findall(raw)) > MAX_MULTIPARTS:  # the parser recurses once per level
        raise Malformed(f"more than {MAX_MULTIPARTS} multipart containers")
    try:
        message = email.message_from_bytes(raw, policy=email.policy.default)
        sender = _addresses([str(message.get("From", ""))])
        date_header = message.get("Date")
        date = email.utils.parsedate_to_datetime(str(date_header)) if date_header else None
        if date is not None and date.tzinfo is None:
            date = date.replace(tzinfo=UTC)
        preview = ""
        body = message.get_body(preferencelist=("plain", "html"))
        if body is not None:
            preview = " ".join(str(body.get_content()).split())[:200]
        parts = [_part(part) for part in message.iter_attachments()] if message.is_multipart() else []
        message_ids = _ids(str(message.get("Message-ID", "")))
        in_reply_to = _ids(str(message.get("In-Reply-To", "")))
        references = _ids(str(message.get("References", "")))
        to = _addresses([str(v) for v in message.get_all("To", [])])
        cc = _addresses([str(v) for v in message.get_all("Cc", [])])
        bcc = _addresses([str(v) for v in message.get_all("Bcc", [])])
        subject = str(message.get("Subject", ""))[:998]
    except (ValueError, TypeError, LookupError, email.errors.MessageError, RecursionError) as error:
        raise Malformed(f"unreadable message: {type(error).__name__}") from error
    references = _bounded_references(references)
    parsed = ParsedMessage(
        message_id=message_ids[0] if message_ids else None,
        in_reply_to=in_reply_to[0] if in_reply_to else None,
        references=references,
        subject=subject,
        sender=sender[0] if sender else None,
        to=to[:MAX_ADDRESSES],
        cc=cc[:MAX_ADDRESSES],
        bcc=bcc[:MAX_ADDRESSES],
        date=date,
        preview=preview,
        attachments=attachments_of(parts),
    )
    if not isinstance(message, EmailMessage):  # policy.default always builds EmailMessage
        raise Malformed("unreadable message: not an EmailMessage")
    return ReadMessage(parsed=parsed, message=message, parts=parts)


def _part(part: EmailMessage) -> Part:
    payload = part.get_payload(decode=True)
    return Part(
        part=part,
        filename=part.get_filename(),
        content_type=part.get_content_type(),
        payload=payload if isinstance(payload, bytes) else b"",
    )

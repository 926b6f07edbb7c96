"""Messages from MIME and MIME from messages: what Exchange keeps of a message that arrives or
is sent as MIME, and the MIME it makes of a draft."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from local.emulators.graph.model import Attachment, Mailbox, Message, address_of, new_id, recipients
from local.emulators.mime import read_mime


def message_from_mime(
    box: Mailbox, raw: bytes, folder: str, received: datetime | None, read: bool
) -> Message:
    """A new message of `box` (not yet stored) made of `raw`."""
    parsed, whole = read_mime(raw)  # Exchange takes any message; a hostile one shows its headers
    message_id = str(parsed.get("Message-ID") or "").strip() or make_msgid(domain="emulator.graph.test")
    in_reply_to = str(parsed.get("In-Reply-To") or "").strip() or None
    references = str(parsed.get("References") or "").strip() or None
    body_part = parsed.get_body(preferencelist=("html", "plain")) if whole else None
    content = ""
    kind = "text"
    if body_part is not None:
        try:
            content = str(body_part.get_content())
        except (LookupError, ValueError):
            content = ""
        kind = "html" if body_part.get_content_subtype() == "html" else "text"
    attachments = [
        Attachment(
            new_id("AAMkAGAtt"),
            part.get_filename() or "attachment",
            part.get_content_type(),
            bytes(part.get_payload(decode=True) or b""),
        )
        for part in (parsed.walk() if whole else [])
        if part.get_content_disposition() == "attachment"
    ]
    sent_at = None
    if parsed.get("Date"):
        try:
            sent_at = email.utils.parsedate_to_datetime(str(parsed["Date"]))
        except (TypeError, ValueError):
            sent_at = None
    senders = recipients(str(parsed.get("From") or ""))
    return Message(
        immutable_id=new_id("AAMkAGImm"),
        rest_id=new_id("AAMkAGRest"),
        folder=folder,
        internet_message_id=message_id,
        conversation_id=conversation(box, in_reply_to, references),
        subject=str(parsed.get("Subject") or ""),
        sender=senders[0] if senders else None,
        to=recipients(str(parsed.get("To") or "")),
        cc=recipients(str(parsed.get("Cc") or "")),
        bcc=recipients(str(parsed.get("Bcc") or "")),
        body={"contentType": kind, "content": content},
        received=received or datetime.now(UTC),
        sent=sent_at,
        is_draft=False,
        is_read=read,
        raw=raw,
        attachments=attachments,
        in_reply_to=in_reply_to,
        references=references,
    )


def conversation(box: Mailbox, in_reply_to: str | None, references: str | None) -> str:
    """Like Gmail's threads: the conversation of the newest known message it refers to."""
    refs = re.findall(r"<[^<>\s]+>", f"{in_reply_to or ''} {references or ''}")
    known = {m.internet_message_id: m.conversation_id for m in box.messages.values()}
    found = next((known[r] for r in reversed(refs) if r in known), None)
    return found or new_id("AAQkAGConv")


def mime_of(box: Mailbox, message: Message) -> bytes:
    """A message's MIME: as it came or was sent, else (a draft) generated now."""
    if message.raw is not None:
        return message.raw
    return generate_mime(box, message)


def generate_mime(box: Mailbox, message: Message) -> bytes:
    mime = EmailMessage()
    mime["From"] = Address(addr_spec=box.address)
    for header, people in (("To", message.to), ("Cc", message.cc), ("Bcc", message.bcc)):
        addresses = [address_of(p) for p in people]
        if addresses:
            mime[header] = [Address(display_name=n if n != a else "", addr_spec=a) for n, a in addresses]
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(message.sent or datetime.now(UTC))
    mime["Message-ID"] = message.internet_message_id
    if message.in_reply_to:
        mime["In-Reply-To"] = message.in_reply_to
    if message.references:
        mime["References"] = message.references
    subtype = "html" if message.body.get("contentType", "text").lower() == "html" else "plain"
    mime.set_content(message.body.get("content", ""), subtype=subtype)
    for attachment in message.attachments:
        maintype, _, subtype_ = attachment.content_type.partition("/")
        mime.add_attachment(
            attachment.content,
            maintype=maintype or "application",
            subtype=subtype_ or "octet-stream",
            filename=attachment.name,
        )
    return mime.as_bytes(policy=email.policy.SMTP)

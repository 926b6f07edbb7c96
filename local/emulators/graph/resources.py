"""The JSON resources Graph answers with: a message, a mail folder."""

from __future__ import annotations

import re
from typing import Any

from local.emulators.graph.mime import mime_of
from local.emulators.graph.model import Mailbox, Message, iso
from local.emulators.graph.odata import project

# The extended properties a message answers with when asked: its size in bytes, as
# PidTagMessageSize (PT_LONG, "Integer 0xe08") and PidTagMessageSizeExtended (PT_I8, "Long 0xe08").
SIZE_PROPERTIES = ("Integer 0xe08", "Long 0xe08")


def extended_properties(box: Mailbox, message: Message, wanted: list[str]) -> list[dict[str, str]]:
    """The single-value extended properties asked for that the message has (values are strings);
    the emulator knows the message's size, which is the length of its MIME."""
    found: list[dict[str, str]] = []
    for property_id in dict.fromkeys(wanted):
        if property_id in SIZE_PROPERTIES:
            found.append({"id": property_id, "value": str(len(mime_of(box, message)))})
    return found


def message_resource(
    box: Mailbox,
    message: Message,
    immutable: bool,
    select: list[str] | None,
    expand: list[str] | None = None,
) -> dict[str, Any]:
    """A message with the id the client asked for (immutable or REST), cut to `$select`, with
    the extended properties `$expand` asks for (`singleValueExtendedProperties`, left out when the
    message has none of them, as Graph does)."""
    full: dict[str, Any] = {
        "@odata.etag": f'W/"{message.change_key}"',
        "id": message.immutable_id if immutable else message.rest_id,
        "createdDateTime": iso(message.created),
        "lastModifiedDateTime": iso(message.modified),
        "changeKey": message.change_key,
        "categories": list(message.categories),
        "receivedDateTime": iso(message.received),
        "sentDateTime": iso(message.sent) if message.sent else None,
        "hasAttachments": any(not a.is_inline for a in message.attachments),
        "internetMessageId": message.internet_message_id,
        "subject": message.subject,
        "bodyPreview": re.sub(r"<[^>]*>|\s+", " ", message.body.get("content", "")).strip()[:255],
        "importance": "normal",
        "parentFolderId": box.folder_id(message.folder),
        "conversationId": message.conversation_id,
        "isDeliveryReceiptRequested": False,
        "isReadReceiptRequested": False,
        "isRead": message.is_read,
        "isDraft": message.is_draft,
        "inferenceClassification": "focused",
        "body": dict(message.body),
        "sender": message.sender,
        "from": message.sender,
        "toRecipients": message.to,
        "ccRecipients": message.cc,
        "bccRecipients": message.bcc,
        "replyTo": [],
        "flag": {"flagStatus": "notFlagged"},
    }
    resource = project(full, select, keep=("@odata.etag",))
    if expand:
        properties = extended_properties(box, message, expand)
        if properties:
            resource["singleValueExtendedProperties"] = properties
    return resource


def folder_resource(box: Mailbox, key: str, select: list[str] | None = None) -> dict[str, Any]:
    inside = [m for m in box.messages.values() if m.folder == key]
    # the root's own parent is the mailbox's non-mail root, which is not emulated
    parent = box.parent_of(key) or "root"
    full = {
        "id": box.folder_id(key),
        "displayName": box.display_name(key),
        "parentFolderId": box.folder_id(parent),
        "childFolderCount": len(box.children(key)),
        "unreadItemCount": sum(1 for m in inside if not m.is_read),
        "totalItemCount": len(inside),
        "sizeInBytes": sum(len(m.raw or b"") for m in inside),
        "isHidden": False,
    }
    return project(full, select)

"""The JSON resources Graph answers with: a message, a mail folder."""

from __future__ import annotations

import re
from typing import Any

from local.emulators.graph.model import Mailbox, Message, iso
from local.emulators.graph.odata import project


def message_resource(
    box: Mailbox, message: Message, immutable: bool, select: list[str] | None
) -> dict[str, Any]:
    """A message with the id the client asked for (immutable or REST), cut to `$select`."""
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
    return project(full, select, keep=("@odata.etag",))


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

"""Attachments: list, add (under 3 MB, as `contentBytes`), and upload sessions for larger files
(`createUploadSession`, then PUTs of byte ranges to the session's URL)."""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.graph.model import Attachment, Mailbox, UploadSession, iso, new_id
from local.emulators.graph.responses import graph_error, json_response, not_found, read_body
from local.emulators.graph.store import MailStore

MAX_ATTACHMENT_BYTES = 3 * 1024 * 1024  # message-post-attachments.md: "under 3 MB"


def attachment_from(given: Any) -> Attachment | Response:
    """A file attachment given inline (under 3 MB), or the 400/413 Graph answers."""
    if (
        not isinstance(given, dict)
        or given.get("@odata.type", "").lstrip("#") != "microsoft.graph.fileAttachment"
    ):
        return graph_error(400, "ErrorInvalidParameter", "Only #microsoft.graph.fileAttachment is emulated.")
    try:
        content = base64.b64decode(str(given.get("contentBytes") or ""), validate=True)
    except ValueError:
        return graph_error(400, "ErrorInvalidParameter", "contentBytes is not base64.")
    if len(content) >= MAX_ATTACHMENT_BYTES:
        return graph_error(
            413,
            "RequestEntityTooLarge",
            "An attachment added in one request must be under 3 MB; use createUploadSession.",
        )
    return Attachment(
        new_id("AAMkAGAtt"),
        str(given.get("name") or "attachment"),
        str(given.get("contentType") or "application/octet-stream"),
        content,
        bool(given.get("isInline", False)),
        given.get("contentId"),
    )


class Attachments(MailStore):
    def _attachment_create(self, request: Request, box: Mailbox, message_id: str) -> Response:
        body = read_body(request)
        if isinstance(body, Response):
            return body
        attachment = attachment_from(body)
        if isinstance(attachment, Response):
            return attachment
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return not_found()
            message.attachments.append(attachment)
            if message.is_draft:
                message.raw = None
            self._touch(box, message)
        return json_response(attachment.resource(), 201)

    def _upload_session_create(self, request: Request, box: Mailbox, message_id: str) -> Response:
        """attachment-createuploadsession: a pre-authenticated URL that takes the file in byte
        ranges (PUT with Content-Range, no Authorization); for files of 3 MB to 150 MB."""
        body = read_body(request)
        if isinstance(body, Response):
            return body
        item = body.get("AttachmentItem") if isinstance(body, dict) else None
        if not isinstance(item, dict) or item.get("attachmentType", "file") != "file":
            return graph_error(
                400, "ErrorInvalidParameter", "AttachmentItem of attachmentType file is required."
            )
        size = item.get("size")
        if not isinstance(size, int) or not 0 < size <= 150 * 1024 * 1024:
            return graph_error(400, "ErrorInvalidParameter", "AttachmentItem.size must be 1 byte to 150 MB.")
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return not_found()
            token = secrets.token_urlsafe(24)
            self._uploads[token] = UploadSession(
                box.address,
                message.immutable_id,
                str(item.get("name") or "attachment"),
                str(item.get("contentType") or "application/octet-stream"),
                size,
            )
        expires = datetime.now(UTC) + timedelta(hours=1)
        return json_response(
            {
                "uploadUrl": f"{request.host_url.rstrip('/')}/_upload/{token}",
                "expirationDateTime": iso(expires),
                "nextExpectedRanges": ["0-"],
            },
            201,
        )

    def upload(self, request: Request) -> Response:
        """PUT to an upload session's URL: the next range of the file."""
        token = request.path.removeprefix("/_upload/")
        with self.lock:
            session = self._uploads.get(token)
        if session is None or request.method != "PUT":
            return graph_error(404, "ItemNotFound", "The upload session does not exist or has expired.")
        if request.headers.get("Authorization"):
            return graph_error(401, "InvalidAuthenticationToken", "Do not send a token to an upload URL.")
        found = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+)", request.headers.get("Content-Range", ""))
        chunk = request.get_data()
        if found is None:
            return graph_error(
                400, "InvalidRequest", "Content-Range: bytes <first>-<last>/<size> is required."
            )
        first, last, total = (int(g) for g in found.groups())
        if total != session.size or first != len(session.data) or last - first + 1 != len(chunk):
            return json_response(
                {
                    "error": {"code": "InvalidRange", "message": "Unexpected range."},
                    "nextExpectedRanges": [f"{len(session.data)}-"],
                },
                416,
            )
        if len(chunk) > 60 * 1024 * 1024 or (last + 1 < total and len(chunk) % (320 * 1024)):
            return graph_error(400, "InvalidRequest", "Ranges are multiples of 320 KiB (the last one aside).")
        session.data += chunk
        if len(session.data) < session.size:
            return json_response({"nextExpectedRanges": [f"{len(session.data)}-"]})
        with self._changing():
            self._uploads.pop(token, None)
            box = self.mailbox(session.address)
            message = box.find(session.message_id)
            if message is None:
                return not_found()
            message.attachments.append(
                Attachment(new_id("AAMkAGAtt"), session.name, session.content_type, bytes(session.data))
            )
            if message.is_draft:
                message.raw = None
            self._touch(box, message)
        return Response(status=201)

    def _attachments_list(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return not_found()
            return json_response({"value": [a.resource() for a in message.attachments]})

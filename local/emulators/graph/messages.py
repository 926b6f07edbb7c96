"""Messages: list (with `$filter`, `$orderby`, paging), get, `$value`, create, update, delete,
move, createReply(All), send, and `/me/sendMail` (JSON or base64 MIME)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from email.utils import make_msgid
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.graph.attachments import attachment_from
from local.emulators.graph.mime import generate_mime
from local.emulators.graph.model import Mailbox, Message, address_of, new_id, recipient
from local.emulators.graph.odata import (
    expand_of,
    matches,
    next_query,
    select_and_filter,
    select_of,
    top_and_skip,
    wants_immutable,
)
from local.emulators.graph.resources import message_resource
from local.emulators.graph.responses import graph_error, json_response, not_found, read_body
from local.emulators.graph.store import MailStore


class Messages(MailStore):
    def _messages_list(self, request: Request, box: Mailbox, folder: str | None) -> Response:
        args = request.args
        asked = select_and_filter(request)
        if isinstance(asked, Response):
            return asked
        select, clauses = asked
        paged = top_and_skip(request)
        if isinstance(paged, Response):
            return paged
        top, skip = paged
        expand = expand_of(request)
        if isinstance(expand, Response):
            return expand
        immutable = wants_immutable(request)
        with self.lock:
            key = None
            if folder is not None:
                key = box.folder_key(folder)
                if key is None:
                    return not_found()
            found: list[Message] = []
            for message in box.messages.values():
                if key is not None and message.folder != key:
                    continue
                passes = matches(message, clauses)
                if isinstance(passes, Response):
                    return passes
                if passes:
                    found.append(message)
            ascending = "asc" in args.get("$orderby", "").lower()
            found.sort(key=lambda m: (m.received, m.created), reverse=not ascending)
            page = found[skip : skip + top]
            result: dict[str, Any] = {
                "@odata.context": self._url("$metadata#users('me')/messages"),
                "value": [message_resource(box, m, immutable, select, expand) for m in page],
            }
        if skip + top < len(found):
            query = next_query(request, top, skip)
            prefix = f"me/mailFolders('{folder}')/messages" if folder is not None else "me/messages"
            result["@odata.nextLink"] = self._url(prefix, query)
        return json_response(result)

    # ------------------------------------------------------------------ messages
    def _message_get(self, request: Request, box: Mailbox, message_id: str) -> Response:
        select = select_of(request)
        expand = expand_of(request)
        if isinstance(expand, Response):
            return expand
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return not_found()
            return json_response(message_resource(box, message, wants_immutable(request), select, expand))

    def _message_value(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return not_found()
            raw = self._mime(box, message)
        return Response(raw, status=200, content_type="text/plain")  # as message-get.md shows

    def _apply_fields(self, message: Message, body: dict[str, Any]) -> Response | None:
        draft_only = ("toRecipients", "ccRecipients", "bccRecipients", "body", "internetMessageId", "from")
        if not message.is_draft and any(k in body for k in draft_only):
            return graph_error(
                400,
                "ErrorInvalidPropertyUpdateSentMessage",
                "Update operation is invalid for property of a sent message.",
            )
        for key, attr in (("toRecipients", "to"), ("ccRecipients", "cc"), ("bccRecipients", "bcc")):
            if key in body:
                people = body[key] or []
                if not isinstance(people, list) or not all(address_of(p)[1] for p in people):
                    return graph_error(
                        400, "ErrorInvalidRecipients", f"{key} must be recipients with an address."
                    )
                setattr(message, attr, [recipient(*address_of(p)) for p in people])
        if "subject" in body:
            message.subject = str(body["subject"] or "")
        if "body" in body:
            given = body["body"] or {}
            message.body = {
                "contentType": str(given.get("contentType", "text")).lower(),
                "content": str(given.get("content", "")),
            }
        if "internetMessageId" in body:
            message.internet_message_id = str(body["internetMessageId"])
        if "isRead" in body:
            message.is_read = bool(body["isRead"])
        if "categories" in body:
            message.categories = [str(c) for c in body["categories"] or []]
        return None

    def _new_draft(self, box: Mailbox, folder: str) -> Message:
        now = datetime.now(UTC)
        return Message(
            immutable_id=new_id("AAMkAGImm"),
            rest_id=new_id("AAMkAGRest"),
            folder=folder,
            internet_message_id=make_msgid(domain="emulator.graph.test"),
            conversation_id=new_id("AAQkAGConv"),
            subject="",
            sender=None,
            to=[],
            cc=[],
            bcc=[],
            body={"contentType": "text", "content": ""},
            received=now,
            sent=None,
            is_draft=True,
            is_read=True,
            raw=None,
        )

    def _messages_create(self, request: Request, box: Mailbox, folder: str) -> Response:
        body = read_body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            key = box.folder_key(folder)
            if key is None:
                return not_found()
            draft = self._new_draft(box, key)
            refused = self._apply_fields(draft, body)
            if refused is not None:
                return refused
            for given in body.get("attachments") or []:
                added = attachment_from(given)
                if isinstance(added, Response):
                    return added
                draft.attachments.append(added)
            self._add(box, draft)
            return json_response(message_resource(box, draft, wants_immutable(request), None), 201)

    def _message_update(self, request: Request, box: Mailbox, message_id: str) -> Response:
        body = read_body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return not_found()
            refused = self._apply_fields(message, body)
            if refused is not None:
                return refused
            self._touch(box, message)
            return json_response(message_resource(box, message, wants_immutable(request), None))

    def _message_delete(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return not_found()
            self._delete(box, message)
        return Response(status=204)

    def _message_move(self, request: Request, box: Mailbox, message_id: str) -> Response:
        body = read_body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return not_found()
            destination = box.folder_key(str(body.get("destinationId") or ""))
            if destination is None:
                return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            self._move(box, message, destination)
            return json_response(message_resource(box, message, wants_immutable(request), None), 201)

    def _reply(self, request: Request, box: Mailbox, message_id: str, everyone: bool) -> Response:
        body = read_body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            parent = box.find(message_id)
            if parent is None:
                return not_found()
            draft = self._new_draft(box, "drafts")
            draft.conversation_id = parent.conversation_id
            subject = parent.subject
            draft.subject = subject if subject.lower().startswith("re:") else f"RE: {subject}"
            sender = parent.sender
            if sender is None or address_of(sender)[1].lower() == box.address:
                draft.to = list(parent.to)  # replying to one's own message answers its recipients
            else:
                draft.to = [sender]
            if everyone:
                others = [p for p in parent.to + parent.cc if address_of(p)[1].lower() != box.address]
                draft.cc = [p for p in others if p not in draft.to]
            draft.in_reply_to = parent.internet_message_id
            draft.references = " ".join(r for r in (parent.references, parent.internet_message_id) if r)
            comment = str(body.get("comment") or "")
            draft.body = {"contentType": "text", "content": comment}
            refused = self._apply_fields(draft, body.get("message") or {})
            if refused is not None:
                return refused
            self._add(box, draft)
            return json_response(message_resource(box, draft, wants_immutable(request), None), 201)

    def _create_reply(self, request: Request, box: Mailbox, message_id: str) -> Response:
        return self._reply(request, box, message_id, everyone=False)

    def _create_reply_all(self, request: Request, box: Mailbox, message_id: str) -> Response:
        return self._reply(request, box, message_id, everyone=True)

    def _message_send(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return not_found()
            if not message.is_draft:
                return graph_error(400, "ErrorInvalidOperation", "Only a draft can be sent.")
            if not (message.to or message.cc or message.bcc):
                return graph_error(
                    400,
                    "ErrorInvalidRecipients",
                    "At least one recipient isn't valid., A message can't be sent"
                    " because it contains no recipients.",
                )
            self._finish_sending(box, message)
            self._move(box, message, "sentitems")
        return Response(status=202)

    def _finish_sending(self, box: Mailbox, message: Message) -> None:
        now = datetime.now(UTC)
        message.is_draft = False
        message.sender = recipient(box.address, box.address)
        message.sent = now
        message.received = now
        message.raw = generate_mime(box, message)
        box.outbox.append(message.raw)

    def _send_mail(self, request: Request, box: Mailbox) -> Response:
        if request.mimetype == "text/plain":  # user-sendmail.md: MIME, base64, as text/plain
            try:
                raw = base64.b64decode(request.get_data(), validate=False)
            except ValueError:
                return graph_error(
                    400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content."
                )
            with self._changing():
                box.outbox.append(raw)
                self._store_mime(box, raw, "sentitems", None, read=True)
            return Response(status=202)
        body = read_body(request)
        if isinstance(body, Response):
            return body
        given = body.get("message")
        if not isinstance(given, dict):
            return graph_error(400, "ErrorInvalidParameter", "The message parameter is required.")
        with self._changing():
            message = self._new_draft(box, "sentitems")
            refused = self._apply_fields(message, given)
            if refused is not None:
                return refused
            if not (message.to or message.cc or message.bcc):
                return graph_error(
                    400, "ErrorInvalidRecipients", "A message can't be sent without recipients."
                )
            for attachment in given.get("attachments") or []:
                added = attachment_from(attachment)
                if isinstance(added, Response):
                    return added
                message.attachments.append(added)
            self._finish_sending(box, message)
            if body.get("saveToSentItems", True) not in (False, "false", "False"):
                self._add(box, message)
        return Response(status=202)

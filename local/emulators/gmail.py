"""The Gmail API (v1), as much of it as the sync uses, checked against the discovery document.

Mailboxes hold messages with labels and threads, and a history whose ids increase (not by one)
and expire: a `startHistoryId` older than what is kept answers 404, as Gmail does. Any request
can be made to answer 429 with Retry-After (`throttle`, counted by the shared `faults.py`).
`arrive` makes mail arrive; `send_from_client` is the user writing in the Gmail client. Batch
requests (`POST /batch/gmail/v1`, or `/batch` as the discovery document's batchPath says) carry
up to 100 calls, each answered as if made on its own.
A mailbox under `users.watch` reports every history change to `on_change` (Pub/Sub's publish)."""

from __future__ import annotations

import base64
import email
import email.parser
import email.policy
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from local.emulators.discovery import DiscoveryValidator, Violation, discovery_document
from local.emulators.faults import FaultState, Throttle
from local.emulators.mime import read_mime

SYSTEM_LABELS = ["INBOX", "SENT", "TRASH", "SPAM", "DRAFT", "UNREAD", "STARRED", "IMPORTANT"]
BATCH_PATHS = ("/batch/gmail/v1", "/batch")  # Google's documented endpoint; the discovery batchPath
MAX_BATCH_CALLS = 100


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


def _error(status: int, message: str, reason: str, state: str) -> Response:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": state,
        }
    }
    return _json(body, status)


def _not_found() -> Response:
    return _error(404, "Requested entity was not found.", "notFound", "NOT_FOUND")


@dataclass
class Stored:
    id: str
    thread_id: str
    labels: set[str]
    raw: bytes
    internal_date: int
    message_id: str | None


@dataclass
class Mailbox(FaultState):
    """A mailbox; its throttle comes from FaultState."""

    address: str
    messages: dict[str, Stored] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    history_id: int = 1000
    oldest_kept: int = 0
    watch: dict[str, Any] | None = None
    requests: list[str] = field(default_factory=list)  # methods called on this mailbox ("batch" too)
    batches: list[int] = field(default_factory=list)  # the number of calls in each batch request

    def next_history(self, record: dict[str, Any]) -> int:
        self.history_id += secrets.randbelow(7) + 1  # increasing, not contiguous
        self.history.append({"id": str(self.history_id), **record})
        return self.history_id


class GmailEmulator:
    def __init__(self, owner_of: Callable[[str | None], str | None]) -> None:
        self.validator = DiscoveryValidator(discovery_document("gmail.v1"))
        self._owner_of = owner_of  # access token -> mailbox address (the OAuth emulator knows)
        self.mailboxes: dict[str, Mailbox] = {}
        self.requests: list[str] = []
        self.lock = threading.RLock()
        # Pub/Sub's publish: (mailbox address, its historyId) after each change of a watched mailbox
        self.on_change: Callable[[str, int], None] | None = None

    # ------------------------------------------------------------------ controls
    def mailbox(self, address: str) -> Mailbox:
        with self.lock:
            return self.mailboxes.setdefault(address.lower(), Mailbox(address.lower()))

    def arrive(self, address: str, raw: bytes, labels: tuple[str, ...] = ("INBOX", "UNREAD")) -> Stored:
        """Mail arrives in the mailbox."""
        return self._store(self.mailbox(address), raw, set(labels), None)

    def send_from_client(self, address: str, raw: bytes) -> Stored:
        """The user writes (or replies) in the Gmail client: Gmail files it with SENT."""
        return self._store(self.mailbox(address), raw, {"SENT"}, None)

    def delete_in_client(self, address: str, message_id: str) -> None:
        """The user deletes a message for good (emptied from the trash): it answers 404 from now on."""
        box = self.mailbox(address)
        with self.lock:
            stored = box.messages.pop(message_id)
            minimal = {"id": stored.id, "threadId": stored.thread_id}
            self._changed(
                box,
                box.next_history({"messages": [minimal], "messagesDeleted": [{"message": minimal}]}),
                stored,
            )

    def trash_in_client(self, address: str, message_id: str) -> None:
        """The user moves a message to the trash in the Gmail client."""
        with self.lock:
            box = self.mailbox(address)
            self._label_change(box, box.messages[message_id], {"TRASH"}, {"INBOX"})

    def expire_history(self, address: str) -> None:
        """History older than now is no longer kept (Gmail keeps at least a week, sometimes hours)."""
        box = self.mailbox(address)
        box.oldest_kept = box.history_id + 1

    def throttle(
        self, address: str, requests: int, retry_after: int = 1, method: str | None = None, skip: int = 0
    ) -> None:
        """The next `requests` calls answer 429 with Retry-After; `method` (a discovery method id
        such as gmail.users.messages.get) limits it to those calls, `skip` lets that many pass first.
        Calls inside a batch count one by one, as Gmail counts them."""
        self.mailbox(address).throttle = Throttle(requests, retry_after, only=method, skip=skip)

    def messages_of(self, address: str) -> list[dict[str, Any]]:
        """What a mailbox holds, oldest first: ids, thread, labels, Message-ID."""
        with self.lock:
            found = sorted(self.mailbox(address).messages.values(), key=lambda m: m.internal_date)
            return [{**self._minimal(m), "messageId": m.message_id} for m in found]

    def _changed(self, box: Mailbox, history_id: int, stored: Stored) -> None:
        """A watched mailbox publishes its new historyId (Gmail filters by the watch's labels)."""
        watch, notify = box.watch, self.on_change
        if watch is None or notify is None or watch["expiration"] < time.time() * 1000:
            return
        labels = set(watch.get("labelIds") or [])
        if labels:
            inside = bool(labels & stored.labels)
            if inside != (watch.get("labelFilterBehavior", "include") == "include"):
                return
        notify(box.address, history_id)

    def _store(self, box: Mailbox, raw: bytes, labels: set[str], thread_id: str | None) -> Stored:
        parsed, _ = read_mime(raw)
        message_id = str(parsed.get("Message-ID") or "") or None
        if thread_id is None:
            refs = re.findall(
                r"<[^<>\s]+>", f"{parsed.get('In-Reply-To', '')} {parsed.get('References', '')}"
            )
            known = {m.message_id: m.thread_id for m in box.messages.values() if m.message_id}
            thread_id = next((known[r] for r in reversed(refs) if r in known), None)
        with self.lock:
            stored = Stored(
                id=secrets.token_hex(8),
                thread_id=thread_id or secrets.token_hex(8),
                labels=labels,
                raw=raw,
                internal_date=int(time.time() * 1000),
                message_id=message_id,
            )
            box.messages[stored.id] = stored
            history_id = box.next_history(
                {
                    "messages": [{"id": stored.id, "threadId": stored.thread_id}],
                    "messagesAdded": [{"message": self._minimal(stored)}],
                }
            )
            self._changed(box, history_id, stored)
        return stored

    # ------------------------------------------------------------------ HTTP
    def dispatch(self, request: Request) -> Response:
        query = parse_qs(request.query_string.decode(), keep_blank_values=True)
        body = request.get_data() if request.method in ("POST", "PUT", "PATCH") else None
        try:
            method, path = self.validator.match(request.method, request.path, query, body)
        except Violation as violation:
            return _error(
                400, f"Invalid request (emulator): {violation}", "invalidArgument", "INVALID_ARGUMENT"
            )
        address = self._owner_of(request.headers.get("Authorization"))
        if address is None:
            return _error(
                401, "Request had invalid authentication credentials.", "authError", "UNAUTHENTICATED"
            )
        if path.get("userId") not in ("me", address):
            return _error(403, "Delegation denied", "forbidden", "PERMISSION_DENIED")
        box = self.mailbox(address)
        with self.lock:
            self.requests.append(method.id)
            box.requests.append(method.id)
            refused = box.throttle.refuses(method.id)
        if refused:
            response = _error(429, "User-rate limit exceeded.", "rateLimitExceeded", "RESOURCE_EXHAUSTED")
            response.headers["Retry-After"] = str(box.throttle.retry_after)
            return response
        handler = getattr(self, "_" + method.id.removeprefix("gmail.users.").replace(".", "_"), None)
        if handler is None:
            return _error(501, f"{method.id} is not emulated", "notImplemented", "UNIMPLEMENTED")
        with self.lock:
            # a repeated parameter (historyTypes, labelIds) arrives whole, comma-joined
            flat = {k: ",".join(v) for k, v in query.items()}
            result: Response = handler(box, path, flat, json.loads(body) if body else {})
            return result

    # ------------------------------------------------------------------ batch
    def dispatch_batch(self, request: Request) -> Response:
        """multipart/mixed of application/http parts in, the same out: each call goes through
        `dispatch` (validation, auth, throttling) as if it had come alone; the batch is 200."""
        if request.mimetype != "multipart/mixed" or "boundary" not in request.mimetype_params:
            return _error(
                400,
                "A batch request must be multipart/mixed with a boundary.",
                "badRequest",
                "INVALID_ARGUMENT",
            )
        head = f"Content-Type: {request.headers['Content-Type']}\r\n\r\n".encode()
        envelope = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(
            head + request.get_data()
        )
        parts = envelope.get_payload() if envelope.is_multipart() else []
        if not isinstance(parts, list) or not parts:
            return _error(400, "The batch request has no parts.", "badRequest", "INVALID_ARGUMENT")
        if len(parts) > MAX_BATCH_CALLS:
            return _error(
                400,
                f"A batch request may contain at most {MAX_BATCH_CALLS} calls, not {len(parts)}.",
                "badRequest",
                "INVALID_ARGUMENT",
            )
        calls: list[tuple[str, Request | Response]] = []
        for index, part in enumerate(parts):
            content_id = str(part.get("Content-ID") or f"<{index + 1}>").strip()
            try:
                calls.append((content_id, self._inner_request(part, request.headers.get("Authorization"))))
            except ValueError as error:
                calls.append(
                    (
                        content_id,
                        _error(400, f"Invalid batch part: {error}", "badRequest", "INVALID_ARGUMENT"),
                    )
                )
        owners = (self._owner_of(c.headers.get("Authorization")) for _, c in calls if isinstance(c, Request))
        address = next((a for a in owners if a), None)
        if address is not None:
            with self.lock:
                box = self.mailbox(address)
                box.requests.append("batch")
                box.batches.append(len(parts))
        boundary = "batch_" + secrets.token_hex(12)
        answers = [
            self._answer_part(
                content_id, self.dispatch(call) if isinstance(call, Request) else call, boundary
            )
            for content_id, call in calls
        ]
        body = "".join(answers) + f"--{boundary}--\r\n"
        return Response(body, status=200, content_type=f"multipart/mixed; boundary={boundary}")

    @staticmethod
    def _inner_request(part: Any, authorization: str | None) -> Request:
        if part.get_content_type() != "application/http":
            raise ValueError(f"a part is {part.get_content_type()}, not application/http")
        text = part.get_payload()
        if not isinstance(text, str) or "\n" not in text:
            raise ValueError("a part holds no HTTP request")
        request_line, rest = text.split("\n", 1)
        pieces = request_line.strip().split(" ")
        if len(pieces) != 3 or not pieces[2].startswith("HTTP/"):
            raise ValueError(f"bad request line {request_line.strip()!r}")
        http_method, target = pieces[0], urlsplit(pieces[1])
        message = email.parser.Parser(policy=email.policy.compat32).parsestr(rest)
        headers = {k: v for k, v in message.items() if k.lower() not in ("host", "content-length")}
        if authorization and not any(k.lower() == "authorization" for k in headers):
            headers["Authorization"] = authorization  # the outer request's credentials apply
        payload = message.get_payload()
        body = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) and payload else None
        return EnvironBuilder(
            path=target.path,
            query_string=target.query,
            method=http_method,
            headers=list(headers.items()),
            data=body,
        ).get_request()

    @staticmethod
    def _answer_part(content_id: str, answer: Response, boundary: str) -> str:
        inner = content_id[1:-1] if content_id.startswith("<") and content_id.endswith(">") else content_id
        status = f"HTTP/1.1 {answer.status_code} {HTTP_STATUS_CODES.get(answer.status_code, 'Unknown')}"
        headers = [f"Content-Type: {answer.headers.get('Content-Type', 'application/json')}"]
        if "Retry-After" in answer.headers:
            headers.append(f"Retry-After: {answer.headers['Retry-After']}")
        return (
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <response-{inner}>\r\n\r\n"
            + status
            + "\r\n"
            + "\r\n".join(headers)
            + "\r\n\r\n"
            + answer.get_data(as_text=True)
            + "\r\n"
        )

    # ------------------------------------------------------------------ methods
    @staticmethod
    def _minimal(stored: Stored) -> dict[str, Any]:
        return {"id": stored.id, "threadId": stored.thread_id, "labelIds": sorted(stored.labels)}

    def _getProfile(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        threads = {m.thread_id for m in box.messages.values()}
        return _json(
            {
                "emailAddress": box.address,
                "messagesTotal": len(box.messages),
                "threadsTotal": len(threads),
                "historyId": str(box.history_id),
            }
        )

    def _messages_get(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        stored = box.messages.get(path["id"])
        if stored is None:
            return _not_found()
        result: dict[str, Any] = {
            **self._minimal(stored),
            "historyId": str(box.history_id),
            "internalDate": str(stored.internal_date),
            "sizeEstimate": len(stored.raw),
        }
        fmt = query.get("format", "full")
        if fmt == "raw":
            result["raw"] = base64.urlsafe_b64encode(stored.raw).decode()
        elif fmt in ("metadata", "full"):
            parsed, _ = read_mime(stored.raw)
            headers = [{"name": k, "value": str(v)} for k, v in parsed.items()]
            result["payload"] = {"mimeType": parsed.get_content_type(), "headers": headers}
        return _json(result)

    def _messages_list(
        self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any
    ) -> Response:
        wanted = set(query.get("labelIds", "").split(",")) - {""}
        after = re.search(r"\bafter:(\d+)\b", query.get("q", ""))  # Gmail's search: after:<epoch seconds>
        msgid = re.search(r"\brfc822msgid:(\S+)", query.get("q", ""))  # by Message-ID, brackets optional
        wanted_id = msgid.group(1).strip("<>") if msgid else None
        found = [
            m
            for m in box.messages.values()
            if (not wanted or wanted <= m.labels)
            and (after is None or m.internal_date // 1000 > int(after.group(1)))
            and (wanted_id is None or (m.message_id or "").strip("<>") == wanted_id)
        ]
        found.sort(key=lambda m: m.internal_date, reverse=True)
        start, size = int(query.get("pageToken", "0")), int(query.get("maxResults", "100"))
        page = found[start : start + size]
        result: dict[str, Any] = {
            "messages": [{"id": m.id, "threadId": m.thread_id} for m in page],
            "resultSizeEstimate": len(found),
        }
        if start + size < len(found):
            result["nextPageToken"] = str(start + size)
        return _json(result)

    def _messages_send(
        self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any
    ) -> Response:
        raw = base64.urlsafe_b64decode(body.get("raw", "") + "=" * (-len(body.get("raw", "")) % 4))
        stored = self._store(box, raw, {"SENT"}, body.get("threadId"))
        return _json(self._minimal(stored))

    def _label_change(self, box: Mailbox, stored: Stored, add: set[str], remove: set[str]) -> None:
        added, removed = add - stored.labels, remove & stored.labels
        stored.labels = (stored.labels | add) - remove
        record: dict[str, Any] = {"messages": [{"id": stored.id, "threadId": stored.thread_id}]}
        if added:
            record["labelsAdded"] = [{"message": self._minimal(stored), "labelIds": sorted(added)}]
        if removed:
            record["labelsRemoved"] = [{"message": self._minimal(stored), "labelIds": sorted(removed)}]
        if added or removed:
            self._changed(box, box.next_history(record), stored)

    def _messages_modify(
        self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any
    ) -> Response:
        stored = box.messages.get(path["id"])
        if stored is None:
            return _not_found()
        self._label_change(box, stored, set(body.get("addLabelIds", [])), set(body.get("removeLabelIds", [])))
        return _json(self._minimal(stored))

    def _messages_trash(
        self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any
    ) -> Response:
        stored = box.messages.get(path["id"])
        if stored is None:
            return _not_found()
        self._label_change(box, stored, {"TRASH"}, {"INBOX"})
        return _json(self._minimal(stored))

    def _history_list(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        if "startHistoryId" not in query:
            return _error(400, "Missing startHistoryId", "invalidArgument", "INVALID_ARGUMENT")
        start = int(query["startHistoryId"])
        if start < box.oldest_kept:
            return _not_found()
        kinds = set(query.get("historyTypes", "").split(",")) - {""}
        records = [h for h in box.history if int(h["id"]) > start]
        if kinds:
            names = {
                "messageAdded": "messagesAdded",
                "messageDeleted": "messagesDeleted",
                "labelAdded": "labelsAdded",
                "labelRemoved": "labelsRemoved",
            }
            records = [h for h in records if any(names[k] in h for k in kinds)]
        offset, size = int(query.get("pageToken", "0")), min(int(query.get("maxResults", "100")), 500)
        page = records[offset : offset + size]
        result: dict[str, Any] = {"historyId": str(box.history_id)}
        if page:
            result["history"] = page
        if offset + size < len(records):
            result["nextPageToken"] = str(offset + size)
        return _json(result)

    def _labels_list(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        return _json({"labels": [{"id": name, "name": name, "type": "system"} for name in SYSTEM_LABELS]})

    def _watch(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        if not body.get("topicName"):
            return _error(400, "Invalid topicName", "invalidArgument", "INVALID_ARGUMENT")
        expiration = int((time.time() + 7 * 86400) * 1000)
        box.watch = {
            "topicName": body["topicName"],
            "labelIds": body.get("labelIds", []),
            "labelFilterBehavior": body.get("labelFilterBehavior")
            or body.get("labelFilterAction")
            or "include",
            "expiration": expiration,
        }
        return _json({"historyId": str(box.history_id), "expiration": str(expiration)})

    def _stop(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        box.watch = None
        return Response(status=204)

    def _threads_get(self, box: Mailbox, path: dict[str, str], query: dict[str, str], body: Any) -> Response:
        messages = [self._minimal(m) for m in box.messages.values() if m.thread_id == path["id"]]
        if not messages:
            return _not_found()
        return _json({"id": path["id"], "historyId": str(box.history_id), "messages": messages})

"""The controls a test or a demo drives the Graph mail emulator with: mail arrives, the user acts
in Outlook (sends, moves, deletes, makes folders), delta tokens expire, and faults are set
(throttling, latency, a concurrency limit; see `local/emulators/faults.py`). The same over HTTP
as `/_emulator/graph/...`, for a demo script in another process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.faults import Throttle
from local.emulators.graph.model import ROOT, FolderExists, Message, parse_iso
from local.emulators.graph.responses import json_response
from local.emulators.graph.routes import ROUTE_KINDS
from local.emulators.graph.store import MailStore


class Controls(MailStore):
    def arrive(
        self, address: str, raw_mime: bytes, folder: str = "inbox", received: datetime | None = None
    ) -> Message:
        """Mail arrives in `folder` (a well-known name, a folder id, or a display path such as
        "Clients/Acme": mail a server-side rule files straight there). `received` backdates it."""
        box = self.mailbox(address)
        with self._changing():
            return self._store_mime(box, raw_mime, self._folder_or_raise(box, folder), received, read=False)

    def send_from_client(self, address: str, raw_mime: bytes) -> Message:
        """The user writes (or replies) in Outlook: the message lands in sentitems."""
        box = self.mailbox(address)
        with self._changing():
            box.outbox.append(raw_mime)
            return self._store_mime(box, raw_mime, "sentitems", None, read=True)

    def move_in_client(self, address: str, message_id: str, folder: str) -> Message:
        """The user moves a message in Outlook (to a well-known name, a folder id or a display path);
        its REST id changes, its immutable id does not."""
        box = self.mailbox(address)
        with self._changing():
            message = box.find(message_id)
            if message is None:
                raise KeyError(message_id)
            self._move(box, message, self._folder_or_raise(box, folder))
            return message

    def delete_in_client(self, address: str, message_id: str) -> None:
        """The user deletes a message for good: it answers 404 from now on."""
        box = self.mailbox(address)
        with self._changing():
            message = box.find(message_id)
            if message is None:
                raise KeyError(message_id)
            self._delete(box, message)

    def expire_delta(self, address: str, folder: str, how: str = "410", status: int | None = None) -> int:
        """Delta tokens handed out so far for this folder stop working. `how="410"`: 410 Gone with a
        Location to start over; any casing of `syncStateNotFound`: an error with that code, status
        `status` (400 unless given; Graph is seen answering 400, 404 and 410). Returns how many."""
        if how != "410" and how.lower() != "syncstatenotfound":
            raise ValueError("how is '410' or a casing of 'syncStateNotFound'")
        box = self.mailbox(address)
        with self.lock:
            key = self._folder_or_raise(box, folder)
            mine = [c for c in self.cursors.values() if c.address == box.address and c.folder == key]
            for cursor in mine:
                if cursor.kind == "delta":
                    cursor.expired, cursor.expired_status = how, status
            return sum(1 for c in mine if c.kind == "delta")

    def create_folder(self, address: str, display_name: str, parent: str | None = None) -> str:
        """The user makes a folder in Outlook, under `parent` (a folder id, a well-known name or a
        display path; the root when None). Returns its id. FolderExists if a sibling has the name
        (any casing), ValueError if the name is empty."""
        box = self.mailbox(address)
        with self.lock:
            under = ROOT if parent is None else self._folder_or_raise(box, parent)
            return self._make_folder(box, under, display_name).id

    def folders_of(self, address: str) -> list[dict[str, Any]]:
        """Every folder of a mailbox but the root, parents before their children."""
        box = self.mailbox(address)
        with self.lock:
            found: list[dict[str, Any]] = []
            waiting = box.children(ROOT)
            while waiting:
                key = waiting.pop(0)
                found.append(
                    {
                        "key": key,
                        "id": box.folder_id(key),
                        "displayName": box.display_name(key),
                        "path": box.display_path(key),
                        "parentFolderId": box.folder_id(box.parent_of(key) or ROOT),
                    }
                )
                waiting.extend(box.children(key))
            return found

    def folder_key(self, address: str, id_or_name: str) -> str | None:
        """The key of a folder as Graph names it (id or well-known name), None if there is none:
        the one normalisation the change-notification part matches folders by."""
        with self.lock:
            return self.mailbox(address).folder_key(id_or_name)

    def throttle(
        self,
        address: str,
        n: int,
        retry_after: int = 1,
        kind: str | None = None,
        code: str = "ApplicationThrottled",
    ) -> None:
        """The next `n` requests of this mailbox (of route `kind` only, if given: one of ROUTE_KINDS)
        answer 429 with Retry-After. `code` is ApplicationThrottled (Outlook's MailboxConcurrency
        refusal) or TooManyRequests (the throttling doc's sample). Inner $batch requests count one by
        one, and the $batch itself counts as kind "batch"."""
        if kind is not None and kind not in ROUTE_KINDS:
            raise ValueError(f"kind is one of {ROUTE_KINDS}")
        box = self.mailbox(address)
        with self.lock:
            box.throttle = Throttle(n, retry_after, only=kind, code=code)

    def slow_down(self, address: str, seconds: float) -> None:
        """Each request of this mailbox takes at least `seconds` (to make concurrency visible)."""
        self.mailbox(address).latency = seconds

    def limit_concurrency(self, address: str, limit: int | None = 4) -> None:
        """Refuse a request of this mailbox that would make more than `limit` in flight at once with
        429 ApplicationThrottled, as Outlook does past 4; None only counts (the default)."""
        self.mailbox(address).concurrency_limit = limit

    def max_concurrency(self, address: str) -> int:
        """The most requests of this mailbox seen in flight at once ($batch counts as one)."""
        return self.mailbox(address).max_in_flight

    def messages_of(self, address: str, folder: str | None = None) -> list[dict[str, Any]]:
        """What a mailbox (or one of its folders) holds, oldest first."""
        box = self.mailbox(address)
        with self.lock:
            key = self._folder_or_raise(box, folder) if folder else None
            found = sorted(
                (m for m in box.messages.values() if key is None or m.folder == key), key=lambda m: m.received
            )
            return [
                {
                    "id": m.immutable_id,
                    "restId": m.rest_id,
                    "folder": m.folder,
                    "internetMessageId": m.internet_message_id,
                    "conversationId": m.conversation_id,
                    "subject": m.subject,
                    "isDraft": m.is_draft,
                    "isRead": m.is_read,
                }
                for m in found
            ]

    def raw_of(self, address: str, message_id: str) -> bytes:
        """The MIME of a message ($value)."""
        box = self.mailbox(address)
        with self.lock:
            message = box.find(message_id)
            if message is None:
                raise KeyError(message_id)
            return self._mime(box, message)

    # ------------------------------------------------------------------ over HTTP
    def control(self, request: Request) -> Response:
        """`/_emulator/graph/{arrive,send_from_client,move_in_client,delete_in_client,expire_delta,
        create_folder,throttle,slow_down,limit_concurrency,messages,folders,raw,stats}` for a demo
        script in another process. JSON in and out (GET: query parameters); mail is raw RFC 5322
        text. A folder is a well-known name, a folder id or a display path ("Clients/Acme")."""
        action = request.path.removeprefix("/_emulator/graph/")
        data: dict[str, Any] = (
            dict(request.args) if request.method == "GET" else (request.get_json(silent=True) or {})
        )
        address = str(data.get("address") or "").strip().lower()
        if not address or "@" not in address:
            return json_response({"error": "address (a mailbox address) is required"}, 400)
        try:
            return self._control(request.method, action, address, data)
        except KeyError as missing:
            return json_response({"error": f"not found: {missing}"}, 404)
        except FolderExists as exists:
            return json_response({"error": str(exists)}, 409)
        except (TypeError, ValueError) as wrong:
            return json_response({"error": str(wrong)}, 400)

    def _control(self, method: str, action: str, address: str, data: dict[str, Any]) -> Response:
        if method == "GET" and action == "messages":
            return json_response(
                {"address": address, "messages": self.messages_of(address, data.get("folder"))}
            )
        if method == "GET" and action == "folders":
            return json_response({"address": address, "folders": self.folders_of(address)})
        if method == "GET" and action == "raw":
            return Response(self.raw_of(address, str(data["id"])), content_type="message/rfc822")
        if method == "GET" and action == "stats":
            box = self.mailbox(address)
            return json_response(
                {
                    "address": address,
                    "requests": list(box.requests),
                    "batches": list(box.batches),
                    "maxConcurrency": box.max_in_flight,
                    "sent": len(box.outbox),
                }
            )
        if method != "POST":
            return json_response(
                {"error": f"{method} /_emulator/graph/{action} is not an emulator control"}, 404
            )
        if action in ("arrive", "send_from_client"):
            raw = data.get("raw")
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError("raw (the message as RFC 5322 text) is required")
            if action == "arrive":
                received = parse_iso(str(data["received"])) if data.get("received") else None
                message = self.arrive(address, raw.encode(), str(data.get("folder") or "inbox"), received)
            else:
                message = self.send_from_client(address, raw.encode())
            return json_response(self._control_view(message))
        if action == "move_in_client":
            return json_response(
                self._control_view(self.move_in_client(address, str(data["id"]), str(data["folder"])))
            )
        if action == "create_folder":
            parent = data.get("parent")
            made = self.create_folder(
                address, str(data.get("displayName") or ""), str(parent) if parent else None
            )
            with self.lock:
                path = self.mailbox(address).display_path(made)
            return json_response({"id": made, "path": path})
        if action == "delete_in_client":
            self.delete_in_client(address, str(data["id"]))
            return json_response({"deleted": str(data["id"])})
        if action == "expire_delta":
            status = int(data["status"]) if data.get("status") else None
            expired = self.expire_delta(address, str(data["folder"]), str(data.get("how") or "410"), status)
            return json_response({"expired": expired})
        if action == "throttle":
            self.throttle(
                address,
                int(data["n"]),
                int(data.get("retry_after", 1)),
                data.get("kind"),
                str(data.get("code") or "ApplicationThrottled"),
            )
            return json_response({"address": address, "n": int(data["n"])})
        if action == "limit_concurrency":
            limit = data.get("limit")
            self.limit_concurrency(address, int(limit) if limit is not None else None)
            return json_response({"address": address, "limit": limit})
        if action == "slow_down":
            self.slow_down(address, float(data["seconds"]))
            return json_response({"address": address, "seconds": float(data["seconds"])})
        return json_response({"error": f"no emulator control {action!r}"}, 404)

    @staticmethod
    def _control_view(message: Message) -> dict[str, Any]:
        return {
            "id": message.immutable_id,
            "restId": message.rest_id,
            "folder": message.folder,
            "internetMessageId": message.internet_message_id,
            "conversationId": message.conversation_id,
        }

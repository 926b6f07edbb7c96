"""Dispatch: a request under `/v1.0/` is authenticated, counted in flight (and refused past the
mailbox's concurrency limit, delayed by its latency), logged by route kind, throttled, then
routed (`mailFolders('inbox')/messages` and `mailFolders/inbox/messages` alike; `/users/{me}`
as `/me`) to the folders, messages, attachments, delta or $batch handlers."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from local.emulators.faults import Throttle
from local.emulators.graph.attachments import Attachments
from local.emulators.graph.batch import Batch
from local.emulators.graph.delta import Delta
from local.emulators.graph.folders import Folders
from local.emulators.graph.messages import Messages
from local.emulators.graph.model import ROOT, Mailbox
from local.emulators.graph.responses import (
    APPLICATION_THROTTLED,
    graph_error,
    method_not_allowed,
    throttled,
    unauthenticated,
)

SEGMENT_KEY = re.compile(r"^(?P<name>[A-Za-z.]+)\('(?P<key>[^']*)'\)$")
ROUTE_KINDS = (
    "mailFolders.list",
    "mailFolders.get",
    "mailFolders.create",
    "childFolders.list",
    "childFolders.create",
    "messages.list",
    "messages.delta",
    "messages.get",
    "messages.value",
    "messages.create",
    "messages.update",
    "messages.delete",
    "messages.createReply",
    "messages.createReplyAll",
    "messages.send",
    "messages.move",
    "attachments.list",
    "attachments.create",
    "attachments.createUploadSession",
    "sendMail",
    "batch",
)
Route = tuple[str, Callable[..., Response], tuple[Any, ...]]  # (route kind, handler, its arguments)


class Routes(Folders, Messages, Attachments, Delta, Batch):
    def dispatch(self, request: Request) -> Response:
        """A request under /v1.0/ (other than /me and /subscriptions, which the identity emulator
        keeps): auth, the request log, throttling, concurrency count, then the route."""
        address = self._owner_of(request.headers.get("Authorization"))
        if address is None:
            return unauthenticated(request)
        box = self.mailbox(address)
        if self._in_batch():  # an inner $batch request: the batch is counted
            return self._call(request, box, inner=True)
        with self._admission.admit(box) as admitted:
            if (
                not admitted
            ):  # Outlook's MailboxConcurrency refusal (throttling-limits: 4 per app and mailbox)
                with self.lock:
                    box.requests.append("refused")
                return throttled(Throttle(retry_after=1, code=APPLICATION_THROTTLED))
            return self._call(request, box, inner=False)

    def _call(self, request: Request, box: Mailbox, inner: bool) -> Response:
        path = request.path
        if not path.startswith("/v1.0/"):
            return graph_error(400, "BadRequest", "Invalid version.")
        segments = self._segments(path.removeprefix("/v1.0/"))
        if segments == ["$batch"]:
            if inner or request.method != "POST":
                return graph_error(400, "BadRequest", "A $batch request can not be nested or be a GET.")
            return self._refused_or(box, "batch", lambda: self._batch(request, box))
        if segments and segments[0].lower() == "users" and len(segments) >= 2:
            who = unquote(segments[1]).lower()
            if who != box.address:
                return graph_error(
                    403, "ErrorAccessDenied", "Access is denied. Check credentials and try again."
                )
            segments = ["me", *segments[2:]]
        if not segments or segments[0].lower() != "me" or len(segments) < 2:
            first = segments[0] if segments else ""
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{first}'.")
        found = self._match(request.method, segments[1:])
        if found is None:
            return graph_error(400, "BadRequest", f"Resource not found for the segment '{segments[-1]}'.")
        if isinstance(found, Response):
            return found
        kind, handler, params = found
        return self._refused_or(box, kind, lambda: handler(request, box, *params))

    def _refused_or(self, box: Mailbox, kind: str, run: Callable[[], Response]) -> Response:
        with self.lock:
            box.requests.append(kind)
            throttle = box.throttle
            refused = throttle.refuses(kind)
        if refused:
            return throttled(throttle)
        return run()

    @staticmethod
    def _segments(path: str) -> list[str]:
        """`mailFolders('inbox')/messages` and `mailFolders/inbox/messages` alike."""
        out: list[str] = []
        for raw in path.split("/"):
            if raw == "":
                continue
            piece = unquote(raw)
            keyed = SEGMENT_KEY.match(piece)
            if keyed:
                out.extend([keyed.group("name"), keyed.group("key")])
            else:
                out.append(piece)
        return out

    def _match(self, method: str, rest: list[str]) -> Route | Response | None:
        head = rest[0].lower()
        lowered = [s.lower() for s in rest]
        if head == "mailfolders":
            if len(rest) == 1:
                if method == "POST":
                    return ("mailFolders.create", self._folder_create, (ROOT,))
                return self._allow(method, "GET", ("mailFolders.list", self._folders_list, (ROOT,)))
            folder = rest[1]
            if len(rest) == 2:
                return self._allow(method, "GET", ("mailFolders.get", self._folders_get, (folder,)))
            if len(rest) == 3 and lowered[2] == "childfolders":
                if method == "POST":
                    return ("childFolders.create", self._folder_create, (folder,))
                return self._allow(method, "GET", ("childFolders.list", self._folders_list, (folder,)))
            if lowered[2] != "messages":
                return None
            if len(rest) == 3:
                if method == "POST":
                    return ("messages.create", self._messages_create, (folder,))
                return self._allow(method, "GET", ("messages.list", self._messages_list, (folder,)))
            if len(rest) == 4 and lowered[3] in ("delta", "microsoft.graph.delta"):
                return self._allow(method, "GET", ("messages.delta", self._delta, (folder,)))
            return self._message_routes(method, rest[3:], lowered[3:])
        if head == "messages":
            if len(rest) == 1:
                if method == "POST":
                    return ("messages.create", self._messages_create, ("drafts",))
                return self._allow(method, "GET", ("messages.list", self._messages_list, (None,)))
            return self._message_routes(method, rest[1:], lowered[1:])
        if head in ("sendmail", "microsoft.graph.sendmail") and len(rest) == 1:
            return self._allow(method, "POST", ("sendMail", self._send_mail, ()))
        return None

    def _message_routes(self, method: str, rest: list[str], lowered: list[str]) -> Route | Response | None:
        message_id = rest[0]
        if len(rest) == 1:
            routes = {
                "GET": ("messages.get", self._message_get),
                "PATCH": ("messages.update", self._message_update),
                "DELETE": ("messages.delete", self._message_delete),
            }
            if method not in routes:
                return method_not_allowed()
            kind, handler = routes[method]
            return kind, handler, (message_id,)
        if len(rest) == 2:
            action = lowered[1].removeprefix("microsoft.graph.")
            if action == "$value":
                return self._allow(method, "GET", ("messages.value", self._message_value, (message_id,)))
            if action == "attachments":
                if method == "POST":
                    return ("attachments.create", self._attachment_create, (message_id,))
                return self._allow(method, "GET", ("attachments.list", self._attachments_list, (message_id,)))
            actions: dict[str, tuple[str, Callable[..., Response]]] = {
                "createreply": ("messages.createReply", self._create_reply),
                "createreplyall": ("messages.createReplyAll", self._create_reply_all),
                "send": ("messages.send", self._message_send),
                "move": ("messages.move", self._message_move),
            }
            if action in actions:
                kind, handler = actions[action]
                return self._allow(method, "POST", (kind, handler, (message_id,)))
        if (
            len(rest) == 3
            and lowered[1] == "attachments"
            and lowered[2].removeprefix("microsoft.graph.") == "createuploadsession"
        ):
            session = ("attachments.createUploadSession", self._upload_session_create, (message_id,))
            return self._allow(method, "POST", session)
        return None

    def _allow(self, method: str, wanted: str, route: Route) -> Route | Response:
        return route if method == wanted else method_not_allowed()

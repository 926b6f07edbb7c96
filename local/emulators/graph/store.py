"""`MailStore`: the state of the Graph mail emulator (mailboxes, delta cursors, upload sessions,
change listeners) and the changes made to it. Every change goes into the mailbox's change log
(which delta reads) and, once the lock is released, to the listeners (the change-notification
part). The route modules (folders, messages, attachments, delta, $batch) and the controls build
on it."""

from __future__ import annotations

import base64
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from werkzeug.wrappers import Request, Response

from local.emulators.faults import Admission
from local.emulators.graph.mime import message_from_mime, mime_of
from local.emulators.graph.model import (
    ROOT,
    WELL_KNOWN,
    Change,
    Cursor,
    Folder,
    FolderExists,
    Mailbox,
    Message,
    UploadSession,
    new_id,
)

Listener = Callable[[str, str, str, str], None]


class MailStore:
    def __init__(
        self,
        owner_of: Callable[[str | None], str | None],
        base_url: Callable[[], str],
        route: Callable[[Request], Response],
    ) -> None:
        self._owner_of = owner_of  # bearer token -> mailbox address (the identity emulator knows)
        self._base_url = base_url
        self._route = route  # how inner $batch requests are dispatched
        self.mailboxes: dict[str, Mailbox] = {}
        self.cursors: dict[str, Cursor] = {}
        self.listeners: list[Listener] = []
        self.lock = threading.RLock()
        self._uploads: dict[str, UploadSession] = {}  # upload URL token -> session
        self._local = threading.local()
        self._admission = Admission()  # requests in flight per mailbox

    def mailbox(self, address: str) -> Mailbox:
        with self.lock:
            return self.mailboxes.setdefault(address.lower(), Mailbox(address.lower()))

    def _url(self, path: str, query: dict[str, str] | None = None) -> str:
        base = self._base_url().rstrip("/")
        tail = "?" + urlencode(query, quote_via=quote, safe="$'(),") if query else ""
        return f"{base}/v1.0/{path}{tail}"

    # ------------------------------------------------------------------ folders
    @staticmethod
    def _folder_or_raise(box: Mailbox, folder: str) -> str:
        """The one place a control resolves a folder: an id, a well-known name, else a display path
        ("Clients/Acme"). Holds the lock (it reads the folder tree)."""
        key = box.folder_key(folder) or box.folder_at(folder)
        if key is None:
            made = ", ".join(f"{box.display_path(k)!r} ({k})" for k in box.folders) or "none"
            raise KeyError(
                f"no folder {folder!r} (well-known names: {', '.join((*WELL_KNOWN, ROOT))};"
                f" user folders: {made})"
            )
        return key

    @staticmethod
    def _make_folder(box: Mailbox, parent: str, display_name: str) -> Folder:
        """Holds the lock. mailfolder-post-childfolders / user-post-mailfolders: displayName is
        required; a sibling of the same name (Exchange ignores case) is a 409 ErrorFolderExists."""
        if not isinstance(display_name, str) or not display_name.strip():
            raise ValueError("displayName (a non-empty string) is required")
        if box.child_named(parent, display_name) is not None:
            where = box.display_path(parent) or ROOT
            raise FolderExists(
                f"A folder with the specified name already exists: {display_name!r} in {where}."
            )
        digest = secrets.token_bytes(24)  # random once; the folder keeps it
        made = Folder("AAMkAGFolder" + base64.urlsafe_b64encode(digest).decode(), display_name, parent)
        box.folders[made.id] = made
        return made

    # ------------------------------------------------------------------ changes
    @contextmanager
    def _changing(self) -> Iterator[None]:
        """Holds the lock; the outermost one tells the listeners, once the lock is released."""
        local = self._local
        with self.lock:
            depth = getattr(local, "depth", 0)
            if depth == 0:
                local.events = []
            local.depth = depth + 1
            try:
                yield
            finally:
                local.depth = depth
                events: list[tuple[str, str, str, str]] = local.events if depth == 0 else []
        for event in events:
            for listener in list(self.listeners):
                listener(*event)

    def _log(self, box: Mailbox, message: Message, folder: str, kind: str, reason: str = "") -> None:
        box.seq += 1
        box.changes.append(Change(box.seq, folder, message.immutable_id, message.rest_id, kind, reason))
        change_type = "deleted" if kind == "removed" else kind
        events: list[tuple[str, str, str, str]] = getattr(self._local, "events", [])
        events.append((box.address, folder, message.immutable_id, change_type))

    def _add(self, box: Mailbox, message: Message) -> None:
        box.messages[message.immutable_id] = message
        box.rest_ids[message.rest_id] = message.immutable_id
        self._log(box, message, message.folder, "created")

    def _touch(self, box: Mailbox, message: Message) -> None:
        message.version += 1
        message.modified = datetime.now(UTC)
        self._log(box, message, message.folder, "updated")

    def _move(self, box: Mailbox, message: Message, folder: str) -> None:
        if folder == message.folder:
            return
        self._log(box, message, message.folder, "removed", "changed")
        box.rest_ids.pop(message.rest_id, None)
        message.rest_id = new_id("AAMkAGRest")  # Graph's default ids change on a move
        box.rest_ids[message.rest_id] = message.immutable_id
        message.folder = folder
        message.version += 1
        message.modified = datetime.now(UTC)
        self._log(box, message, folder, "created")

    def _delete(self, box: Mailbox, message: Message) -> None:
        box.messages.pop(message.immutable_id, None)
        box.rest_ids.pop(message.rest_id, None)
        self._log(box, message, message.folder, "removed", "deleted")

    def _store_mime(
        self, box: Mailbox, raw: bytes, folder: str, received: datetime | None, read: bool
    ) -> Message:
        message = message_from_mime(box, raw, folder, received, read)
        self._add(box, message)
        return message

    @staticmethod
    def _mime(box: Mailbox, message: Message) -> bytes:
        return mime_of(box, message)

"""Microsoft Graph v1.0 mail, as much of it as the sync uses, in the shapes the Graph docs give.

Mailboxes (keyed by the address the bearer token belongs to) hold the well-known folders
`inbox`, `sentitems`, `drafts`, `deleteditems` and `archive`, with ids stable per mailbox, under
the root `msgfolderroot`; and the folders the user makes (`POST /me/mailFolders`, `.../childFolders`,
or `create_folder`), top-level or nested, with ids of their own. A folder's key (what a message,
a delta cursor and a change notification name it by) is its well-known name, or for a user folder
its id. Graph addresses a folder by id or well-known name only; the controls also take a display
path such as "Clients/Acme".
A message has two ids, as in Exchange: its immutable id, which never changes, and a default
("REST") id that changes whenever the message moves. Either finds the message; a request with
`Prefer: IdType="ImmutableId"` is answered with immutable ids, any other with REST ids.

Delta is per folder (`/me/mailFolders/{id}/messages/delta`): the first round pages the folder
by `@odata.nextLink` (`$skiptoken`) and ends on `@odata.deltaLink` (`$deltatoken`); a deltaLink
then answers what changed since, with `{"id", "@removed": {"reason"}}` for messages deleted
("deleted") or moved out of the folder ("changed": the delta-query-overview doc says `changed`
is an item that still exists and can come back, `deleted` one that cannot). `expire_delta`
makes a folder's delta tokens answer 410 Gone with a Location, or a 40x `syncStateNotFound`.

`POST /v1.0/$batch` takes up to 20 requests, each dispatched as if it came alone (credentials of
the outer request, throttling per inner request); bodies that are not JSON (`$value`) come back
base64-encoded. `throttle` makes the next N requests of a mailbox answer 429 with Retry-After.
Every change is reported to `listeners` (the change-notification part registers there) after
the change is visible. `/_emulator/graph/...` drives it from another process."""

from __future__ import annotations

import base64
import email
import email.policy
import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from local.emulators.mime import read_mime

WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "drafts": "Drafts",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
}
ROOT = "msgfolderroot"  # mailfolder.md: the well-known name of the root folder (the Top of Information Store)
ROOT_NAME = "Top of Information Store"
MAX_BATCH_REQUESTS = 20  # concepts/json-batching.md: "limited to 20 individual requests"
MAX_ATTACHMENT_BYTES = 3 * 1024 * 1024  # message-post-attachments.md: "under 3 MB"
DEFAULT_PAGE_SIZE = 10
IMMUTABLE_PREFER = re.compile(r'idtype\s*=\s*"?immutableid"?', re.IGNORECASE)
MAX_PAGE_PREFER = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
SEGMENT_KEY = re.compile(r"^(?P<name>[A-Za-z.]+)\('(?P<key>[^']*)'\)$")
FILTER_CLAUSE = re.compile(
    r"^\s*(?P<field>\w+)\s+(?P<op>eq|ne|ge|gt|le|lt)\s+(?P<value>'(?:[^']|'')*'|\S+)\s*$", re.IGNORECASE
)
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

Listener = Callable[[str, str, str, str], None]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """Graph's error shape: {"error": {"code", "message", "innerError"}}."""
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": secrets.token_hex(16),
        "client-request-id": secrets.token_hex(16),
    }
    return _json({"error": {"code": code, "message": message, "innerError": inner}}, status, headers)


def _not_found() -> Response:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().strip("'"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _new_id(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode()


def _recipient(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name or address, "address": address}}


def _recipients(header: str | None) -> list[dict[str, Any]]:
    return [_recipient(name, addr) for name, addr in getaddresses([header]) if addr] if header else []


def _address_of(recipient: Any) -> tuple[str, str]:
    box = recipient.get("emailAddress", {}) if isinstance(recipient, dict) else {}
    return str(box.get("name") or ""), str(box.get("address") or "")


class FolderExists(ValueError):
    """A sibling folder already has that display name (Graph: 409 ErrorFolderExists)."""


@dataclass
class Folder:
    """A folder the user made. Well-known folders have no record: their key is their name."""

    id: str  # also its key
    display_name: str
    parent: str  # the parent's key: msgfolderroot, a well-known name or a user folder's id


@dataclass
class UploadSession:
    address: str
    message_id: str
    name: str
    content_type: str
    size: int
    data: bytearray = field(default_factory=bytearray)


@dataclass
class Attachment:
    id: str
    name: str
    content_type: str
    content: bytes
    is_inline: bool = False
    content_id: str | None = None

    def resource(self) -> dict[str, Any]:
        return {
            "@odata.type": "#microsoft.graph.fileAttachment",
            "id": self.id,
            "lastModifiedDateTime": _iso(datetime.now(UTC)),
            "name": self.name,
            "contentType": self.content_type,
            "size": len(self.content),
            "isInline": self.is_inline,
            "contentId": self.content_id,
            "contentLocation": None,
            "contentBytes": base64.b64encode(self.content).decode(),
        }


@dataclass
class Message:
    immutable_id: str
    rest_id: str
    folder: str  # the key of the folder it is in: a well-known name, or a user folder's id
    internet_message_id: str
    conversation_id: str
    subject: str
    sender: dict[str, Any] | None
    to: list[dict[str, Any]]
    cc: list[dict[str, Any]]
    bcc: list[dict[str, Any]]
    body: dict[str, str]
    received: datetime
    sent: datetime | None
    is_draft: bool
    is_read: bool
    raw: bytes | None  # the MIME as received or as sent; drafts have theirs generated on demand
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    modified: datetime = field(default_factory=lambda: datetime.now(UTC))
    attachments: list[Attachment] = field(default_factory=list)
    in_reply_to: str | None = None
    references: str | None = None
    version: int = 1
    categories: list[str] = field(default_factory=list)

    @property
    def change_key(self) -> str:
        digest = hashlib.sha256(f"{self.immutable_id}/{self.version}".encode()).digest()
        return base64.b64encode(digest[:21]).decode()


@dataclass
class Change:
    """One entry of a mailbox's change log, which delta reads per folder."""

    seq: int
    folder: str
    immutable_id: str
    rest_id: str  # the message's REST id when this happened (the one a client knew it by)
    kind: str  # "created" | "updated" | "removed"
    reason: str = ""  # for "removed": "deleted" | "changed"


@dataclass
class Throttle:
    """Refuse the next `requests` requests (of `kind` only, if given) with 429."""

    requests: int = 0
    retry_after: int = 1
    kind: str | None = None
    code: str = "ApplicationThrottled"

    def refuses(self, kind: str) -> bool:
        if self.requests <= 0 or (self.kind is not None and self.kind != kind):
            return False
        self.requests -= 1
        return True


@dataclass
class Cursor:
    """What a $skiptoken or $deltatoken stands for."""

    address: str
    folder: str
    kind: str  # "skip" | "delta"
    select: list[str] | None
    received_after: tuple[str, datetime] | None  # ("ge"|"gt", moment)
    change_type: str | None
    page_size: int | None
    seq: int = 0  # delta: changes after this one are new
    pending: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # skip: (kind, immutable id, rest id/reason)
    end_seq: int = 0  # skip: the deltaLink at the end of the round starts here
    reasons: dict[str, str] = field(default_factory=dict)  # skip: immutable id -> @removed reason
    expired: str | None = None  # how it answers once expired
    expired_status: int | None = None


@dataclass
class Mailbox:
    address: str
    messages: dict[str, Message] = field(default_factory=dict)  # immutable id -> message
    rest_ids: dict[str, str] = field(default_factory=dict)  # current REST id -> immutable id
    changes: list[Change] = field(default_factory=list)
    seq: int = 0
    throttle: Throttle = field(default_factory=Throttle)
    requests: list[str] = field(default_factory=list)  # route kinds, in order ("batch" for a $batch)
    batches: list[int] = field(default_factory=list)  # requests in each $batch
    outbox: list[bytes] = field(default_factory=list)  # every MIME that left the mailbox
    in_flight: int = 0
    max_in_flight: int = 0
    latency: float = 0.0
    concurrency_limit: int | None = None  # None: count only; a number: refuse beyond it with 429
    folders: dict[str, Folder] = field(default_factory=dict)  # user folders by id, oldest first

    def folder_id(self, key: str) -> str:
        """The id of the folder with this key (a well-known folder's is derived from its name)."""
        if key in self.folders:
            return key
        digest = hashlib.sha256(f"{self.address}/{key}".encode()).digest()
        return "AAMkAGFolder" + base64.urlsafe_b64encode(digest[:24]).decode()

    def folder_key(self, id_or_name: str) -> str | None:
        """What Graph accepts in a URL or a destinationId: a folder's id (compared exactly, ids are
        case-sensitive) or a well-known name (any casing). None for anything else."""
        if id_or_name in self.folders:
            return id_or_name
        key = id_or_name.strip().lower()
        if key in WELL_KNOWN or key == ROOT:
            return key
        return next((name for name in (*WELL_KNOWN, ROOT) if self.folder_id(name) == id_or_name), None)

    def display_name(self, key: str) -> str:
        if key in self.folders:
            return self.folders[key].display_name
        return ROOT_NAME if key == ROOT else WELL_KNOWN[key]

    def parent_of(self, key: str) -> str | None:
        """The parent's key; None for the root."""
        if key == ROOT:
            return None
        found = self.folders.get(key)
        return found.parent if found is not None else ROOT

    def children(self, key: str) -> list[str]:
        """Keys of the folders right under `key`: under the root the well-known ones first, then the
        user's in the order they were made."""
        well_known = list(WELL_KNOWN) if key == ROOT else []
        return well_known + [f.id for f in self.folders.values() if f.parent == key]

    def child_named(self, parent: str, name: str) -> str | None:
        """The child of `parent` called `name`; Exchange compares folder names case-insensitively."""
        wanted = name.casefold()
        return next((k for k in self.children(parent) if self.display_name(k).casefold() == wanted), None)

    def folder_at(self, path: str) -> str | None:
        """A folder by its display path from the root, like "Clients/Acme" or "Inbox/Receipts"; the
        first step may also be a well-known name ("inbox/Receipts", "msgfolderroot/Clients")."""
        steps = [s.strip() for s in path.strip().strip("/").split("/")]
        if "" in steps:
            return None
        first = steps[0].lower()
        key: str | None = first if first in WELL_KNOWN or first == ROOT else self.child_named(ROOT, steps[0])
        for step in steps[1:]:
            if key is None:
                return None
            key = self.child_named(key, step)
        return key

    def display_path(self, key: str) -> str:
        names: list[str] = []
        at: str | None = key
        while at is not None and at != ROOT:
            names.append(self.display_name(at))
            at = self.parent_of(at)
        return "/".join(reversed(names))

    def find(self, any_id: str) -> Message | None:
        found = self.messages.get(any_id)
        if found is not None:
            return found
        immutable = self.rest_ids.get(any_id)
        return self.messages.get(immutable) if immutable else None


class GraphMail:
    def __init__(
        self,
        owner_of: Callable[[str | None], str | None],
        base_url: Callable[[], str],
        route: Callable[[Request], Response] | None = None,
    ) -> None:
        self._owner_of = owner_of  # bearer token -> mailbox address (the identity emulator knows)
        self._base_url = base_url
        self._route = route or self.dispatch  # how inner $batch requests are dispatched
        self.mailboxes: dict[str, Mailbox] = {}
        self.cursors: dict[str, Cursor] = {}
        self.listeners: list[Listener] = []
        self.lock = threading.RLock()
        self._uploads: dict[str, UploadSession] = {}  # upload URL token -> session
        self._local = threading.local()
        self._counting = threading.Lock()

    # ------------------------------------------------------------------ controls
    def mailbox(self, address: str) -> Mailbox:
        with self.lock:
            return self.mailboxes.setdefault(address.lower(), Mailbox(address.lower()))

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
            box.throttle = Throttle(n, retry_after, kind, code)

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
        message.rest_id = _new_id("AAMkAGRest")  # Graph's default ids change on a move
        box.rest_ids[message.rest_id] = message.immutable_id
        message.folder = folder
        message.version += 1
        message.modified = datetime.now(UTC)
        self._log(box, message, folder, "created")

    def _delete(self, box: Mailbox, message: Message) -> None:
        box.messages.pop(message.immutable_id, None)
        box.rest_ids.pop(message.rest_id, None)
        self._log(box, message, message.folder, "removed", "deleted")

    # ------------------------------------------------------------------ MIME
    def _store_mime(
        self, box: Mailbox, raw: bytes, folder: str, received: datetime | None, read: bool
    ) -> Message:
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
                _new_id("AAMkAGAtt"),
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
        senders = _recipients(str(parsed.get("From") or ""))
        message = Message(
            immutable_id=_new_id("AAMkAGImm"),
            rest_id=_new_id("AAMkAGRest"),
            folder=folder,
            internet_message_id=message_id,
            conversation_id=self._conversation(box, in_reply_to, references),
            subject=str(parsed.get("Subject") or ""),
            sender=senders[0] if senders else None,
            to=_recipients(str(parsed.get("To") or "")),
            cc=_recipients(str(parsed.get("Cc") or "")),
            bcc=_recipients(str(parsed.get("Bcc") or "")),
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
        self._add(box, message)
        return message

    @staticmethod
    def _conversation(box: Mailbox, in_reply_to: str | None, references: str | None) -> str:
        """Like Gmail's threads: the conversation of the newest known message it refers to."""
        refs = re.findall(r"<[^<>\s]+>", f"{in_reply_to or ''} {references or ''}")
        known = {m.internet_message_id: m.conversation_id for m in box.messages.values()}
        found = next((known[r] for r in reversed(refs) if r in known), None)
        return found or _new_id("AAQkAGConv")

    def _mime(self, box: Mailbox, message: Message) -> bytes:
        if message.raw is not None:
            return message.raw
        return self._generate_mime(box, message)

    @staticmethod
    def _generate_mime(box: Mailbox, message: Message) -> bytes:
        mime = EmailMessage()
        mime["From"] = Address(addr_spec=box.address)
        for header, people in (("To", message.to), ("Cc", message.cc), ("Bcc", message.bcc)):
            addresses = [_address_of(p) for p in people]
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

    # ------------------------------------------------------------------ resources
    def _resource(
        self, box: Mailbox, message: Message, immutable: bool, select: list[str] | None
    ) -> dict[str, Any]:
        full: dict[str, Any] = {
            "@odata.etag": f'W/"{message.change_key}"',
            "id": message.immutable_id if immutable else message.rest_id,
            "createdDateTime": _iso(message.created),
            "lastModifiedDateTime": _iso(message.modified),
            "changeKey": message.change_key,
            "categories": list(message.categories),
            "receivedDateTime": _iso(message.received),
            "sentDateTime": _iso(message.sent) if message.sent else None,
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
        if not select:
            return full
        wanted = {s.lower() for s in select} | {"id"}
        return {k: v for k, v in full.items() if k.lower() in wanted or k == "@odata.etag"}

    def _folder_resource(self, box: Mailbox, key: str, select: list[str] | None = None) -> dict[str, Any]:
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
        if not select:
            return full
        wanted = {s.lower() for s in select} | {"id"}
        return {k: v for k, v in full.items() if k.lower() in wanted}

    # ------------------------------------------------------------------ HTTP
    def dispatch(self, request: Request) -> Response:
        """A request under /v1.0/ (other than /me and /subscriptions, which the identity emulator
        keeps): auth, the request log, throttling, concurrency count, then the route."""
        address = self._owner_of(request.headers.get("Authorization"))
        if address is None:
            return self._unauthenticated(request)
        box = self.mailbox(address)
        if getattr(self._local, "in_batch", False):  # an inner $batch request: the batch is counted
            return self._call(request, box, inner=True)
        with self._counting:
            box.in_flight += 1
            box.max_in_flight = max(box.max_in_flight, box.in_flight)
            over = box.concurrency_limit is not None and box.in_flight > box.concurrency_limit
        try:
            if over:  # Outlook's MailboxConcurrency refusal (throttling-limits: 4 per app and mailbox)
                with self.lock:
                    box.requests.append("refused")
                return self._throttled(Throttle(retry_after=1))
            if box.latency:
                time.sleep(box.latency)
            return self._call(request, box, inner=False)
        finally:
            with self._counting:
                box.in_flight -= 1

    @staticmethod
    def _unauthenticated(request: Request) -> Response:
        if not request.headers.get("Authorization"):
            return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
        return graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")

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
            return self._throttled(throttle)
        return run()

    @staticmethod
    def _throttled(throttle: Throttle) -> Response:
        headers = {"Retry-After": str(throttle.retry_after)}
        if throttle.code == "TooManyRequests":
            body = {
                "error": {
                    "code": "TooManyRequests",
                    "innerError": {
                        "code": "429",
                        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                        "message": "Please retry after",
                        "request-id": secrets.token_hex(16),
                        "status": "429",
                    },
                    "message": "Please retry again later.",
                }
            }
            return _json(body, 429, headers)
        return graph_error(429, throttle.code, "Application is over its MailboxConcurrency limit.", headers)

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

    def _match(
        self, method: str, rest: list[str]
    ) -> tuple[str, Callable[..., Response], tuple[Any, ...]] | Response | None:
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

    def _message_routes(
        self, method: str, rest: list[str], lowered: list[str]
    ) -> tuple[str, Callable[..., Response], tuple[Any, ...]] | Response | None:
        message_id = rest[0]
        if len(rest) == 1:
            routes = {
                "GET": ("messages.get", self._message_get),
                "PATCH": ("messages.update", self._message_update),
                "DELETE": ("messages.delete", self._message_delete),
            }
            if method not in routes:
                return self._method_not_allowed()
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

    def _allow(
        self, method: str, wanted: str, route: tuple[str, Callable[..., Response], tuple[Any, ...]]
    ) -> tuple[str, Callable[..., Response], tuple[Any, ...]] | Response:
        return route if method == wanted else self._method_not_allowed()

    @staticmethod
    def _method_not_allowed() -> Response:
        return graph_error(
            405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
        )

    @staticmethod
    def _immutable(request: Request) -> bool:
        return any(IMMUTABLE_PREFER.search(v) for v in request.headers.getlist("Prefer"))

    @staticmethod
    def _page_size(request: Request) -> int | None:
        for value in request.headers.getlist("Prefer"):
            found = MAX_PAGE_PREFER.search(value)
            if found:
                return max(1, int(found.group(1)))
        return None

    @staticmethod
    def _body(request: Request) -> dict[str, Any] | Response:
        data = request.get_data()
        if not data:
            return {}
        try:
            parsed = json.loads(data)
        except ValueError:
            return graph_error(400, "RequestBodyRead", "Invalid JSON in the request body.")
        if not isinstance(parsed, dict):
            return graph_error(400, "RequestBodyRead", "The request body must be a JSON object.")
        return parsed

    def _url(self, path: str, query: dict[str, str] | None = None) -> str:
        base = self._base_url().rstrip("/")
        tail = "?" + urlencode(query, quote_via=quote, safe="$'(),") if query else ""
        return f"{base}/v1.0/{path}{tail}"

    def _select_and_filter(
        self, request: Request
    ) -> tuple[list[str] | None, list[tuple[str, str, str]]] | Response:
        """A list request's `$select` (None: every field) and parsed `$filter` clauses."""
        select = [s.strip() for s in request.args.get("$select", "").split(",") if s.strip()] or None
        if not request.args.get("$filter"):
            return select, []
        parsed = self._filter(request.args["$filter"])
        return parsed if isinstance(parsed, Response) else (select, parsed)

    # ------------------------------------------------------------------ folders
    def _folders_list(self, request: Request, box: Mailbox, folder: str) -> Response:
        """user-list-mailfolders (the root's children) and mailfolder-list-childfolders: 10 a page
        unless $top says otherwise, $skip in the nextLink; $select; $filter on displayName."""
        args = request.args
        asked = self._select_and_filter(request)
        if isinstance(asked, Response):
            return asked
        select, clauses = asked
        unsupported = [name for name, op, _ in clauses if name != "displayname" or op not in ("eq", "ne")]
        if unsupported:
            return graph_error(
                400, "ErrorInvalidUrlQueryFilter", f"The filter on {unsupported[0]} is not supported."
            )
        try:
            top = int(args.get("$top", "0")) or self._page_size(request) or DEFAULT_PAGE_SIZE
            skip = int(args.get("$skip", "0"))
        except ValueError:
            return graph_error(400, "BadRequest", "$top and $skip are integers.")
        with self.lock:
            key = box.folder_key(folder)
            if key is None:
                return _not_found()
            found = [
                k
                for k in box.children(key)
                # Exchange matches folder names case-insensitively
                if all(
                    (box.display_name(k).casefold() == value.casefold()) == (op == "eq")
                    for _, op, value in clauses
                )
            ]
            value = [self._folder_resource(box, k, select) for k in found[skip : skip + top]]
        collection = "mailFolders" if key == ROOT else f"mailFolders('{folder}')/childFolders"
        result: dict[str, Any] = {
            "@odata.context": self._url(f"$metadata#users('me')/{collection}"),
            "value": value,
        }
        path = f"me/{collection}"
        if skip + top < len(found):
            query = {k: v for k, v in args.items() if k not in ("$skip", "$top")}
            query.update({"$top": str(top), "$skip": str(skip + top)})
            result["@odata.nextLink"] = self._url(path, query)
        return _json(result)

    def _folders_get(self, request: Request, box: Mailbox, folder: str) -> Response:
        select = [s.strip() for s in request.args.get("$select", "").split(",") if s.strip()] or None
        with self.lock:
            key = box.folder_key(folder)
            if key is None:
                return _not_found()
            return _json(self._folder_resource(box, key, select))

    def _folder_create(self, request: Request, box: Mailbox, parent: str) -> Response:
        """user-post-mailfolders (under the root) and mailfolder-post-childfolders: 201 and the
        folder; 409 ErrorFolderExists for a sibling of the same name."""
        body = self._body(request)
        if isinstance(body, Response):
            return body
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            return graph_error(400, "ErrorInvalidRequest", "The displayName of the folder is required.")
        if body.get("isHidden") is True:
            return graph_error(400, "ErrorInvalidRequest", "Hidden folders are not emulated.")
        with self.lock:
            key = box.folder_key(parent)
            if key is None:
                return _not_found()
            try:
                made = self._make_folder(box, key, name)
            except FolderExists as exists:
                return graph_error(409, "ErrorFolderExists", str(exists))
            view = self._folder_resource(box, made.id)
        context = self._url("$metadata#users('me')/mailFolders/$entity")
        return _json({"@odata.context": context, **view}, 201)

    # ------------------------------------------------------------------ queries
    @staticmethod
    def _filter(text: str) -> list[tuple[str, str, str]] | Response:
        clauses: list[tuple[str, str, str]] = []
        # `and` outside quotes only: an even number of quotes follows it ('' escapes count two)
        for part in re.split(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", text.strip(), flags=re.IGNORECASE):
            found = FILTER_CLAUSE.match(part)
            if found is None:
                return graph_error(400, "BadRequest", f"Invalid filter clause: {part!r}")
            value = found.group("value")
            if value.startswith("'"):
                value = value[1:-1].replace("''", "'")
            clauses.append((found.group("field").lower(), found.group("op").lower(), value))
        return clauses

    @staticmethod
    def _passes(message: Message, clauses: list[tuple[str, str, str]]) -> bool | Response:
        for name, op, value in clauses:
            if name == "receiveddatetime":
                try:
                    moment = _parse_iso(value)
                except ValueError:
                    return graph_error(400, "BadRequest", f"Invalid DateTimeOffset {value!r}.")
                ops = {
                    "ge": message.received >= moment,
                    "gt": message.received > moment,
                    "le": message.received <= moment,
                    "lt": message.received < moment,
                    "eq": message.received == moment,
                    "ne": message.received != moment,
                }
                if not ops[op]:
                    return False
                continue
            fields: dict[str, str] = {
                "internetmessageid": message.internet_message_id,
                "conversationid": message.conversation_id,
                "subject": message.subject,
                "isdraft": str(message.is_draft).lower(),
                "isread": str(message.is_read).lower(),
            }
            if name not in fields or op not in ("eq", "ne"):
                return graph_error(
                    400, "ErrorInvalidUrlQueryFilter", f"The filter on {name} is not supported."
                )
            equal = fields[name] == value
            if equal != (op == "eq"):
                return False
        return True

    def _messages_list(self, request: Request, box: Mailbox, folder: str | None) -> Response:
        args = request.args
        asked = self._select_and_filter(request)
        if isinstance(asked, Response):
            return asked
        select, clauses = asked
        try:
            top = int(args.get("$top", "0")) or self._page_size(request) or DEFAULT_PAGE_SIZE
            skip = int(args.get("$skip", "0"))
        except ValueError:
            return graph_error(400, "BadRequest", "$top and $skip are integers.")
        immutable = self._immutable(request)
        with self.lock:
            key = None
            if folder is not None:
                key = box.folder_key(folder)
                if key is None:
                    return _not_found()
            found: list[Message] = []
            for message in box.messages.values():
                if key is not None and message.folder != key:
                    continue
                passes = self._passes(message, clauses)
                if isinstance(passes, Response):
                    return passes
                if passes:
                    found.append(message)
            ascending = "asc" in args.get("$orderby", "").lower()
            found.sort(key=lambda m: (m.received, m.created), reverse=not ascending)
            page = found[skip : skip + top]
            result: dict[str, Any] = {
                "@odata.context": self._url("$metadata#users('me')/messages"),
                "value": [self._resource(box, m, immutable, select) for m in page],
            }
        if skip + top < len(found):
            query = {k: v for k, v in args.items() if k not in ("$skip", "$top")}
            query.update({"$top": str(top), "$skip": str(skip + top)})
            prefix = f"me/mailFolders('{folder}')/messages" if folder is not None else "me/messages"
            result["@odata.nextLink"] = self._url(prefix, query)
        return _json(result)

    # ------------------------------------------------------------------ delta
    def _delta(self, request: Request, box: Mailbox, folder: str) -> Response:
        args = request.args
        immutable = self._immutable(request)
        with self.lock:
            key = box.folder_key(folder)
            if key is None:
                return _not_found()
            folder_id = box.folder_id(key)
            if args.get("$skiptoken"):
                cursor = self.cursors.get(args["$skiptoken"])
                if cursor is None or cursor.kind != "skip" or cursor.address != box.address:
                    return self._sync_state_not_found(400, "syncStateNotFound")
                self.cursors.pop(args["$skiptoken"], None)
                return self._delta_page(request, box, cursor, immutable, folder_id)
            token = args.get("$deltatoken")
            if token:
                cursor = self.cursors.get(token)
                if cursor is None or cursor.kind != "delta" or cursor.address != box.address:
                    return self._sync_state_not_found(400, "syncStateNotFound")
                if cursor.expired is not None:
                    return self._expired(cursor, folder_id)
                return self._delta_changes(request, box, cursor, immutable, folder_id)
            # the first round: what the folder holds now
            select = [s.strip() for s in args.get("$select", "").split(",") if s.strip()] or None
            received_after = None
            if args.get("$filter"):
                found = re.fullmatch(
                    r"\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*", args["$filter"], flags=re.IGNORECASE
                )
                if found is None:
                    return graph_error(
                        400,
                        "ErrorInvalidUrlQueryFilter",
                        "Delta on messages supports only $filter=receivedDateTime ge|gt {value}.",
                    )
                try:
                    received_after = (found.group(1).lower(), _parse_iso(found.group(2)))
                except ValueError:
                    return graph_error(400, "BadRequest", f"Invalid DateTimeOffset {found.group(2)!r}.")
            change_type = args.get("changeType")
            if change_type not in (None, "created", "updated", "deleted"):
                return graph_error(400, "BadRequest", "changeType is created, updated or deleted.")
            page_size = self._page_size(request) or (
                int(args["$top"]) if args.get("$top", "").isdigit() else None
            )
            inside = sorted(
                (m for m in box.messages.values() if m.folder == key and self._after(m, received_after)),
                key=lambda m: m.received,
                reverse=True,
            )
            cursor = Cursor(box.address, key, "skip", select, received_after, change_type, page_size)
            cursor.pending = (
                []
                if change_type in ("updated", "deleted")
                else [("item", m.immutable_id, "") for m in inside]
            )
            cursor.end_seq = box.seq
            return self._delta_page(request, box, cursor, immutable, folder_id)

    @staticmethod
    def _after(message: Message, received_after: tuple[str, datetime] | None) -> bool:
        if received_after is None:
            return True
        op, moment = received_after
        return message.received >= moment if op == "ge" else message.received > moment

    def _delta_changes(
        self, request: Request, box: Mailbox, cursor: Cursor, immutable: bool, folder_id: str
    ) -> Response:
        last: dict[str, Change] = {}
        created: set[str] = set()
        for change in box.changes:
            if change.seq <= cursor.seq or change.folder != cursor.folder:
                continue
            last.pop(change.immutable_id, None)  # keep them in the order of their last change
            last[change.immutable_id] = change
            if change.kind == "created":
                created.add(change.immutable_id)
        pending: list[tuple[str, str, str]] = []
        for immutable_id, change in last.items():
            message = box.messages.get(immutable_id)
            if change.kind == "removed" or message is None or message.folder != cursor.folder:
                if cursor.change_type in (None, "deleted"):
                    removed_id = immutable_id if immutable else change.rest_id
                    pending.append(("removed", removed_id, change.reason or "deleted"))
                continue
            kind = "created" if immutable_id in created else "updated"
            if cursor.change_type in (None, kind) and self._after(message, cursor.received_after):
                pending.append(("item", immutable_id, ""))
        follow = Cursor(
            box.address,
            cursor.folder,
            "skip",
            cursor.select,
            cursor.received_after,
            cursor.change_type,
            self._page_size(request) or cursor.page_size,
            pending=pending,
            end_seq=box.seq,
        )
        return self._delta_page(request, box, follow, immutable, folder_id)

    def _delta_page(
        self, request: Request, box: Mailbox, cursor: Cursor, immutable: bool, folder_id: str
    ) -> Response:
        size = self._page_size(request) or cursor.page_size or DEFAULT_PAGE_SIZE
        page, rest = cursor.pending[:size], cursor.pending[size:]
        value: list[dict[str, Any]] = []
        for kind, the_id, reason in page:
            if kind == "removed":
                value.append(
                    {"@odata.type": "#microsoft.graph.message", "id": the_id, "@removed": {"reason": reason}}
                )
                continue
            message = box.messages.get(the_id)
            if message is None or message.folder != cursor.folder:
                continue  # gone since the round began: the next round reports it removed
            value.append(
                {
                    "@odata.type": "#microsoft.graph.message",
                    **self._resource(box, message, immutable, cursor.select),
                }
            )
        result: dict[str, Any] = {
            "@odata.context": self._url("$metadata#Collection(message)"),
            "value": value,
        }
        path = f"me/mailFolders('{folder_id}')/messages/delta"
        if rest:
            token = secrets.token_urlsafe(24)
            cursor.pending = rest
            self.cursors[token] = cursor
            result["@odata.nextLink"] = self._url(path, {"$skiptoken": token})
        else:
            token = secrets.token_urlsafe(24)
            self.cursors[token] = Cursor(
                box.address,
                cursor.folder,
                "delta",
                cursor.select,
                cursor.received_after,
                cursor.change_type,
                cursor.page_size,
                seq=cursor.end_seq,
            )
            result["@odata.deltaLink"] = self._url(path, {"$deltatoken": token})
        return _json(result)

    def _expired(self, cursor: Cursor, folder_id: str) -> Response:
        how = cursor.expired or "410"
        if how == "410":
            query: dict[str, str] = {"$deltatoken": ""}  # delta-query-overview: an empty $deltaToken
            if cursor.select:
                query["$select"] = ",".join(cursor.select)
            if cursor.received_after:
                op, moment = cursor.received_after
                query["$filter"] = f"receivedDateTime {op} {_iso(moment)}"
            location = self._url(f"me/mailFolders('{folder_id}')/messages/delta", query)
            return graph_error(
                cursor.expired_status or 410,
                "resyncRequired",
                "Resync required. Replace any local cached copies with a full sync.",
                {"Location": location},
            )
        return self._sync_state_not_found(cursor.expired_status or 400, how)

    @staticmethod
    def _sync_state_not_found(status: int, code: str) -> Response:
        generation = secrets.randbelow(500)
        return graph_error(
            status,
            code,
            f"The sync state generation is not found; generation={generation};[highest={generation + 3}].",
        )

    # ------------------------------------------------------------------ messages
    def _message_get(self, request: Request, box: Mailbox, message_id: str) -> Response:
        select = [s.strip() for s in request.args.get("$select", "").split(",") if s.strip()] or None
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return _not_found()
            return _json(self._resource(box, message, self._immutable(request), select))

    def _message_value(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return _not_found()
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
                if not isinstance(people, list) or not all(_address_of(p)[1] for p in people):
                    return graph_error(
                        400, "ErrorInvalidRecipients", f"{key} must be recipients with an address."
                    )
                setattr(message, attr, [_recipient(*_address_of(p)) for p in people])
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
            immutable_id=_new_id("AAMkAGImm"),
            rest_id=_new_id("AAMkAGRest"),
            folder=folder,
            internet_message_id=make_msgid(domain="emulator.graph.test"),
            conversation_id=_new_id("AAQkAGConv"),
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
        body = self._body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            key = box.folder_key(folder)
            if key is None:
                return _not_found()
            draft = self._new_draft(box, key)
            refused = self._apply_fields(draft, body)
            if refused is not None:
                return refused
            for given in body.get("attachments") or []:
                added = self._attachment_from(given)
                if isinstance(added, Response):
                    return added
                draft.attachments.append(added)
            self._add(box, draft)
            return _json(self._resource(box, draft, self._immutable(request), None), 201)

    def _message_update(self, request: Request, box: Mailbox, message_id: str) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return _not_found()
            refused = self._apply_fields(message, body)
            if refused is not None:
                return refused
            self._touch(box, message)
            return _json(self._resource(box, message, self._immutable(request), None))

    def _message_delete(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return _not_found()
            self._delete(box, message)
        return Response(status=204)

    def _message_move(self, request: Request, box: Mailbox, message_id: str) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return _not_found()
            destination = box.folder_key(str(body.get("destinationId") or ""))
            if destination is None:
                return graph_error(400, "ErrorInvalidIdMalformed", "Id is malformed.")
            self._move(box, message, destination)
            return _json(self._resource(box, message, self._immutable(request), None), 201)

    def _reply(self, request: Request, box: Mailbox, message_id: str, everyone: bool) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        with self._changing():
            parent = box.find(message_id)
            if parent is None:
                return _not_found()
            draft = self._new_draft(box, "drafts")
            draft.conversation_id = parent.conversation_id
            subject = parent.subject
            draft.subject = subject if subject.lower().startswith("re:") else f"RE: {subject}"
            sender = parent.sender
            if sender is None or _address_of(sender)[1].lower() == box.address:
                draft.to = list(parent.to)  # replying to one's own message answers its recipients
            else:
                draft.to = [sender]
            if everyone:
                others = [p for p in parent.to + parent.cc if _address_of(p)[1].lower() != box.address]
                draft.cc = [p for p in others if p not in draft.to]
            draft.in_reply_to = parent.internet_message_id
            draft.references = " ".join(r for r in (parent.references, parent.internet_message_id) if r)
            comment = str(body.get("comment") or "")
            draft.body = {"contentType": "text", "content": comment}
            refused = self._apply_fields(draft, body.get("message") or {})
            if refused is not None:
                return refused
            self._add(box, draft)
            return _json(self._resource(box, draft, self._immutable(request), None), 201)

    def _create_reply(self, request: Request, box: Mailbox, message_id: str) -> Response:
        return self._reply(request, box, message_id, everyone=False)

    def _create_reply_all(self, request: Request, box: Mailbox, message_id: str) -> Response:
        return self._reply(request, box, message_id, everyone=True)

    def _message_send(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return _not_found()
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
        message.sender = _recipient(box.address, box.address)
        message.sent = now
        message.received = now
        message.raw = self._generate_mime(box, message)
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
        body = self._body(request)
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
                added = self._attachment_from(attachment)
                if isinstance(added, Response):
                    return added
                message.attachments.append(added)
            self._finish_sending(box, message)
            if body.get("saveToSentItems", True) not in (False, "false", "False"):
                self._add(box, message)
        return Response(status=202)

    # ------------------------------------------------------------------ attachments
    @staticmethod
    def _attachment_from(given: Any) -> Attachment | Response:
        if (
            not isinstance(given, dict)
            or given.get("@odata.type", "").lstrip("#") != "microsoft.graph.fileAttachment"
        ):
            return graph_error(
                400, "ErrorInvalidParameter", "Only #microsoft.graph.fileAttachment is emulated."
            )
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
            _new_id("AAMkAGAtt"),
            str(given.get("name") or "attachment"),
            str(given.get("contentType") or "application/octet-stream"),
            content,
            bool(given.get("isInline", False)),
            given.get("contentId"),
        )

    def _attachment_create(self, request: Request, box: Mailbox, message_id: str) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        attachment = self._attachment_from(body)
        if isinstance(attachment, Response):
            return attachment
        with self._changing():
            message = box.find(message_id)
            if message is None:
                return _not_found()
            message.attachments.append(attachment)
            if message.is_draft:
                message.raw = None
            self._touch(box, message)
        return _json(attachment.resource(), 201)

    def _upload_session_create(self, request: Request, box: Mailbox, message_id: str) -> Response:
        """attachment-createuploadsession: a pre-authenticated URL that takes the file in byte
        ranges (PUT with Content-Range, no Authorization); for files of 3 MB to 150 MB."""
        body = self._body(request)
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
                return _not_found()
            token = secrets.token_urlsafe(24)
            self._uploads[token] = UploadSession(
                box.address,
                message.immutable_id,
                str(item.get("name") or "attachment"),
                str(item.get("contentType") or "application/octet-stream"),
                size,
            )
        expires = datetime.now(UTC) + timedelta(hours=1)
        return _json(
            {
                "uploadUrl": f"{request.host_url.rstrip('/')}/_upload/{token}",
                "expirationDateTime": _iso(expires),
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
            return _json(
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
            return _json({"nextExpectedRanges": [f"{len(session.data)}-"]})
        with self._changing():
            self._uploads.pop(token, None)
            box = self.mailbox(session.address)
            message = box.find(session.message_id)
            if message is None:
                return _not_found()
            message.attachments.append(
                Attachment(_new_id("AAMkAGAtt"), session.name, session.content_type, bytes(session.data))
            )
            if message.is_draft:
                message.raw = None
            self._touch(box, message)
        return Response(status=201)

    def _attachments_list(self, request: Request, box: Mailbox, message_id: str) -> Response:
        with self.lock:
            message = box.find(message_id)
            if message is None:
                return _not_found()
            return _json({"value": [a.resource() for a in message.attachments]})

    # ------------------------------------------------------------------ $batch
    def _batch(self, request: Request, box: Mailbox) -> Response:
        body = self._body(request)
        if isinstance(body, Response):
            return body
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_BATCH_REQUESTS:
            return graph_error(400, "BadRequest", "Number of requests inside batch exceeds the limit.")
        ids = [str(r.get("id", "")).lower() if isinstance(r, dict) else "" for r in requests]
        if "" in ids or len(set(ids)) != len(ids):
            return graph_error(
                400, "BadRequest", "Batch request ids must be given and unique (case-insensitive)."
            )
        with self.lock:
            box.batches.append(len(requests))
        statuses: dict[str, int] = {}
        responses: list[dict[str, Any]] = []
        for inner in requests:
            the_id = str(inner["id"])
            depends = [str(d).lower() for d in inner.get("dependsOn") or []]
            if any(statuses.get(d, 424) >= 400 for d in depends):
                answer = graph_error(424, "FailedDependency", "A request this one depends on failed.")
            else:
                built = self._inner_request(inner, request.headers.get("Authorization"))
                answer = built if isinstance(built, Response) else self._inner(built)
            statuses[the_id.lower()] = answer.status_code
            responses.append(self._batch_answer(the_id, answer))
        return _json({"responses": responses})

    def _inner(self, request: Request) -> Response:
        self._local.in_batch = True
        try:
            return self._route(request)
        finally:
            self._local.in_batch = False

    @staticmethod
    def _inner_request(inner: dict[str, Any], authorization: str | None) -> Request | Response:
        method = str(inner.get("method") or "").upper()
        url = str(inner.get("url") or "")
        if not method or not url:
            return graph_error(400, "BadRequest", "A batch request needs a method and a url.")
        if urlsplit(url).scheme:
            return graph_error(
                400, "BadRequest", "The url of a batch request is relative (like /me/messages)."
            )
        target = urlsplit("/v1.0/" + url.lstrip("/"))
        headers = {str(k): str(v) for k, v in (inner.get("headers") or {}).items()}
        headers.pop("Authorization", None)
        if authorization:
            headers["Authorization"] = authorization  # the outer request's credentials apply
        data: bytes | None = None
        if "body" in inner and inner["body"] is not None:
            content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
            if content_type is None:
                return graph_error(
                    400, "BadRequest", "A batch request with a body needs a Content-Type header."
                )
            given = inner["body"]
            if isinstance(given, (dict, list)):
                data = json.dumps(given).encode()
            else:  # json-batching.md: otherwise a base64 value (an image, MIME...)
                text = str(given)
                try:
                    data = base64.b64decode(
                        text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None
                    )
                except ValueError:
                    return graph_error(400, "BadRequest", "A body that is not JSON must be base64.")
        return EnvironBuilder(
            path=target.path,
            query_string=target.query,
            method=method,
            headers=list(headers.items()),
            data=data,
        ).get_request()

    @staticmethod
    def _batch_answer(the_id: str, answer: Response) -> dict[str, Any]:
        headers = {"Cache-Control": "no-cache"}
        for name in ("Content-Type", "Retry-After", "Location"):
            if name in answer.headers:
                headers[name] = answer.headers[name]
        result: dict[str, Any] = {"id": the_id, "status": answer.status_code, "headers": headers}
        data = answer.get_data()
        if data:
            if answer.mimetype == "application/json":
                result["body"] = json.loads(data)
            else:  # not JSON ($value): base64, as Graph answers it (and the SDKs decode)
                result["body"] = base64.b64encode(data).decode()
        return result

    # ------------------------------------------------------------------ controls over HTTP
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
            return _json({"error": "address (a mailbox address) is required"}, 400)
        try:
            return self._control(request.method, action, address, data)
        except KeyError as missing:
            return _json({"error": f"not found: {missing}"}, 404)
        except FolderExists as exists:
            return _json({"error": str(exists)}, 409)
        except (TypeError, ValueError) as wrong:
            return _json({"error": str(wrong)}, 400)

    def _control(self, method: str, action: str, address: str, data: dict[str, Any]) -> Response:
        if method == "GET" and action == "messages":
            return _json({"address": address, "messages": self.messages_of(address, data.get("folder"))})
        if method == "GET" and action == "folders":
            return _json({"address": address, "folders": self.folders_of(address)})
        if method == "GET" and action == "raw":
            return Response(self.raw_of(address, str(data["id"])), content_type="message/rfc822")
        if method == "GET" and action == "stats":
            box = self.mailbox(address)
            return _json(
                {
                    "address": address,
                    "requests": list(box.requests),
                    "batches": list(box.batches),
                    "maxConcurrency": box.max_in_flight,
                    "sent": len(box.outbox),
                }
            )
        if method != "POST":
            return _json({"error": f"{method} /_emulator/graph/{action} is not an emulator control"}, 404)
        if action in ("arrive", "send_from_client"):
            raw = data.get("raw")
            if not isinstance(raw, str) or not raw.strip():
                raise ValueError("raw (the message as RFC 5322 text) is required")
            if action == "arrive":
                received = _parse_iso(str(data["received"])) if data.get("received") else None
                message = self.arrive(address, raw.encode(), str(data.get("folder") or "inbox"), received)
            else:
                message = self.send_from_client(address, raw.encode())
            return _json(self._control_view(message))
        if action == "move_in_client":
            return _json(
                self._control_view(self.move_in_client(address, str(data["id"]), str(data["folder"])))
            )
        if action == "create_folder":
            parent = data.get("parent")
            made = self.create_folder(
                address, str(data.get("displayName") or ""), str(parent) if parent else None
            )
            with self.lock:
                path = self.mailbox(address).display_path(made)
            return _json({"id": made, "path": path})
        if action == "delete_in_client":
            self.delete_in_client(address, str(data["id"]))
            return _json({"deleted": str(data["id"])})
        if action == "expire_delta":
            status = int(data["status"]) if data.get("status") else None
            expired = self.expire_delta(address, str(data["folder"]), str(data.get("how") or "410"), status)
            return _json({"expired": expired})
        if action == "throttle":
            self.throttle(
                address,
                int(data["n"]),
                int(data.get("retry_after", 1)),
                data.get("kind"),
                str(data.get("code") or "ApplicationThrottled"),
            )
            return _json({"address": address, "n": int(data["n"])})
        if action == "limit_concurrency":
            limit = data.get("limit")
            self.limit_concurrency(address, int(limit) if limit is not None else None)
            return _json({"address": address, "limit": limit})
        if action == "slow_down":
            self.slow_down(address, float(data["seconds"]))
            return _json({"address": address, "seconds": float(data["seconds"])})
        return _json({"error": f"no emulator control {action!r}"}, 404)

    @staticmethod
    def _control_view(message: Message) -> dict[str, Any]:
        return {
            "id": message.immutable_id,
            "restId": message.rest_id,
            "folder": message.folder,
            "internetMessageId": message.internet_message_id,
            "conversationId": message.conversation_id,
        }

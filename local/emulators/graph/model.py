"""The model of Graph mail: mailboxes, their folders and messages, the change log delta reads,
and the cursors its `$skiptoken`s and `$deltatoken`s stand for. Data only: what changes it is in
`store.py`."""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

from local.emulators.faults import FaultState

WELL_KNOWN = {
    "inbox": "Inbox",
    "sentitems": "Sent Items",
    "drafts": "Drafts",
    "deleteditems": "Deleted Items",
    "archive": "Archive",
}
ROOT = "msgfolderroot"  # mailfolder.md: the well-known name of the root folder (the Top of Information Store)
ROOT_NAME = "Top of Information Store"


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    moment = datetime.fromisoformat(text.strip().strip("'"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def new_id(prefix: str) -> str:
    return prefix + base64.urlsafe_b64encode(secrets.token_bytes(33)).decode()


def recipient(name: str, address: str) -> dict[str, Any]:
    return {"emailAddress": {"name": name or address, "address": address}}


def recipients(header: str | None) -> list[dict[str, Any]]:
    return [recipient(name, addr) for name, addr in getaddresses([header]) if addr] if header else []


def address_of(someone: Any) -> tuple[str, str]:
    box = someone.get("emailAddress", {}) if isinstance(someone, dict) else {}
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
            "lastModifiedDateTime": iso(datetime.now(UTC)),
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
    expand: list[str] | None = None  # the extended properties each message comes with ($expand)


@dataclass
class Mailbox(FaultState):
    """A mailbox; its faults (throttle, latency, concurrency limit and count) come from FaultState."""

    address: str
    messages: dict[str, Message] = field(default_factory=dict)  # immutable id -> message
    rest_ids: dict[str, str] = field(default_factory=dict)  # current REST id -> immutable id
    changes: list[Change] = field(default_factory=list)
    seq: int = 0
    requests: list[str] = field(default_factory=list)  # route kinds, in order ("batch" for a $batch)
    batches: list[int] = field(default_factory=list)  # requests in each $batch
    outbox: list[bytes] = field(default_factory=list)  # every MIME that left the mailbox
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

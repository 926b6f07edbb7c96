"""Microsoft 365 / Outlook mail through Microsoft Graph v1.0 (requests, no SDK).

- The transport (`GraphClient`: throttling, Retry-After, `$batch`, 4 in flight per mailbox)
  is in transport.py, shared with Graph calendar.
- Synced folders (MAIL-8): the folders the account's settings name (a well-known name such as
  `inbox` or `archive`, or a display path such as `Clients` or `Inbox/Acme`, found with
  `$filter=displayName eq '…'`), Inbox when none is named, and always Sent Items.
- `GraphDeltaSource`: the ChangeSource of Microsoft mailboxes. Delta runs per synced folder;
  the stored cursor is a JSON object folder → deltaLink, and the page token says which
  folders and which `@odata.nextLink` come next (both followed verbatim). Added or changed
  messages not yet in the CRM are fetched as MIME (`$value`) in batches; `@removed` items
  become MAIL-10 removals, except a move into another synced folder. 410 Gone or
  `syncStateNotFound` (any casing) raise CursorExpired: a full resync (SYNC-3).
- Batches by weight: delta asks for each message's size (PidTagMessageSizeExtended, expanded
  as a single-value extended property; Graph keeps the `$expand` in its next and delta links),
  and a delta page's messages are fetched and handed over in batches of at most PAGE_SIZE
  messages and BATCH_BYTES by those sizes; the rest of the page waits in a `held:` page token,
  so a worker or an import step holds one batch of MIME at a time.
- `GraphImport`: resync and back-import through the state machine, folder by folder.
- `GraphMailHooks`: a new account's first cursor (delta from the connection time on).
- `GraphActions`: send (draft with our Message-ID, or `createReply` for a reply, attach,
  send, read back), find a sent copy by Message-ID, archive and trash (MAIL-9).
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aws_lambda_powertools import Logger

from crmsync.accounts.models import Account, TokenSet
from crmsync.errors import PermanentError, TransientError
from crmsync.mail.models import ProviderMessage
from crmsync.providers.microsoft.folders import WELL_KNOWN_FOLDERS, synced_folders
from crmsync.providers.microsoft.transport import (
    IMMUTABLE,
    GraphClient,
    body_of,
    error_code,
)
from crmsync.sync.core import ChangePage, CursorExpired, CursorStore, Removal

if TYPE_CHECKING:
    from crmsync.resync import ResyncJob

logger = Logger()

PAGE_SIZE = 80  # four full $batch requests of 20 per delta page, one per slot
# MIME one batch may hold: a worker fetches a batch, hands it over and lets it go, so this and one
# message over it (Exchange Online takes 35 MB by default, 150 MB at most) bound what it holds.
BATCH_BYTES = 24 * 1024 * 1024
_HELD = "held:"  # a page token of ours: the rest of a delta page's messages, still to fetch
# PidTagMessageSizeExtended (PT_I8, property tag 0x0E08): the message's size in bytes, as a string
SIZE_PROPERTY = "Long 0x0E08"
_EXPAND_SIZE = f"singleValueExtendedProperties($filter=id eq '{SIZE_PROPERTY}')"
SINGLE_POST_MAX = 3 * 1024 * 1024  # an attachment under 3 MB goes in one POST
UPLOAD_CHUNK = 12 * 320 * 1024  # 3.75 MiB: upload ranges are multiples of 320 KiB
CLIENT_REUSE_S = 120
_SELECT = "id,conversationId,internetMessageId,parentFolderId,receivedDateTime"


def _is_expired_cursor(status: int, body: Any) -> bool:
    return status == 410 or error_code(body).lower() == "syncstatenotfound"


def _odata_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def find_folder(client: GraphClient, name: str) -> str | None:
    """Where a synced folder is: a well-known name as it is, a display path ("Clients",
    "Inbox/Acme") walked segment by segment to its folder id; None when it does not exist."""
    segments = [part.strip() for part in name.split("/") if part.strip()]
    if not segments:
        return None
    where: str | None = None
    if segments[0].lower() in WELL_KNOWN_FOLDERS:
        where, segments = segments[0].lower(), segments[1:]
    for segment in segments:
        parent = f"/me/mailFolders/{quote(where, safe='')}/childFolders" if where else "/me/mailFolders"
        query = quote(f"displayName eq {_odata_string(segment)}", safe="'")
        found = client.json(
            "GET", f"{parent}?$filter={query}&$select=id,displayName", None, "a folder lookup"
        )
        values = [v for v in found.get("value") or [] if isinstance(v, dict) and v.get("id")]
        if not values:
            return None
        where = str(values[0]["id"])
    return where


def _mime_of(item: dict[str, Any]) -> bytes | None:
    """The MIME in a batch answer to GET …/$value: base64 when not JSON (JSON batching)."""
    body = item.get("body")
    if isinstance(body, str):
        try:
            return base64.b64decode(body, validate=False)
        except ValueError:
            return body.encode()
    return None


class GraphMailbox:
    """What the source, the pages and the actions share: a client per account and MIME fetches."""

    def __init__(
        self,
        access_token: Callable[[str], str],
        api_base: str,
        verify: str | bool,
        refused: Callable[[str, str], str] | None = None,
    ) -> None:
        self._token = access_token  # Credentials.access_token: refreshes, or raises AccountPaused
        self._base = api_base
        self._verify = verify
        self._clients: dict[str, tuple[float, GraphClient]] = {}
        # Credentials.refused: after a 401, a new token now (the retry uses it), or the account
        # paused for re-authorisation (ACC-9), instead of the same token until it expires
        self._refused = refused

    def _forget(self, account_id: str, token: str) -> None:
        self._clients.pop(account_id, None)
        if self._refused is not None:
            self._refused(account_id, token)

    def client(self, account: Account, token: str | None = None) -> GraphClient:
        """A client for the account, reused for a couple of minutes (one token lookup and one
        connection pool across a sync's pages; tokens come with at least 5 minutes to live)."""
        if token is not None:
            return GraphClient(token, self._base, self._verify, account.account_id)
        now = time.monotonic()
        cached = self._clients.get(account.account_id)
        if cached is None or cached[0] < now:
            token = self._token(account.account_id)
            fresh = GraphClient(
                token,
                self._base,
                self._verify,
                account.account_id,
                partial(self._forget, account.account_id, token),
            )
            cached = (now + CLIENT_REUSE_S, fresh)
            self._clients[account.account_id] = cached
        return cached[1]

    @staticmethod
    def fetch(client: GraphClient, items: list[dict[str, Any]], folder: str) -> list[ProviderMessage]:
        """MIME of each message in batches; one gone meanwhile (404) is skipped."""
        if not items:
            return []
        calls = [
            {
                "id": str(n),
                "method": "GET",
                "url": f"/me/messages/{quote(i['id'], safe='')}/$value",
                "headers": {"Prefer": IMMUTABLE},  # an inner request carries its own headers
            }
            for n, i in enumerate(items)
        ]
        answers = client.batch(calls)
        messages = []
        for n, item in enumerate(items):
            answer = answers.get(str(n)) or {}
            status = int(answer.get("status", 0))
            if status == 404:
                continue
            raw = _mime_of(answer) if status == 200 else None
            if raw is None:
                raise PermanentError(f"graph answered {status} to a message's MIME")
            messages.append(
                ProviderMessage(
                    provider_message_id=item["id"],
                    provider_thread_id=item.get("conversationId"),
                    labels=[folder],
                    raw=raw,
                )
            )
        return messages


def _delta_start(where: str, since: datetime | None) -> str:
    path = f"/me/mailFolders/{quote(where, safe='')}/messages/delta?$select={_SELECT}"
    path += f"&$expand={quote(_EXPAND_SIZE, safe='$()=')}"  # each message's size, in every later link
    if since is not None:
        stamp = since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path += f"&$filter=receivedDateTime+ge+{stamp}"
    return path


def _page(client: GraphClient, url: str) -> dict[str, Any]:
    response = client.request("GET", url, headers={"Prefer": f"{IMMUTABLE}, odata.maxpagesize={PAGE_SIZE}"})
    body = body_of(response)
    if _is_expired_cursor(response.status_code, body):
        raise CursorExpired(f"graph no longer knows the delta token ({response.status_code})")
    if response.status_code >= 400:
        raise PermanentError(f"graph answered {response.status_code} to a delta page: {error_code(body)}")
    return dict(body)


def _is_size(property_id: Any) -> bool:
    """Whether an extended property's id names SIZE_PROPERTY: Graph answers "Long 0xe08"."""
    kind, _, tag = str(property_id).strip().partition(" ")
    try:
        return kind.lower() == "long" and int(tag.strip(), 16) == 0x0E08
    except ValueError:
        return False


def size_of(item: dict[str, Any]) -> int:
    """A delta item's size in bytes from its expanded SIZE_PROPERTY; 0 when it has none."""
    for prop in item.get("singleValueExtendedProperties") or []:
        if isinstance(prop, dict) and _is_size(prop.get("id")):
            try:
                return max(0, int(str(prop.get("value"))))
            except ValueError:
                return 0
    return 0


def by_weight(
    items: Sequence[dict[str, Any]], count: int = PAGE_SIZE, budget: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The first batch to fetch and the rest: at most `count` items and, past the first one, no
    more than `budget` (BATCH_BYTES) bytes by their `size` (one over the budget goes alone)."""
    budget = BATCH_BYTES if budget is None else budget
    taken: list[dict[str, Any]] = []
    weight = 0
    for item in items[:count]:
        size = int(item.get("size") or 0)
        if taken and weight + size > budget:
            break
        taken.append(item)
        weight += size
    return taken, list(items[len(taken) :])


def _held_item(item: dict[str, Any]) -> dict[str, Any]:
    """What a message still to fetch needs: its id, its conversation and its size."""
    size = int(item["size"]) if "size" in item else size_of(item)
    return {"id": item["id"], "conversationId": item.get("conversationId"), "size": size}


def _sizes(client: GraphClient, message_ids: Sequence[str]) -> dict[str, int]:
    """Each message's size, read in `$batch` (20 a request, 4 in flight): for the pages of a
    delta link made before delta asked for sizes (Graph keeps a link's query as it was made, so
    such an account gets sizes this way until its next resync). One gone meanwhile is left out."""
    calls = [
        {
            "id": str(n),
            "method": "GET",
            "url": f"/me/messages/{quote(m, safe='')}?$select=id&$expand={quote(_EXPAND_SIZE, safe='$()=')}",
            "headers": {"Prefer": IMMUTABLE},
        }
        for n, m in enumerate(message_ids)
    ]
    answers = client.batch(calls)
    found: dict[str, int] = {}
    for n, message_id in enumerate(message_ids):
        answer = answers.get(str(n)) or {}
        body = answer.get("body")
        if int(answer.get("status", 0)) == 200 and isinstance(body, dict):
            found[message_id] = size_of(body)
    return found


def _hand_over(
    mailbox: GraphMailbox, client: GraphClient, held: dict[str, Any]
) -> tuple[list[ProviderMessage], list[dict[str, Any]], str | None]:
    """One batch by weight of a read delta page (`held`): its messages, the page's items still to
    fetch, and the page token that goes on (the held rest, else the run's next place or None)."""
    now, later = by_weight(held["items"])
    messages = mailbox.fetch(client, now, held["folder"])
    if later:
        return messages, now, _HELD + json.dumps({**held, "items": later})
    following = held["after"]
    return messages, now, json.dumps(following) if following["todo"] else None


def _nothing_left(state: dict[str, Any]) -> dict[str, Any]:
    """A run with no folder left to read: no messages, and its place (the links) as it is."""
    return {"folder": "", "items": [], "removed": [], "after": state}


def _held(page_token: str | None) -> dict[str, Any] | None:
    if page_token is None or not page_token.startswith(_HELD):
        return None
    found: dict[str, Any] = json.loads(page_token[len(_HELD) :])
    return found


def _removal(item: dict[str, Any]) -> Removal:
    reason = str((item.get("@removed") or {}).get("reason", "")).lower()
    return Removal(item_id=item["id"], how="deleted" if reason == "deleted" else "left_synced_folders")


def _run_state(page_token: str | None, folders: tuple[str, ...], links: dict[str, str]) -> dict[str, Any]:
    """A run's place: the folders still to read (the first one's `@odata.nextLink` in `next`) and
    the deltaLinks so far. A folder dropped from the settings meanwhile is left out."""
    state: dict[str, Any] = json.loads(page_token) if page_token else {}
    if "todo" not in state:
        return {
            "todo": list(folders),
            "next": None,
            "links": {k: v for k, v in links.items() if k in folders},
        }
    todo = [f for f in state["todo"] if f in folders]
    following = state.get("next") if todo and state["todo"][0] == todo[0] else None
    return {
        "todo": todo,
        "next": following,
        "links": {k: v for k, v in state["links"].items() if k in folders},
    }


def _first_readable(
    client: GraphClient, account: Account, state: dict[str, Any], since: datetime | None
) -> str | None:
    """The URL to read next, moving `state` past folders the mailbox does not have; None when no
    folder is left. A folder named in the settings but missing is skipped with a warning and
    looked for again on the next run (it starts from the connection date once it exists)."""
    while state["todo"]:
        folder = state["todo"][0]
        url = state["next"] or state["links"].get(folder)
        if url is not None:
            return str(url)
        where = find_folder(client, folder)
        if where is not None:
            return _delta_start(where, since)
        logger.warning(
            "a folder chosen for sync is not in the mailbox; skipped",
            extra={"account_id": account.account_id, "folder": folder},
        )
        state["todo"], state["next"] = state["todo"][1:], None
    return None


def _advance(state: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """The state after one delta page: the same folder's next page, or the next folder with
    this one's deltaLink kept. The run is done when no folder is left to read."""
    if "@odata.nextLink" in body:
        return {**state, "next": body["@odata.nextLink"]}
    links = {**state["links"], state["todo"][0]: body["@odata.deltaLink"]}
    return {"todo": state["todo"][1:], "next": None, "links": links}


class GraphDeltaSource:
    def __init__(self, mailbox: GraphMailbox, known: Callable[[Account, Sequence[str]], set[str]]) -> None:
        self._mailbox = mailbox
        self._known = known  # MailSync.settled_many: what the CRM holds is not fetched again

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[ProviderMessage]:
        """One batch of messages at a time: a delta page (up to PAGE_SIZE items, each with its
        size) is read once, and its added messages are fetched and handed over in batches of at
        most PAGE_SIZE messages and BATCH_BYTES (by_weight); the rest waits in a `held:` page
        token. The page's removals come with its last batch; the cursor each page carries is the
        run's links after the delta page (it moves once the last page is in, as before)."""
        client = self._mailbox.client(account)
        held = _held(page_token) or self._read(client, account, cursor, page_token)
        messages, _, following = _hand_over(self._mailbox, client, held)
        last = following is None or not following.startswith(_HELD)
        return ChangePage(
            items=messages,
            removed=[Removal.model_validate(r) for r in held["removed"]] if last else [],
            next_page=following,
            cursor=json.dumps(held["after"]["links"], sort_keys=True),
        )

    def _read(
        self, client: GraphClient, account: Account, cursor: str, page_token: str | None
    ) -> dict[str, Any]:
        """The next delta page of the run, as what its batches need: the folder, the messages
        not yet in the CRM (id, conversation, size), the removals, and the run's place after it
        (with no folder left to read: nothing, and the place as it is)."""
        folders = synced_folders(account)
        stored: dict[str, str] = json.loads(cursor) if cursor.startswith("{") else {}
        state = _run_state(page_token, folders, stored)
        url = _first_readable(client, account, state, account.connected_at)
        if url is None:
            return _nothing_left(state)
        folder = state["todo"][0]
        body = _page(client, url)
        items = list(body.get("value", []))
        removed = self._removals(client, [i for i in items if "@removed" in i], folders)
        added = [i for i in items if "@removed" not in i]
        known = self._known(account, [i["id"] for i in added]) if added else set()
        fresh = [i for i in added if i["id"] not in known]
        unsized = [i["id"] for i in fresh if "singleValueExtendedProperties" not in i]
        if len(fresh) > 1 and unsized:  # a delta link from before sizes were asked for
            sizes = _sizes(client, unsized)
            fresh = [{**i, "size": sizes[i["id"]]} if i["id"] in sizes else i for i in fresh]
        return {
            "folder": folder,
            "items": [_held_item(i) for i in fresh],
            "removed": [r.model_dump(mode="json") for r in removed],
            "after": _advance(state, body),
        }

    @staticmethod
    def _removals(
        client: GraphClient, items: list[dict[str, Any]], folders: tuple[str, ...]
    ) -> list[Removal]:
        """MAIL-10. A message moved out of one synced folder into another is no removal: where
        several folders sync, each moved message's parentFolderId is checked in one $batch."""
        removals = [_removal(i) for i in items]
        moved = [r.item_id for r in removals if r.how == "left_synced_folders"]
        if not moved or len(folders) < 2:
            return removals
        well_known = [f for f in folders if f in WELL_KNOWN_FOLDERS]
        calls: list[dict[str, Any]] = [
            {"id": f"f{n}", "method": "GET", "url": f"/me/mailFolders/{f}?$select=id"}
            for n, f in enumerate(well_known)
        ]
        calls += [
            {
                "id": f"m{n}",
                "method": "GET",
                "url": f"/me/messages/{quote(m, safe='')}?$select=id,parentFolderId",
                "headers": {"Prefer": IMMUTABLE},
            }
            for n, m in enumerate(moved)
        ]
        answers = client.batch(calls)

        def found(key: str) -> dict[str, Any] | None:
            answer = answers.get(key) or {}
            body = answer.get("body")
            return body if int(answer.get("status", 0)) == 200 and isinstance(body, dict) else None

        synced_ids = {str(b["id"]) for n in range(len(well_known)) if (b := found(f"f{n}")) and b.get("id")}
        synced_ids |= {w for f in folders if f not in WELL_KNOWN_FOLDERS and (w := find_folder(client, f))}
        still = {
            m for n, m in enumerate(moved) if (b := found(f"m{n}")) and b.get("parentFolderId") in synced_ids
        }
        return [r for r in removals if r.item_id not in still]

    def is_newer(self, candidate: str, current: str) -> bool:
        """Delta links are not ordered: the links a completed run ends with replace the old ones."""
        return candidate != current


class GraphMailHooks:
    """A new Microsoft mailbox's first cursor: each synced folder's delta from the connection on
    (`receivedDateTime ge` connected_at), paged to its deltaLink. A reconnect keeps its cursor."""

    def __init__(self, mailbox: GraphMailbox, cursors: CursorStore) -> None:
        self._mailbox = mailbox
        self._cursors = cursors

    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        if not account.is_mailbox or not tokens.access_token:
            return
        client = self._mailbox.client(account, tokens.access_token)
        state = _run_state(None, synced_folders(account), {})
        while (url := _first_readable(client, account, state, account.connected_at)) is not None:
            state = _advance(state, _page(client, url))
        self._cursors.advance(
            account.account_id, "mail", json.dumps(state["links"], sort_keys=True), expected=None
        )

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None:
        return None  # subscriptions are removed by their own hooks; delta needs no teardown


class GraphImport:
    """Resync (SYNC-3) and back-import (ACC-5) of a Microsoft mailbox through the state
    machine: one delta page per step, folder after folder; the sync core hands the messages to
    the engine. A resync ends with each folder's fresh deltaLink as the new cursor."""

    def __init__(self, mailbox: GraphMailbox) -> None:
        self._mailbox = mailbox

    def page(self, account: Account, job: ResyncJob) -> ChangePage[ProviderMessage]:
        """One batch by weight per step (by_weight): a delta page is read once, and the messages
        still to fetch wait in the step's `held:` page token, so a step holds one batch of MIME."""
        client = self._mailbox.client(account)
        held = _held(job.page_token) or self._read(client, account, job)
        messages, now, following = _hand_over(self._mailbox, client, held)
        done = following is None
        cursor = (
            json.dumps(held["after"]["links"], sort_keys=True) if done and job.kind == "mail_resync" else None
        )
        return ChangePage(items=messages, next_page=following, cursor=cursor, listed=len(now))

    @staticmethod
    def _read(client: GraphClient, account: Account, job: ResyncJob) -> dict[str, Any]:
        """The step's next delta page: the folder, its messages (id, conversation, size) and the
        run's place after it (with no folder left to read: nothing, and the place as it is)."""
        since = job.since if job.kind == "mail_import" else None
        state = _run_state(job.page_token, synced_folders(account), {})
        url = _first_readable(client, account, state, since)
        if url is None:
            return _nothing_left(state)
        try:
            body = _page(client, url)
        except CursorExpired as error:  # a page link went stale mid-run: this folder starts over
            raise TransientError(str(error)) from error
        items = [_held_item(i) for i in body.get("value", []) if "@removed" not in i]
        return {"folder": state["todo"][0], "items": items, "removed": [], "after": _advance(state, body)}


def _recipients(values: list[str]) -> list[dict[str, Any]]:
    pairs = email.utils.getaddresses(values)
    return [{"emailAddress": {"address": a, **({"name": n} if n else {})}} for n, a in pairs if a]


class GraphActions:
    """MailSender and MailboxActions for Microsoft mailboxes."""

    def __init__(self, mailbox: GraphMailbox) -> None:
        self._mailbox = mailbox

    def send(
        self, account: Account, raw: bytes, reply_to: tuple[str, str | None] | None
    ) -> tuple[str, str | None]:
        """Draft (or createReply on the parent, so Graph sets In-Reply-To), attachments, send,
        then the message read back: with immutable ids, the Sent Items copy keeps the draft's id."""
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        client = self._mailbox.client(account)
        text = parsed.get_body(preferencelist=("html", "plain"))
        content = {
            "contentType": "html" if text is not None and text.get_content_subtype() == "html" else "text",
            "content": str(text.get_content()) if text is not None else "",
        }
        fields: dict[str, Any] = {
            "subject": str(parsed.get("Subject", "")),
            "body": content,
            "toRecipients": _recipients([str(v) for v in parsed.get_all("To", [])]),
            "ccRecipients": _recipients([str(v) for v in parsed.get_all("Cc", [])]),
            "bccRecipients": _recipients([str(v) for v in parsed.get_all("Bcc", [])]),
            "internetMessageId": str(parsed.get("Message-ID", "")),  # writable while a draft
        }
        if reply_to is not None:
            parent = quote(reply_to[0], safe="")
            draft = client.json("POST", f"/me/messages/{parent}/createReply", {}, "createReply")
            client.json("PATCH", f"/me/messages/{quote(draft['id'], safe='')}", fields, "the reply draft")
        else:
            draft = client.json("POST", "/me/messages", fields, "a new draft")
        draft_id = quote(draft["id"], safe="")
        # one file decoded at a time, and its encoded text let go once it is attached, so the
        # parsed copy of the message shrinks as the files go up
        for part in list(parsed.iter_attachments()):
            data = part.get_payload(decode=True)
            self._attach(
                client,
                draft_id,
                part.get_filename() or "attachment",
                part.get_content_type(),
                data if isinstance(data, bytes) else b"",
            )
            del data
            part.set_payload("")
        client.json("POST", f"/me/messages/{draft_id}/send", None, "send")
        sent = client.json(
            "GET", f"/me/messages/{draft_id}?$select=id,conversationId", None, "the sent message"
        )
        return str(sent["id"]), sent.get("conversationId")

    @staticmethod
    def _attach(client: GraphClient, draft_id: str, name: str, content_type: str, data: bytes) -> None:
        """Under 3 MB in one POST; from 3 MB on through an upload session, in ranges that are
        multiples of 320 KiB (attachment-createuploadsession)."""
        if len(data) < SINGLE_POST_MAX:
            body = {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": name,
                "contentType": content_type,
                "contentBytes": base64.b64encode(data).decode(),
            }
            client.json("POST", f"/me/messages/{draft_id}/attachments", body, "an attachment")
            return
        item = {"AttachmentItem": {"attachmentType": "file", "name": name, "size": len(data)}}
        path = f"/me/messages/{draft_id}/attachments/createUploadSession"
        session = client.json("POST", path, item, "an upload session")
        for start in range(0, len(data), UPLOAD_CHUNK):
            chunk = data[start : start + UPLOAD_CHUNK]
            end = start + len(chunk) - 1
            response = client.upload(session["uploadUrl"], chunk, f"bytes {start}-{end}/{len(data)}")
            if response.status_code not in (200, 201):
                raise PermanentError(f"graph answered {response.status_code} to an attachment range")

    def find_sent(self, account: Account, rfc822_message_id: str) -> tuple[str, str | None] | None:
        quoted = rfc822_message_id.replace("'", "''")
        found = self._mailbox.client(account).json(
            "GET",
            f"/me/mailFolders/sentitems/messages?$filter=internetMessageId+eq+'{quote(quoted, safe='<>@')}'"
            "&$select=id,conversationId",
            None,
            "a sent-items search",
        )
        values = found.get("value") or []
        return (str(values[0]["id"]), values[0].get("conversationId")) if values else None

    def _move(self, account: Account, provider_message_id: str, folder: str) -> bool:
        response = self._mailbox.client(account).request(
            "POST", f"/me/messages/{quote(provider_message_id, safe='')}/move", {"destinationId": folder}
        )
        if response.status_code == 404:
            return False
        if response.status_code >= 400:
            raise PermanentError(
                f"graph answered {response.status_code} to a move: {error_code(body_of(response))}"
            )
        return True

    def archive(self, account: Account, provider_message_id: str) -> bool:
        return self._move(account, provider_message_id, "archive")

    def trash(self, account: Account, provider_message_id: str) -> bool:
        return self._move(account, provider_message_id, "deleteditems")

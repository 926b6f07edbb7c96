"""Gmail through google-api-python-client (static gmail.v1 discovery document).

GmailHistorySource pages `users.history.list` from the stored historyId and fetches the added
messages in `raw` format, up to 50 per batch request; GmailHooks gives a new account its first
cursor and, when a Pub/Sub topic is configured, its watch. Every endpoint comes from configuration
(the batch endpoint too: the client builds it from the discovery document's rootUrl, not from
`api_endpoint`, so it is made here from the configured base)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from crmsync.accounts.models import Account, TokenSet
from crmsync.mail.models import ProviderMessage, RemovalKind
from crmsync.providers.google.client import (
    AccountClients,
    google_service,
    raise_transient,
    status_of,
)
from crmsync.sync.core import ChangePage, CursorExpired, CursorStore, Removal

if TYPE_CHECKING:
    from crmsync.resync import ResyncJob

logger = Logger()

HISTORY_TYPES = ["messageAdded", "labelAdded", "labelRemoved", "messageDeleted"]
_HELD = "held:"  # a page token of ours: the rest of a history page's messages, still to fetch
BATCH_SIZE = 50  # Gmail allows 100 calls per batch and advises at most 50 (larger ones get throttled)
# Raw mail one batch may hold: a worker fetches a batch, hands it over and lets it go, so this and
# one message over it (Gmail takes up to 25 MB, base64 makes it a third larger on the wire) bound
# the raw mail it holds at once.
BATCH_BYTES = 24 * 1024 * 1024


@cache
def _discovery() -> Any:
    from googleapiclient.discovery_cache import get_static_doc

    return get_static_doc("gmail", "v1")


def gmail_service(access_token: str, api_base: str, refresh: Callable[[str], str] | None = None) -> Any:
    """A gmail.v1 client on `api_base`; imported and built only where Gmail is called.
    `refresh(refused token)` gives a new token after a 401 (client._bearer)."""
    return google_service(_discovery(), access_token, api_base.rstrip("/") + "/", refresh, "gmail")


class GmailClients(AccountClients):
    """An account's gmail.v1 client: its token, and after a 401 a new one or the account paused
    for re-authorisation (Credentials.refused, ACC-9)."""

    def _gmail(self, account: Account) -> Any:
        account_id = account.account_id
        return gmail_service(self._token(account_id), self._base, self._refresh_for(account_id))


def _is_rate_limit(error: Any) -> bool:
    return status_of(error) == 429 or (
        status_of(error) == 403 and b"ateLimitExceeded" in (getattr(error, "content", b"") or b"")
    )


@cache
def _batch_path() -> str:
    return str(json.loads(_discovery()).get("batchPath") or "batch")


def _raise_transient(error: Any, what: str) -> None:
    raise_transient(error, what, "gmail", _is_rate_limit)


def fetch_raw_batched(gmail: Any, api_base: str, message_ids: Sequence[str]) -> list[ProviderMessage]:
    """The messages in raw format, in the given order, BATCH_SIZE per batch request; the ones
    deleted meanwhile (404) are left out. Throttling or a 5xx, of the batch or of any call in
    it, raises TransientError: the caller has not moved its cursor, so a retry starts over."""
    from googleapiclient.errors import HttpError
    from googleapiclient.http import BatchHttpRequest

    found: list[ProviderMessage] = []
    answers: dict[str, tuple[Any, HttpError | None]] = {}

    def answered(request_id: str, response: Any, error: HttpError | None) -> None:
        answers[request_id] = (response, error)

    uri = f"{api_base.rstrip('/')}/{_batch_path()}"
    messages = gmail.users().messages()  # made once: each resource is built from the discovery document
    for start in range(0, len(message_ids), BATCH_SIZE):
        chunk = range(start, min(start + BATCH_SIZE, len(message_ids)))
        batch = BatchHttpRequest(callback=answered, batch_uri=uri)
        for index in chunk:
            call = messages.get(userId="me", id=message_ids[index], format="raw")
            batch.add(call, request_id=str(index))
        try:
            batch.execute()
        except HttpError as error:  # the batch request itself was refused
            _raise_transient(error, "a batch request")
            raise
        for index in chunk:
            response, failure = answers.pop(str(index))
            if failure is None:
                found.append(_provider_message(response))
            elif status_of(failure) != 404:  # 404: deleted since the history was written, nothing to sync
                _raise_transient(failure, "a message in a batch")
                raise failure
    return found


def sizes_of(gmail: Any, api_base: str, message_ids: Sequence[str]) -> dict[str, int]:
    """Each message's `sizeEstimate` (`format=minimal`, only `id,sizeEstimate` asked for), in
    batch requests of BATCH_SIZE; one deleted meanwhile is left out. A single message needs no
    size: it is a batch of its own whatever it weighs."""
    from googleapiclient.errors import HttpError
    from googleapiclient.http import BatchHttpRequest

    if len(message_ids) < 2:
        return {}
    found: dict[str, int] = {}

    def answered(request_id: str, response: Any, error: HttpError | None) -> None:
        if error is None:
            found[str(response["id"])] = int(response.get("sizeEstimate") or 0)
        elif status_of(error) != 404:
            _raise_transient(error, "a message's size")
            raise error

    uri = f"{api_base.rstrip('/')}/{_batch_path()}"
    messages = gmail.users().messages()
    for start in range(0, len(message_ids), BATCH_SIZE):
        batch = BatchHttpRequest(callback=answered, batch_uri=uri)
        for message_id in message_ids[start : start + BATCH_SIZE]:
            batch.add(messages.get(userId="me", id=message_id, format="minimal", fields="id,sizeEstimate"))
        try:
            batch.execute()
        except HttpError as error:
            _raise_transient(error, "a batch request")
            raise
    return found


def by_weight(
    ids: Sequence[str], sizes: dict[str, int], count: int = BATCH_SIZE, budget: int | None = None
) -> tuple[list[str], list[str]]:
    """The first batch to fetch and the rest: at most `count` messages and, past the first one,
    no more than `budget` (BATCH_BYTES) bytes by their sizes (an unknown size counts as nothing)."""
    budget = BATCH_BYTES if budget is None else budget
    taken: list[str] = []
    weight = 0
    for message_id in ids[:count]:
        size = sizes.get(message_id, 0)
        if taken and weight + size > budget:
            break
        taken.append(message_id)
        weight += size
    return taken, list(ids[len(taken) :])


def _provider_message(found: dict[str, Any]) -> ProviderMessage:
    raw = base64.urlsafe_b64decode(found["raw"] + "=" * (-len(found["raw"]) % 4))
    return ProviderMessage(
        provider_message_id=found["id"],
        provider_thread_id=found.get("threadId"),
        labels=found.get("labelIds", []),
        raw=raw,
    )


GONE_LABELS = frozenset({"TRASH", "SPAM"})


def removals(history: list[dict[str, Any]], selected: list[str]) -> list[Removal]:
    """MAIL-10 from history records: deleted for good (`messagesDeleted`), moved to trash or
    spam, or (with chosen labels) no longer carrying any of them; sent mail stays (MAIL-8).
    The last word per message wins: one trashed and restored within the page is not removed."""
    chosen = {label.lower() for label in selected}
    verdict: dict[str, RemovalKind | None] = {}
    for record in history:
        for item in record.get("messagesDeleted", []):
            verdict[item["message"]["id"]] = "deleted"
        for kind in ("labelsAdded", "labelsRemoved"):
            for item in record.get(kind, []):
                message = item["message"]
                labels = {label.upper() for label in message.get("labelIds", [])}
                if verdict.get(message["id"]) == "deleted":
                    continue
                if labels & GONE_LABELS:
                    verdict[message["id"]] = "trashed"
                elif chosen and "SENT" not in labels and not any(label.lower() in chosen for label in labels):
                    verdict[message["id"]] = "left_synced_folders"
                else:
                    verdict[message["id"]] = None
    return [Removal(item_id=i, how=how) for i, how in verdict.items() if how is not None]


class GmailHistorySource(GmailClients):
    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[ProviderMessage]:
        """One batch of messages at a time: a history page (up to 500 records) is read once with
        its messages' sizes, and its added messages are fetched and handed over in batches of at
        most BATCH_SIZE messages and BATCH_BYTES, so a worker holds at most one batch of raw mail;
        the page's removals come after its last batch."""
        gmail = self._gmail(account)
        if page_token is not None and page_token.startswith(_HELD):
            held = json.loads(page_token[len(_HELD) :])
        else:
            held = self._history_page(gmail, account, cursor, page_token)
            held["sizes"] = sizes_of(gmail, self._base, held["ids"])
        now, later = by_weight(held["ids"], held.get("sizes") or {})
        messages = fetch_raw_batched(gmail, self._base, now)
        if later:
            sizes = {i: n for i, n in (held.get("sizes") or {}).items() if i in set(later)}
            following = _HELD + json.dumps({**held, "ids": later, "sizes": sizes})
            return ChangePage(items=messages, next_page=following, cursor=held["history_id"])
        return ChangePage(
            items=messages,
            removed=[Removal.model_validate(r) for r in held["removed"]],
            next_page=held["next"],
            cursor=held["history_id"],
        )

    @staticmethod
    def _history_page(gmail: Any, account: Account, cursor: str, page_token: str | None) -> dict[str, Any]:
        from googleapiclient.errors import HttpError

        try:
            page = (
                gmail.users()
                .history()
                .list(
                    userId="me",
                    startHistoryId=cursor,
                    historyTypes=HISTORY_TYPES,
                    pageToken=page_token,
                    maxResults=500,
                )
                .execute()
            )
        except HttpError as error:
            if status_of(error) == 404:
                raise CursorExpired(f"history {cursor} is no longer kept (404)") from error
            _raise_transient(error, "the history")
            raise
        added: dict[str, None] = {}
        for record in page.get("history", []):
            for item in record.get("messagesAdded", []):
                added[item["message"]["id"]] = None
        gone = removals(page.get("history", []), account.settings.labels_or_folders)
        return {
            "ids": list(added),
            "removed": [r.model_dump(mode="json") for r in gone],
            "next": page.get("nextPageToken"),
            "history_id": str(page["historyId"]),
        }

    def is_newer(self, candidate: str, current: str) -> bool:
        return int(candidate) > int(current)


class GmailHooks:
    """Without a watch, a new Gmail account starts from the mailbox's current historyId
    (getProfile); a disconnected one stops its watch when there is one. Watching itself (the
    first cursor and the renewal schedule from `users.watch`) is GmailWatchHooks' part, in
    providers/google/watch.py, which wraps this."""

    def __init__(self, cursors: CursorStore, api_base: str, topic: str | None) -> None:
        self._cursors = cursors
        self._base = api_base
        self._topic = topic

    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        if not account.is_mailbox or not tokens.access_token:
            return
        started = gmail_service(tokens.access_token, self._base).users().getProfile(userId="me").execute()
        # a reconnect keeps the cursor it had (ACC-9); a new account starts from now
        self._cursors.advance(account.account_id, "mail", str(started["historyId"]), expected=None)

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None:
        """users.stop, best effort (ACC-8): with a token Gmail refuses the watch lapses on its
        own within 7 days, and its pushes find no account that syncs."""
        if not (self._topic and tokens and tokens.access_token):
            return
        try:
            gmail_service(tokens.access_token, self._base).users().stop(userId="me").execute()
        except Exception as error:
            logger.warning(
                "gmail watch not stopped; it lapses on its own",
                extra={
                    "status": status_of(getattr(error, "__cause__", None) or error),
                    "error_type": type(error).__name__,
                },
            )


class GmailImport(GmailClients):
    """A resync or back-import of a Gmail mailbox, one `messages.list` page per step; the sync
    core hands the messages to the engine (exactly once, whatever was synced before). A resync
    starts from the mailbox's historyId read before its first page, so changes made while it
    runs are caught by the next incremental sync."""

    def page(self, account: Account, job: ResyncJob) -> ChangePage[ProviderMessage]:
        from googleapiclient.errors import HttpError

        gmail = self._gmail(account)
        if job.page_token is not None and job.page_token.startswith(_HELD):  # the rest of a listed page
            held = json.loads(job.page_token[len(_HELD) :])
            return self._batch(gmail, held["ids"], held["sizes"], held["next"], job.cursor)
        try:
            cursor = job.cursor
            if job.page_token is None and job.kind == "mail_resync":
                cursor = str(gmail.users().getProfile(userId="me").execute()["historyId"])
            query: dict[str, Any] = {"userId": "me", "maxResults": 100, "pageToken": job.page_token}
            if job.since is not None:
                query["q"] = f"after:{int(job.since.timestamp())}"
            listed = gmail.users().messages().list(**query).execute()
        except HttpError as error:
            _raise_transient(error, "a page of messages")
            raise
        ids = [m["id"] for m in listed.get("messages", [])]
        return self._batch(gmail, ids, sizes_of(gmail, self._base, ids), listed.get("nextPageToken"), cursor)

    def _batch(
        self, gmail: Any, ids: list[str], sizes: dict[str, int], following: str | None, cursor: str | None
    ) -> ChangePage[ProviderMessage]:
        """One batch by weight (by_weight) per step; the rest of the listed page is held in the
        step's page token, so a step holds at most one batch of raw mail."""
        now, later = by_weight(ids, sizes)
        next_page = following
        if later:
            rest = {"ids": later, "sizes": {i: sizes[i] for i in later if i in sizes}, "next": following}
            next_page = _HELD + json.dumps(rest)
        return ChangePage(
            items=fetch_raw_batched(gmail, self._base, now),
            next_page=next_page,
            cursor=cursor,
            listed=len(now),
        )

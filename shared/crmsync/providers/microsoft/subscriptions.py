"""Microsoft Graph's side of SYNC-7, SEC-2 and ACC-8: change-notification subscriptions on a
mailbox's synced folders, their renewal, their lifecycle events, and their removal.

- Connect: `POST /v1.0/subscriptions` per synced folder (`/me/mailFolders('inbox')/messages`,
  a chosen folder by its id, ...; see graph.synced_folders) with
  `Prefer: IdType="ImmutableId"`, a random secret clientState per subscription, the webhook
  `{public base}/webhooks/graph` and the lifecycle URL `{public base}/webhooks/graph/lifecycle`.
  Graph validates both URLs before it answers 201. Only the clientState's SHA-256 is stored.
- Renewal (the `mail.watch` job through `GraphWatcher.renew`): PATCH each subscription's
  expirationDateTime; the renewal is scheduled by the earliest expiry Graph returned. A
  subscription Graph no longer knows (404), or a synced folder without one, is created again;
  one on a folder no longer synced (the settings changed) is deleted.
- Lifecycle: `reauthorizationRequired` → `POST /subscriptions/{id}/reauthorize` (404: created
  again); `subscriptionRemoved` → created again, then a `mail.sync` catch-up; `missed` is a plain
  `mail.sync` queued by the webhook (providers/microsoft/notify.py).
- Disconnect: the schedule goes, each subscription is deleted at Graph and forgotten.

Without a public base URL (setting PUBLIC_API_BASE) there is nothing Graph could call: no
subscription is made and the catch-up poll alone keeps the mailbox in sync (SYNC-2).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from crmsync.accounts.models import Account, AccountSettings, TokenSet
from crmsync.errors import Paused, PermanentError, TransientError
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.mail.watch import SyncSchedule
from crmsync.providers.microsoft.folders import synced_folders
from crmsync.schedule import JobQueue

logger = Logger()

CHANGE_TYPES = "created,updated,deleted"
# Outlook messages: 4,230 minutes at most (the stored Graph docs; newer pages say more). Graph's
# answer is what counts; the margin keeps a clock slightly ahead of Graph's under the limit.
MAX_LIFETIME_S = 4230 * 60
CLOCK_MARGIN_S = 60
IMMUTABLE_IDS = 'IdType="ImmutableId"'
_TIMEOUT_S = 20  # creation waits for Graph's validation of both URLs (up to 10 s each)


class SubscriptionRecord(BaseModel):
    """What is kept of one subscription: never the clientState, only its SHA-256."""

    subscription_id: str
    account_id: str
    tenant_id: str
    folder: str
    resource: str
    expires_at: int  # epoch seconds, as Graph returned it
    client_state_sha256: str
    # the job its change notifications queue: what the subscribed resource syncs with
    sync_job: str = JobType.MAIL_SYNC


def client_state_digest(client_state: str) -> str:
    return hashlib.sha256(client_state.encode()).hexdigest()


def client_state_matches(given: object, record: SubscriptionRecord) -> bool:
    """SEC-2, in constant time. The clientState is 64 random characters, so a plain SHA-256 of
    it cannot be reversed by guessing."""
    if not isinstance(given, str) or not given or len(given) > 128:
        return False
    return hmac.compare_digest(client_state_digest(given), record.client_state_sha256)


def resource_of(where: str) -> str:
    """The messages of a folder, by its well-known name or its id."""
    return f"/me/mailFolders('{where}')/messages"


def parse_expiry(value: object) -> int:
    if not isinstance(value, str):
        raise PermanentError("graph answered a subscription without expirationDateTime")
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def format_expiry(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


class SubscriptionStore(Protocol):
    """Port: stores/subscriptions.py."""

    def put(self, record: SubscriptionRecord) -> None: ...

    def get(self, subscription_id: str) -> SubscriptionRecord | None: ...

    def for_account(self, account_id: str) -> list[SubscriptionRecord]: ...

    def renewed(self, record: SubscriptionRecord) -> bool: ...

    def forget(self, record: SubscriptionRecord) -> None: ...


class GraphSubscriptionApi:
    """The four calls on /v1.0/subscriptions. Secrets (token, clientState) never reach a log
    or an exception message."""

    def __init__(self, api_base: str, verify: str | bool = True) -> None:
        from crmsync.accounts.oauth import PinnedSession

        self._base = f"{api_base.rstrip('/')}/v1.0/subscriptions"
        self._http = PinnedSession(verify)

    def _call(
        self, method: str, url: str, token: str, what: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        import requests

        headers = {"Authorization": f"Bearer {token}", "Prefer": IMMUTABLE_IDS}
        try:
            response = self._http.request(method, url, json=body, headers=headers, timeout=_TIMEOUT_S)
        except requests.RequestException as error:
            raise TransientError(f"graph unreachable for {what}: {type(error).__name__}") from error
        status = response.status_code
        if status == 429 or status >= 500:
            retry_after = response.headers.get("Retry-After")
            raise TransientError(
                f"graph answered {status} to {what}",
                float(retry_after) if retry_after and retry_after.isdigit() else None,
            )
        try:
            answer = response.json() if response.content else {}
        except ValueError:
            answer = {}
        return status, answer if isinstance(answer, dict) else {}

    @staticmethod
    def _refused(status: int, answer: dict[str, Any], what: str) -> PermanentError:
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        code = (error or {}).get("code") or "unknown"
        message = str((error or {}).get("message") or "")[:300]
        return PermanentError(f"graph refused {what} ({status} {code}: {message})")

    def create(
        self,
        token: str,
        resource: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires: int,
    ) -> dict[str, Any]:
        body = {
            "changeType": CHANGE_TYPES,
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": resource,
            "expirationDateTime": format_expiry(expires),
            "clientState": client_state,
        }
        status, answer = self._call("POST", self._base, token, "a subscription", body)
        if status != 201 or not answer.get("id"):
            raise self._refused(status, answer, "a subscription")
        return answer

    def renew(self, token: str, subscription_id: str, expires: int) -> dict[str, Any] | None:
        """The subscription with its new expiry; None if Graph no longer has it (404)."""
        body = {"expirationDateTime": format_expiry(expires)}
        status, answer = self._call("PATCH", f"{self._base}/{subscription_id}", token, "a renewal", body)
        if status == 404:
            return None
        if status != 200:
            raise self._refused(status, answer, "a renewal")
        return answer

    def reauthorize(self, token: str, subscription_id: str) -> bool:
        """False if Graph no longer has the subscription (404)."""
        status, answer = self._call(
            "POST", f"{self._base}/{subscription_id}/reauthorize", token, "reauthorize"
        )
        if status == 404:
            return False
        if status not in (200, 202, 204):
            raise self._refused(status, answer, "reauthorize")
        return True

    def delete(self, token: str, subscription_id: str) -> None:
        status, answer = self._call("DELETE", f"{self._base}/{subscription_id}", token, "a deletion")
        if status not in (200, 204, 404):
            raise self._refused(status, answer, "a deletion")


class GraphWatcher:
    """A Watcher (mail/watch.py) for Microsoft mailboxes: their folders' subscriptions."""

    def __init__(
        self,
        api: GraphSubscriptionApi,
        store: SubscriptionStore,
        access_token: Callable[[str], str],
        public_base: str | None,
        locate: Callable[[Account, str, str], str | None],
        folders: Callable[[Account], Sequence[str]] = synced_folders,
        clock: Callable[[], float] = time.time,
        max_lifetime_s: int = MAX_LIFETIME_S,
    ) -> None:
        self._api = api
        self._store = store
        self._token = access_token  # Credentials.access_token: refreshes, or raises AccountPaused
        self._base = public_base.rstrip("/") if public_base else None
        self._folders = folders  # MAIL-8: the account's synced folders
        self._locate = locate  # (account, token, folder) → a well-known name or folder id; None: missing
        self._clock = clock
        self._lifetime = max_lifetime_s

    def _wanted_expiry(self) -> int:
        return int(self._clock()) + self._lifetime - CLOCK_MARGIN_S

    def _create(self, account: Account, token: str, folder: str) -> SubscriptionRecord | None:
        """A subscription on the folder; None (and a warning) when the mailbox has no such folder."""
        assert self._base is not None
        where = self._locate(account, token, folder)
        if where is None:
            logger.warning(
                "a folder chosen for sync is not in the mailbox; no subscription",
                extra={"account_id": account.account_id, "folder": folder},
            )
            return None
        client_state = secrets.token_urlsafe(48)  # 64 characters; Graph allows 128
        resource = resource_of(where)
        answer = self._api.create(
            token,
            resource,
            f"{self._base}/webhooks/graph",
            f"{self._base}/webhooks/graph/lifecycle",
            client_state,
            self._wanted_expiry(),
        )
        record = SubscriptionRecord(
            subscription_id=str(answer["id"]),
            account_id=account.account_id,
            tenant_id=account.tenant_id,
            folder=folder,
            resource=resource,
            expires_at=parse_expiry(answer.get("expirationDateTime")),
            client_state_sha256=client_state_digest(client_state),
        )
        self._store.put(record)
        logger.info(
            "graph subscription created",
            extra={
                "account_id": account.account_id,
                "folder": folder,
                "subscription_id": record.subscription_id,
            },
        )
        return record

    def subscribe(self, account: Account, token: str) -> int | None:
        """Connect: one subscription per folder; the earliest expiry, or None without a public
        URL. All or nothing: what was created is removed again if a folder fails."""
        if self._base is None:
            logger.warning("no public base URL: Graph subscriptions are off; the catch-up poll syncs")
            return None
        created: list[SubscriptionRecord] = []
        try:
            for folder in self._folders(account):
                if (record := self._create(account, token, folder)) is not None:
                    created.append(record)
        except Exception:
            for record in created:
                self._remove(record, token)
            raise
        return min((r.expires_at for r in created), default=None)

    def renew(self, account: Account) -> int | None:
        """SYNC-7: every synced folder's subscription renewed (or made again), and those of
        folders no longer synced deleted; the earliest expiry."""
        if self._base is None:
            return None
        token = self._token(account.account_id)
        folders = list(self._folders(account))
        expiries: list[int] = []
        covered: set[str] = set()
        for kept in self._store.for_account(account.account_id):
            if kept.folder not in folders:  # the settings no longer name its folder
                self._remove(kept, token)
                continue
            answer = self._api.renew(token, kept.subscription_id, self._wanted_expiry())
            record: SubscriptionRecord | None = kept
            if answer is None:  # Graph dropped it (expired, removed): a new one takes its place
                self._store.forget(kept)
                if kept.folder in covered:
                    continue
                record = self._create(account, token, kept.folder)
                if record is None:
                    continue
            else:
                record = kept.model_copy(
                    update={"expires_at": parse_expiry(answer.get("expirationDateTime"))}
                )
                if not self._store.renewed(record):
                    raise Paused(f"account {account.account_id} stopped syncing during the renewal")
            covered.add(record.folder)
            expiries.append(record.expires_at)
        for folder in folders:
            if folder not in covered and (made := self._create(account, token, folder)) is not None:
                expiries.append(made.expires_at)
        return min(expiries) if expiries else None

    def reauthorize(self, account: Account, subscription_id: str, folder: str | None) -> bool:
        """reauthorizationRequired. False when Graph no longer had the subscription and it was
        made again (its changes since need a catch-up)."""
        token = self._token(account.account_id)
        record = self._store.get(subscription_id)
        if record is None or record.account_id != account.account_id:
            logger.info(
                "reauthorization of a subscription no longer kept", extra={"subscription_id": subscription_id}
            )
            return True
        if self._api.reauthorize(token, subscription_id):
            return True
        self.resubscribe(account, subscription_id, folder or record.folder)
        return False

    def resubscribe(self, account: Account, subscription_id: str, folder: str) -> SubscriptionRecord | None:
        """subscriptionRemoved: the folder gets a new subscription (once, even if this runs
        twice); the old one is forgotten."""
        if self._base is None:
            return None
        token = self._token(account.account_id)
        old = self._store.get(subscription_id)
        if old is not None and old.account_id == account.account_id:
            self._store.forget(old)
            folder = old.folder
        if folder not in self._folders(account):
            logger.info("a removed subscription's folder is no longer synced", extra={"folder": folder})
            return None
        current = [r for r in self._store.for_account(account.account_id) if r.folder == folder]
        if current:
            return current[0]
        return self._create(account, token, folder)

    def unsubscribe(self, account: Account, tokens: TokenSet | None) -> None:
        """ACC-8: every subscription of the account deleted at Graph and forgotten here. A
        deletion Graph refuses is logged and forgotten anyway: it lapses on its own, and its
        notifications no longer match anything kept."""
        records = self._store.for_account(account.account_id)
        if not records:
            return
        token: str | None
        try:
            token = self._token(account.account_id)
        except Exception:  # paused, refused: the token the account still holds, if any
            token = tokens.access_token if tokens else None
        for record in records:
            self._remove(record, token)

    def _remove(self, record: SubscriptionRecord, token: str | None) -> None:
        if token:
            try:
                self._api.delete(token, record.subscription_id)
            except (TransientError, PermanentError) as error:
                logger.warning(
                    "graph subscription not deleted; it lapses on its own",
                    extra={"subscription_id": record.subscription_id, "error": str(error)},
                )
        self._store.forget(record)


class _Hooks(Protocol):
    def on_connected(self, account: Account, tokens: TokenSet) -> None: ...

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None: ...


class GraphSubscriptionHooks:
    """ProviderHooks for Microsoft mailboxes: the subscriptions and the renewal/catch-up
    schedule on connect; on disconnect, the schedule first, then the subscriptions (ACC-8).
    `base` is the Graph mail adapter's own hooks (the first delta cursor), when there are any."""

    def __init__(
        self,
        watcher: GraphWatcher,
        schedule: SyncSchedule,
        base: _Hooks | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self._watcher = watcher
        self._schedule = schedule
        self._base = base
        self._queue = queue  # the sync queue, for the renewal a change of folders calls for

    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        if not account.is_mailbox or not tokens.access_token:
            return
        if self._base is not None:
            self._base.on_connected(account, tokens)
        expires_at = self._watcher.subscribe(account, tokens.access_token)
        self._schedule.started(account, expires_at)

    def on_settings_changed(self, account: Account, before: AccountSettings) -> None:
        """Other folders chosen (MAIL-8): a `mail.watch` job now, not the next scheduled renewal.
        The renewal makes subscriptions on the new folders and deletes those on folders no
        longer synced; the sync after it reads the new folders from the connection date on."""
        if before.labels_or_folders == account.settings.labels_or_folders or not account.can_sync:
            return
        if self._queue is None:
            return
        job = Job(
            type=JobType.MAIL_WATCH,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"reason": "folders-changed"},
        )
        self._queue.send(job, f"folders-{account.account_id}-{account.updated_at.timestamp():.6f}")

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None:
        self._schedule.stopped(account)
        self._watcher.unsubscribe(account, tokens)
        if self._base is not None:
            self._base.on_disconnected(account, tokens)


class AccountOfJob(Protocol):
    def account_of(self, job: Job) -> Account: ...


class GraphLifecycleJobs:
    """The worker's jobs for Graph's lifecycle events (queued by providers/microsoft/notify.py)."""

    def __init__(self, accounts: AccountOfJob, watcher: GraphWatcher, queue: JobQueue) -> None:
        self._accounts = accounts  # SyncJob: raises Paused for an account that may not sync
        self._watcher = watcher
        self._queue = queue

    @staticmethod
    def _subscription(job: Job) -> tuple[str, str | None]:
        subscription_id = job.payload.get("subscription_id")
        folder = job.payload.get("folder")
        if not isinstance(subscription_id, str) or not subscription_id:
            raise PermanentError("the job names no subscription")
        return subscription_id, folder if isinstance(folder, str) else None

    def _catch_up(self, account: Account, reason: str, message_id: str) -> None:
        job = Job(
            type=JobType.MAIL_SYNC,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"reason": reason},
        )
        self._queue.send(job, f"{reason}-{message_id}")

    def reauthorize(self, job: Job, message_id: str) -> None:
        """`graph.reauthorize`: reauthorizationRequired answered."""
        account = self._accounts.account_of(job)
        subscription_id, folder = self._subscription(job)
        if not self._watcher.reauthorize(account, subscription_id, folder):
            self._catch_up(account, "graph-resubscribed", message_id)

    def resubscribe(self, job: Job, message_id: str) -> None:
        """`graph.resubscribe`: subscriptionRemoved answered; then a delta catch-up."""
        account = self._accounts.account_of(job)
        subscription_id, folder = self._subscription(job)
        if folder is None:
            raise PermanentError("the job names no folder")
        self._watcher.resubscribe(account, subscription_id, folder)
        self._catch_up(account, "graph-resubscribed", message_id)

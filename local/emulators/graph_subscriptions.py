"""Microsoft Graph change notifications for mail (/v1.0/subscriptions), as the Graph docs
describe them (concepts/change-notifications-delivery-webhooks.md, -lifecycle-events.md).

- `POST /v1.0/subscriptions` validates the notificationUrl and the lifecycleNotificationUrl
  first: a POST with `?validationToken=<token>` (URL-encoded; the token has spaces, `+`, `/`,
  `&` and `=`) that must be answered 200, `text/plain`, the decoded token, within 10 s.
  Otherwise 400 and no subscription, like Graph. Then 201 with the subscription; its expiry is
  what was asked, clamped to `lifetime_minutes` (4,230 for Outlook messages).
- `PATCH /v1.0/subscriptions/{id}` renews (and reauthorizes), `DELETE` removes,
  `POST /v1.0/subscriptions/{id}/reauthorize` answers a reauthorizationRequired (204).
- A subscription is to `/me/messages` or to one folder's, `/me/mailFolders('{id}')/messages` or
  `/me/mailFolders/{id}/messages`, where {id} is a folder id or a well-known name. The folder is
  kept by its key in the mail emulator (`folder_key`: a well-known folder's name, whichever form
  the resource used, or a user folder's id), the same key `notify` is given, so one
  normalisation decides which subscriptions a change reaches.
- Changes come from the mail emulator through `notify(address, folder, message_id,
  changeType)` (a GraphMail listener) and are POSTed from a background thread as
  `{"value": [...]}`, batched per notification URL. Every delivery is recorded with its status
  and whether the answer came within 3 s (above 2,900 ms Graph counts it as slow).
- Faults on demand (`faults`): duplicated deliveries (same notification id), a forged
  clientState item mixed into the batch, dropped notifications; and lifecycle events
  (`lifecycle`): reauthorizationRequired, subscriptionRemoved (the subscription really goes),
  missed. `expire` makes a subscription lapse, as if nobody renewed it.

Subscriptions belong to the mailbox whose bearer token created them. Loopback http URLs are
accepted (the local stack); anything else must be https, as Graph requires.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from werkzeug.wrappers import Request, Response

from local.emulators.graph import ROOT, WELL_KNOWN

HOME_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"
VALIDATION_LIMIT_S = 10.0
DELIVERY_LIMIT_S = 3.0
SLOW_S = 2.9
CHANGE_TYPES = {"created", "updated", "deleted"}
LIFECYCLE_EVENTS = {"reauthorizationRequired", "subscriptionRemoved", "missed"}
_PREFIX = "/v1.0/subscriptions"

# (mailbox address, a folder's id or well-known name) -> the folder's key, None if it has none
FolderKey = Callable[[str, str], str | None]


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _error(status: int, code: str, message: str) -> Response:
    return _json(
        {
            "error": {
                "code": code,
                "message": message,
                "innerError": {"date": datetime.now(UTC).isoformat(), "request-id": str(uuid.uuid4())},
            }
        },
        status,
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")


def _folder_of(resource: str) -> tuple[bool, str | None]:
    """(supported, folder as written): `/me/mailFolders('inbox')/messages` and
    `me/mailFolders/inbox/messages` → inbox; `/me/messages` → None (all folders). The folder is
    not normalised here: see `plain_folder_key` and the mail emulator's `folder_key`."""
    path = resource.strip().strip("/")
    lowered = path.lower()
    if lowered in ("me/messages", "me/mailfolders/messages"):
        return True, None
    head, tail = "me/mailfolders", "/messages"
    if not (lowered.startswith(head) and lowered.endswith(tail)):
        return False, None
    inner = path[len(head) : -len(tail)]
    if inner.startswith("(") and inner.endswith(")"):
        quoted = inner[1:-1].strip()
        if len(quoted) >= 3 and quoted[0] == quoted[-1] == "'":
            return True, quoted[1:-1]
    elif inner.startswith("/") and len(inner) > 1 and "/" not in inner[1:]:
        return True, inner[1:]
    return False, None


def plain_folder_key(address: str, folder: str) -> str | None:
    """The folder key without a mail emulator to ask: a well-known name (any casing) lowercased,
    anything else taken for an id, exactly (Graph ids are case-sensitive)."""
    lowered = folder.strip().lower()
    return lowered if lowered in WELL_KNOWN or lowered == ROOT else folder


def validation_token() -> str:
    """Opaque, and needs URL-encoding: spaces, '+', '/', '&', '='."""
    return (
        f"Validation: Testing client application reachability {uuid.uuid4()} a+b/c&d={secrets.token_hex(4)}"
    )


@dataclass
class Subscription:
    id: str
    owner: str
    creator_id: str
    resource: str
    folder: str | None  # the mail emulator's folder key; None: every folder (/me/messages)
    change_types: set[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expires: datetime
    immutable_ids: bool
    reauthorization_required: bool = False

    def resource_view(self, base_url: str) -> dict[str, Any]:
        return {
            "@odata.context": f"{base_url}/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "applicationId": "00000000-0000-0000-0000-00000000c0de",
            "changeType": ",".join(sorted(self.change_types)),
            "clientState": self.client_state,
            "notificationUrl": self.notification_url,
            "notificationQueryOptions": None,
            "lifecycleNotificationUrl": self.lifecycle_url,
            "expirationDateTime": _iso(self.expires),
            "creatorId": self.creator_id,
            "includeResourceData": False,
            "latestSupportedTlsVersion": "v1_2",
            "encryptionCertificate": None,
            "encryptionCertificateId": None,
            "notificationUrlAppId": None,
        }


@dataclass
class Validation:
    url: str
    token: str
    status: int | None
    content_type: str
    echoed: bool  # the body was the decoded token
    seconds: float
    in_time: bool  # answered within 10 s

    @property
    def ok(self) -> bool:
        return (
            self.status == 200 and self.content_type.startswith("text/plain") and self.echoed and self.in_time
        )


@dataclass
class Delivery:
    url: str
    kind: str  # notification | lifecycle
    items: list[dict[str, Any]]
    status: int | None
    seconds: float
    in_time: bool  # a 2xx within 3 s
    slow: bool  # above 2,900 ms, as Graph's throttling counts it
    attempt: int = 1


@dataclass
class _Faults:
    duplicate: int = 0
    forge: int = 0
    drop: int = 0


@dataclass
class _Pending:
    url: str
    kind: str
    items: list[dict[str, Any]] = field(default_factory=list)


class GraphSubscriptions:
    def __init__(
        self,
        owner_of: Callable[[str | None], str | None],
        user_id: Callable[[str], str] | None = None,
        base_url: Callable[[], str] = lambda: "https://127.0.0.1",
        lifetime_minutes: int = 4230,
        retries: int = 2,
        tenant_id: str = HOME_TENANT,
        folder_key: FolderKey = plain_folder_key,
    ) -> None:
        self._owner_of = owner_of  # bearer token -> mailbox address
        self._folder_key = folder_key  # the mail emulator's folder normalisation (GraphMail.folder_key)
        self._user_id = user_id or (lambda email: str(uuid.uuid5(uuid.NAMESPACE_URL, email)))
        self._base_url = base_url
        self.lifetime = timedelta(minutes=lifetime_minutes)
        self.retries = retries
        self.tenant_id = tenant_id
        self.subscriptions: dict[str, Subscription] = {}
        self.requests: list[dict[str, Any]] = []  # method, path, subscription id, Prefer header, owner
        self.validations: list[Validation] = []
        self.deliveries: list[Delivery] = []
        self.dropped: list[dict[str, Any]] = []  # notifications lost on purpose (faults)
        self.lock = threading.RLock()
        self._faults: dict[str, _Faults] = {}
        self._pending: list[_Pending] = []
        self._paused = False
        self._busy = 0
        self._changed = threading.Condition(self.lock)
        self._stopped = False
        self._http = requests.Session()
        self._thread = threading.Thread(
            target=self._deliver_forever, name="emulator:graph-notify", daemon=True
        )
        self._thread.start()

    # ------------------------------------------------------------------ controls
    def of(self, address: str) -> list[Subscription]:
        with self.lock:
            return [s for s in self.subscriptions.values() if s.owner == address.lower()]

    def requests_of(self, address: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.requests if r["owner"] == address.lower()]

    def faults(self, address: str, duplicate: int = 0, forge: int = 0, drop: int = 0) -> None:
        """The next `duplicate` notifications of the mailbox are delivered twice, the next
        `forge` batches carry an extra item with a forged clientState, the next `drop` are lost."""
        with self.lock:
            found = self._faults.setdefault(address.lower(), _Faults())
            found.duplicate += duplicate
            found.forge += forge
            found.drop += drop

    def pause(self) -> None:
        """Hold deliveries (they batch up per URL) until `resume`."""
        with self._changed:
            self._paused = True

    def resume(self) -> None:
        with self._changed:
            self._paused = False
            self._changed.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Until every queued delivery has been answered (or given up)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("graph notifications still pending")
                self._changed.wait(remaining)

    def expire(self, subscription_id: str) -> None:
        """The subscription lapses (nobody renewed it): Graph forgets it."""
        with self.lock:
            self.subscriptions.pop(subscription_id, None)

    def lifecycle(self, subscription_id: str, event: str) -> None:
        """Send a lifecycle notification to the subscription's lifecycle URL. subscriptionRemoved
        also removes it; reauthorizationRequired holds until a reauthorize or a renewal."""
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"unknown lifecycle event {event!r}")
        with self._changed:
            found = self.subscriptions.get(subscription_id)
            if found is None:
                raise KeyError(subscription_id)
            if event == "subscriptionRemoved":
                del self.subscriptions[subscription_id]
            if event == "reauthorizationRequired":
                found.reauthorization_required = True
            item = {
                "subscriptionId": found.id,
                "subscriptionExpirationDateTime": _iso(found.expires),
                "tenantId": self.tenant_id,
                "clientState": found.client_state,
                "lifecycleEvent": event,
            }
            self._enqueue(found.lifecycle_url or found.notification_url, "lifecycle", [item])

    def notify(self, address: str, folder: str, message_id: str, change_type: str) -> None:
        """A GraphMail listener: a message of `address` changed in `folder` (a folder key)."""
        owner = address.lower()
        now = datetime.now(UTC)
        key = self._folder_key(owner, folder) or folder  # asked before taking our lock
        with self._changed:
            faults = self._faults.get(owner) or _Faults()
            for found in list(self.subscriptions.values()):
                if found.owner != owner or found.expires <= now or change_type not in found.change_types:
                    continue
                if found.folder is not None and found.folder != key:
                    continue
                item = self._item(found, message_id, change_type)
                if faults.drop > 0:
                    faults.drop -= 1
                    self.dropped.append(
                        {"subscriptionId": found.id, "changeType": change_type, "id": message_id}
                    )
                    continue
                items = [item]
                if faults.forge > 0:
                    faults.forge -= 1
                    forged = {**self._item(found, f"forged-{uuid.uuid4().hex}", change_type)}
                    forged["clientState"] = secrets.token_urlsafe(48)
                    items.append(forged)
                self._enqueue(found.notification_url, "notification", items)
                if faults.duplicate > 0:
                    faults.duplicate -= 1
                    self._enqueue(found.notification_url, "notification", [dict(item)])

    def close(self) -> None:
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ HTTP
    def dispatch(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        rest = path[len(_PREFIX) :].strip("/") if path.startswith(_PREFIX) else None
        if rest is None:
            return _error(404, "ResourceNotFound", "Resource not found.")
        owner = self._owner_of(request.headers.get("Authorization"))
        parts = rest.split("/") if rest else []
        with self.lock:
            self.requests.append(
                {
                    "method": request.method,
                    "path": path,
                    "subscription_id": parts[0] if parts else None,
                    "prefer": request.headers.get("Prefer"),
                    "owner": owner or "",
                }
            )
        if owner is None:
            return _error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")
        if not parts:
            if request.method == "POST":
                return self._create(request, owner)
            if request.method == "GET":
                with self.lock:
                    mine = [
                        s.resource_view(self._base_url())
                        for s in self.subscriptions.values()
                        if s.owner == owner
                    ]
                return _json({"value": mine})
            return _error(
                405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
            )
        with self.lock:
            found = self.subscriptions.get(parts[0])
            if found is not None and found.expires <= datetime.now(UTC):
                del self.subscriptions[found.id]
                found = None
        if found is None or found.owner != owner:
            return _error(404, "ResourceNotFound", f"The object '{parts[0]}' doesn't exist.")
        if len(parts) == 2 and parts[1] == "reauthorize" and request.method == "POST":
            found.reauthorization_required = False
            return Response(status=204)
        if len(parts) > 1:
            return _error(400, "BadRequest", "Unsupported segment.")
        if request.method == "GET":
            return _json(found.resource_view(self._base_url()))
        if request.method == "DELETE":
            with self.lock:
                self.subscriptions.pop(found.id, None)
            return Response(status=204)
        if request.method == "PATCH":
            body = request.get_json(silent=True) or {}
            expires = self._expiry(body.get("expirationDateTime"))
            if isinstance(expires, Response):
                return expires
            found.expires = expires
            found.reauthorization_required = False
            return _json(found.resource_view(self._base_url()))
        return _error(
            405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
        )

    def _expiry(self, value: Any) -> datetime | Response:
        if not isinstance(value, str):
            return _error(400, "InvalidRequest", "expirationDateTime is required.")
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return _error(400, "InvalidRequest", "expirationDateTime is not a date and time.")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        now = datetime.now(UTC)
        if moment <= now:
            return _error(400, "InvalidRequest", "Subscription expiration must be in the future.")
        return min(moment, now + self.lifetime)  # asked for more than the resource allows: the most

    def _create(self, request: Request, owner: str) -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "InvalidRequest", "The request body is not a subscription.")
        missing = [
            k for k in ("changeType", "notificationUrl", "resource", "expirationDateTime") if not body.get(k)
        ]
        if missing:
            return _error(400, "InvalidRequest", f"Missing required properties: {', '.join(missing)}.")
        change_types = {c.strip() for c in str(body["changeType"]).split(",") if c.strip()}
        if not change_types or not change_types <= CHANGE_TYPES:
            return _error(400, "InvalidRequest", f"Unsupported changeType '{body['changeType']}'.")
        client_state = body.get("clientState")
        if client_state is not None and (not isinstance(client_state, str) or len(client_state) > 128):
            return _error(400, "InvalidRequest", "clientState must be a string of at most 128 characters.")
        supported, named = _folder_of(str(body["resource"]))
        if not supported:
            return _error(400, "ExtensionError", f"Resource '{body['resource']}' is not supported.")
        folder = self._folder_key(owner, named) if named is not None else None
        if named is not None and folder is None:
            # as Graph answers a folder named by anything but its id or a well-known name
            # (microsoftgraph/microsoft-graph-docs#19340): 400 ExtensionError, Resource invalid
            return _error(
                400,
                "ExtensionError",
                "Operation: Create; Exception: [Status Code: BadRequest; Reason: The value "
                f"'{body['resource']}' of parameter 'Resource' is invalid.]",
            )
        urls = [str(body["notificationUrl"])]
        if body.get("lifecycleNotificationUrl"):
            urls.append(str(body["lifecycleNotificationUrl"]))
        for url in urls:
            parts = urlsplit(url)
            loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
            if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
                return _error(400, "InvalidRequest", "NotificationUrl must be an https URL.")
        expires = self._expiry(body["expirationDateTime"])
        if isinstance(expires, Response):
            return expires
        for url in urls:  # Graph validates both URLs before it creates anything
            check = self._validate(url)
            if not check.ok:
                return _error(
                    400,
                    "ValidationError",
                    "Subscription validation request failed. Notification endpoint must respond with "
                    "200 OK to validation request.",
                )
        found = Subscription(
            id=str(uuid.uuid4()),
            owner=owner,
            creator_id=self._user_id(owner),
            resource=str(body["resource"]),
            folder=folder,
            change_types=change_types,
            notification_url=urls[0],
            lifecycle_url=urls[1] if len(urls) > 1 else None,
            client_state=client_state,
            expires=expires,
            immutable_ids="immutableid" in (request.headers.get("Prefer") or "").lower().replace('"', ""),
        )
        with self.lock:
            self.subscriptions[found.id] = found
        return _json(found.resource_view(self._base_url()), 201)

    def _validate(self, url: str) -> Validation:
        token = validation_token()
        target = f"{url}{'&' if '?' in url else '?'}validationToken={quote(token, safe='')}"
        started = time.monotonic()
        try:
            answer = self._http.post(
                target,
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=VALIDATION_LIMIT_S,
            )
            status: int | None = answer.status_code
            content_type = answer.headers.get("Content-Type", "")
            echoed = answer.text == token
        except requests.RequestException:
            status, content_type, echoed = None, "", False
        seconds = time.monotonic() - started
        check = Validation(url, token, status, content_type, echoed, seconds, seconds <= VALIDATION_LIMIT_S)
        with self.lock:
            self.validations.append(check)
        return check

    # ------------------------------------------------------------------ delivery
    def _item(self, found: Subscription, message_id: str, change_type: str) -> dict[str, Any]:
        path = f"Users/{found.creator_id}/Messages/{message_id}"
        return {
            "id": secrets.token_urlsafe(12),  # the notification's own id: the same when resent
            "subscriptionId": found.id,
            "subscriptionExpirationDateTime": _iso(found.expires),
            "clientState": found.client_state,
            "changeType": change_type,
            "resource": path,
            "tenantId": self.tenant_id,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Message",
                "@odata.id": path,
                "@odata.etag": f'W/"{secrets.token_hex(8)}"',
                "id": message_id,
            },
        }

    def _enqueue(self, url: str, kind: str, items: list[dict[str, Any]]) -> None:
        """Holds the lock. Items for a URL that is already waiting join its batch."""
        waiting = next((p for p in self._pending if p.url == url and p.kind == kind), None)
        if waiting is None or (
            kind == "notification" and any(i["id"] in {w["id"] for w in waiting.items} for i in items)
        ):
            self._pending.append(_Pending(url, kind, list(items)))  # a duplicate goes out as its own POST
        else:
            waiting.items.extend(items)
        self._changed.notify_all()

    def _deliver_forever(self) -> None:
        while True:
            with self._changed:
                while not self._stopped and (self._paused or not self._pending):
                    self._changed.wait()
                if self._stopped:
                    return
                batch = self._pending.pop(0)
                self._busy += 1
            try:
                self._deliver(batch)
            finally:
                with self._changed:
                    self._busy -= 1
                    self._changed.notify_all()

    def _deliver(self, batch: _Pending) -> None:
        body = json.dumps({"value": batch.items})
        for attempt in range(1, self.retries + 2):
            started = time.monotonic()
            try:
                answer = self._http.post(
                    batch.url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    timeout=VALIDATION_LIMIT_S,
                )
                status: int | None = answer.status_code
            except requests.RequestException:
                status = None
            seconds = time.monotonic() - started
            ok = status is not None and 200 <= status < 300
            record = Delivery(
                batch.url,
                batch.kind,
                batch.items,
                status,
                seconds,
                ok and seconds <= DELIVERY_LIMIT_S,
                seconds > SLOW_S,
                attempt,
            )
            with self.lock:
                self.deliveries.append(record)
            if ok or (status is not None and 400 <= status < 500):
                return  # 2xx: delivered; a 4xx will not get better (Graph gives up on it too)
            time.sleep(0.2 * attempt)

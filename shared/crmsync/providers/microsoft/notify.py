"""Microsoft Graph's webhook (SEC-2, SYNC-2): the validation handshake, change notifications
and lifecycle notifications. Answers fast; the work happens behind the queue.

The handshake is answered from the query string alone, with nothing but the standard library
imported: Graph gives it 10 seconds, a cold start included. Everything else (pydantic, boto3,
the stores) is imported when the first notification comes.

Each item of `{"value": [...]}` is checked on its own: its subscription must be one we keep,
and its clientState must match the stored SHA-256 (constant time). An item that fails is
dropped and logged by subscription id (never its clientState); the others go on.

What one request may cost is bounded, since anyone can POST here (SEC-5): at most MAX_ITEMS
items (more: 413, nothing read), and the subscriptions they name are read together, each once,
in one consistent BatchGetItem of at most MAX_SUBSCRIPTIONS ids (the first distinct ones, in
order). Items naming further subscriptions are dropped with one log line; Graph's own
deliveries stay far below both bounds, and a change whose notification is lost this way is
caught up by the mailbox's poll (SYNC-2).
- change notifications: one job per account and request (the `sync_job` its subscription
  record names: `mail.sync` for mail folders), deduplicated by the
  items' ids (Graph's notification `id`, else subscription, change and message), so a
  redelivered notification collapses on the FIFO queue;
- `reauthorizationRequired` → `graph.reauthorize`; `subscriptionRemoved` → `graph.resubscribe`
  (recreate, then a catch-up); `missed` → the subscription's sync job (the delta catch-up).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qsl

from crmsync.jobtypes import JobType

if TYPE_CHECKING:
    from crmsync.providers.microsoft.subscriptions import SubscriptionRecord
    from crmsync.schedule import JobQueue

MAX_TOKEN_CHARS = 1024
MAX_ITEMS = 1000  # notifications in one request
MAX_SUBSCRIPTIONS = 100  # distinct subscriptions read for one request: one BatchGetItem
LIFECYCLE_JOBS = {
    "reauthorizationRequired": JobType.GRAPH_REAUTHORIZE,
    "subscriptionRemoved": JobType.GRAPH_RESUBSCRIBE,
    "missed": JobType.MAIL_SYNC,
}


def validation_token(event: dict[str, Any]) -> str | None:
    """The `validationToken` of a validation request, URL-decoded; None for a notification."""
    raw = event.get("rawQueryString")
    if isinstance(raw, str) and "validationToken=" in raw:
        for key, value in parse_qsl(raw, keep_blank_values=True):
            if key == "validationToken":
                return value
    params = event.get("queryStringParameters") or {}
    token = params.get("validationToken") if isinstance(params, dict) else None
    return token if isinstance(token, str) else None


def validation_response(token: str) -> dict[str, Any]:
    """200 text/plain with the decoded token. Graph never sends markup or control characters;
    such a token is refused rather than reflected (no cross-site scripting through it)."""
    if not token or len(token) > MAX_TOKEN_CHARS or any(c in token for c in "<>") or not token.isprintable():
        return {
            "statusCode": 400,
            "headers": {"content-type": "application/json"},
            "body": '{"message":"validationToken is empty, too long or not plain text"}',
        }
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/plain; charset=utf-8", "x-content-type-options": "nosniff"},
        "body": token,
    }


class BadNotification(Exception):
    """Not a notification body at all (400)."""


class TooManyNotifications(BadNotification):
    """More items in one request than MAX_ITEMS (413)."""


class SubscriptionLookup(Protocol):
    def get_many(self, subscription_ids: Sequence[str]) -> dict[str, SubscriptionRecord]:
        """The records of those that exist, by id."""
        ...


@dataclass
class NotifyOutcome:
    accepted: int = 0
    dropped: list[dict[str, str]] = field(default_factory=list)  # subscription id and reason, no secret
    jobs: list[dict[str, str]] = field(default_factory=list)  # type and account of each queued job


def _dedup(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _subscription_of(item: object) -> str | None:
    """The item's subscription id, if the item is well formed enough to have one."""
    subscription_id = item.get("subscriptionId") if isinstance(item, dict) else None
    if not isinstance(subscription_id, str) or not subscription_id or len(subscription_id) > 200:
        return None
    return subscription_id


def _item_key(item: dict[str, Any]) -> str:
    """What makes a notification the same notification when Graph sends it again."""
    if isinstance(item.get("id"), str) and item["id"]:
        return f"id:{item['id']}"
    data = item.get("resourceData") if isinstance(item.get("resourceData"), dict) else {}
    target = (data or {}).get("id") or item.get("resource") or ""
    return f"{item.get('subscriptionId')}|{item.get('changeType')}|{target}"


class GraphNotifications:
    def __init__(self, subscriptions: SubscriptionLookup, queue: JobQueue) -> None:
        self._subscriptions = subscriptions
        self._queue = queue

    def accept(self, body: str) -> NotifyOutcome:
        from crmsync.providers.microsoft.subscriptions import client_state_matches

        try:
            document = json.loads(body)
        except ValueError as error:
            raise BadNotification("the body is not JSON") from error
        items = document.get("value") if isinstance(document, dict) else None
        if not isinstance(items, list):
            raise BadNotification('the body has no "value" list')
        if len(items) > MAX_ITEMS:
            raise TooManyNotifications(f"more than {MAX_ITEMS} notifications in one request")
        named = [_subscription_of(item) for item in items]
        wanted = list(dict.fromkeys(s for s in named if s is not None))[:MAX_SUBSCRIPTIONS]
        records = self._subscriptions.get_many(wanted) if wanted else {}
        read = set(wanted)
        outcome = NotifyOutcome()
        beyond = 0
        changes: dict[tuple[str, str], tuple[SubscriptionRecord, list[str]]] = {}
        for item, subscription_id in zip(items, named, strict=True):
            if subscription_id is None:
                outcome.dropped.append({"subscription_id": "", "reason": "malformed item"})
                continue
            if subscription_id not in read:
                beyond += 1
                continue
            assert isinstance(item, dict)
            record = records.get(subscription_id)
            if record is None:
                outcome.dropped.append({"subscription_id": subscription_id, "reason": "unknown subscription"})
                continue
            if not client_state_matches(item.get("clientState"), record):
                outcome.dropped.append(
                    {"subscription_id": subscription_id, "reason": "clientState does not match"}
                )
                continue
            event = item.get("lifecycleEvent")
            if event is not None:
                if not self._lifecycle(record, event, item, outcome):
                    outcome.dropped.append(
                        {"subscription_id": subscription_id, "reason": "unknown lifecycle event"}
                    )
                    continue
            else:
                changes.setdefault((record.account_id, record.sync_job), (record, []))[1].append(
                    _item_key(item)
                )
            outcome.accepted += 1
        if beyond:
            outcome.dropped.append(
                {
                    "subscription_id": "",
                    "reason": f"{beyond} items of subscriptions beyond the first {MAX_SUBSCRIPTIONS} "
                    "in one request",
                }
            )
        for (account_id, sync_job), (record, keys) in changes.items():
            # each subscription's record says which job its notifications queue (mail or calendar)
            self._send(
                sync_job,
                record,
                {"reason": "graph-notification"},
                _dedup("notify", account_id, sync_job, *sorted(keys)),
            )
            outcome.jobs.append({"type": sync_job, "account_id": account_id})
        return outcome

    def _lifecycle(
        self, record: SubscriptionRecord, event: object, item: dict[str, Any], outcome: NotifyOutcome
    ) -> bool:
        job_type: str | None = LIFECYCLE_JOBS.get(event) if isinstance(event, str) else None
        if event == "missed":  # the catch-up of what the subscription syncs
            job_type = record.sync_job
        if job_type is None:
            return False
        assert isinstance(event, str)
        payload = {
            "reason": f"graph-{event}",
            "subscription_id": record.subscription_id,
            "folder": record.folder,
        }
        # Graph's lifecycle items carry no id: the same event within the minute is one job
        key = (
            _item_key(item)
            if item.get("id")
            else f"{item.get('subscriptionExpirationDateTime')}|{int(time.time() // 60)}"
        )
        self._send(job_type, record, payload, _dedup("lifecycle", event, record.subscription_id, key))
        outcome.jobs.append({"type": job_type, "account_id": record.account_id})
        return True

    def _send(self, job_type: str, record: SubscriptionRecord, payload: dict[str, Any], dedup: str) -> None:
        from crmsync.jobs import Job

        job = Job(type=job_type, tenant_id=record.tenant_id, account_id=record.account_id, payload=payload)
        self._queue.send(job, dedup)

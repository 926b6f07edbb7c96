"""Issue 9, items 12, 14 and 16: the public webhooks cost a bounded amount whatever they are
sent, the scheduler serves every due shard under load, and an Outlook send has a total size
limit checked before anything is sent."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from crmsync import services
from crmsync.jobs import Job
from crmsync.mail.limits import MB, limits_for
from crmsync.providers.google import push
from crmsync.providers.microsoft.notify import MAX_ITEMS, MAX_SUBSCRIPTIONS
from crmsync.schedule import DueItem, Scheduler
from crmsync.stores.aws import dynamodb
from crmsync.stores.cursors import DynamoDueStore
from local.cfn import load_template
from local.emulators.graph_subscriptions import GraphSubscriptions
from local.emulators.servers import Emulators
from local.stack import TEMPLATE, LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_gmail_send import _pdf, _stage
from tests.integration.test_graph_notify import _connected, _jobs_of, handled, subs
from tests.integration.test_graph_sync import _setup as graph_setup

__all__ = ["handled", "subs"]  # the Graph tests' fixtures, used here too

SHARDS = 16


def _fresh_cursors_table() -> str:
    """A table shaped like the template's CursorsTable, empty, for this test alone (the stack's
    own holds the due items of every other test)."""
    props = load_template(TEMPLATE)["Resources"]["CursorsTable"]["Properties"]
    name = f"cursors-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
    )
    return name


class _Sent:
    """The sync queue's side of the scheduler: what it was given, in order."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Job, str]] = []

    def send(self, job: Job, dedup_id: str) -> None:
        self.jobs.append((job, dedup_id))


def _shard_of(pk: str) -> int:
    return zlib.crc32(pk.encode()) % SHARDS


def _fill(store: DynamoDueStore, per_shard: dict[int, int], due_at: int, every_s: int | None) -> None:
    wanted = dict(per_shard)
    n = 0
    while any(wanted.values()):
        pk = f"ACC#load-{n}"
        n += 1
        shard = _shard_of(pk)
        if wanted.get(shard):
            wanted[shard] -= 1
            job = {"type": "mail.sync", "tenant_id": "t", "account_id": pk[4:], "payload": {}}
            store.put(DueItem(pk=pk, sk="DUE#catchup", due_at=due_at, job=job, every_s=every_s))


@pytest.mark.rule("SYNC-7")
def test_every_due_shard_is_served_each_tick_when_more_is_due_than_a_tick_takes(stack: LocalStack) -> None:
    store = DynamoDueStore(_fresh_cursors_table(), SHARDS)
    sent = _Sent()
    scheduler = Scheduler(store, sent)
    start = 1_800_000_000
    # 6 repeating items in each shard, every minute: 96 due at each tick, a tick takes 32
    _fill(store, dict.fromkeys(range(SHARDS), 6), start, every_s=60)
    served: list[Counter[int]] = []
    for tick in range(3):
        before = len(sent.jobs)
        assert scheduler.run(start + 60 * tick, limit=32) == 32  # the limit still holds
        served.append(Counter(_shard_of("ACC#" + job.account_id) for job, _ in sent.jobs[before:]))
    for tick, shards in enumerate(served):
        assert set(shards) == set(range(SHARDS)), f"tick {tick} served only shards {sorted(shards)}"
        assert all(count == 2 for count in shards.values())  # an equal share each


@pytest.mark.rule("SYNC-7")
def test_what_the_other_shards_leave_of_a_tick_goes_to_the_crowded_ones(stack: LocalStack) -> None:
    store = DynamoDueStore(_fresh_cursors_table(), SHARDS)
    sent = _Sent()
    scheduler = Scheduler(store, sent)
    now = 1_800_000_000
    _fill(store, {3: 40, 9: 5, 12: 1}, now - 10, every_s=None)
    assert scheduler.run(now, limit=32) == 32
    first = Counter(_shard_of("ACC#" + job.account_id) for job, _ in sent.jobs)
    assert first[9] == 5 and first[12] == 1 and first[3] == 26  # the rest of the tick: shard 3
    assert scheduler.run(now + 300, limit=32) == 14  # the next tick takes what is left
    assert len({dedup for _, dedup in sent.jobs}) == 46  # each item once
    # fewer to take than shards: the shards served first change from tick to tick
    _fill(store, dict.fromkeys(range(SHARDS), 3), now, every_s=300)
    firsts = set()
    for tick in range(SHARDS):
        before = len(sent.jobs)
        assert scheduler.run(now + 600 + 300 * tick, limit=4) == 4
        firsts |= {_shard_of("ACC#" + job.account_id) for job, _ in sent.jobs[before:]}
    assert firsts == set(range(SHARDS))  # within 16 ticks every shard was served


# ---------------------------------------------------------------------------- item 12 (a)


class _SubscriptionReads:
    """Counts the DynamoDB calls that read Graph subscriptions by id (GetItem or BatchGetItem
    of `GRAPHSUB#…`), and the keys they asked for, on the layer's own DynamoDB client."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []  # operation, keys

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if "GRAPHSUB#" not in json.dumps(params, default=str):
            return
        if model.name == "GetItem":
            self.calls.append(("GetItem", 1))
        elif model.name == "BatchGetItem":
            keys = [k for table in params["RequestItems"].values() for k in table["Keys"]]
            self.calls.append(("BatchGetItem", len(keys)))

    @property
    def keys(self) -> int:
        return sum(n for _, n in self.calls)


@pytest.fixture
def subscription_reads(stack: LocalStack) -> Iterator[_SubscriptionReads]:
    events = dynamodb().meta.client.meta.events
    reads = _SubscriptionReads()
    for operation in ("GetItem", "BatchGetItem"):
        events.register(f"before-parameter-build.dynamodb.{operation}", reads, unique_id=f"reads-{operation}")
    yield reads
    for operation in ("GetItem", "BatchGetItem"):
        events.unregister(f"before-parameter-build.dynamodb.{operation}", unique_id=f"reads-{operation}")


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("SEC-2")
def test_a_graph_post_reads_each_subscription_once_and_at_most_a_bounded_number(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    subs: GraphSubscriptions,
    handled: list[Job],
    tenant: str,
    subscription_reads: _SubscriptionReads,
    caplog: pytest.LogCaptureFixture,
) -> None:
    address, account_id = _connected(api, emulators, tenant, "bounded")
    genuine = subs.of(address)
    url = genuine[0].notification_url

    def item(subscription_id: str, client_state: str | None, n: int) -> dict[str, Any]:
        return {
            "id": f"n-{uuid.uuid4().hex}",
            "subscriptionId": subscription_id,
            "clientState": client_state,
            "changeType": "created",
            "resource": f"Users/x/Messages/m{n}",
            "resourceData": {"id": f"m{n}"},
        }

    # 40 notifications of the mailbox's own subscriptions: each subscription is read once
    many = [item(genuine[n % len(genuine)].id, genuine[n % len(genuine)].client_state, n) for n in range(40)]
    assert requests.post(url, json={"value": many}, timeout=10).status_code == 202
    assert subscription_reads.keys == len(genuine) and len(subscription_reads.calls) == 1
    wait_until(lambda: _jobs_of(handled, account_id), timeout=20)

    # the mailbox's items first, then a thousand made-up subscription ids: at most 100 are read,
    # in one call; the genuine items still count, the others are dropped (one log line for them)
    subscription_reads.calls.clear()
    seen = len(_jobs_of(handled, account_id))
    forged = [item(str(uuid.uuid4()), "x" * 64, n) for n in range(1000 - len(genuine))]
    mixed = [item(s.id, s.client_state, 5000 + n) for n, s in enumerate(genuine)] + forged
    caplog.clear()
    assert requests.post(url, json={"value": mixed}, timeout=10).status_code == 202
    assert subscription_reads.keys <= MAX_SUBSCRIPTIONS and len(subscription_reads.calls) == 1
    wait_until(lambda: len(_jobs_of(handled, account_id)) > seen, timeout=20)
    dropped = [r for r in caplog.records if r.getMessage() == "graph notification item dropped"]
    assert len(dropped) <= MAX_SUBSCRIPTIONS + 1

    # more items than any Graph delivery carries: refused whole, 413, nothing read
    subscription_reads.calls.clear()
    too_many = [item(genuine[0].id, genuine[0].client_state, n) for n in range(MAX_ITEMS + 1)]
    answer = requests.post(url, json={"value": too_many}, timeout=10)
    assert answer.status_code == 413 and str(MAX_ITEMS) in answer.json()["message"]
    assert subscription_reads.calls == []


# ---------------------------------------------------------------------------- item 12 (b)


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def push_clock(stack: LocalStack, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Clock]:
    """The Gmail webhook with a fresh key cache, on a clock the test moves."""
    clock = _Clock()
    monkeypatch.setattr(push, "_monotonic", clock, raising=False)
    services.bind(services.Services())  # the webhook builds its key cache anew, on this clock
    try:
        yield clock
    finally:
        services.bind(stack.services)


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("SEC-1")
def test_google_keys_are_fetched_at_most_once_a_minute_whatever_the_pushes_say(
    api: Api, emulators: Emulators, push_clock: _Clock
) -> None:
    google = emulators.google
    webhook = f"{api.base}/webhooks/gmail"
    nobody = f"nobody-{uuid.uuid4().hex[:8]}@gmail.test"  # a genuine push for no account: 204
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def unknown_kid() -> str:
        genuine = jwt.decode(google.push_token(webhook), options={"verify_signature": False})
        return jwt.encode(genuine, stranger, algorithm="RS256", headers={"kid": uuid.uuid4().hex})

    def fetches_during(pushes: int, token: Any, expected: int) -> int:
        before = google.certs_requests
        for _ in range(pushes):
            assert google.deliver_push(webhook, nobody, 1, token=token() if token else None) == expected
        return google.certs_requests - before

    try:
        google.certs_status = 503  # Google's keys cannot be had: one try, not one per push
        assert fetches_during(10, None, 401) == 1
        google.certs_status = 200
        push_clock.now += 30
        assert fetches_during(3, None, 401) == 0  # within the minute: no second try
        push_clock.now += 31
        assert fetches_during(5, None, 204) == 1  # a minute on: fetched once, then cached
        # made-up key ids: refused without a fetch within the minute of the last one ...
        assert fetches_during(10, unknown_kid, 401) == 0
        push_clock.now += 61
        # ... and after it, one fetch for all of them (a rotated key would be found by it)
        assert fetches_during(10, unknown_kid, 401) == 1
        assert fetches_during(3, None, 204) == 0  # the genuine key is still cached
        push_clock.now += 3600
        assert fetches_during(2, None, 204) == 1  # keys older than an hour are fetched again
    finally:
        google.certs_status = 200


# ---------------------------------------------------------------------------- item 16


@pytest.mark.rule("ATT-5")
@pytest.mark.rule("ATT-3")
def test_an_outlook_send_has_a_total_size_limit_checked_before_anything_is_sent(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    limits = limits_for("microsoft")
    total = limits.send_total_bytes
    assert total == 35 * MB and limits.per_file_bytes == 3 * MB  # what the send function can hold
    address, _, token = graph_setup(api, emulators, tenant, notifications=False)
    box = emulators.microsoft.graph.mailbox(address)
    three_mb = 3 * MB
    files = total // three_mb + 1  # every file within Microsoft's 3 MB, the whole over the total
    ids = [_stage(api, token, f"part-{n}.pdf", _pdf(three_mb)) for n in range(files)]
    body = {"to": [{"address": "carla@client.test"}], "subject": "Everything", "text": "attached"}
    before = list(box.requests)
    refused = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": ids})
    assert refused.status_code == 413, refused.text[:300]
    message = refused.json()["error"]["message"]
    assert str(total) in message and "Microsoft 365" in message and str(files * three_mb) in message
    assert box.requests == before  # no draft, no attachment, nothing sent
    threads = api.call("GET", "/v1/threads", token).json()["threads"]
    assert "Everything" not in {t["subject"] for t in threads}  # nor recorded in the CRM

    # within the total it goes out whole, each file through an upload session
    fits = ids[:2]
    sent = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": fits})
    assert sent.status_code == 201, sent.text[:300]
    raw = emulators.microsoft.graph.raw_of(address, sent.json()["provider_message_id"])
    copy = email.message_from_bytes(raw, policy=email.policy.default)
    assert [len(p.get_payload(decode=True)) for p in copy.iter_attachments()] == [three_mb] * len(fits)

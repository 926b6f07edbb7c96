"""Microsoft Graph change notifications end to end: a Microsoft mailbox connected through the
consent page gets a subscription per synced folder (validated by the emulator against the real
webhook), the emulator POSTs changes and lifecycle events to /webhooks/graph*, the webhook
checks each item's clientState and queues the account's jobs, the real worker runs them."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import requests
from boto3.dynamodb.conditions import Key

from crmsync import services
from crmsync.auth import Principal
from crmsync.directory import ContactEntry
from crmsync.jobs import Job
from crmsync.mail.watch import CATCHUP, WATCH, renew_at
from local.emulators.graph_subscriptions import GraphSubscriptions, Subscription
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_mail_engine import mail

ROOT = Path(__file__).resolve().parents[2]
MAX_LIFETIME_S = 4230 * 60


@pytest.fixture
def subs(emulators: Emulators) -> Iterator[GraphSubscriptions]:
    found = emulators.graph_subscriptions
    assert found is not None
    lifetime = found.lifetime
    yield found
    found.resume()
    found.lifetime = lifetime


@pytest.fixture
def handled(stack: LocalStack) -> Iterator[list[Job]]:
    """The jobs the real worker ran (a pass-through tap on its job runner), in order."""
    runner = stack.services.sync_batch().runner
    lifecycle = services.current().mail_bundle("microsoft").jobs  # Graph's own job types, from its bundle
    real: dict[str, Any] = {
        "mail.sync": services.current().mail_sync_job(),
        "mail.watch": services.current().mail_watch_job(),
        "graph.reauthorize": lifecycle["graph.reauthorize"],
        "graph.resubscribe": lifecycle["graph.resubscribe"],
    }
    seen: list[Job] = []

    def tap(handler: Any) -> Any:
        def run(job: Job, message_id: str) -> None:
            seen.append(job)
            handler(job, message_id)

        return run

    for job_type, handler in real.items():
        runner.register(job_type, tap(handler))
    yield seen
    for job_type, handler in real.items():
        runner.register(job_type, handler)


def _connected(api: Api, emulators: Emulators, tenant: str, hint: str = "ms") -> tuple[str, str]:
    set_plan(api, tenant, "professional")
    address = f"{hint}-{uuid.uuid4().hex[:8]}@contoso.test"
    result = connect(api, Browser(emulators), api.token(tenant, "u1"), "microsoft", address, purpose="mail")
    assert result["status"] == "connected", result
    return address, result["account_id"]


def _by_folder(subs: GraphSubscriptions, address: str) -> dict[str, Subscription]:
    found = {s.folder or "": s for s in subs.of(address)}
    assert len(found) == len(subs.of(address))  # one per folder
    return found


def _cursor_items(stack: LocalStack, pk: str, prefix: str) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(stack.tables["CursorsTable"])
    found = table.query(
        KeyConditionExpression=Key("pk").eq(pk) & Key("sk").begins_with(prefix), ConsistentRead=True
    )["Items"]
    return [json.loads(json.dumps(i, default=int)) for i in found]


def _due_items(stack: LocalStack, account_id: str) -> dict[str, dict[str, Any]]:
    return {i["sk"]: i for i in _cursor_items(stack, f"ACC#{account_id}", "DUE#")}


def _jobs_of(handled: list[Job], account_id: str, job_type: str = "mail.sync") -> list[Job]:
    return [j for j in list(handled) if j.account_id == account_id and j.type == job_type]


def _with_contact(tenant: str) -> None:
    services.current().directory().upsert(
        Principal(tenant_id=tenant, user_id="admin", role="admin"),
        "contacts",
        "c1",
        ContactEntry(name="Carla", emails=["carla@client.test"]),
    )


def _threads(api: Api, tenant: str) -> list[dict[str, Any]]:
    threads: list[dict[str, Any]] = api.call("GET", "/v1/threads", api.token(tenant, "u1")).json()["threads"]
    return threads


# ---------------------------------------------------------------------------- validation


@pytest.mark.rule("SEC-2")
def test_validation_is_answered_with_the_decoded_token_as_plain_text(api: Api) -> None:
    token = f"Validation: Testing client application reachability {uuid.uuid4()} a+b/c&d=e"
    for path in ("/webhooks/graph", "/webhooks/graph/lifecycle"):
        answer = api.call("POST", f"{path}?validationToken={quote(token, safe='')}", data=b"")
        assert answer.status_code == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        assert answer.text == token  # decoded: '+' stays '+', %20 is a space
    # markup is never reflected (Graph sends none)
    hostile = api.call("POST", f"/webhooks/graph?validationToken={quote('<script>x</script>')}", data=b"")
    assert hostile.status_code == 400 and "<script>" not in hostile.text


@pytest.mark.rule("SEC-2")
def test_a_cold_start_answers_validation_before_importing_anything_heavy() -> None:
    """The first request a fresh process gets is the handshake: answered from the standard
    library alone (no pydantic, boto3, powertools or services), well inside Graph's 10 s."""
    token = "Validation: cold start +/&= token"
    event = {"rawPath": "/webhooks/graph", "rawQueryString": f"validationToken={quote(token, safe='')}"}
    script = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(ROOT / 'functions' / 'graph_notify')!r}, {str(ROOT / 'shared')!r}]\n"
        "import app\n"
        f"answer = app.handler({event!r}, None)\n"
        "heavy = sorted(m for m in ('boto3', 'botocore', 'pydantic', 'aws_lambda_powertools', "
        "'requests', 'crmsync.services', 'crmsync.jobs') if m in sys.modules)\n"
        "print(json.dumps({'answer': answer, 'heavy': heavy}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    result = json.loads(done.stdout)
    assert result["answer"]["statusCode"] == 200 and result["answer"]["body"] == token
    assert result["answer"]["headers"]["content-type"].startswith("text/plain")
    assert result["heavy"] == []


# ---------------------------------------------------------------------------- subscriptions


@pytest.mark.rule("SYNC-7")
@pytest.mark.rule("SEC-2")
def test_connect_subscribes_each_folder_with_immutable_ids_and_a_secret_client_state(
    stack: LocalStack, api: Api, emulators: Emulators, subs: GraphSubscriptions, tenant: str
) -> None:
    before = int(time.time())
    address, account_id = _connected(api, emulators, tenant)
    after = int(time.time())
    mine = _by_folder(subs, address)
    assert set(mine) == {"inbox", "sentitems"}
    for folder, found in mine.items():
        assert found.resource == f"/me/mailFolders('{folder}')/messages"
        assert found.change_types == {"created", "updated", "deleted"}
        assert found.notification_url == f"{api.base}/webhooks/graph"
        assert found.lifecycle_url == f"{api.base}/webhooks/graph/lifecycle"
        assert found.immutable_ids  # Prefer: IdType="ImmutableId" at creation
        assert found.client_state and 32 <= len(found.client_state) <= 128
        # the documented maximum was asked for; Graph's answer is what is kept
        assert before + MAX_LIFETIME_S - 120 <= found.expires.timestamp() <= after + MAX_LIFETIME_S
    assert mine["inbox"].client_state != mine["sentitems"].client_state
    posts = [r for r in subs.requests_of(address) if r["method"] == "POST"]
    assert len(posts) == 2 and all(r["prefer"] == 'IdType="ImmutableId"' for r in posts)

    # Graph validated both URLs against the real webhook: decoded token, text/plain, in time
    checked = [v for v in subs.validations if v.url.startswith(api.base)]
    assert {v.url for v in checked} == {f"{api.base}/webhooks/graph", f"{api.base}/webhooks/graph/lifecycle"}
    assert all(v.ok and v.in_time and v.echoed for v in checked)

    # kept: id -> account and folder, and only a hash of the clientState
    stored = _cursor_items(stack, f"ACC#{account_id}", "GRAPHSUB#")
    assert sorted(i["record"]["folder"] for i in stored) == ["inbox", "sentitems"]
    everything = json.dumps(
        boto3.resource("dynamodb").Table(stack.tables["CursorsTable"]).scan()["Items"], default=str
    )
    for found in mine.values():
        assert found.client_state is not None and found.client_state not in everything
        (by_id,) = _cursor_items(stack, f"GRAPHSUB#{found.id}", "SUB")
        assert by_id["record"]["account_id"] == account_id
        assert (
            by_id["record"]["client_state_sha256"] == hashlib.sha256(found.client_state.encode()).hexdigest()
        )

    # the renewal is scheduled by the earliest expiry Graph returned
    renewal = _due_items(stack, account_id)[WATCH]
    earliest = min(int(s.expires.timestamp()) for s in mine.values())
    assert renewal["job"]["type"] == "mail.watch" and renewal["job"]["payload"]["expires_at"] == earliest
    assert renew_at(before, earliest) <= renewal["due_at"] <= renew_at(after, earliest)
    assert CATCHUP in _due_items(stack, account_id)


@pytest.mark.rule("SYNC-7")
def test_renewal_patches_each_subscription_and_schedules_by_the_expiry_graph_returned(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    subs: GraphSubscriptions,
    handled: list[Job],
    tenant: str,
) -> None:
    address, account_id = _connected(api, emulators, tenant, "renew")
    first = _by_folder(subs, address)
    renewal = _due_items(stack, account_id)[WATCH]
    # Graph now grants an hour at most: asking for more gets less, and the schedule follows it
    subs.lifetime = timedelta(hours=1)
    subs.expire(first["sentitems"].id)  # and one subscription lapsed: PATCH answers 404
    enqueued: int = stack.services.scheduler().run(renewal["due_at"] + 1)
    assert enqueued >= 1

    def moved() -> dict[str, Any] | None:
        item = _due_items(stack, account_id)[WATCH]
        return (
            item if item["job"]["payload"]["expires_at"] != renewal["job"]["payload"]["expires_at"] else None
        )

    item = wait_until(moved, timeout=30)
    now = _by_folder(subs, address)
    assert now["inbox"].id == first["inbox"].id  # renewed in place
    assert now["sentitems"].id != first["sentitems"].id  # made again after the 404
    patches = [r for r in subs.requests_of(address) if r["method"] == "PATCH"]
    assert {r["subscription_id"] for r in patches} == {first["inbox"].id, first["sentitems"].id}
    earliest = min(int(s.expires.timestamp()) for s in now.values())
    renewed_by = time.time()  # the renewal happened before now, so Graph's hour ends before now + 1 h
    assert earliest <= renewed_by + 3600  # the hour Graph gave, not the 4,230 minutes asked
    assert item["job"]["payload"]["expires_at"] == earliest
    assert item["due_at"] <= renew_at(int(time.time()), earliest)  # half-way to that expiry
    stored = {i["record"]["subscription_id"] for i in _cursor_items(stack, f"ACC#{account_id}", "GRAPHSUB#")}
    assert stored == {now["inbox"].id, now["sentitems"].id}  # the lapsed one is forgotten
    assert [j.payload["expires_at"] for j in _jobs_of(handled, account_id, "mail.watch")] == [
        renewal["job"]["payload"]["expires_at"]
    ]


# ---------------------------------------------------------------------------- notifications


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("SEC-2")
def test_new_mail_is_notified_synced_once_and_a_duplicate_collapses(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    subs: GraphSubscriptions,
    handled: list[Job],
    tenant: str,
) -> None:
    _with_contact(tenant)
    address, account_id = _connected(api, emulators, tenant, "notified")
    delivered_before = len(subs.deliveries)
    subs.faults(address, duplicate=1)
    emulators.microsoft.graph.arrive(
        address, mail("carla@client.test", [address], "Quote, please").as_bytes()
    )
    subs.wait_idle()
    mine = [
        d
        for d in subs.deliveries[delivered_before:]
        if d.items[0]["subscriptionId"] in {s.id for s in subs.of(address)}
    ]
    assert len(mine) == 2 and mine[0].items[0]["id"] == mine[1].items[0]["id"]  # the same notification twice
    assert all(d.status == 202 and d.in_time and not d.slow for d in mine)
    threads = wait_until(lambda: _threads(api, tenant), timeout=30)
    assert [t["subject"] for t in threads] == ["Quote, please"]
    wait_until(lambda: _jobs_of(handled, account_id), timeout=10)
    time.sleep(0.5)  # give a second job the chance it must not have
    assert len(_jobs_of(handled, account_id)) == 1  # both deliveries, one job
    assert threads[0]["message_count"] == 1


@pytest.mark.rule("SEC-2")
def test_a_batch_with_a_forged_client_state_is_answered_202_and_only_the_genuine_items_count(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    subs: GraphSubscriptions,
    handled: list[Job],
    tenant: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first_address, first = _connected(api, emulators, tenant, "genuine")
    second_address, second = _connected(api, emulators, tenant, "other")
    start = len(subs.deliveries)
    subs.pause()  # both mailboxes' changes go out in one POST, with a forged item among them
    subs.faults(first_address, forge=1)
    graph = emulators.microsoft.graph
    graph.arrive(first_address, mail("carla@client.test", [first_address], "One").as_bytes())
    graph.arrive(second_address, mail("carla@client.test", [second_address], "Two").as_bytes())
    subs.resume()
    subs.wait_idle()
    (batch,) = [d for d in subs.deliveries[start:] if d.kind == "notification"]
    states = {s.id: s.client_state for s in subs.of(first_address) + subs.of(second_address)}
    forged = [i for i in batch.items if i["clientState"] != states.get(i["subscriptionId"])]
    assert len(batch.items) == 3 and len(forged) == 1
    assert batch.status == 202 and batch.in_time  # the forged item does not fail the batch
    wait_until(lambda: _jobs_of(handled, first) and _jobs_of(handled, second), timeout=20)
    assert len(_jobs_of(handled, first)) == 1 and len(_jobs_of(handled, second)) == 1

    # a request made only of forged or unknown items queues nothing, and still gets 202
    seen = len(handled)
    genuine = subs.of(first_address)[0]
    only_forged = {
        "value": [
            {**forged[0], "id": "x1"},
            {**forged[0], "id": "x2", "subscriptionId": str(uuid.uuid4())},
            {**forged[0], "id": "x3", "clientState": None},
            "not an item",
        ]
    }
    assert requests.post(genuine.notification_url, json=only_forged, timeout=10).status_code == 202
    assert requests.post(genuine.notification_url, data="{not json", timeout=10).status_code == 400
    assert requests.post(genuine.notification_url, json={"value": "x"}, timeout=10).status_code == 400
    time.sleep(0.5)
    assert len(handled) == seen
    dropped = [r.__dict__ for r in caplog.records if r.getMessage() == "graph notification item dropped"]
    assert {d["reason"] for d in dropped} == {
        "clientState does not match",
        "unknown subscription",
        "malformed item",
    }
    logged = json.dumps([r.__dict__ for r in caplog.records], default=str)
    for secret in [*states.values(), forged[0]["clientState"]]:
        assert secret and secret not in logged  # no clientState in any log record


# ---------------------------------------------------------------------------- lifecycle


@pytest.mark.rule("SYNC-7")
@pytest.mark.rule("SYNC-2")
def test_each_lifecycle_event_leads_to_its_action(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    subs: GraphSubscriptions,
    handled: list[Job],
    tenant: str,
) -> None:
    address, account_id = _connected(api, emulators, tenant, "lifecycle")
    first = _by_folder(subs, address)
    start = len(subs.deliveries)

    # reauthorizationRequired: the worker calls /reauthorize on that subscription
    subs.lifecycle(first["inbox"].id, "reauthorizationRequired")
    wait_until(
        lambda: any(
            r["method"] == "POST" and r["path"].endswith(f"/{first['inbox'].id}/reauthorize")
            for r in subs.requests_of(address)
        ),
        timeout=20,
    )
    assert not subs.subscriptions[first["inbox"].id].reauthorization_required

    # subscriptionRemoved: a new subscription for the folder, then a delta catch-up
    subs.lifecycle(first["sentitems"].id, "subscriptionRemoved")
    again = wait_until(
        lambda: (s := _by_folder(subs, address).get("sentitems")) and s.id != first["sentitems"].id and s,
        timeout=20,
    )
    assert again.immutable_ids and again.client_state != first["sentitems"].client_state
    wait_until(
        lambda: any(j.payload.get("reason") == "graph-resubscribed" for j in _jobs_of(handled, account_id)),
        timeout=20,
    )
    assert [j.payload["subscription_id"] for j in _jobs_of(handled, account_id, "graph.resubscribe")] == [
        first["sentitems"].id
    ]

    # missed: a delta catch-up of the account
    subs.lifecycle(again.id, "missed")
    wait_until(
        lambda: any(j.payload.get("reason") == "graph-missed" for j in _jobs_of(handled, account_id)),
        timeout=20,
    )
    subs.wait_idle()
    lifecycle = [d for d in subs.deliveries[start:] if d.kind == "lifecycle"]
    assert len(lifecycle) == 3
    assert all(
        d.url == f"{api.base}/webhooks/graph/lifecycle" and d.status == 202 and d.in_time for d in lifecycle
    )
    assert {i["lifecycleEvent"] for d in lifecycle for i in d.items} == {
        "reauthorizationRequired",
        "subscriptionRemoved",
        "missed",
    }


# ---------------------------------------------------------------------------- disconnect


@pytest.mark.rule("ACC-8")
def test_disconnect_deletes_the_subscriptions_and_leaves_nothing_scheduled(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    subs: GraphSubscriptions,
    handled: list[Job],
    tenant: str,
) -> None:
    address, account_id = _connected(api, emulators, tenant, "leaving")
    mine = subs.of(address)
    assert len(mine) == 2 and set(_due_items(stack, account_id)) == {WATCH, CATCHUP}
    gone = api.call("DELETE", f"/v1/accounts/{account_id}", api.token(tenant, "u1"))
    assert gone.status_code == 200 and gone.json()["status"] == "disconnected"
    deletes = [r for r in subs.requests_of(address) if r["method"] == "DELETE"]
    assert {r["subscription_id"] for r in deletes} == {s.id for s in mine}
    assert subs.of(address) == []
    assert _due_items(stack, account_id) == {}
    assert _cursor_items(stack, f"ACC#{account_id}", "GRAPHSUB#") == []
    assert all(_cursor_items(stack, f"GRAPHSUB#{s.id}", "SUB") == [] for s in mine)

    # a notification that was in flight, with the old clientState, now matches nothing
    late = {
        "value": [
            {
                "subscriptionId": mine[0].id,
                "clientState": mine[0].client_state,
                "changeType": "created",
                "resource": "Users/x/Messages/y",
            }
        ]
    }
    assert requests.post(mine[0].notification_url, json=late, timeout=10).status_code == 202
    # and the scheduler, long after any renewal or catch-up would have come due, has nothing of it
    stack.services.scheduler().run(int(time.time()) + 8 * 86_400)
    time.sleep(0.5)
    assert _jobs_of(handled, account_id) == [] and _jobs_of(handled, account_id, "mail.watch") == []


@pytest.mark.rule("SYNC-2")
def test_each_subscription_record_names_the_job_its_notifications_queue(stack: LocalStack) -> None:
    """A Graph calendar subscription plugs into the same webhook: the job a notification (or a
    `missed` lifecycle event) queues is the one its subscription record names, per account and
    job, and records written before the field existed still queue `mail.sync`."""
    from crmsync.providers.microsoft.notify import GraphNotifications
    from crmsync.providers.microsoft.subscriptions import SubscriptionRecord, client_state_digest
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.stores.subscriptions import DynamoGraphSubscriptionStore

    store = DynamoGraphSubscriptionStore(stack.services.settings.cursors_table)
    account = f"acc-{uuid.uuid4().hex[:8]}"
    records = {
        "mail": SubscriptionRecord(
            subscription_id=f"m-{uuid.uuid4()}",
            account_id=account,
            tenant_id="t-jobs",
            folder="inbox",
            resource="/me/mailFolders('inbox')/messages",
            expires_at=int(time.time()) + 3600,
            client_state_sha256=client_state_digest("secret-mail"),
        ),
        "calendar": SubscriptionRecord(
            subscription_id=f"c-{uuid.uuid4()}",
            account_id=account,
            tenant_id="t-jobs",
            folder="calendar",
            resource="/me/events",
            expires_at=int(time.time()) + 3600,
            client_state_sha256=client_state_digest("secret-cal"),
            sync_job="calendar.sync",
        ),
    }
    for record in records.values():
        store.put(record)
    sqs = boto3.client("sqs")
    url = sqs.create_queue(
        QueueName=f"jobs-{uuid.uuid4().hex[:8]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
    )["QueueUrl"]
    notifications = GraphNotifications(store, SqsJobQueue(url))

    def item(kind: str, secret: str, **extra: Any) -> dict[str, Any]:
        return {
            "subscriptionId": records[kind].subscription_id,
            "clientState": secret,
            "changeType": "created",
            "resourceData": {"id": f"{kind}-{uuid.uuid4().hex[:6]}"},
            **extra,
        }

    body = {
        "value": [item("mail", "secret-mail"), item("calendar", "secret-cal"), item("calendar", "secret-cal")]
    }
    outcome = notifications.accept(json.dumps(body))
    assert outcome.accepted == 3
    assert sorted(j["type"] for j in outcome.jobs) == [
        "calendar.sync",
        "mail.sync",
    ]  # one per job, not per item
    missed = notifications.accept(
        json.dumps({"value": [item("calendar", "secret-cal", lifecycleEvent="missed")]})
    )
    assert [j["type"] for j in missed.jobs] == ["calendar.sync"]
    queued = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(Job.model_validate_json(m["Body"]).type for m in queued) == [
        "calendar.sync",
        "calendar.sync",
        "mail.sync",
    ]
    assert all(Job.model_validate_json(m["Body"]).account_id == account for m in queued)

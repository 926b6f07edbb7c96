"""Watch renewal and the catch-up poll, end to end: the connect hook schedules them as due
items, the scheduler (driven here with its `now`) fans them out onto the sync queue, the real
worker renews the Gmail watch in the emulator and syncs from the stored cursor; a disconnect
leaves nothing scheduled."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key

from crmsync import services
from crmsync.auth import Principal
from crmsync.calendar.schedule import POLL
from crmsync.directory import ContactEntry
from crmsync.mail.watch import CATCHUP, WATCH, renew_at
from crmsync.settings import get_settings
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

TOPIC = "projects/crmsync-test/topics/gmail"
DAY = 86_400


@pytest.fixture
def watching(stack: LocalStack) -> Iterator[None]:
    """The service as deployed with a Pub/Sub topic: the connect hook and the worker's
    `mail.watch` job call users.watch. Put back as configured afterwards."""
    owners = [
        stack.services.accounts(),
        stack.services.accounts(),
    ]
    runner = stack.services.sync_batch().runner

    def install(topic: str | None) -> None:
        hooks = services.current().with_settings(gmail_push_topic=topic or "").mail_bundle("google").hooks
        for accounts in owners:
            accounts.register_hooks("google", hooks)
        runner.register(
            "mail.watch", services.current().with_settings(gmail_push_topic=topic or "").mail_watch_job()
        )

    install(TOPIC)
    yield
    install(get_settings().gmail_push_topic or None)


def _connected(api: Api, emulators: Emulators, tenant: str, subject_hint: str) -> tuple[str, str]:
    address = f"{subject_hint}-{uuid.uuid4().hex[:8]}@gmail.test"
    result = connect(api, Browser(emulators), api.token(tenant, "u1"), "google", address)
    assert result["status"] == "connected", result
    return address, result["account_id"]


def _with_contact(api: Api, tenant: str) -> None:
    set_plan(api, tenant, "professional")  # two mailboxes per user
    services.current().directory().upsert(
        Principal(tenant_id=tenant, user_id="admin", role="admin"),
        "contacts",
        "c1",
        ContactEntry(name="Carla", emails=["carla@client.test"]),
    )


def _due_items(stack: LocalStack, account_id: str) -> dict[str, dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(stack.tables["CursorsTable"])
    found = table.query(
        KeyConditionExpression=Key("pk").eq(f"ACC#{account_id}") & Key("sk").begins_with("DUE#"),
        ConsistentRead=True,
    )["Items"]
    return {str(i["sk"]): json.loads(json.dumps(i, default=int)) for i in found}


def _subjects(api: Api, tenant: str) -> list[str]:
    threads = api.call("GET", "/v1/threads", api.token(tenant, "u1")).json()["threads"]
    return sorted(t["subject"] for t in threads)


def _tick(stack: LocalStack, now: int) -> int:
    """What the SchedulerFunction does on its rate(5 minutes) tick, at `now`."""
    enqueued: int = stack.services.scheduler().run(now)
    return enqueued


@pytest.mark.rule("SYNC-7")
def test_renewal_comes_well_before_expiry_whatever_lifetime_the_provider_gives() -> None:
    now = 1_700_000_000
    assert renew_at(now, now + 7 * DAY) == now + DAY  # Gmail's 7 days: daily, as Google advises
    assert renew_at(now, now + 2 * 3600) == now + 3600  # a short-lived channel: half-way to its expiry
    assert renew_at(now, now - 60) == now  # already lapsed: renew at once


@pytest.mark.rule("SYNC-7")
def test_connect_schedules_the_watch_renewal_and_the_renewal_catches_up_what_came_without_push(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, watching: None
) -> None:
    _with_contact(api, tenant)
    before = int(time.time())
    address, account_id = _connected(api, emulators, tenant, "watched")
    after = int(time.time())
    gmail = emulators.google.gmail
    box = gmail.mailbox(address)
    assert box.requests.count("gmail.users.watch") == 1 and box.watch and box.watch["topicName"] == TOPIC

    renewal = _due_items(stack, account_id)[WATCH]
    assert renewal["job"]["type"] == "mail.watch" and renewal["job"]["account_id"] == account_id
    expires_at = renewal["job"]["payload"]["expires_at"]  # what users.watch returned: 7 days in the emulator
    assert before + 7 * DAY - 1 <= expires_at <= after + 7 * DAY
    assert before + DAY <= renewal["due_at"] <= after + DAY  # daily, well before the expiry

    # only the renewal may sync here: the catch-up poll (test below) is taken out of the way
    table = boto3.resource("dynamodb").Table(stack.tables["CursorsTable"])
    table.delete_item(Key={"pk": f"ACC#{account_id}", "sk": CATCHUP})
    # a tick before the renewal point enqueues nothing (what it enqueues, it moves on)
    _tick(stack, renewal["due_at"] - 1)
    assert _due_items(stack, account_id)[WATCH]["due_at"] == renewal["due_at"]

    # mail arrives and its push is lost
    gmail.arrive(address, mail("carla@client.test", [address], "Sent while nobody was told").as_bytes())
    start = cursor_of(stack, account_id)

    # a tick past it: the worker re-calls users.watch, then syncs from the stored cursor
    renewed_from = int(time.time())
    assert _tick(stack, renewal["due_at"] + 1) >= 1
    # the tick fans out every item due by then, for every account the session made: the queue
    # works through them all, so this account's turn may take a while
    moved = wait_until(
        lambda: (w := _due_items(stack, account_id)[WATCH])["due_at"] <= int(time.time()) + DAY and w,
        timeout=180,
    )
    assert box.requests.count("gmail.users.watch") == 2
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=60)
    assert _subjects(api, tenant) == ["Sent while nobody was told"]
    last_watch = len(box.requests) - 1 - box.requests[::-1].index("gmail.users.watch")
    assert "gmail.users.history.list" in box.requests[last_watch:]  # the delta sync after the renewal

    # the next renewal is set by the expiry this renewal returned: a day on from then
    assert moved["job"]["payload"]["expires_at"] >= expires_at
    assert moved["due_at"] >= renewed_from + DAY


@pytest.mark.rule("SYNC-2")
def test_lost_pushes_are_caught_up_after_the_threshold_and_a_recently_synced_account_is_not_polled(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    _with_contact(api, tenant)
    threshold = get_settings().catchup_after_s
    gmail, google = emulators.google.gmail, emulators.google
    healthy_address, healthy = _connected(api, emulators, tenant, "healthy")
    lost_address, lost = _connected(api, emulators, tenant, "lost")
    poll = _due_items(stack, lost)[CATCHUP]
    assert poll["job"]["type"] == "mail.sync" and poll["job"]["account_id"] == lost
    assert poll["every_s"] == threshold
    healthy_at_connect = _due_items(stack, healthy)[CATCHUP]["due_at"]
    # due times are whole seconds: let the clock pass the lost account's last second, so the
    # healthy account's sync below is strictly later
    wait_until(lambda: int(time.time()) > poll["due_at"] - threshold, every=0.05)

    gmail.arrive(healthy_address, mail("carla@client.test", [healthy_address], "Pushed").as_bytes())
    gmail.arrive(lost_address, mail("carla@client.test", [lost_address], "Never pushed").as_bytes())
    history_id = gmail.mailbox(healthy_address).history_id
    assert google.deliver_push(f"{api.base}/webhooks/gmail", healthy_address, history_id) == 204
    # the push's sync moves the healthy account's catch-up a full threshold on
    pushed = wait_until(
        lambda: (d := _due_items(stack, healthy)[CATCHUP]["due_at"]) > poll["due_at"] and d, timeout=30
    )
    assert pushed > healthy_at_connect and _subjects(api, tenant) == ["Pushed"]
    healthy_history = gmail.mailbox(healthy_address).requests.count("gmail.users.history.list")

    # a tick before the threshold polls neither (what the scheduler enqueues, it moves on)
    _tick(stack, poll["due_at"] - 1)
    assert _due_items(stack, lost)[CATCHUP]["due_at"] == poll["due_at"]
    # once it has passed, the lost account is polled and its mail comes in
    _tick(stack, poll["due_at"])
    wait_until(lambda: "Never pushed" in _subjects(api, tenant), timeout=30)
    assert _subjects(api, tenant) == ["Never pushed", "Pushed"]
    assert _due_items(stack, lost)[CATCHUP]["due_at"] > poll["due_at"]  # next poll a threshold later

    # the healthy account, synced within the threshold, was not polled on top of its push
    assert _due_items(stack, healthy)[CATCHUP]["due_at"] == pushed
    assert gmail.mailbox(healthy_address).requests.count("gmail.users.history.list") == healthy_history


@pytest.mark.rule("ACC-8")
def test_disconnect_leaves_nothing_scheduled_and_late_work_cannot_bring_it_back(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, watching: None
) -> None:
    _with_contact(api, tenant)
    address, account_id = _connected(api, emulators, tenant, "leaving")
    # connected for mail and calendar (the default purpose): the watch, the catch-up, the calendar poll
    assert set(_due_items(stack, account_id)) == {WATCH, CATCHUP, POLL}
    gone = api.call("DELETE", f"/v1/accounts/{account_id}", api.token(tenant, "u1"))
    assert gone.status_code == 200 and gone.json()["status"] == "disconnected"
    assert _due_items(stack, account_id) == {}
    box = emulators.google.gmail.mailbox(address)
    assert box.requests[-1] == "gmail.users.stop"
    calls = len(box.requests)

    # the scheduler, long after any renewal or catch-up would have come due: nothing of it
    _tick(stack, int(time.time()) + 8 * DAY)
    # a renewal that was already queued is dropped by the worker (its account may not sync) ...
    runner = stack.services.sync_batch().runner
    job = {"type": "mail.watch", "tenant_id": tenant, "account_id": account_id, "payload": {}}
    assert runner.handle(json.dumps(job), f"m-{uuid.uuid4().hex}", account_id) == "dropped"
    # ... and one that was already running when the disconnect came cannot schedule it again
    account = services.current().account_store().get_by_id(account_id)
    assert account is not None and account.status == "disconnected"
    schedule = services.current().sync_schedule()
    assert schedule.renewed(account, int(time.time()) + 7 * DAY) is False
    assert schedule.synced(account) is False
    assert _due_items(stack, account_id) == {}
    assert len(box.requests) == calls  # no watch, no history: nothing ran for the account

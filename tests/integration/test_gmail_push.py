"""Gmail end to end: mail arrives in the emulated mailbox, Pub/Sub pushes (OIDC-checked, SEC-1),
the worker reads history from the cursor and syncs through the engine; the CRM sees the thread."""

from __future__ import annotations

import time
import uuid

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from crmsync import services
from crmsync.auth import Principal
from crmsync.directory import ContactEntry
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.redelivery import queued
from tests.integration.test_accounts import Browser, accounts_of, connect, set_plan
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of


@pytest.fixture
def webhook(stack: LocalStack, api: Api) -> str:
    return f"{api.base}/webhooks/gmail"


def _connected(api: Api, emulators: Emulators, tenant: str) -> tuple[str, str]:
    set_plan(api, tenant, "advanced")
    address = f"inbox-{uuid.uuid4().hex[:8]}@gmail.test"
    result = connect(api, Browser(emulators), api.token(tenant, "u1"), "google", address)
    assert result["status"] == "connected"
    return address, result["account_id"]


def _threads(api: Api, tenant: str) -> list[dict]:
    return api.call("GET", "/v1/threads", api.token(tenant, "u1")).json()["threads"]


@pytest.mark.rule("SEC-1")
def test_forged_pushes_are_refused(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str
) -> None:
    address, account_id = _connected(api, emulators, tenant)
    google = emulators.google
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = {
        "bad signature": google.push_token(webhook, key=stranger),
        "wrong audience": google.push_token("https://elsewhere.example/webhooks/gmail"),
        "wrong email": google.push_token(webhook, email="someone@evil.iam.gserviceaccount.com"),
        "unverified email": google.push_token(webhook, email_verified=False),
        "expired": google.push_token(webhook, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
        "wrong issuer": google.push_token(webhook, iss="https://evil.example"),
        "not a jwt": "abc.def.ghi",
    }
    for what, token in forged.items():
        assert google.deliver_push(webhook, address, 2000, token=token) == 401, what
    assert queued(stack, account_id) == 0  # nothing was queued for the mailbox, nor synced
    assert "gmail.users.history.list" not in google.gmail.mailbox(address).requests
    assert google.deliver_push(webhook, address, 2000) == 204  # the genuine one


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("MAIL-4")
@pytest.mark.rule("MAIL-3")
def test_mail_arriving_in_gmail_reaches_the_crm_once(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str
) -> None:
    address, account_id = _connected(api, emulators, tenant)
    start = cursor_of(stack, account_id)
    assert start is not None  # the provider-start hook recorded the mailbox's historyId
    directory = services.current().directory()
    directory.upsert(
        Principal(tenant_id=tenant, user_id="admin", role="admin"),
        "contacts",
        "c1",
        ContactEntry(name="Carla", emails=["carla@client.test"]),
    )
    gmail = emulators.google.gmail
    violations = len(gmail.validator.violations)
    first = mail("carla@client.test", [address], "Pricing?")
    gmail.arrive(address, first.as_bytes())
    google = emulators.google
    # the same Pub/Sub message twice (a redelivery): one job
    assert google.deliver_push(webhook, address, gmail.mailbox(address).history_id, message_id="p-1") == 204
    assert google.deliver_push(webhook, address, gmail.mailbox(address).history_id, message_id="p-1") == 204
    threads = wait_until(lambda: _threads(api, tenant), timeout=20)
    assert [t["subject"] for t in threads] == ["Pricing?"] and threads[0]["contact_ids"] == ["c1"]
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=10)
    assert gmail.mailbox(address).requests.count("gmail.users.history.list") == 1  # the duplicate collapsed

    # the user answers in the Gmail client: it joins the thread as outbound mail
    gmail.send_from_client(
        address, mail(address, ["carla@client.test"], "Re: Pricing?", reply_to=first).as_bytes()
    )
    assert google.deliver_push(webhook, address, gmail.mailbox(address).history_id, message_id="p-2") == 204

    def two_messages() -> dict | None:
        view = api.call("GET", f"/v1/threads/{threads[0]['crm_thread_id']}", api.token(tenant, "u1")).json()
        return view if len(view["messages"]) == 2 else None

    view = wait_until(two_messages, timeout=20)
    assert [m["direction"] for m in view["messages"]] == ["inbound", "outbound"]
    assert len(gmail.validator.violations) == violations  # every request fit gmail.v1


def test_pushes_for_unknown_or_disconnected_mailboxes_are_acknowledged_and_dropped(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str
) -> None:
    google = emulators.google
    assert google.deliver_push(webhook, "nobody@gmail.test", 5) == 204  # 2xx: Pub/Sub must not retry forever
    address, account_id = _connected(api, emulators, tenant)
    assert (
        api.call("DELETE", f"/v1/accounts/{account_id}", api.token(tenant, "u1")).json()["status"]
        == "disconnected"
    )
    before = google.gmail.requests.count("gmail.users.history.list")
    assert google.deliver_push(webhook, address, 6) == 204
    time.sleep(1)
    assert (
        google.gmail.requests.count("gmail.users.history.list") == before
    )  # no sync for a disconnected account
    dead = boto3.client("sqs").receive_message(
        QueueUrl=stack.queues["SyncDeadLetterQueue"], MessageAttributeNames=["All"]
    )
    assert not any(account_id in m["Body"] for m in dead.get("Messages", []))
    assert accounts_of(api, api.token(tenant, "u1"))[0]["status"] == "disconnected"


@pytest.mark.rule("SYNC-3")
def test_expired_history_resyncs_the_mailbox_without_duplicates(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str
) -> None:
    address, account_id = _connected(api, emulators, tenant)
    admin = Principal(tenant_id=tenant, user_id="admin", role="admin")
    services.current().directory().upsert(
        admin, "contacts", "c1", ContactEntry(name="Carla", emails=["carla@client.test"])
    )
    gmail, google = emulators.google.gmail, emulators.google
    first = mail("carla@client.test", [address], "Order 1")
    gmail.arrive(address, first.as_bytes())
    assert google.deliver_push(webhook, address, gmail.mailbox(address).history_id, message_id="q-1") == 204
    wait_until(lambda: len(_threads(api, tenant)) == 1, timeout=20)

    gmail.expire_history(address)  # Gmail no longer keeps the history our cursor points into
    second = mail("carla@client.test", [address], "Order 2")
    gmail.arrive(address, second.as_bytes())
    assert google.deliver_push(webhook, address, gmail.mailbox(address).history_id, message_id="q-2") == 204
    # 404 → a full resync through the state machine: the new mail comes in, the old one is not doubled
    threads = wait_until(lambda: (found := _threads(api, tenant)) and len(found) == 2 and found, timeout=30)
    assert sorted(t["subject"] for t in threads) == ["Order 1", "Order 2"]
    assert all(t["message_count"] == 1 for t in threads)
    fresh = wait_until(
        lambda: (c := cursor_of(stack, account_id)) and int(c) >= gmail.mailbox(address).oldest_kept and c,
        timeout=20,
    )

    # and the incremental sync goes on from the new cursor, with no further 404
    gmail.arrive(address, mail("carla@client.test", [address], "Order 3").as_bytes())
    assert google.deliver_push(webhook, address, gmail.mailbox(address).history_id, message_id="q-3") == 204
    wait_until(lambda: len(_threads(api, tenant)) == 3, timeout=20)
    assert int(cursor_of(stack, account_id) or 0) > int(fresh)

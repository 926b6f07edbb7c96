"""Gmail push end to end: Pub/Sub's OIDC token checked (SEC-1), the notification queued per
account, the worker syncing from the cursor through the engine."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import boto3
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from crmsync import services
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, accounts_of, connect, set_plan
from tests.integration.test_mail_engine import delivered, mail
from tests.integration.test_mailbox_sync import ScriptedHistory, cursor_of


@pytest.fixture
def webhook(stack: LocalStack, api: Api) -> str:
    return f"{api.base}/webhooks/gmail"


@pytest.fixture
def history() -> Iterator[ScriptedHistory]:
    scripted = ScriptedHistory([[]])
    services.CHANGE_SOURCES["google"] = scripted  # stands in for the Gmail adapter
    yield scripted
    services.CHANGE_SOURCES.pop("google", None)


def _connected(api: Api, emulators: Emulators, tenant: str) -> tuple[str, str]:
    set_plan(api, tenant, "advanced")
    address = f"inbox-{uuid.uuid4().hex[:8]}@gmail.test"
    result = connect(api, Browser(emulators), api.token(tenant, "u1"), "google", address)
    assert result["status"] == "connected"
    return address, result["account_id"]


@pytest.mark.rule("SEC-1")
def test_forged_pushes_are_refused(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str
) -> None:
    address, _ = _connected(api, emulators, tenant)
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
    sqs = boto3.client("sqs")
    assert "Messages" not in sqs.receive_message(QueueUrl=stack.queues["SyncQueue"], WaitTimeSeconds=0)
    assert google.deliver_push(webhook, address, 2000) == 204  # the genuine one


@pytest.mark.rule("SYNC-2")
def test_a_push_syncs_the_mailbox_once_through_the_queue(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str, history: ScriptedHistory
) -> None:
    address, account_id = _connected(api, emulators, tenant)
    services.mailbox_sync()._cursors.advance(account_id, "mail", "100", expected=None)
    message = mail("stranger@else.test", [address], "Hello")
    history.pages = [[delivered(message)]]
    google = emulators.google
    # the same Pub/Sub message twice (redelivery), then a later one: one sync each distinct push
    assert google.deliver_push(webhook, address, 2001, message_id="m-1") == 204
    assert google.deliver_push(webhook, address, 2001, message_id="m-1") == 204
    wait_until(lambda: cursor_of(stack, account_id) == "110", timeout=15)
    runs = len(history.calls)
    assert runs == 1  # the duplicate collapsed in the FIFO queue
    assert google.deliver_push(webhook, address, 2002, message_id="m-2") == 204
    wait_until(lambda: len(history.calls) > runs, timeout=15)
    assert history.calls[-1][0] == "110"  # the next run starts from the stored cursor
    event = stack.wait_for_event(
        lambda e: e["detail-type"] == "MessageSkipped" and e["detail"]["account_id"] == account_id
    )
    assert event["detail"]["reason"] == "not_a_crm_thread"  # a stranger's mail, crm_threads scope
    skips = [
        e
        for e in stack.events
        if e["detail-type"] == "MessageSkipped" and e["detail"]["account_id"] == account_id
    ]
    assert len(skips) == 1  # judged once, whatever the redeliveries


def test_pushes_for_unknown_or_disconnected_mailboxes_are_acknowledged_and_dropped(
    stack: LocalStack, emulators: Emulators, webhook: str, api: Api, tenant: str, history: ScriptedHistory
) -> None:
    google = emulators.google
    assert google.deliver_push(webhook, "nobody@gmail.test", 5) == 204  # 2xx: Pub/Sub must not retry forever
    address, account_id = _connected(api, emulators, tenant)
    assert (
        api.call("DELETE", f"/v1/accounts/{account_id}", api.token(tenant, "u1")).json()["status"]
        == "disconnected"
    )
    assert google.deliver_push(webhook, address, 6) == 204
    time.sleep(1)
    assert history.calls == []  # no sync for a disconnected account
    dead = boto3.client("sqs").receive_message(
        QueueUrl=stack.queues["SyncDeadLetterQueue"], MessageAttributeNames=["All"]
    )
    assert not any(account_id in m["Body"] for m in dead.get("Messages", []))
    assert accounts_of(api, api.token(tenant, "u1"))[0]["status"] == "disconnected"

"""Outlook through Microsoft Graph, end to end: the same engine as Gmail behind the Graph
client, against the Graph emulator over HTTPS; jobs go through the real queue and worker."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from crmsync.jobs import Job
from local.emulators.graph import GraphMail
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_gmail_send import _thread
from tests.integration.test_graph_notify import _cursor_items
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

CONTACT = "carla@client.test"


def _setup(api: Api, emulators: Emulators, tenant: str, notifications: bool = True) -> tuple[str, str, str]:
    set_plan(api, tenant, "advanced")
    admin = api.token(tenant, "admin", "admin")
    assert api.call("PUT", "/v1/directory/contacts/c1", admin, json={"name": "Carla", "emails": [CONTACT]}).ok
    deal = {"name": "Renewal", "status": "open", "contact_ids": ["c1"]}
    assert api.call("PUT", "/v1/directory/deals/d1", admin, json=deal).ok
    address = f"seller-{uuid.uuid4().hex[:8]}@outlook.test"
    token = api.token(tenant, "u1")
    result = connect(api, Browser(emulators), token, "microsoft", address)
    assert result["status"] == "connected", result
    if not notifications:  # the test queues the account's sync jobs itself, step by step
        assert emulators.graph_subscriptions is not None
        emulators.graph_subscriptions.faults(address, drop=1_000_000)
    return address, result["account_id"], token


def _graph(emulators: Emulators) -> GraphMail:
    graph: GraphMail = emulators.microsoft.graph
    return graph


def _sync(stack: LocalStack, tenant: str, account_id: str) -> None:
    """A mail.sync job on the account's queue group, as a notification would queue it."""
    boto3.client("sqs").send_message(
        QueueUrl=stack.queues["SyncQueue"],
        MessageBody=Job(type="mail.sync", tenant_id=tenant, account_id=account_id).model_dump_json(),
        MessageGroupId=account_id,
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def _threads(api: Api, token: str) -> list[dict[str, Any]]:
    threads: list[dict[str, Any]] = api.call("GET", "/v1/threads", token).json()["threads"]
    return threads


def _sent(emulators: Emulators, address: str) -> list[dict[str, Any]]:
    return [m for m in _graph(emulators).messages_of(address, "sentitems") if not m["isDraft"]]


@pytest.mark.rule("SEND-1")
@pytest.mark.rule("SEND-4")
@pytest.mark.rule("MAIL-2")
@pytest.mark.rule("MAIL-3")
@pytest.mark.rule("MAIL-4")
@pytest.mark.rule("MAIL-7")
def test_an_outlook_thread_goes_both_ways_once(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    first = api.call(
        "POST", "/v1/messages", token, json={"to": [{"address": CONTACT}], "subject": "Renewal", "text": "Hi"}
    )
    assert first.status_code == 201, first.text
    sent = first.json()
    assert sent["sender"] == address and sent["delivery"] == "sent"
    copies = _sent(emulators, address)
    assert len(copies) == 1 and copies[0]["id"] == sent["provider_message_id"]  # the immutable id
    assert copies[0]["internetMessageId"] == sent["rfc822_message_id"]  # our Message-ID went out

    _sync(stack, tenant, account_id)  # the worker meets the Sent Items copy: the same message
    reply = mail(CONTACT, [address], "Re: Renewal")
    reply["In-Reply-To"] = sent["rfc822_message_id"]
    reply["References"] = sent["rfc822_message_id"]
    graph.arrive(address, reply.as_bytes())
    _sync(stack, tenant, account_id)
    view = _thread(api, token, sent["thread_id"], 2)
    assert view["thread"]["contact_ids"] == ["c1"] and view["thread"]["deal_id"] == "d1"
    inbound = next(m for m in view["messages"] if m["direction"] == "inbound")

    answer = api.call(
        "POST",
        "/v1/messages",
        token,
        json={
            "to": [{"address": CONTACT}],
            "subject": "Re: Renewal",
            "text": "Here it is",
            "reply_to_message_id": inbound["crm_message_id"],
        },
    )
    assert answer.status_code == 201, answer.text
    assert "messages.createReply" in graph.mailbox(address).requests  # Graph threads the reply itself
    out = email.message_from_bytes(
        graph.raw_of(address, answer.json()["provider_message_id"]), policy=email.policy.default
    )
    assert out["In-Reply-To"] == inbound["message_id"]
    assert len(_sent(emulators, address)) == 2  # one Sent Items copy per message
    _sync(stack, tenant, account_id)
    view = _thread(api, token, sent["thread_id"], 3)
    assert [m["direction"] for m in view["messages"]] == ["outbound", "inbound", "outbound"]
    assert len({m["crm_message_id"] for m in view["messages"]}) == 3
    assert graph.max_concurrency(address) <= 4


@pytest.mark.rule("SYNC-3")
@pytest.mark.parametrize("how", ["410", "SyncStateNotFound"])
def test_an_expired_delta_token_resyncs_without_duplicates(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, how: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    graph.arrive(address, mail(CONTACT, [address], "Order 1").as_bytes())
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 1, timeout=20)
    before = cursor_of(stack, account_id)
    graph.expire_delta(address, "inbox", how=how)
    graph.arrive(address, mail(CONTACT, [address], "Order 2").as_bytes())
    _sync(stack, tenant, account_id)  # 410 / syncStateNotFound → a resync through the state machine
    threads = wait_until(lambda: (t := _threads(api, token)) and len(t) == 2 and t, timeout=30)
    assert sorted(t["subject"] for t in threads) == ["Order 1", "Order 2"]
    assert all(t["message_count"] == 1 for t in threads)
    wait_until(lambda: cursor_of(stack, account_id) != before, timeout=20)  # fresh delta links
    graph.arrive(address, mail(CONTACT, [address], "Order 3").as_bytes())
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 3, timeout=20)


@pytest.mark.rule("SYNC-4")
@pytest.mark.rule("SYNC-1")
def test_a_429_inside_batch_is_retried_and_the_cursor_is_untouched(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    for n in range(25):
        graph.arrive(address, mail(CONTACT, [address], f"Question {n}").as_bytes())
    start = cursor_of(stack, account_id)
    deltas = graph.mailbox(address).requests.count("messages.delta")
    graph.throttle(address, 1, retry_after=3, kind="messages.value")  # one $value inside a $batch
    _sync(stack, tenant, account_id)
    wait_until(lambda: graph.mailbox(address).throttle.requests == 0, timeout=20)
    # the job failed on the inner 429: its cursor waits, and SQS brings the job back after the
    # Retry-After the worker asked for (no hand-made redelivery)
    assert cursor_of(stack, account_id) == start
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=30)
    assert graph.mailbox(address).requests.count("messages.delta") >= deltas + 2  # inbox read twice
    threads = _threads(api, token)
    assert len(threads) == 25 and all(t["message_count"] == 1 for t in threads)
    assert graph.max_concurrency(address) <= 4


@pytest.mark.rule("MAIL-10")
@pytest.mark.rule("MAIL-9")
def test_removals_both_ways(stack: LocalStack, emulators: Emulators, api: Api, tenant: str) -> None:
    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    stored = {
        n: graph.arrive(address, mail(CONTACT, [address], f"Topic {n}").as_bytes()) for n in (1, 2, 3, 4)
    }
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 4, timeout=20)

    def message(subject: str) -> dict[str, Any]:
        thread = next(t for t in _threads(api, token) if t["subject"] == subject)
        found: dict[str, Any] = api.call("GET", f"/v1/threads/{thread['crm_thread_id']}", token).json()
        return found

    # MAIL-10: deleted and moved out of the synced folders in Outlook
    graph.delete_in_client(address, stored[1].immutable_id)
    graph.move_in_client(address, stored[2].immutable_id, "deleteditems")
    _sync(stack, tenant, account_id)
    wait_until(lambda: message("Topic 1")["messages"][0]["removed_in_mailbox"], timeout=20)
    wait_until(lambda: message("Topic 2")["messages"][0]["removed_in_mailbox"], timeout=20)
    assert not message("Topic 3")["messages"][0]["removed_in_mailbox"]

    # MAIL-9: archive and delete in the CRM move the Outlook copy
    assert api.call("PATCH", f"/v1/accounts/{account_id}", token, json={"archive_propagation": True}).ok
    three, four = message("Topic 3"), message("Topic 4")
    assert api.call("POST", f"/v1/threads/{three['thread']['crm_thread_id']}/archive", token).ok
    assert api.call("DELETE", f"/v1/messages/{four['messages'][0]['crm_message_id']}", token).ok

    def folder_of(subject: str) -> str:
        return next(m["folder"] for m in graph.messages_of(address) if m["subject"] == subject)

    wait_until(lambda: folder_of("Topic 3") == _key(graph, address, "archive"), timeout=20)
    wait_until(lambda: folder_of("Topic 4") == _key(graph, address, "deleteditems"), timeout=20)


@pytest.mark.rule("MAIL-8")
@pytest.mark.rule("MAIL-10")
@pytest.mark.rule("SYNC-3")
def test_outlook_syncs_the_folders_the_user_chose(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    clients = graph.create_folder(address, "Clients")
    acme = graph.create_folder(address, "Acme", parent=clients)
    # a folder and a subfolder of it, by their display names, and one the user has yet to make
    chosen = ["Clients", "Clients/Acme", "Later"]
    changed = api.call("PATCH", f"/v1/accounts/{account_id}", token, json={"labels_or_folders": chosen})
    assert changed.status_code == 200, changed.text

    # the change renews at once: Inbox's subscription goes, the chosen folders get theirs, by id
    def subscriptions() -> dict[str, str] | None:
        stored = _cursor_items(stack, f"ACC#{account_id}", "GRAPHSUB#")
        found = {i["record"]["folder"]: i["record"]["resource"] for i in stored}
        return found if set(found) == {"Clients", "Clients/Acme", "sentitems"} else None  # not "Later"

    resources = wait_until(subscriptions, timeout=30)
    assert resources["Clients"] == f"/me/mailFolders('{clients}')/messages"
    assert resources["Clients/Acme"] == f"/me/mailFolders('{acme}')/messages"

    graph.arrive(address, mail(CONTACT, [address], "Left in the inbox").as_bytes())
    filed = graph.arrive(address, mail(CONTACT, [address], "Filed by a rule").as_bytes(), folder=clients)
    deeper = graph.arrive(address, mail(CONTACT, [address], "Filed deeper").as_bytes(), folder=acme)
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 2, timeout=30)
    assert sorted(t["subject"] for t in _threads(api, token)) == ["Filed by a rule", "Filed deeper"]

    def removed(subject: str) -> bool:
        thread = next(t for t in _threads(api, token) if t["subject"] == subject)
        view = api.call("GET", f"/v1/threads/{thread['crm_thread_id']}", token).json()
        return bool(view["messages"][0]["removed_in_mailbox"])

    # MAIL-10: a move between two synced folders is no removal; a move out of them is
    graph.move_in_client(address, filed.immutable_id, acme)
    graph.move_in_client(address, deeper.immutable_id, "inbox")
    _sync(stack, tenant, account_id)
    wait_until(lambda: removed("Filed deeper"), timeout=30)  # after the other move was read
    assert not removed("Filed by a rule")
    assert len(_threads(api, token)) == 2  # and nothing came in twice

    # the missing folder was skipped, not fatal; once it exists, its mail syncs
    later = graph.create_folder(address, "Later")
    graph.arrive(address, mail(CONTACT, [address], "Filed later").as_bytes(), folder=later)
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 3, timeout=30)
    assert "Left in the inbox" not in {t["subject"] for t in _threads(api, token)}

    # SYNC-3 on a chosen folder: the resync reads the chosen folders again, nothing doubles
    before = cursor_of(stack, account_id)
    assert graph.expire_delta(address, "Clients") >= 1  # the delta link the cursor holds is refused
    graph.arrive(address, mail(CONTACT, [address], "After the resync").as_bytes(), folder=clients)
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 4, timeout=60)
    wait_until(lambda: cursor_of(stack, account_id) != before, timeout=30)
    threads = _threads(api, token)
    assert all(t["message_count"] == 1 for t in threads)
    assert "Left in the inbox" not in {t["subject"] for t in threads}


def _key(graph: GraphMail, address: str, folder: str) -> str:
    box = graph.mailbox(address)
    key: str = graph._folder_or_raise(box, folder)
    return key


@pytest.mark.rule("ATT-3")
@pytest.mark.rule("ATT-4")
@pytest.mark.rule("ATT-5")
def test_outlook_attachment_limits_both_ways(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    three_mb = 3 * 1024 * 1024

    def stage(name: str, data: bytes) -> str:
        import requests

        staged = api.call("POST", "/v1/attachments", token, json={"filename": name, "size": len(data)})
        if staged.status_code != 201:
            return ""
        body = staged.json()
        up = requests.post(
            body["upload_url"], data=body["upload_fields"], files={"file": (name, data)}, timeout=60
        )
        assert up.status_code in (200, 204)
        return str(body["attachment_id"])

    body = {"to": [{"address": CONTACT}], "subject": "Files", "text": "attached"}
    fits = stage("quote.pdf", b"%PDF-1.7\n" + b"0" * (three_mb - 9))
    sent = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": [fits]})
    assert sent.status_code == 201, sent.text[:300]
    copy = email.message_from_bytes(
        graph.raw_of(address, sent.json()["provider_message_id"]), policy=email.policy.default
    )
    sizes = [len(p.get_payload(decode=True)) for p in copy.iter_attachments()]
    assert sizes == [three_mb]  # exactly 3 MB passes: an upload session, in 320 KiB multiples
    assert "attachments.createUploadSession" in graph.mailbox(address).requests
    over = api.call("POST", "/v1/attachments", token, json={"filename": "big.pdf", "size": three_mb + 1})
    assert over.status_code == 413  # Microsoft: 3 MB per file
    exe = stage("invoice.pdf", b"MZ" + b"\x00" * 100)
    refused = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": [exe]})
    assert refused.status_code == 422 and "executable" in refused.json()["error"]["message"]
    mp3 = stage("song.mp3", b"ID3" + b"\x00" * 100)
    assert api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": [mp3]}).status_code == 422

    # inbound: one byte over 3 MB skips the message, and the CRM is told which and why
    big = mail(CONTACT, [address], "Too big")
    big.add_attachment(
        b"%PDF-1.7\n" + b"0" * (three_mb - 8), maintype="application", subtype="pdf", filename="plan.pdf"
    )
    skipped = graph.arrive(address, big.as_bytes())
    _sync(stack, tenant, account_id)
    event = stack.wait_for_event(
        lambda e: (
            e["detail-type"] == "MessageSkipped"
            and e["detail"]["provider_message_id"] == skipped.immutable_id
        )
    )
    assert event["detail"]["reason"] == "attachment_limit" and "plan.pdf" in event["detail"]["detail"]
    assert all(t["subject"] != "Too big" for t in _threads(api, token))


@pytest.mark.rule("ACC-5")
@pytest.mark.rule("SYNC-6")
def test_an_outlook_back_import_pages_through_the_state_machine_from_the_chosen_date(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    admin = api.token(tenant, "admin", "admin")
    assert api.call("PUT", "/v1/directory/contacts/c1", admin, json={"name": "Carla", "emails": [CONTACT]}).ok
    address = f"importer-{uuid.uuid4().hex[:8]}@outlook.test"
    graph = _graph(emulators)
    now = datetime.now(UTC)
    for days, subject in [(75, "Too old"), (20, "Last month"), (3, "This week")]:
        graph.arrive(
            address, mail(CONTACT, [address], subject).as_bytes(), received=now - timedelta(days=days)
        )
    for n in range(12):  # more than a delta page, so the import takes several steps
        graph.arrive(
            address, mail(CONTACT, [address], f"Recent {n}").as_bytes(), received=now - timedelta(days=1)
        )
    token = api.token(tenant, "u1")
    result = connect(api, Browser(emulators), token, "microsoft", address, import_since="1m")
    assert result["status"] == "connected", result

    def finished() -> dict[str, Any] | None:
        progress = api.call("GET", f"/v1/accounts/{result['account_id']}/sync", token).json()["imports"]
        return progress[0] if progress and progress[0]["status"] == "succeeded" else None

    progress = wait_until(finished, timeout=60)
    assert progress["kind"] == "mail_import" and progress["pages"] >= 2
    subjects = sorted(t["subject"] for t in _threads(api, token))
    assert subjects == sorted(["Last month", "This week", *(f"Recent {n}" for n in range(12))])

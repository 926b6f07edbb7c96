"""Gmail messages are fetched in batch requests of at most 50 calls (one history.list per page):
over the real sync core (CursorLoop), engine and stores, and through the real push → queue → worker path.
A 429 or 5xx, of the batch or of one call in it, leaves the cursor where it was (SYNC-4)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from crmsync import services
from crmsync.auth import Principal
from crmsync.directory import ContactEntry
from crmsync.errors import TransientError
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of


def connected_mailbox(api: Api, emulators: Emulators, tenant: str) -> tuple[str, str]:
    """A Gmail account connected through the OAuth flow, and Carla, a contact who writes to it."""
    set_plan(api, tenant, "advanced")
    address = f"inbox-{uuid.uuid4().hex[:8]}@gmail.test"
    result = connect(api, Browser(emulators), api.token(tenant, "u1"), "google", address)
    assert result["status"] == "connected"
    services.current().directory().upsert(
        Principal(tenant_id=tenant, user_id="admin", role="admin"),
        "contacts",
        "c1",
        ContactEntry(name="Carla", emails=["carla@client.test"]),
    )
    return address, result["account_id"]


def all_threads(api: Api, tenant: str) -> list[dict[str, Any]]:
    token, found, following = api.token(tenant, "u1"), [], None
    while True:
        params = {"limit": 100, **({"next": following} if following else {})}
        page = api.call("GET", "/v1/threads", token, params=params).json()
        found += page["threads"]
        if not (following := page.get("next")):
            return found


def arrive_from_carla(emulators: Emulators, address: str, subjects: list[str]) -> None:
    for subject in subjects:
        emulators.google.gmail.arrive(address, mail("carla@client.test", [address], subject).as_bytes())


def each_once(api: Api, tenant: str, subjects: list[str]) -> bool:
    threads = all_threads(api, tenant)
    return sorted(t["subject"] for t in threads) == sorted(subjects) and all(
        t["message_count"] == 1 for t in threads
    )


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("MAIL-7")
def test_120_new_messages_take_one_history_list_and_three_batches(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    start = cursor_of(stack, account_id)
    subjects = [f"Order {n}" for n in range(120)]
    arrive_from_carla(emulators, address, subjects)
    box = emulators.google.gmail.mailbox(address)
    before = len(box.requests)
    webhook = f"{api.base}/webhooks/gmail"
    assert emulators.google.deliver_push(webhook, address, box.history_id) == 204

    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=60)
    assert each_once(api, tenant, subjects)
    calls = box.requests[before:]
    assert calls.count("gmail.users.history.list") == 1
    # the page's sizes first (format=minimal), then the raw mail: both in batches of at most 50
    assert calls.count("batch") == 6 and box.batches[-6:] == [50, 50, 20, 50, 50, 20]
    assert calls.count("gmail.users.messages.get") == 240  # every get inside a batch, none alone
    assert cursor_of(stack, account_id) == str(box.history_id)


@pytest.mark.rule("SYNC-4")
@pytest.mark.rule("SYNC-1")
def test_a_429_inside_a_batch_leaves_the_cursor_and_the_retry_syncs_everything(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    account = services.current().account_store().get_by_id(account_id)
    assert account is not None
    start = cursor_of(stack, account_id)
    subjects = [f"Invoice {n}" for n in range(55)]
    arrive_from_carla(emulators, address, subjects)
    gmail = emulators.google.gmail
    # after the 55 sizes, the 53rd raw get, in the second batch, is refused; the batch answers 200
    gmail.throttle(address, requests=1, retry_after=2, method="gmail.users.messages.get", skip=55 + 52)
    source = services.current().change_sources()["google"]
    with pytest.raises(TransientError, match="429"):
        services.current().mailbox_sync().run(account, source)
    assert cursor_of(stack, account_id) == start
    assert gmail.mailbox(address).batches[-2:] == [50, 5]
    # the first batch was stored before the second was fetched (one batch in memory at a time)
    assert sorted(t["subject"] for t in all_threads(api, tenant)) == sorted(subjects[:50])

    result = services.current().mailbox_sync().run(account, source)  # the job, retried
    assert result.synced == 5 and result.synced + result.updated + result.skipped == 55
    assert each_once(api, tenant, subjects)
    assert cursor_of(stack, account_id) == str(gmail.mailbox(address).history_id)


@pytest.mark.rule("SYNC-4")
def test_a_429_with_retry_after_is_retried_and_the_cursor_is_untouched(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    start = cursor_of(stack, account_id)
    gmail, google = emulators.google.gmail, emulators.google
    arrive_from_carla(emulators, address, ["Quote"])
    box = gmail.mailbox(address)
    gmail.throttle(address, requests=1, retry_after=1, method="gmail.users.history.list")
    assert google.deliver_push(f"{api.base}/webhooks/gmail", address, box.history_id) == 204

    wait_until(lambda: box.throttle.requests == 0)  # the worker was refused: 429, Retry-After 1
    assert cursor_of(stack, account_id) == start and all_threads(api, tenant) == []
    # the failed job comes back through SQS after the Retry-After and goes through
    wait_until(lambda: cursor_of(stack, account_id) != start)
    assert each_once(api, tenant, ["Quote"])
    assert box.requests.count("gmail.users.history.list") == 2  # the refused call, then the retry
    assert cursor_of(stack, account_id) == str(box.history_id)


@pytest.mark.rule("SYNC-1")
def test_a_message_deleted_before_its_batch_is_skipped_and_the_rest_syncs(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    account = services.current().account_store().get_by_id(account_id)
    assert account is not None
    arrive_from_carla(emulators, address, ["Kept 1", "Gone", "Kept 2"])
    gmail = emulators.google.gmail
    gone = next(m for m in gmail.mailbox(address).messages.values() if b"Subject: Gone" in m.raw)
    gmail.delete_in_client(address, gone.id)  # history still lists it as added; its get is 404

    result = services.current().mailbox_sync().run(account, services.current().change_sources()["google"])
    assert (result.synced, result.skipped) == (2, 0)
    assert each_once(api, tenant, ["Kept 1", "Kept 2"])
    assert cursor_of(stack, account_id) == str(gmail.mailbox(address).history_id)


@pytest.mark.rule("SYNC-1")
def test_a_batch_is_bounded_by_bytes_as_well_as_by_count(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Large mail is fetched a few at a time, by the sizes Gmail estimates, so that a worker holds
    a bounded amount of raw mail whatever the backlog; small mail still goes 50 to a batch."""
    from crmsync.providers.google import gmail

    monkeypatch.setattr(gmail, "BATCH_BYTES", 1_200_000)
    address, account_id = connected_mailbox(api, emulators, tenant)
    start = cursor_of(stack, account_id)
    heavy = [f"Drawings {n}" for n in range(5)]
    box = emulators.google.gmail.mailbox(address)
    for subject in heavy:
        message = mail("carla@client.test", [address], subject)
        message.add_attachment(b"%PDF-1.4 " + b"x" * 400_000, maintype="application", subtype="pdf")
        emulators.google.gmail.arrive(address, message.as_bytes())
    before = len(box.batches)
    assert emulators.google.deliver_push(f"{api.base}/webhooks/gmail", address, box.history_id) == 204
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=60)
    assert each_once(api, tenant, heavy)
    # five sizes in one batch; then, at about 550 KB each, two, two and one per batch
    assert box.batches[before:] == [5, 2, 2, 1]
    assert gmail.by_weight(["a", "b", "c"], {"a": 10, "b": 10, "c": 10}, budget=25) == (["a", "b"], ["c"])
    assert gmail.by_weight(["a", "b"], {"a": 99, "b": 1}, budget=25) == (["a"], ["b"])  # one is never too big

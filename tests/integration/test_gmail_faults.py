"""Gmail-only push behaviour. The convergence scenarios Gmail shares with every provider
(duplicated, reordered, lost and late pushes; a crash before or after any write of the worker;
throttling inside a page; an expired history; removals) are the provider contract:
tests/contract/test_provider_contract.py, with Gmail's fixture in tests/contract/providers/gmail.py.

Here: mail made to arrive through the emulator's HTTP control (as a demo script in another process
does) reaches the CRM through the real push: the emulated Pub/Sub subscription pushes to the
webhook (OIDC-signed), the webhook queues, the worker syncs. The test stack has no GmailPushTopic
(the connect flow does not watch), so the test starts the mailbox's watch itself, as
GmailWatchHooks does when the topic is configured."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.redelivery import queued
from tests.integration.test_gmail_batch import all_threads, connected_mailbox
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

TOPIC = "projects/crmsync-local/topics/gmail"


@pytest.fixture
def pushing(stack: LocalStack, emulators: Emulators, api: Api) -> Iterator[Emulators]:
    """The emulator's Pub/Sub subscription pushes to the service's webhook during the test."""
    emulators.google.pubsub_endpoint = f"{api.base}/webhooks/gmail"
    try:
        yield emulators
    finally:
        wait_until(emulators.google.pushes_settled)
        emulators.google.pubsub_endpoint = None


class Mailbox:
    """A connected, watched Gmail mailbox."""

    def __init__(self, api: Api, emulators: Emulators, tenant: str) -> None:
        self.api, self.emulators, self.tenant = api, emulators, tenant
        self.address, self.account_id = connected_mailbox(api, emulators, tenant)
        gmail = build(
            "gmail",
            "v1",
            credentials=Credentials(token=emulators.google.issue_access_token(self.address)),  # type: ignore[no-untyped-call]
            static_discovery=True,
            client_options={"api_endpoint": emulators.google_url + "/"},
        )
        gmail.users().watch(userId="me", body={"topicName": TOPIC}).execute()
        self.box = emulators.google.gmail.mailbox(self.address)

    def quiet(self, stack: LocalStack) -> bool:
        """Nothing left to do: every push sent, no job of the account queued or running, the
        cursor at the mailbox's newest historyId."""
        return (
            self.emulators.google.pushes_settled()
            and queued(stack, self.account_id) == 0
            and cursor_of(stack, self.account_id) == str(self.box.history_id)
        )

    def crm_messages(self) -> list[dict[str, Any]]:
        threads = all_threads(self.api, self.tenant)
        assert len(threads) == 1, [t["subject"] for t in threads]  # the whole conversation, one thread
        path = f"/v1/threads/{threads[0]['crm_thread_id']}"
        view = self.api.call("GET", path, self.api.token(self.tenant, "u1")).json()
        return list(view["messages"])


@pytest.mark.rule("SYNC-2")
def test_mail_arriving_reaches_the_crm_with_no_push_by_hand(
    stack: LocalStack, pushing: Emulators, api: Api, tenant: str
) -> None:
    mailbox = Mailbox(api, pushing, tenant)
    raw = mail("carla@client.test", [mailbox.address], "Renewal").as_string()
    arrived = requests.post(
        f"{pushing.google_url}/_emulator/gmail/arrive",
        json={"address": mailbox.address, "raw": raw},
        timeout=10,
    )
    assert arrived.status_code == 200, arrived.text
    wait_until(lambda: mailbox.quiet(stack) and all_threads(api, tenant))
    [message] = mailbox.crm_messages()
    assert (
        message["message_id"] == arrived.json()["messageId"]
        and message["provider_message_id"] == arrived.json()["id"]
    )
    assert [p["fate"] for p in pushing.google.pushes_of(mailbox.address)] == ["delivered"]

"""Gmail: a mailbox of the Gmail emulator, watched on the Pub/Sub topic, whose subscription
pushes (OIDC-signed) to the service's webhook. The test stack has no GmailPushTopic (the connect
flow does not watch), so the fixture starts the mailbox's watch itself, as GmailWatchHooks does
when the topic is configured. The cursor is the mailbox's historyId."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Literal

from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from tests.contract.providers import CORRESPONDENT, ContractMailbox, Expected, Notice
from tests.integration.test_accounts import Browser, connect, set_plan

TOPIC = "projects/crmsync-local/topics/gmail"
FETCH = "gmail.users.messages.get"  # each message of a history page, fetched in a batch


class Gmail(ContractMailbox):
    name = "gmail"
    EMPTY_ROUND_MOVES_CURSOR = False

    def connect(self) -> tuple[str, str]:
        google = self.emulators.google
        set_plan(self.api, self.tenant, "advanced")
        admin = self.api.token(self.tenant, "admin", "admin")
        contact = {"name": "Carla", "emails": [CORRESPONDENT]}
        assert self.api.call("PUT", "/v1/directory/contacts/c1", admin, json=contact).ok
        address = f"inbox-{uuid.uuid4().hex[:8]}@gmail.test"
        result = connect(
            self.api, Browser(self.emulators), self.api.token(self.tenant, "u1"), "google", address
        )
        assert result["status"] == "connected", result
        gmail = build(
            "gmail",
            "v1",
            credentials=Credentials(token=google.issue_access_token(address)),  # type: ignore[no-untyped-call]
            static_discovery=True,
            client_options={"api_endpoint": self.emulators.google_url + "/"},
        )
        gmail.users().watch(userId="me", body={"topicName": TOPIC}).execute()
        google.pubsub_endpoint = f"{self.api.base}/webhooks/gmail"  # the subscription pushes
        self.gmail = google.gmail
        self.box = google.gmail.mailbox(address)
        self._change_of: dict[int, int] = {}  # historyId → the fixture's change number
        self._history_of: dict[int, int] = {}  # and back
        self._late: list[tuple[int, Notice]] = []  # (pushes logged before it, the push)
        return address, result["account_id"]

    def close(self) -> None:
        self.emulators.google.pubsub_endpoint = None

    # ------------------------------------------------------------------ the mailbox
    def _arrive(self, message: EmailMessage) -> str:
        return self.gmail.arrive(self.address, message.as_bytes()).id

    def _send_from_client(self, message: EmailMessage) -> str:
        return self.gmail.send_from_client(self.address, message.as_bytes()).id

    def _changed(self, provider_message_id: str) -> None:
        self._change_of[self.box.history_id] = self.changes
        self._history_of[self.changes] = self.box.history_id

    def remove(self, message: Expected, how: Literal["trash", "delete"]) -> None:
        if how == "trash":
            self.gmail.trash_in_client(self.address, message.provider_message_id)
        else:
            self.gmail.delete_in_client(self.address, message.provider_message_id)
        self.changes += 1
        self._changed(message.provider_message_id)

    # ------------------------------------------------------------------ notifications
    def notification_faults(self, duplicate: int = 0, reorder: int = 0, drop: int = 0) -> None:
        self.emulators.google.push_faults(self.address, duplicate=duplicate, reorder=reorder, drop=drop)

    @contextmanager
    def held(self) -> Iterator[None]:
        google = self.emulators.google
        google.push_faults(self.address, reorder=1_000)  # held until released
        try:
            yield
        finally:
            with google._push_lock:
                google._faults[self.address].reorder = 0
            google.release_held(self.address)

    def notices(self) -> list[Notice]:
        log = [p for p in self.emulators.google.pushes_of(self.address) if p["fate"] != "held"]
        found: list[Notice] = []
        for position, push in enumerate(log):
            found += [n for at, n in self._late if at == position]
            change = self._change_of.get(int(push["historyId"]), 0)
            found.append(Notice(change, str(push["messageId"]), push["fate"], int(push.get("status", 0))))
        return found + [n for at, n in self._late if at >= len(log)]

    def deliver_late(self, notice: Notice) -> int:
        google = self.emulators.google
        history_id = self._history_of[notice.change]
        status = google.deliver_push(google.pubsub_endpoint or "", self.address, history_id, notice.id)
        logged = len([p for p in google.pushes_of(self.address) if p["fate"] != "held"])
        fate: Literal["delivered", "failed"] = "delivered" if 200 <= status < 300 else "failed"
        self._late.append((logged, Notice(notice.change, notice.id, fate, status)))
        return status

    def notifications_settled(self) -> bool:
        return self.emulators.google.pushes_settled()

    # ------------------------------------------------------------------ faults
    def expire_cursor(self) -> None:
        self.gmail.expire_history(self.address)  # history.list from any older id: 404

    def throttle_inside_page(self, retry_after: int) -> None:
        # the second get of the page's batch answers 429; the batch itself answers 200
        self.gmail.throttle(self.address, requests=1, retry_after=retry_after, method=FETCH, skip=1)

    def throttle_spent(self) -> bool:
        return self.box.throttle.requests == 0

    # ------------------------------------------------------------------ the cursor
    def caught_up(self) -> bool:
        return self.stored_cursor() == str(self.box.history_id)

    def is_forward(self, before: str, after: str) -> bool:
        return int(after) > int(before)


FIXTURE = Gmail

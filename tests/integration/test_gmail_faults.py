"""Gmail sync converges under the faults Pub/Sub and Lambda really have (SYNC-2): duplicated,
reordered and lost pushes, and a worker that dies between any two of its writes and has its
job redelivered by SQS. Everything runs for real: the emulated Pub/Sub subscription pushes to
the webhook (OIDC-signed), the webhook queues, the worker syncs from the stored cursor through
the engine and stores on moto. The end state is judged through the API: every message exactly
once in its CRM thread, published, and the cursor at the mailbox's historyId, never having
moved backwards (SYNC-1).

The test stack has no GmailPushTopic (the connect flow does not watch), so each test starts the
mailbox's watch itself, as GmailWatchHooks does when the topic is configured."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import pytest
import requests
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build

from crmsync import services
from crmsync.jobs import Job
from crmsync.settings import get_settings
from crmsync.stores.queue import SqsJobQueue
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.redelivery import queued, redeliver_now
from tests.integration.test_gmail_batch import all_threads, connected_mailbox
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

TOPIC = "projects/crmsync-local/topics/gmail"


class Crash(Exception):
    """The worker dies here (Lambda timeout, out of memory, a lost container)."""


class CrashPlan:
    """Counts the worker's writes; the `at`-th one raises once, before it lands or after."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0
        self.after = False
        self.writes = 0
        self.crashes = 0
        self.advances: list[tuple[str | None, str]] = []  # (expected, new) of each cursor move

    def arm(self, at: int, after: bool = False) -> None:
        with self.lock:
            self.at, self.after, self.writes = at, after, 0

    def _hit(self, after: bool) -> bool:
        if self.at and self.writes == self.at and self.after == after:
            self.at = 0  # once
            self.crashes += 1
            return True
        return False

    def write(self, name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self.lock:
            self.writes += 1
            if self._hit(after=False):
                raise Crash(f"before {name}")
        result = target(*args, **kwargs)
        with self.lock:
            if name == "advance" and result:
                self.advances.append((kwargs.get("expected"), args[2]))
            if self._hit(after=True):
                raise Crash(f"after {name}")
        return result


class CrashingWrites:
    """Wraps a real store (DynamoDB, S3, EventBridge): reads pass through, writes are counted."""

    WRITES = {"put", "record_message", "attach_copy", "mark_published", "mark_removed", "record_skip"}
    WRITES |= {"mark_skip_told"}
    WRITES |= {"publish", "advance", "set"}

    def __init__(self, inner: Any, plan: CrashPlan) -> None:
        self._inner = inner
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in self.WRITES:
            return target
        return lambda *args, **kwargs: self._plan.write(name, target, args, kwargs)


@pytest.fixture
def plan(stack: LocalStack) -> Iterator[CrashPlan]:
    """The worker's sync core's CursorLoop (the services are built once per process) with its cursor store,
    mail store, raw store and publisher wrapped; put back afterwards."""
    sync, created = services.mailbox_sync(), CrashPlan()
    engine = sync._engine
    saved = (sync._cursors, engine._store, engine._raw, engine._publisher)
    sync._cursors = CrashingWrites(saved[0], created)  # type: ignore[assignment]
    engine._store = CrashingWrites(saved[1], created)  # type: ignore[assignment]
    engine._raw = CrashingWrites(saved[2], created)  # type: ignore[assignment]
    engine._publisher = CrashingWrites(saved[3], created)  # type: ignore[assignment]
    try:
        yield created
    finally:
        sync._cursors, engine._store, engine._raw, engine._publisher = saved  # type: ignore[assignment]


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
    """A connected, watched Gmail mailbox and a conversation with Carla in it."""

    def __init__(self, api: Api, emulators: Emulators, tenant: str) -> None:
        self.api, self.emulators, self.tenant = api, emulators, tenant
        self.address, self.account_id = connected_mailbox(api, emulators, tenant)
        gmail = build(
            "gmail",
            "v1",
            credentials=Credentials(token=emulators.google.issue_access_token(self.address)),
            static_discovery=True,
            client_options={"api_endpoint": emulators.google_url + "/"},
        )
        gmail.users().watch(userId="me", body={"topicName": TOPIC}).execute()
        self.box = emulators.google.gmail.mailbox(self.address)
        self.chain: list[EmailMessage] = []

    def carla_writes(self) -> None:
        parent = self.chain[-1] if self.chain else None
        message = mail("carla@client.test", [self.address], "Re: Renewal" if parent else "Renewal", parent)
        self.emulators.google.gmail.arrive(self.address, message.as_bytes())
        self.chain.append(message)

    def user_answers(self) -> None:
        message = mail(self.address, ["carla@client.test"], "Re: Renewal", self.chain[-1])
        self.emulators.google.gmail.send_from_client(self.address, message.as_bytes())
        self.chain.append(message)

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

    def assert_each_exactly_once(self) -> None:
        messages = self.crm_messages()
        assert sorted(m["message_id"] for m in messages) == sorted(m["Message-ID"] for m in self.chain)
        assert all(m["published"] for m in messages)  # and each one's event went out


def moves_forward(plan: CrashPlan) -> bool:
    return all(expected is not None and int(new) > int(expected) for expected, new in plan.advances) and all(
        int(a[1]) < int(b[1]) for a, b in zip(plan.advances, plan.advances[1:], strict=False)
    )


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


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SYNC-1")
def test_duplicated_and_reordered_pushes_converge_to_each_message_once(
    stack: LocalStack, pushing: Emulators, api: Api, tenant: str, plan: CrashPlan
) -> None:
    mailbox = Mailbox(api, pushing, tenant)
    google = pushing.google
    google.push_faults(mailbox.address, duplicate=3, reorder=2)
    mailbox.carla_writes()  # held
    mailbox.user_answers()  # held
    mailbox.carla_writes()  # sent twice, then the two held ones, newest first
    mailbox.user_answers()  # sent twice
    mailbox.carla_writes()  # sent twice
    wait_until(lambda: mailbox.quiet(stack), timeout=60)
    mailbox.assert_each_exactly_once()
    assert moves_forward(plan) and plan.advances
    delivered = [p for p in google.pushes_of(mailbox.address) if p["fate"] == "delivered"]
    history_ids = [p["historyId"] for p in delivered]
    assert len(delivered) == 8 and history_ids != sorted(history_ids)  # duplicated and out of order
    assert len({p["messageId"] for p in delivered}) == 5


@pytest.mark.rule("SYNC-2")
def test_a_lost_push_is_healed_by_the_next_push(
    stack: LocalStack, pushing: Emulators, api: Api, tenant: str
) -> None:
    mailbox = Mailbox(api, pushing, tenant)
    start = cursor_of(stack, mailbox.account_id)
    pushing.google.push_faults(mailbox.address, drop=1)
    mailbox.carla_writes()
    assert [p["fate"] for p in pushing.google.pushes_of(mailbox.address)] == ["dropped"]
    assert cursor_of(stack, mailbox.account_id) == start  # nobody told the service
    mailbox.user_answers()  # its push reads history from the stored cursor: both come in
    wait_until(lambda: mailbox.quiet(stack))
    mailbox.assert_each_exactly_once()


@pytest.mark.rule("SYNC-2")
def test_a_lost_push_is_healed_by_the_mail_sync_job(
    stack: LocalStack, pushing: Emulators, api: Api, tenant: str
) -> None:
    mailbox = Mailbox(api, pushing, tenant)
    pushing.google.push_faults(mailbox.address, drop=2)
    mailbox.carla_writes()
    mailbox.user_answers()
    assert [p["fate"] for p in pushing.google.pushes_of(mailbox.address)] == ["dropped", "dropped"]
    # the periodic catch-up queues the account's mail.sync job, as the scheduler does
    job = Job(type="mail.sync", tenant_id=tenant, account_id=mailbox.account_id)
    SqsJobQueue(get_settings().sync_queue_url).send(job, f"catch-up-{uuid.uuid4().hex}")
    wait_until(lambda: mailbox.quiet(stack))
    mailbox.assert_each_exactly_once()


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SYNC-2")
def test_a_crash_between_any_two_writes_of_the_worker_then_redelivery_converges(
    stack: LocalStack, pushing: Emulators, api: Api, tenant: str, plan: CrashPlan
) -> None:
    mailbox = Mailbox(api, pushing, tenant)
    mailbox.carla_writes()
    wait_until(lambda: mailbox.quiet(stack))
    # each round: Carla writes and the user answers (two messages, two pushes): at least 9
    # writes (raw MIME, transaction, event, published mark per message; the cursor). The round
    # dies at its n-th write, before it lands, or after (then the next write never happens).
    rounds = [(n, False) for n in range(1, 10)] + [(5, True), (9, True)]
    for at, after in rounds:
        crashes = plan.crashes
        plan.arm(at, after)
        mailbox.carla_writes()
        mailbox.user_answers()

        def settled(crashes: int = crashes) -> bool:
            if plan.crashes > crashes:
                redeliver_now(stack, mailbox.account_id)  # the visibility timeout ends
            return mailbox.quiet(stack)

        wait_until(settled, timeout=60)
        assert plan.crashes == crashes + 1, f"round {at} {'after' if after else 'before'}: no crash"
        mailbox.assert_each_exactly_once()
    assert moves_forward(plan) and len(plan.advances) >= len(rounds)

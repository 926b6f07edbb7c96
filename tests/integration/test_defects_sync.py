"""Defects found by review in the sync path (issue 9, items 1-4 and 15): a mail to two users of
one tenant, hostile mail, resync storms, one slow account in a worker's batch, long threads.
Everything runs over the real stores on moto and the real emulators."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
import zipfile
from email.message import EmailMessage
from typing import Any

import boto3
import pytest
import requests

from crmsync import services
from crmsync.accounts.models import Account
from crmsync.auth import Principal
from crmsync.errors import PermanentError
from crmsync.jobs import Job
from crmsync.mail.engine import MailSync
from crmsync.mail.models import ProviderMessage
from crmsync.resync import Page, ResyncJob
from crmsync.sync.core import ChangePage
from crmsync.worker import SyncBatch
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.integration.helpers import executions, wait_for_execution, wait_until
from tests.integration.test_mail_engine import OWNER, World, delivered, mail
from tests.integration.test_mailbox_sync import ScriptedHistory, contact_mail, cursor_of

COLLEAGUE = "colleague@corp.test"


@pytest.fixture
def engine(stack: LocalStack) -> MailSync:
    return services.current().mail_sync()


def colleague_account(world: World) -> Account:
    """The colleague (user u2 of the same tenant) with a mailbox of their own."""
    return world.account.model_copy(
        update={"account_id": f"acc-{uuid.uuid4().hex[:8]}", "user_id": "u2", "address": COLLEAGUE}
    )


# ---------------------------------------------------------------- item 1: one mail, two users


@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("LINK-1")
def test_a_contact_writing_to_two_users_lands_in_both_mailboxes(stack: LocalStack, engine: MailSync) -> None:
    world = World()
    other = colleague_account(world)
    message = mail("carla@client.test", [OWNER, COLLEAGUE], "Question for the team")
    first = engine.ingest(world.account, delivered(message))
    second = engine.ingest(other, delivered(message))  # the same Message-ID, the other user's mailbox
    assert (first.status, second.status) == ("synced", "synced")
    assert first.crm_message_id != second.crm_message_id
    assert first.crm_thread_id != second.crm_thread_id
    for account, outcome in ((world.account, first), (other, second)):
        stored = engine._store.get_message(world.tenant, account.user_id, outcome.crm_message_id)  # type: ignore[attr-defined]
        assert stored is not None and stored.user_id == account.user_id and stored.contact_ids == ["c1"]
    # the same message seen again in either mailbox is still the one record (MAIL-7)
    again = engine.ingest(other, delivered(message))
    assert (again.status, again.crm_message_id) == ("updated", second.crm_message_id)
    # and a reply to the colleague joins the colleague's thread, not the owner's
    reply = mail(COLLEAGUE, ["carla@client.test"], "Re: Question for the team", reply_to=message)
    answered = engine.ingest(other, delivered(reply, ["SENT"]))
    assert (answered.status, answered.crm_thread_id) == ("synced", second.crm_thread_id)


@pytest.mark.rule("MAIL-2")
@pytest.mark.rule("MAIL-7")
def test_crm_sent_mail_to_a_colleague_is_still_recognised_in_the_senders_sent_folder(
    stack: LocalStack, engine: MailSync
) -> None:
    world = World()
    other = colleague_account(world)
    first = mail(OWNER, ["carla@client.test", COLLEAGUE], "Proposal")
    sent = engine.record_outgoing(world.account, first.as_bytes())
    copy = engine.ingest(world.account, delivered(first, ["SENT"]))
    assert (copy.status, copy.crm_message_id) == ("updated", sent.crm_message_id)
    colleague = engine.ingest(other, delivered(first))  # from a colleague: MAIL-5 skips it, nothing stalls
    assert colleague.status == "skipped" and (colleague.reason or "").startswith("internal_mail")


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("MAIL-7")
def test_the_second_mailbox_cursor_moves_past_a_shared_message(stack: LocalStack) -> None:
    world = World()
    other = colleague_account(world)
    cursors = services.current().mailbox_sync()._cursors
    assert cursors.advance(other.account_id, "mail", "100", expected=None)
    shared = mail("carla@client.test", [OWNER, COLLEAGUE], "For both of you")
    services.current().mail_sync().ingest(world.account, delivered(shared))
    result = (
        services.current().mailbox_sync().run(other, ScriptedHistory([[delivered(shared), contact_mail(7)]]))
    )
    assert (result.status, result.synced) == ("synced", 2)
    assert cursor_of(stack, other.account_id) == "110"


# ---------------------------------------------------------------- item 2: hostile mail


def nested_multiparts(depth: int = 1000) -> bytes:
    head = (
        "From: carla@client.test\r\nTo: {to}\r\nSubject: deep\r\n"
        "Message-ID: <deep-{n}@client.test>\r\nMIME-Version: 1.0\r\n"
    )
    body = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth)
    )
    body += b"Content-Type: text/plain\r\n\r\nhello\r\n"
    body += b"".join(b"--b%d--\r\n" % i for i in reversed(range(depth)))
    return head.format(to=OWNER, n=uuid.uuid4().hex).encode() + body


def bad_version_docx() -> bytes:
    """A .docx whose zip directory says it needs zip version 25.5 (zipfile: NotImplementedError)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
    data = bytearray(buffer.getvalue())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        data[at + 6] = 0xFF
        at = data.find(b"PK\x01\x02", at + 4)
    return bytes(data)


def with_attachment(name: str, data: bytes) -> EmailMessage:
    message = mail("carla@client.test", [OWNER], f"File {name}")
    message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("SYNC-8")
def test_hostile_mail_is_a_recorded_skip_and_the_mail_after_it_syncs(
    stack: LocalStack, engine: MailSync
) -> None:
    world = World()
    deep = engine.ingest(world.account, ProviderMessage(provider_message_id="deep", raw=nested_multiparts()))
    assert deep.status == "skipped" and (deep.reason or "").startswith("malformed_mime")
    docx = bad_version_docx()
    microsoft = world.account.model_copy(
        update={"provider": "microsoft", "account_id": "acc-ms-" + world.tenant}
    )
    refused = engine.ingest(microsoft, delivered(with_attachment("contract.docx", docx)))
    assert refused.status == "skipped" and "contract.docx" in (refused.reason or "")
    # Gmail takes any type (ATT-2 bounds only the size): the message syncs, the file is no crash
    kept = engine.ingest(world.account, delivered(with_attachment("contract.docx", docx)))
    assert kept.status == "synced"
    event = stack.wait_for_event(
        lambda e: e["detail-type"] == "MessageSkipped" and e["detail"]["provider_message_id"] == "deep"
    )
    assert event["detail"]["reason"] == "malformed_mime"


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("MAIL-3")
def test_a_message_id_over_2kb_syncs_and_its_replies_thread(stack: LocalStack, engine: MailSync) -> None:
    world = World()
    first = mail("carla@client.test", [OWNER], "Long id")
    del first["Message-ID"]
    first["Message-ID"] = f"<{'x' * 3000}@client.test>"
    outcome = engine.ingest(world.account, delivered(first))
    assert outcome.status == "synced"
    assert engine.ingest(world.account, delivered(first)).status == "updated"  # found again by its id
    reply = engine.ingest(
        world.account, delivered(mail(OWNER, ["carla@client.test"], "Re", reply_to=first), ["SENT"])
    )
    assert (reply.status, reply.crm_thread_id) == ("synced", outcome.crm_thread_id)


@pytest.mark.rule("SEC-5")
def test_any_failure_reading_one_message_is_a_skip_with_its_reason(stack: LocalStack) -> None:
    real = services.current().mail_sync()

    def broken_limits(provider: str) -> Any:
        raise RuntimeError("limits table unreadable")

    engine = MailSync(real._store, real._raw, real._directory, real._publisher, limits=broken_limits)  # type: ignore[attr-defined]
    world = World()
    outcome = engine.ingest(world.account, delivered(with_attachment("a.txt", b"plain words")))
    assert outcome.status == "skipped"
    assert outcome.reason == "unprocessable: RuntimeError: limits table unreadable"
    # the next message is not held back by it
    after = engine.ingest(world.account, delivered(mail("carla@client.test", [OWNER], "Next")))
    assert after.status == "synced"


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("SYNC-8")
def test_gmail_takes_hostile_mail_and_the_sync_skips_it(
    stack: LocalStack, emulators: Emulators, api: Any, tenant: str
) -> None:
    from tests.integration.test_gmail_batch import all_threads, connected_mailbox

    address, account_id = connected_mailbox(api, emulators, tenant)
    start = cursor_of(stack, account_id)
    gmail = emulators.google.gmail
    deep = gmail.arrive(address, nested_multiparts().replace(OWNER.encode(), address.encode()))
    gmail.arrive(address, mail("carla@client.test", [address], "After the deep one").as_bytes())
    # the emulator answers like Gmail: a full get of the deep message is a 200, not a 500
    got = requests.get(
        f"{emulators.google_url}/gmail/v1/users/me/messages/{deep.id}",
        headers={"Authorization": f"Bearer {emulators.google.issue_access_token(address)}"},
        verify=str(emulators.ca_bundle),
        timeout=10,
    )
    assert got.status_code == 200 and got.json()["payload"]["mimeType"] == "multipart/mixed"
    account = services.current().account_store().get_by_id(account_id)
    assert account is not None
    services.current().mail_sync_job().sync(account)
    assert cursor_of(stack, account_id) != start
    assert [t["subject"] for t in all_threads(api, tenant)] == ["After the deep one"]
    skip = stack.wait_for_event(
        lambda e: e["detail-type"] == "MessageSkipped" and e["detail"]["provider_message_id"] == deep.id
    )
    assert skip["detail"]["reason"] == "malformed_mime"


def test_the_graph_emulator_takes_hostile_mail(emulators: Emulators) -> None:
    graph = emulators.microsoft.graph
    address = f"deep-{uuid.uuid4().hex[:6]}@outlook.test"
    stored = graph.arrive(address, nested_multiparts())
    assert stored.raw.startswith(b"From: carla@client.test")
    assert stored.subject == "deep"


# ---------------------------------------------------------------- item 3: one resync at a time


class BlockingPages:
    """A provider's resync pages that wait until released (a long resync), or fail."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.fail = fail
        self.calls = 0

    def fetch_page(self, job: ResyncJob) -> Page:
        self.calls += 1
        if self.fail:
            raise PermanentError("the provider refused the account")
        self.release.wait(30)
        return Page(items=0, cursor="500")


@pytest.fixture
def resync_pages(stack: LocalStack) -> Any:
    resync = stack.services.resync()  # the one the stack's ResyncFunction runs
    before = dict(resync._sources)

    def plug(source: BlockingPages) -> BlockingPages:
        resync.register("mail_resync", source)
        return source

    yield plug
    resync._sources.clear()
    resync._sources.update(before)


def account_executions(stack: LocalStack, account_id: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions")
    found = []
    for execution in executions(stack.state_machines["ResyncStateMachine"]):
        described = sfn.describe_execution(executionArn=execution["executionArn"])
        if json.loads(described["input"])["account_id"] == account_id:
            found.append(described)
    return found


def request_resync(world: World, request_id: str) -> str:
    job = Job(
        type="resync.start",
        tenant_id=world.tenant,
        account_id=world.account.account_id,
        payload={"user_id": world.account.user_id, "kind": "mail_resync"},
    )
    return services.current().job_runner().handle(job.model_dump_json(), request_id, world.account.account_id)


@pytest.mark.rule("SYNC-3")
@pytest.mark.rule("SYNC-6")
def test_one_resync_per_account_runs_at_a_time_and_requests_meanwhile_are_absorbed(
    stack: LocalStack, resync_pages: Any
) -> None:
    world = World()
    pages = resync_pages(BlockingPages())
    assert request_resync(world, "m-1") == "done"
    wait_until(lambda: pages.calls >= 1)
    # every push and catch-up meanwhile finds the cursor expired and asks again
    history = ScriptedHistory([[]])
    history.expired = True
    assert (
        services.current()
        .mailbox_sync()
        ._cursors.advance(world.account.account_id, "mail", "100", expected=None)
    )
    for n in range(3):
        assert services.current().mailbox_sync().run(world.account, history).status == "resync_started"
        assert request_resync(world, f"m-{n + 2}") == "done"
    assert request_resync(world, "m-1") == "done"  # a redelivered request starts nothing new either
    assert len(account_executions(stack, world.account.account_id)) == 1
    progress = services.current().resync().progress(world.account.account_id, "mail_resync")
    assert progress is not None and progress.status == "running"
    pages.release.set()
    [running] = account_executions(stack, world.account.account_id)
    assert wait_for_execution(running["executionArn"])["status"] == "SUCCEEDED"
    # once it is done, a new request starts a new resync
    assert request_resync(world, "m-9") == "done"
    wait_until(lambda: len(account_executions(stack, world.account.account_id)) == 2)


@pytest.mark.rule("SYNC-3")
@pytest.mark.rule("SYNC-9")
def test_a_failed_resync_backs_off_and_says_so(stack: LocalStack, resync_pages: Any) -> None:
    world = World()
    resync_pages(BlockingPages(fail=True))
    assert request_resync(world, "f-1") == "done"
    [first] = wait_until(lambda: account_executions(stack, world.account.account_id))
    assert wait_for_execution(first["executionArn"])["status"] == "FAILED"
    progress = services.current().resync().progress(world.account.account_id, "mail_resync")
    assert progress is not None and progress.status == "failed" and progress.failures == 1
    assert progress.retry_at is not None and progress.retry_at.timestamp() > time.time() + 240
    assert "refused the account" in (progress.error or "")
    for n in range(3):  # asked again during the backoff: absorbed
        assert request_resync(world, f"f-{n + 2}") == "done"
    assert len(account_executions(stack, world.account.account_id)) == 1
    # once the backoff has passed, the next request tries again, and a second failure waits longer
    services.current().resync()._store.put_progress(  # type: ignore[attr-defined]
        progress.model_copy(update={"retry_at": progress.updated_at}), expected_version=progress.version
    )
    assert request_resync(world, "f-9") == "done"
    second = wait_until(lambda: len(account_executions(stack, world.account.account_id)) == 2)
    assert second
    wait_until(
        lambda: (
            (p := services.current().resync().progress(world.account.account_id, "mail_resync"))
            and p.failures == 2
        )
    )
    later = services.current().resync().progress(world.account.account_id, "mail_resync")
    assert later is not None and later.retry_at is not None
    assert (
        later.retry_at.timestamp() - later.updated_at.timestamp()
        >= 2 * (progress.retry_at.timestamp() - progress.updated_at.timestamp()) - 1
    )


# ---------------------------------------------------------------- item 4: a slow account in a batch


class SlowHistory(ScriptedHistory):
    """A long backlog whose pages take a while each."""

    def __init__(self, pages: int, seconds: float) -> None:
        super().__init__([[contact_mail(n)] for n in range(pages)])
        self.seconds = seconds

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[ProviderMessage]:
        time.sleep(self.seconds)
        return super().changes(account, cursor, page_token)


class Context:
    """What the worker reads of Lambda's context: the time left."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def get_remaining_time_in_millis(self) -> int:
        return int((self._end - time.monotonic()) * 1000)


def sqs_record(job: Job, n: int) -> dict[str, Any]:
    return {
        "messageId": f"msg-{uuid.uuid4().hex}",
        "receiptHandle": f"rh-{n}",
        "body": job.model_dump_json(),
        "attributes": {"MessageGroupId": job.account_id, "ApproximateReceiveCount": "1"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sync.fifo",
        "awsRegion": "us-east-1",
    }


class NoVisibility:
    def __init__(self) -> None:
        self.delays: list[tuple[list[str], int]] = []

    def delay(self, receipt_handles: list[str], seconds: int) -> None:
        self.delays.append((receipt_handles, seconds))


@pytest.mark.rule("SYNC-5")
@pytest.mark.rule("SYNC-1")
def test_a_slow_mailbox_takes_its_share_of_the_time_and_the_others_still_sync(stack: LocalStack) -> None:
    from crmsync.jobs import JobRunner
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.sync.jobs import SyncJob

    slow, quick = World(), World()
    for world in (slow, quick):
        services.current().account_store().create(world.account, None)
        assert (
            services.current()
            .mailbox_sync()
            ._cursors.advance(world.account.account_id, "mail", "100", expected=None)
        )
    histories = {
        slow.account.account_id: SlowHistory(pages=40, seconds=0.25),
        quick.account.account_id: SlowHistory(pages=2, seconds=0),
    }

    class ByAccount:  # the provider: each mailbox with its own history
        def changes(
            self, account: Account, cursor: str, page_token: str | None
        ) -> ChangePage[ProviderMessage]:
            return histories[account.account_id].changes(account, cursor, page_token)

        def is_newer(self, candidate: str, current: str) -> bool:
            return int(candidate) > int(current)

    # continuations go to a queue of their own here, so that the stack's worker leaves them to the test
    sqs = boto3.client("sqs")
    url = sqs.create_queue(
        QueueName=f"slow-{uuid.uuid4().hex[:8]}.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
    )["QueueUrl"]
    real = services.current().job_runner()
    runner = JobRunner(real._resyncs, real._dead)  # type: ignore[attr-defined]
    sync_job = SyncJob(
        services.current().account_store(),
        services.current().mailbox_sync(),
        {"google": ByAccount()},
        continuation=SqsJobQueue(url),
    )
    runner.register("mail.sync", sync_job)
    jobs = [Job(type="mail.sync", tenant_id=w.tenant, account_id=w.account.account_id) for w in (slow, quick)]
    batch = SyncBatch(runner, NoVisibility())
    started = time.monotonic()
    response = batch.process({"Records": [sqs_record(j, n) for n, j in enumerate(jobs)]}, Context(seconds=8))
    assert time.monotonic() - started < 8  # the invocation ends inside Lambda's time
    assert response["batchItemFailures"] == []
    assert cursor_of(stack, quick.account.account_id) == "120"  # the quick mailbox synced whole
    # the slow one stopped at its share of the time, moved nothing yet, and queued where to go on
    assert cursor_of(stack, slow.account.account_id) == "100"
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    [follow] = [Job.model_validate_json(m["Body"]) for m in messages]
    assert follow.account_id == slow.account.account_id
    done_pages = int(follow.payload["resume"]["page_token"])
    assert 0 < done_pages < 40
    # the continuation picks up from there and ends the run: the cursor moves once, past everything
    histories[slow.account.account_id].seconds = 0
    batch.process({"Records": [sqs_record(follow, 9)]}, Context(seconds=60))
    assert cursor_of(stack, slow.account.account_id) == str(100 + 10 * 40)
    owner = Principal(tenant_id=slow.tenant, user_id="u1", role="member")
    assert len(services.current().mailbox().threads(owner, limit=100).threads) == 40


# ---------------------------------------------------------------- item 15: long threads


@pytest.mark.rule("LINK-4")
def test_a_thread_over_one_megabyte_is_read_whole(stack: LocalStack, engine: MailSync) -> None:
    world = World()
    opened = engine.ingest(
        world.account, delivered(mail("carla@client.test", [OWNER], "Long"), thread="long")
    )
    store = engine._store  # type: ignore[attr-defined]
    first = store.get_message(world.tenant, "u1", opened.crm_message_id)
    # four messages of ~300 KB each (a To list of 6,000 addresses, as a mailing list's copy may
    # carry): the thread's messages no longer fit in one 1 MB page of a DynamoDB Query
    crowd = [f"member{n:05d}-of-a-very-long-mailing-list@lists.client.test" for n in range(6000)]
    for n in range(4):
        thread = store.get_thread(world.tenant, opened.crm_thread_id)
        record = first.model_copy(
            update={
                "crm_message_id": f"big-{n}-{uuid.uuid4().hex}",
                "provider_message_id": f"pm-big-{n}",
                "message_id": f"<big-{n}-{uuid.uuid4().hex}@client.test>",
                "to": crowd,
            }
        )
        after = thread.model_copy(
            update={"message_count": thread.message_count + 1, "version": thread.version + 1}
        )
        assert store.record_message(record, after, thread.version)
    owner = Principal(tenant_id=world.tenant, user_id="u1", role="member")
    view = services.current().mailbox().thread(owner, opened.crm_thread_id or "")
    assert len(view.messages) == 5
    # the archive of the thread (MAIL-9) reads the same way: every message, not the first page
    assert len(store.thread_messages(world.tenant, opened.crm_thread_id)) == 5
    table = boto3.resource("dynamodb").Table(stack.tables["MessagesTable"])
    for message in view.messages[1:]:  # keep the shared stack small for the tests after
        table.delete_item(Key={"pk": f"T#{world.tenant}#U#u1", "sk": f"MSG#{message.crm_message_id}"})


@pytest.mark.rule("SYNC-8")
def test_a_job_failing_on_its_last_receive_is_dead_lettered_with_its_reason(stack: LocalStack) -> None:
    from crmsync.jobs import JobRunner

    real = services.current().job_runner()
    runner = JobRunner(real._resyncs, real._dead)  # type: ignore[attr-defined]

    def broken(job: Job, message_id: str) -> None:
        raise RuntimeError(f"cannot sync {job.account_id}")

    runner.register("mail.sync", broken)
    account = f"acc-{uuid.uuid4().hex[:8]}"
    job = Job(type="mail.sync", tenant_id="t-dlq", account_id=account)
    early, last = sqs_record(job, 1), sqs_record(job, 2)
    last["attributes"]["ApproximateReceiveCount"] = "5"
    batch = SyncBatch(runner, NoVisibility())
    assert batch.process({"Records": [early]}, Context(30))["batchItemFailures"] == [
        {"itemIdentifier": early["messageId"]}
    ]  # an early receive is retried
    assert batch.process({"Records": [last]}, Context(30))["batchItemFailures"] == []
    sqs = boto3.client("sqs")

    def dead_lettered() -> dict[str, Any] | None:
        found = sqs.receive_message(
            QueueUrl=stack.queues["SyncDeadLetterQueue"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        return next((m for m in found if account in m["Body"]), None)

    message = wait_until(dead_lettered)
    reason = message["MessageAttributes"]["reason"]["StringValue"]
    assert reason == f"after 5 tries: RuntimeError: cannot sync {account}"


@pytest.mark.rule("SYNC-3")
@pytest.mark.rule("SYNC-2")
def test_mail_arriving_while_a_resync_runs_is_synced_when_it_ends(
    stack: LocalStack, emulators: Emulators, api: Any, tenant: str
) -> None:
    from tests.integration.test_graph_sync import _setup, _sync, _threads

    address, account_id, token = _setup(api, emulators, tenant, notifications=False)
    graph = emulators.microsoft.graph
    graph.arrive(address, mail("carla@client.test", [address], "Order 1").as_bytes())
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(_threads(api, token)) == 1, timeout=20)
    graph.expire_delta(address, "inbox")
    graph.arrive(address, mail("carla@client.test", [address], "Order 2").as_bytes())
    graph.slow_down(address, 1.0)  # the resync's pages take a while
    _sync(stack, tenant, account_id)  # 410: a resync starts
    wait_until(lambda: len(_threads(api, token)) == 2, timeout=30)  # the resync has read the inbox
    progress = services.current().resync().progress(account_id, "mail_resync")
    assert progress is not None and progress.status == "running"
    # mail arrives now, and its sync meets the expired cursor while the resync runs: absorbed
    graph.arrive(address, mail("carla@client.test", [address], "Order 3").as_bytes())
    _sync(stack, tenant, account_id)
    graph.slow_down(address, 0)
    # Whichever comes first, nothing is lost and no second resync starts: a sync that met the
    # expired cursor while the resync ran was absorbed, and the resync's end syncs from its fresh
    # cursor at once (no push, no catch-up poll needed); a sync that met it just as the resync
    # stored the fresh one goes on from that.
    threads = wait_until(lambda: (t := _threads(api, token)) and len(t) == 3 and t, timeout=30)
    assert sorted(t["subject"] for t in threads) == ["Order 1", "Order 2", "Order 3"]
    found = account_executions(stack, account_id)
    assert len(found) == 1, [(e["name"], e["startDate"], e["input"], e.get("stopDate")) for e in found]

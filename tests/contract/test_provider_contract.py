"""The provider contract: the convergence scenarios every mail provider must pass, written once and
run for each provider fixture in tests/contract/providers/ (Gmail with Pub/Sub pushes, Outlook with
Graph change notifications). Everything runs for real: the emulator notifies the service's
webhook, the webhook queues the account's mail.sync, the worker (the stack's, through SQS) syncs
from the stored cursor through the sync core and the engine and stores on moto. The end state is
judged through the API: every message exactly once in its CRM thread, with its mailbox copy's id,
published, removals marked; and the cursor never moved backwards (SYNC-1).

One connected mailbox per provider serves the whole module (its conversation grows test by test);
the worker's stores are wrapped once (tests/contract/crash.py), counting writes and crashing only
where a test arms them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import boto3
import pytest

from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.contract import providers
from tests.contract.crash import CrashPlan, crashing
from tests.contract.providers import ContractMailbox, Notice
from tests.integration.helpers import executions, wait_until
from tests.integration.redelivery import redeliver_now

SETTLE_S = 60  # the longest a scenario's step may take to converge


@pytest.fixture(scope="module")
def plan(stack: LocalStack) -> Iterator[CrashPlan]:
    with crashing(stack) as created:
        yield created


@pytest.fixture(scope="module", params=providers.names())
def connected(
    request: pytest.FixtureRequest, stack: LocalStack, api: Api, emulators: Emulators, plan: CrashPlan
) -> Iterator[ContractMailbox]:
    mailbox = providers.fixture_class(request.param)(stack, api, emulators, f"t-{uuid.uuid4().hex[:10]}")
    try:
        mailbox.correspondent_writes()  # the conversation starts: one CRM thread from here on
        wait_until(mailbox.quiet, timeout=SETTLE_S)
        mailbox.assert_each_exactly_once()
        yield mailbox
    finally:
        mailbox.close()


@pytest.fixture
def mailbox(connected: ContractMailbox, plan: CrashPlan) -> Iterator[ContractMailbox]:
    """The provider's mailbox, quiet, with no crash armed."""
    plan.arm(0)
    wait_until(connected.quiet, timeout=SETTLE_S)
    yield connected
    plan.arm(0)


def since(mailbox: ContractMailbox, first: int) -> list[Notice]:
    """The notifications of the changes made after change `first`."""
    return [n for n in mailbox.notices() if n.change > first]


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SYNC-1")
def test_duplicated_and_reordered_notifications_converge_to_each_message_once(
    mailbox: ContractMailbox, plan: CrashPlan
) -> None:
    start, advanced, first = mailbox.stored_cursor(), len(plan.advances), mailbox.changes
    assert start is not None
    mailbox.notification_faults(duplicate=3, reorder=2)
    mailbox.correspondent_writes()  # held
    mailbox.user_answers()  # held
    mailbox.correspondent_writes()  # sent twice, then the two held ones, newest first
    mailbox.user_answers()  # sent twice
    mailbox.correspondent_writes()  # sent twice
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()
    assert len(plan.advances) > advanced
    mailbox.assert_moved_forward(plan, start, advanced)

    delivered = since(mailbox, first)
    assert all(n.fate == "delivered" and 200 <= n.status < 300 for n in delivered), delivered
    # duplicated and out of order: the held ones told after the later one, newest first (a
    # provider that batches may mix a copy with the next change's notification)
    told = [n.change - first for n in delivered]
    assert sorted(told) == [1, 2, 3, 3, 4, 4, 5, 5], told
    assert told.index(3) < told.index(2) < told.index(1) < told.index(4), told
    assert len({n.id for n in delivered}) == 5  # a duplicate is the same notification again
    for change in (3, 4, 5):
        assert len({n.id for n in delivered if n.change - first == change}) == 1


@pytest.mark.rule("SYNC-2")
def test_a_lost_notification_is_healed_by_the_next_one(mailbox: ContractMailbox, plan: CrashPlan) -> None:
    start, advanced, first = mailbox.stored_cursor(), len(plan.advances), mailbox.changes
    assert start is not None
    mailbox.notification_faults(drop=1)
    mailbox.correspondent_writes()
    wait_until(mailbox.notifications_settled)
    assert [(n.change - first, n.fate) for n in since(mailbox, first)] == [(1, "dropped")]
    assert mailbox.stored_cursor() == start  # nobody told the service
    mailbox.user_answers()  # its sync reads from the stored cursor: both come in
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()
    mailbox.assert_moved_forward(plan, start, advanced)


@pytest.mark.rule("SYNC-2")
def test_lost_notifications_are_healed_by_the_catch_up_poll(
    mailbox: ContractMailbox, plan: CrashPlan
) -> None:
    start, advanced, first = mailbox.stored_cursor(), len(plan.advances), mailbox.changes
    assert start is not None
    mailbox.notification_faults(drop=2)
    mailbox.correspondent_writes()
    mailbox.user_answers()
    wait_until(mailbox.notifications_settled)
    assert [(n.change - first, n.fate) for n in since(mailbox, first)] == [(1, "dropped"), (2, "dropped")]
    assert mailbox.stored_cursor() == start and not mailbox.caught_up()
    mailbox.catch_up()  # the account's catch-up poll comes due
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()
    mailbox.assert_moved_forward(plan, start, advanced)


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("SYNC-1")
def test_a_notification_delivered_after_later_ones_changes_nothing(
    mailbox: ContractMailbox, plan: CrashPlan
) -> None:
    """The provider retries a notification it failed to deliver, after newer ones went out."""
    start, advanced, first = mailbox.stored_cursor(), len(plan.advances), mailbox.changes
    assert start is not None
    mailbox.notification_faults(drop=1)  # the first one's delivery fails
    mailbox.correspondent_writes()
    mailbox.user_answers()  # its notification is delivered: the sync brings both
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()
    synced = len(plan.advances)

    (lost,) = [n for n in since(mailbox, first) if n.fate == "dropped"]
    assert lost.change == first + 1
    status = mailbox.deliver_late(lost)
    assert 200 <= status < 300, status
    # its job syncs from the stored cursor: nothing new (a round that finds nothing moves the
    # cursor only where every round hands out a fresh one)
    moved = 1 if mailbox.EMPTY_ROUND_MOVES_CURSOR else 0
    wait_until(lambda: len(plan.advances) >= synced + moved and mailbox.quiet(), timeout=SETTLE_S)
    assert len(plan.advances) == synced + moved
    mailbox.assert_each_exactly_once()
    mailbox.assert_moved_forward(plan, start, advanced)


@pytest.mark.rule("MAIL-10")
@pytest.mark.rule("MAIL-7")
def test_removals_in_the_mailbox_are_marked_once(mailbox: ContractMailbox, plan: CrashPlan) -> None:
    trashed = mailbox.correspondent_writes()
    deleted = mailbox.user_answers()
    kept = mailbox.correspondent_writes()
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    mailbox.remove(trashed, "trash")  # out of what syncs
    mailbox.remove(deleted, "delete")  # gone for good
    mailbox.catch_up()  # whichever sync comes first finds them
    wait_until(mailbox.quiet, timeout=SETTLE_S)

    def marks() -> dict[str, bool]:
        return {m["message_id"]: m["removed_in_mailbox"] for m in mailbox.assert_each_exactly_once()}

    def removal_events() -> dict[str, int]:
        told = [e["detail"]["message_id"] for e in mailbox.events("MessageRemovedInMailbox")]
        return {crm: told.count(crm) for crm in set(told)}

    ids = {m["message_id"]: m["crm_message_id"] for m in mailbox.crm_messages()}
    removed = {ids[trashed.message_id], ids[deleted.message_id]}
    wait_until(lambda: set(removal_events()) >= removed)
    found = marks()
    assert found[trashed.message_id] and found[deleted.message_id] and not found[kept.message_id]
    assert sum(found.values()) == len(removed) + sum(  # no other message marked
        1 for m in mailbox.crm_messages() if m["removed_in_mailbox"] and m["crm_message_id"] not in removed
    )

    # another round (a notification and the catch-up poll): the CRM is not told again
    later = mailbox.correspondent_writes()
    mailbox.catch_up()
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    marks()
    crm_later = {m["message_id"]: m["crm_message_id"] for m in mailbox.crm_messages()}[later.message_id]
    wait_until(lambda: any(e["detail"]["message_id"] == crm_later for e in mailbox.events("MessageSynced")))
    assert {crm: n for crm, n in removal_events().items() if crm in removed} == dict.fromkeys(removed, 1)
    assert marks() == {**found, later.message_id: False}


@pytest.mark.rule("SYNC-4")
@pytest.mark.rule("SYNC-1")
def test_throttling_inside_a_page_leaves_the_cursor_and_the_retry_converges(
    stack: LocalStack, mailbox: ContractMailbox, plan: CrashPlan
) -> None:
    start, advanced = mailbox.stored_cursor(), len(plan.advances)
    assert start is not None
    mailbox.throttle_inside_page(retry_after=30)  # SQS would bring the job back in 30 s
    with mailbox.held():  # one sync meets all three in its page
        mailbox.correspondent_writes()
        mailbox.user_answers()
        mailbox.correspondent_writes()
    wait_until(mailbox.throttle_spent, timeout=SETTLE_S)
    time.sleep(0.5)  # the refused job has failed by now, and is waiting out its Retry-After
    assert mailbox.stored_cursor() == start and len(plan.advances) == advanced

    def retried() -> bool:
        redeliver_now(stack, mailbox.account_id)  # the Retry-After ends now
        return mailbox.quiet()

    wait_until(retried, timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()
    assert len(plan.advances) > advanced
    mailbox.assert_moved_forward(plan, start, advanced)


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SYNC-2")
def test_a_crash_before_or_after_every_write_of_the_worker_then_redelivery_converges(
    stack: LocalStack, mailbox: ContractMailbox, plan: CrashPlan
) -> None:
    """Each round: the correspondent writes and the user answers, their notifications go out
    together, and the worker dies at its n-th write of the round, before it lands or just after,
    then SQS delivers the job again. The writes are counted on a round that does not crash: every
    one of them is a crash point, whatever the engine's writes are today."""
    start, advanced = mailbox.stored_cursor(), len(plan.advances)
    assert start is not None
    capabilities = {name for store in plan.stores for name in ("advance", "publish") if hasattr(store, name)}
    assert capabilities == {"advance", "publish"}, plan.wrapped  # the cursor and the events are wrapped

    def round_(at: int, after: bool = False) -> None:
        crashes = plan.crashes
        plan.arm(at, after)
        with mailbox.held():
            mailbox.correspondent_writes()
            mailbox.user_answers()

        def settled() -> bool:
            if plan.crashes > crashes:
                redeliver_now(stack, mailbox.account_id)  # the visibility timeout ends
            return mailbox.quiet()

        wait_until(settled, timeout=SETTLE_S)
        if at:
            assert plan.crashes == crashes + 1, f"write {at} {'after' if after else 'before'}: no crash"
        mailbox.assert_each_exactly_once()

    round_(0)
    writes, names = plan.writes, list(plan.names)
    # at least the raw MIME, the message and its published mark per message, and the cursor
    assert writes >= 2 * 2 + 1 and names.count("advance") == 1, names
    print(f"[{mailbox.name}] {writes} writes a round: {names}")
    for at in range(1, writes + 1):
        for after in (False, True):
            round_(at, after)
    assert plan.crashes >= 2 * writes
    assert len(plan.advances) - advanced >= 2 * writes + 1  # each round's messages moved it on
    mailbox.assert_moved_forward(plan, start, advanced)
    # every message's event reached the CRM's bus
    crm_ids = {m["crm_message_id"] for m in mailbox.crm_messages()}
    wait_until(lambda: crm_ids <= {e["detail"]["message_id"] for e in mailbox.events("MessageSynced")})


@pytest.mark.rule("SYNC-3")
@pytest.mark.rule("SYNC-6")
@pytest.mark.rule("MAIL-7")
def test_an_expired_cursor_resyncs_through_the_state_machine_with_nothing_doubled(
    stack: LocalStack, mailbox: ContractMailbox, plan: CrashPlan
) -> None:
    before = mailbox.stored_cursor()
    machine = stack.state_machines["ResyncStateMachine"]
    earlier = {e["executionArn"] for e in executions(machine)}
    mailbox.expire_cursor()
    mailbox.correspondent_writes()  # its sync meets the expired cursor: a resync, not an error loop
    wait_until(lambda: mailbox.stored_cursor() != before and mailbox.quiet(), timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()

    sfn = boto3.client("stepfunctions")
    mine = [
        sfn.describe_execution(executionArn=e["executionArn"])
        for e in executions(machine)
        if e["executionArn"] not in earlier
    ]
    mine = [d for d in mine if json.loads(d["input"]).get("account_id") == mailbox.account_id]
    assert [d["status"] for d in mine] == ["SUCCEEDED"], mine

    # from the fresh cursor the incremental sync goes on
    start, advanced = mailbox.stored_cursor(), len(plan.advances)
    assert start is not None
    mailbox.user_answers()
    wait_until(mailbox.quiet, timeout=SETTLE_S)
    mailbox.assert_each_exactly_once()
    assert len(plan.advances) > advanced
    mailbox.assert_moved_forward(plan, start, advanced)

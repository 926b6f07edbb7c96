"""Graph-only notification behaviour. The convergence scenarios Outlook shares with every provider
(duplicated, reordered, lost and late notifications; a crash before or after any write of the
worker, the gap between a message's transaction and its published mark included; throttling
inside a page; an expired delta token; removals) are the provider contract:
tests/contract/test_provider_contract.py, with Outlook's fixture in tests/contract/providers/outlook.py,
which these tests drive too.

Here, what only Graph does: notifications held back batch up in one POST while their copies go out
on their own, and a batch may carry an item with a forged clientState (SEC-2). Everything runs for
real: the connect makes the subscriptions, the emulator POSTs changes to /webhooks/graph, the
webhook checks each item and queues the account's mail.sync, the worker syncs each folder's delta
from the stored cursor through the engine and stores on moto."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import requests

from local.emulators.graph_subscriptions import GraphSubscriptions
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.contract.crash import CrashPlan, crashing
from tests.contract.providers.outlook import Outlook, notification
from tests.integration.helpers import wait_until


@pytest.fixture
def subs(emulators: Emulators) -> Iterator[GraphSubscriptions]:
    found = emulators.graph_subscriptions
    assert found is not None
    yield found
    found.resume()


@pytest.fixture
def plan(stack: LocalStack) -> Iterator[CrashPlan]:
    """The worker's stores wrapped (tests/contract/crash.py): here only to record the cursor's moves."""
    with crashing(stack) as created:
        yield created


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("SYNC-1")
def test_held_notifications_batch_up_and_their_copies_go_out_on_their_own(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, subs: GraphSubscriptions, plan: CrashPlan
) -> None:
    outlook = Outlook(stack, api, emulators, tenant)
    start_cursor = outlook.stored_cursor()
    assert start_cursor is not None
    start = len(subs.deliveries)
    subs.faults(outlook.address, duplicate=2)
    with outlook.held():  # they batch up, and each copy of a held notification goes out on its own
        outlook.correspondent_writes()  # A, and a copy of A
        outlook.user_answers()  # B joins A's batch, and a copy of B
        outlook.correspondent_writes()  # C joins the batch
    wait_until(outlook.quiet, timeout=30)
    outlook.assert_each_exactly_once()
    held = [d for d in outlook.deliveries() if d in subs.deliveries[start:]]
    assert [len(d.items) for d in held] == [3, 1, 1] and all(d.status == 202 for d in held)
    first_ids = [i["id"] for i in held[0].items]
    # the copies of A's and B's notifications arrive after C's: earlier changes told last
    assert [d.items[0]["id"] for d in held[1:]] == first_ids[:2]

    subs.faults(outlook.address, duplicate=1)  # and not held: the same notification twice
    outlook.correspondent_writes()
    wait_until(outlook.quiet, timeout=30)
    outlook.assert_each_exactly_once()
    twice = [d for d in outlook.deliveries() if d in subs.deliveries[start:]][3:]
    assert len(twice) == 2 and twice[0].items[0]["id"] == twice[1].items[0]["id"]
    assert plan.advances
    outlook.assert_moved_forward(plan, start_cursor)


@pytest.mark.rule("SEC-2")
@pytest.mark.rule("SYNC-2")
def test_a_batch_with_a_forged_client_state_syncs_only_for_the_genuine_items(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, subs: GraphSubscriptions, plan: CrashPlan
) -> None:
    outlook = Outlook(stack, api, emulators, tenant)
    start_cursor = outlook.stored_cursor()
    assert start_cursor is not None
    inbox = outlook.subscription("inbox")
    # first a request made only of forged items, naming our subscription: answered, queues nothing
    forged_only = {
        "value": [
            notification(subs, inbox, "forged-1", secrets.token_urlsafe(48)),
            notification(subs, inbox, "forged-2", None),
        ]
    }
    assert requests.post(inbox.notification_url, json=forged_only, timeout=10).status_code == 202
    start = len(subs.deliveries)
    subs.faults(outlook.address, forge=1)
    outlook.correspondent_writes()
    wait_until(outlook.quiet, timeout=30)
    (batch,) = [d for d in outlook.deliveries() if d in subs.deliveries[start:]]
    forged = [i for i in batch.items if i["clientState"] != inbox.client_state]
    assert len(batch.items) == 2 and len(forged) == 1 and batch.status == 202
    outlook.assert_each_exactly_once()
    # one sync ran, the genuine item's: the forged-only request queued none before it (same queue
    # group, so it would have run first)
    assert len(plan.advances) == 1
    outlook.assert_moved_forward(plan, start_cursor)

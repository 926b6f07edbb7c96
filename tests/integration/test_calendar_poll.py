"""The calendar_poll function (SYNC-2 for calendars): each calendar connection's poll is a due
item in the `calpoll` lane of the due index, which calendar_poll alone fans out (the generic
scheduler reads only the `due` lane); a connection without a push channel is synced by it."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from crmsync.accounts.models import Account, AccountSettings
from crmsync.calendar.schedule import LANE, POLL, RENEWAL, CalendarPolls
from crmsync.jobs import Job
from crmsync.schedule import DueItem, Scheduler
from crmsync.stores.aws import dynamodb
from crmsync.stores.cursors import DynamoDueStore
from crmsync.stores.queue import SqsJobQueue
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.test_defects_webhooks_infra import _fresh_cursors_table
from tests.integration.test_gcal_push import DAY, _channels, _connected, _event, _told
from tests.integration.test_graph_notify import _due_items


def _account(account_id: str) -> Account:
    at = datetime.now(UTC)
    return Account(
        account_id=account_id,
        tenant_id="t-calpoll",
        user_id="u1",
        provider="google",
        purpose="calendar",
        address=f"{account_id}@gmail.test",
        status="connected",
        settings=AccountSettings(),
        connected_at=at,
        updated_at=at,
    )


class _DynamoCalls:
    """The DynamoDB operations made on the layer's client, with their main parameters."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, params))


@pytest.mark.rule("SYNC-2")
def test_calendar_poll_queues_only_due_calendar_connections_through_its_lane_of_the_due_index(
    stack: LocalStack,
) -> None:
    table = _fresh_cursors_table()
    store = DynamoDueStore(table, 16)
    sqs = boto3.client("sqs")
    queue_url = sqs.create_queue(
        QueueName=f"calpoll-{uuid.uuid4().hex[:8]}.fifo", Attributes={"FifoQueue": "true"}
    )["QueueUrl"]
    now = 1_900_000_000
    due_polls = CalendarPolls(store, 900, clock=lambda: now - 1000)  # started 1000 s ago: due
    later = CalendarPolls(store, 900, clock=lambda: now - 100)  # started 100 s ago: not yet
    for n in range(3):
        due_polls.started(_account(f"due-{n}"))
    later.started(_account("later"))
    mail = Job(type="mail.sync", tenant_id="t", account_id="mailbox", payload={})
    store.put(DueItem(pk="ACC#mailbox", sk="DUE#catchup", due_at=now - 10, job=mail.model_dump(mode="json")))

    calls = _DynamoCalls()
    events = dynamodb().meta.client.meta.events
    for operation in ("Query", "Scan"):
        events.register(
            f"before-parameter-build.dynamodb.{operation}", calls, unique_id=f"calpoll-{operation}"
        )
    try:
        assert Scheduler(store, SqsJobQueue(queue_url), lane=LANE).run(now) == 3
    finally:
        for operation in ("Query", "Scan"):
            events.unregister(
                f"before-parameter-build.dynamodb.{operation}", unique_id=f"calpoll-{operation}"
            )
    assert calls.calls and all(
        name == "Query" and params["IndexName"] == "due" for name, params in calls.calls
    )
    read = json.dumps([params for _, params in calls.calls], default=str)
    assert f"{LANE}#" in read and '"due#' not in read  # only the calendar lane's shards

    messages = []
    while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
        messages += batch
        for message in batch:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    jobs = [Job.model_validate_json(m["Body"]) for m in messages]
    assert sorted(j.account_id for j in jobs) == ["due-0", "due-1", "due-2"]
    assert {j.type for j in jobs} == {"calendar.sync"}
    # the generic scheduler no longer fans calendar polls out: the mail catch-up alone
    generic = SqsJobQueue(queue_url)
    assert Scheduler(store, generic).run(now + 10 * DAY) == 1


@pytest.mark.rule("SYNC-2")
def test_the_calendar_poll_function_syncs_a_due_connection_that_has_no_channel(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    """Without a webhook URL (the stack's configuration) no channel is opened and no renewal
    scheduled: the poll, fanned out by the CalendarPollFunction on its schedule, syncs."""
    address, account_id = _connected(api, emulators, tenant, "polled")
    assert _channels(emulators, address) == []
    assert RENEWAL not in _due_items(stack, account_id)
    account = stack.services.account_store().get_by_id(account_id)
    assert account is not None
    CalendarPolls(stack.services.due(), 900, clock=lambda: time.time() - 901).started(account)  # due now
    emulators.google.calendar.create_in_client(address, _event("Found by the poll"))
    source = next(s for s in stack.schedules if s.function.logical_id == "CalendarPollFunction")
    assert source.every_s == 300  # rate(5 minutes)
    assert stack.fire_schedule(source)["enqueued"] >= 1
    _told(stack, account_id, "Found by the poll")
    assert _due_items(stack, account_id)[POLL]["due_at"] > time.time()  # moved a period on

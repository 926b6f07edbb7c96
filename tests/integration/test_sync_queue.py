"""The sync queue (SQS FIFO, grouped by account) into the real worker, and the scheduler's fan-out."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import boto3
import pytest

from crmsync import services
from crmsync.schedule import DueItem
from local.stack import LocalStack
from tests.integration.helpers import executions, wait_for_execution, wait_until
from tests.integration.test_resync import ScriptedProvider, provider

__all__ = ["provider"]  # test_resync's fixture, used here too


def _send(stack: LocalStack, body: str, group: str) -> None:
    boto3.client("sqs").send_message(
        QueueUrl=stack.queues["SyncQueue"],
        MessageBody=body,
        MessageGroupId=group,
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def _resync_job(tenant: str, account: str) -> dict:
    return {
        "type": "resync.start",
        "tenant_id": tenant,
        "account_id": account,
        "payload": {"user_id": "u1", "kind": "calendar_resync"},
    }


def _dead_letters(stack: LocalStack) -> list[dict]:
    sqs = boto3.client("sqs")
    found: list[dict] = []
    while True:
        batch = sqs.receive_message(
            QueueUrl=stack.queues["SyncDeadLetterQueue"],
            MaxNumberOfMessages=10,
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not batch:
            return found
        found += batch


def _executions_for(stack: LocalStack, account: str) -> list[dict]:
    sfn = boto3.client("stepfunctions")
    described = (
        sfn.describe_execution(executionArn=e["executionArn"])
        for e in executions(stack.state_machines["ResyncStateMachine"])
    )
    return [d for d in described if json.loads(d["input"])["account_id"] == account]


def _execution_for(stack: LocalStack, account: str) -> dict | None:
    found = _executions_for(stack, account)
    return found[0] if found else None


def test_a_queued_resync_job_starts_the_state_machine(stack: LocalStack, tenant: str, provider: Any) -> None:
    provider("calendar_resync", ScriptedProvider([0]))  # an empty calendar
    account = f"acc-{uuid.uuid4().hex[:8]}"
    _send(stack, json.dumps(_resync_job(tenant, account)), account)
    started = wait_until(lambda: _execution_for(stack, account))
    assert wait_for_execution(started["executionArn"])["status"] == "SUCCEEDED"


@pytest.mark.rule("SYNC-8")
def test_jobs_that_cannot_run_go_to_the_dlq_with_their_reason_and_block_nothing(
    stack: LocalStack, tenant: str
) -> None:
    broken, unknown, fine = (f"acc-{uuid.uuid4().hex[:8]}" for _ in range(3))
    _send(stack, "{not json", broken)
    _send(stack, json.dumps({**_resync_job(tenant, unknown), "type": "gmail.teleport"}), unknown)
    _send(stack, json.dumps(_resync_job(tenant, fine)), fine)

    assert wait_until(lambda: _execution_for(stack, fine))  # the good job ran
    dead: dict[str, dict] = {}

    def both_dead() -> bool:
        for message in _dead_letters(stack):
            dead[message["Body"]] = message
        return sum(1 for body in dead if body == "{not json" or "gmail.teleport" in body) == 2

    wait_until(both_dead, timeout=15)
    reasons = {body: m["MessageAttributes"]["reason"]["StringValue"] for body, m in dead.items()}
    assert reasons["{not json"].startswith("unreadable job")
    teleport = next(r for b, r in reasons.items() if "gmail.teleport" in b)
    assert teleport == "unknown job type 'gmail.teleport'"

    # the main queue holds nothing back: everything was either done or dead-lettered
    def queue_drained() -> bool:
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=stack.queues["SyncQueue"],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return attributes == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        }

    assert wait_until(queue_drained)


def test_the_scheduler_fans_out_what_is_due_once(stack: LocalStack, tenant: str) -> None:
    account = f"acc-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    services.current().scheduler().schedule(
        DueItem(
            pk=f"ACC#{account}", sk="CATCHUP", due_at=now - 5, job=_resync_job(tenant, account), every_s=3600
        )
    )
    tick = next(s for s in stack.schedules if s.function.logical_id == "SchedulerFunction")
    assert stack.fire_schedule(tick)["enqueued"] >= 1
    assert wait_until(lambda: _execution_for(stack, account))
    # moved on by an hour: the next tick does not enqueue it again
    stack.fire_schedule(tick)
    item = (
        boto3.resource("dynamodb")
        .Table(stack.tables["CursorsTable"])
        .get_item(Key={"pk": f"ACC#{account}", "sk": "CATCHUP"})["Item"]
    )
    assert int(item["due_at"]) == now - 5 + 3600
    time.sleep(0.5)  # give a wrongly repeated job the time to show up
    assert len(_executions_for(stack, account)) == 1

"""Small waits and reads used by the integration tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3


def wait_until(check: Callable[[], Any], timeout: float = 30.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(every)


def run_execution(state_machine_arn: str, job: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
    sfn = boto3.client("stepfunctions")
    execution = sfn.start_execution(
        stateMachineArn=state_machine_arn, name=f"test-{uuid.uuid4().hex}", input=json.dumps(job)
    )["executionArn"]
    return wait_for_execution(execution, timeout)


def wait_for_execution(execution_arn: str, timeout: float = 60.0) -> dict[str, Any]:
    sfn = boto3.client("stepfunctions")

    def finished() -> dict[str, Any] | None:
        described = sfn.describe_execution(executionArn=execution_arn)
        return None if described["status"] == "RUNNING" else described

    result: dict[str, Any] = wait_until(finished, timeout)
    return result


def executions(state_machine_arn: str) -> list[dict[str, Any]]:
    sfn = boto3.client("stepfunctions")
    found: list[dict[str, Any]] = sfn.list_executions(stateMachineArn=state_machine_arn)["executions"]
    return found


def sync_queue_depth(queue_url: str) -> int:
    """Jobs the sync queue holds: waiting, in flight, or delayed by a backoff."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    sqs: Any = boto3.client("sqs")
    attributes: dict[str, str] = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)[
        "Attributes"
    ]
    return sum(int(attributes.get(name, "0")) for name in names)


def wait_for_quiet_queue(queue_url: str, timeout: float = 180.0) -> bool:
    """Wait until the sync queue is empty; False when it is still busy after `timeout`.

    The integration tests share one stack, and some of them (the scheduler's fan-out) queue work for
    every account the session made. A test that starts on a quiet queue has its own jobs handled at
    once instead of behind that backlog."""
    deadline = time.monotonic() + timeout
    while sync_queue_depth(queue_url):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

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

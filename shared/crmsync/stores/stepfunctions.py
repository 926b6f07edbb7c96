"""Starts resync executions of the state machine."""

from __future__ import annotations

from crmsync.resync import ResyncJob
from crmsync.stores.aws import client


class StepFunctionsResyncStarter:
    def __init__(self, state_machine_arn: str) -> None:
        self._arn = state_machine_arn
        self._sfn = client("stepfunctions")

    def start(self, name: str, job: ResyncJob) -> None:
        try:
            self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=job.model_dump_json())
        except self._sfn.exceptions.ExecutionAlreadyExists:
            pass  # the same job delivered twice: the first execution stands

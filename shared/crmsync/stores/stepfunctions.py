"""Starts resync executions of the state machine."""

from __future__ import annotations

import contextlib

from crmsync.resync import ResyncJob
from crmsync.stores.aws import client


class StepFunctionsResyncStarter:
    def __init__(self, state_machine_arn: str) -> None:
        self._arn = state_machine_arn
        self._sfn = client("stepfunctions")

    def start(self, name: str, job: ResyncJob) -> None:
        # the same job delivered twice: the first execution stands
        with contextlib.suppress(self._sfn.exceptions.ExecutionAlreadyExists):
            self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=job.model_dump_json())

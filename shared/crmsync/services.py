"""Builds the layer's services over their real stores, once per process (cached factories)."""

from __future__ import annotations

from functools import cache

from crmsync.directory import Directory
from crmsync.jobs import JobRunner
from crmsync.resync import Resync
from crmsync.schedule import Scheduler
from crmsync.settings import get_settings


@cache
def publisher():  # type: ignore[no-untyped-def]
    from crmsync.stores.eventbridge import EventBridgePublisher

    settings = get_settings()
    return EventBridgePublisher(settings.event_bus_name, settings.event_source)


@cache
def directory() -> Directory:
    from crmsync.stores.directory import DynamoDirectoryStore

    return Directory(DynamoDirectoryStore(get_settings().directory_table), publisher())


@cache
def resync() -> Resync:
    from crmsync.stores.cursors import DynamoSyncStateStore

    return Resync(DynamoSyncStateStore(get_settings().cursors_table), publisher())


@cache
def job_runner() -> JobRunner:
    from crmsync.stores.queue import SqsDeadLetters
    from crmsync.stores.stepfunctions import StepFunctionsResyncStarter

    settings = get_settings()
    if not settings.resync_state_machine_arn or not settings.sync_dlq_url:
        raise RuntimeError("RESYNC_STATE_MACHINE_ARN and SYNC_DLQ_URL must be set for the sync worker")
    return JobRunner(
        StepFunctionsResyncStarter(settings.resync_state_machine_arn),
        SqsDeadLetters(settings.sync_dlq_url),
    )


@cache
def scheduler() -> Scheduler:
    from crmsync.stores.cursors import DynamoDueStore
    from crmsync.stores.queue import SqsJobQueue

    settings = get_settings()
    return Scheduler(
        DynamoDueStore(settings.cursors_table, settings.due_shards), SqsJobQueue(settings.sync_queue_url)
    )


def reset() -> None:
    """Forget built services (tests rebuild them against a fresh moto)."""
    from crmsync.stores import aws

    for factory in (publisher, directory, resync, job_runner, scheduler):
        factory.cache_clear()
    get_settings.cache_clear()
    aws.reset()

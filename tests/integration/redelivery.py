"""SQS redelivery on demand. A job that fails stays in the sync queue, invisible, until the
delay the worker set ends (the provider's Retry-After, else a backoff from 15 s doubling) or the
queue's visibility timeout; a test that crashes the worker many times should not wait that
long, so this ends the wait now for the messages of one group (an account) in moto's queue,
which is what the passing of time would do."""

from __future__ import annotations

from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends

from local.stack import REGION, LocalStack


def redeliver_now(stack: LocalStack, group_id: str, queue: str = "SyncQueue") -> int:
    """Makes the group's received-but-not-deleted messages visible again; returns how many."""
    name = stack.queues[queue].rsplit("/", 1)[-1]
    found = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].get_queue(name)
    in_flight = [m for m in list(found._messages) if m.group_id == group_id and not m.visible]
    for message in in_flight:
        message.change_visibility(0)
    return len(in_flight)


def queued(stack: LocalStack, group_id: str, queue: str = "SyncQueue") -> int:
    """How many messages of the group the queue still holds, waiting or being worked on."""
    name = stack.queues[queue].rsplit("/", 1)[-1]
    found = sqs_backends[DEFAULT_ACCOUNT_ID][REGION].get_queue(name)
    return sum(1 for m in list(found._messages) if m.group_id == group_id)

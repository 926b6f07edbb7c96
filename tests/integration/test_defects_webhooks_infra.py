"""Issue 9, items 12, 14 and 16: the public webhooks cost a bounded amount whatever they are
sent, the scheduler serves every due shard under load, and an Outlook send has a total size
limit checked before anything is sent."""

from __future__ import annotations

import uuid
import zlib
from collections import Counter

import boto3
import pytest

from crmsync.jobs import Job
from crmsync.schedule import DueItem, Scheduler
from crmsync.stores.cursors import DynamoDueStore
from local.cfn import load_template
from local.stack import TEMPLATE, LocalStack

SHARDS = 16


def _fresh_cursors_table() -> str:
    """A table shaped like the template's CursorsTable, empty, for this test alone (the stack's
    own holds the due items of every other test)."""
    props = load_template(TEMPLATE)["Resources"]["CursorsTable"]["Properties"]
    name = f"cursors-{uuid.uuid4().hex[:8]}"
    boto3.client("dynamodb").create_table(
        TableName=name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=props["AttributeDefinitions"],
        KeySchema=props["KeySchema"],
        GlobalSecondaryIndexes=props["GlobalSecondaryIndexes"],
    )
    return name


class _Sent:
    """The sync queue's side of the scheduler: what it was given, in order."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Job, str]] = []

    def send(self, job: Job, dedup_id: str) -> None:
        self.jobs.append((job, dedup_id))


def _shard_of(pk: str) -> int:
    return zlib.crc32(pk.encode()) % SHARDS


def _fill(store: DynamoDueStore, per_shard: dict[int, int], due_at: int, every_s: int | None) -> None:
    wanted = dict(per_shard)
    n = 0
    while any(wanted.values()):
        pk = f"ACC#load-{n}"
        n += 1
        shard = _shard_of(pk)
        if wanted.get(shard):
            wanted[shard] -= 1
            job = {"type": "mail.sync", "tenant_id": "t", "account_id": pk[4:], "payload": {}}
            store.put(DueItem(pk=pk, sk="DUE#catchup", due_at=due_at, job=job, every_s=every_s))


@pytest.mark.rule("SYNC-7")
def test_every_due_shard_is_served_each_tick_when_more_is_due_than_a_tick_takes(stack: LocalStack) -> None:
    store = DynamoDueStore(_fresh_cursors_table(), SHARDS)
    sent = _Sent()
    scheduler = Scheduler(store, sent)
    start = 1_800_000_000
    # 6 repeating items in each shard, every minute: 96 due at each tick, a tick takes 32
    _fill(store, dict.fromkeys(range(SHARDS), 6), start, every_s=60)
    served: list[Counter[int]] = []
    for tick in range(3):
        before = len(sent.jobs)
        assert scheduler.run(start + 60 * tick, limit=32) == 32  # the limit still holds
        served.append(Counter(_shard_of("ACC#" + job.account_id) for job, _ in sent.jobs[before:]))
    for tick, shards in enumerate(served):
        assert set(shards) == set(range(SHARDS)), f"tick {tick} served only shards {sorted(shards)}"
        assert all(count == 2 for count in shards.values())  # an equal share each


@pytest.mark.rule("SYNC-7")
def test_what_the_other_shards_leave_of_a_tick_goes_to_the_crowded_ones(stack: LocalStack) -> None:
    store = DynamoDueStore(_fresh_cursors_table(), SHARDS)
    sent = _Sent()
    scheduler = Scheduler(store, sent)
    now = 1_800_000_000
    _fill(store, {3: 40, 9: 5, 12: 1}, now - 10, every_s=None)
    assert scheduler.run(now, limit=32) == 32
    first = Counter(_shard_of("ACC#" + job.account_id) for job, _ in sent.jobs)
    assert first[9] == 5 and first[12] == 1 and first[3] == 26  # the rest of the tick: shard 3
    assert scheduler.run(now + 300, limit=32) == 14  # the next tick takes what is left
    assert len({dedup for _, dedup in sent.jobs}) == 46  # each item once
    # fewer to take than shards: the shards served first change from tick to tick
    _fill(store, dict.fromkeys(range(SHARDS), 3), now, every_s=300)
    firsts = set()
    for tick in range(SHARDS):
        before = len(sent.jobs)
        assert scheduler.run(now + 600 + 300 * tick, limit=4) == 4
        firsts |= {_shard_of("ACC#" + job.account_id) for job, _ in sent.jobs[before:]}
    assert firsts == set(range(SHARDS))  # within 16 ticks every shard was served

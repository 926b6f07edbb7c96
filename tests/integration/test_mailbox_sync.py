"""A mailbox's incremental sync from its cursor, over the real engine and stores."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from crmsync import services
from crmsync.accounts.models import Account
from crmsync.errors import TransientError
from crmsync.mail.models import ProviderMessage
from crmsync.sync.core import ChangePage, CursorExpired
from local.stack import LocalStack
from tests.integration.helpers import executions, wait_until
from tests.integration.test_mail_engine import OWNER, World, delivered, mail


class ScriptedHistory:
    """A provider's change history: numbered like Gmail's historyId, paged, and able to
    throttle or forget a cursor when told to (the Gmail and Graph adapters replace it)."""

    def __init__(self, pages: list[list[ProviderMessage]], start: int = 100) -> None:
        self.pages = pages
        self.start = start
        self.throttle_at: int | None = None
        self.expired = False
        self.calls: list[tuple[str, str | None]] = []

    def changes(self, account: Account, cursor: str, page_token: str | None) -> ChangePage[ProviderMessage]:
        self.calls.append((cursor, page_token))
        if self.expired:
            raise CursorExpired(f"history {cursor} is too old (404)")
        index = int(page_token or 0)
        if index == self.throttle_at:
            raise TransientError("429 rateLimitExceeded; Retry-After: 2")
        following = str(index + 1) if index + 1 < len(self.pages) else None
        return ChangePage(
            items=self.pages[index], next_page=following, cursor=str(self.start + 10 * (index + 1))
        )

    def is_newer(self, candidate: str, current: str) -> bool:
        return int(candidate) > int(current)


def cursor_of(stack: LocalStack, account_id: str) -> str | None:
    item = (
        boto3.resource("dynamodb")
        .Table(stack.tables["CursorsTable"])
        .get_item(Key={"pk": f"ACC#{account_id}", "sk": "CUR#mail"})
        .get("Item")
    )
    return str(item["cursor"]) if item else None


def contact_mail(n: int) -> ProviderMessage:
    return delivered(mail("carla@client.test", [OWNER], f"Question {n}"))


@pytest.fixture
def world(stack: LocalStack) -> World:
    created = World()
    assert (
        services.current()
        .mailbox_sync()
        ._cursors.advance(created.account.account_id, "mail", "100", expected=None)
    )
    return created


@pytest.mark.rule("SYNC-1")
def test_the_cursor_moves_only_after_every_page_is_stored(stack: LocalStack, world: World) -> None:
    history = ScriptedHistory([[contact_mail(1), contact_mail(2)], [contact_mail(3)], [contact_mail(4)]])
    history.throttle_at = 2
    with pytest.raises(TransientError):
        services.current().mailbox_sync().run(world.account, history)
    assert cursor_of(stack, world.account.account_id) == "100"  # pages 0 and 1 were stored, the cursor waits
    history.throttle_at = None
    result = services.current().mailbox_sync().run(world.account, history)  # the job is retried
    assert (result.synced, result.updated, result.cursor) == (
        1,
        3,
        "130",
    )  # the first three were already there
    assert cursor_of(stack, world.account.account_id) == "130"


@pytest.mark.rule("SYNC-4")
def test_throttling_neither_moves_nor_resets_the_cursor(stack: LocalStack, world: World) -> None:
    history = ScriptedHistory([[contact_mail(1)]])
    history.throttle_at = 0
    for _ in range(3):
        with pytest.raises(TransientError):
            services.current().mailbox_sync().run(world.account, history)
    assert cursor_of(stack, world.account.account_id) == "100"
    assert {cursor for cursor, _ in history.calls} == {"100"}


@pytest.mark.rule("SYNC-1")
def test_the_cursor_never_moves_backwards(stack: LocalStack, world: World) -> None:
    cursors = services.current().mailbox_sync()._cursors
    assert cursors.advance(world.account.account_id, "mail", "180", expected="100")
    stale = ScriptedHistory([[contact_mail(1)]], start=100)  # a worker that read 100 before the move
    assert not cursors.advance(world.account.account_id, "mail", "110", expected="100")
    assert cursor_of(stack, world.account.account_id) == "180"
    # and a run whose pages end below the stored cursor leaves it where it is
    result = services.current().mailbox_sync().run(world.account, ScriptedHistory([[]], start=50))
    assert result.cursor == "180" and cursor_of(stack, world.account.account_id) == "180"
    assert stale.calls == []


@pytest.mark.rule("SYNC-3")
def test_an_expired_cursor_starts_a_resync_not_an_error_loop(stack: LocalStack, world: World) -> None:
    history = ScriptedHistory([[contact_mail(1)]])
    history.expired = True
    result = services.current().mailbox_sync().run(world.account, history)
    assert result.status == "resync_started"
    assert cursor_of(stack, world.account.account_id) == "100"
    sfn = boto3.client("stepfunctions")

    def resync() -> Any:
        for execution in executions(stack.state_machines["ResyncStateMachine"]):
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            job = json.loads(described["input"])
            if job["account_id"] == world.account.account_id:
                return job
        return None

    job = wait_until(resync)
    assert job["kind"] == "mail_resync"
    assert len(history.calls) == 1  # asked once, not again and again

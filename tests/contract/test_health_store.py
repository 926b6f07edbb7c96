"""The health store's contract (SYNC-9), run against the DynamoDB store on the local stack's moto
and against the in-memory one; and the cursor store's `updated_at` (the cursor's age) on both."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from crmsync.stores import memory
from crmsync.stores.memory_health import MemoryHealthStore
from crmsync.sync.health import KEEP_FAILED_ITEMS, FailedItem, RunReport
from local.stack import LocalStack

KINDS = ["dynamodb", "memory"]
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(params=KINDS)
def health_store(request: pytest.FixtureRequest) -> Any:
    if request.param == "memory":
        return MemoryHealthStore()
    from crmsync.stores.health import DynamoHealthStore

    stack: LocalStack = request.getfixturevalue("stack")
    return DynamoHealthStore(stack.tables["CursorsTable"])


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=KINDS)
def timed_cursors(request: pytest.FixtureRequest) -> tuple[Any, Clock]:
    clock = Clock()
    if request.param == "memory":
        return memory.MemoryCursorStore(clock=clock), clock
    from crmsync.stores.cursors import DynamoCursorStore

    stack: LocalStack = request.getfixturevalue("stack")
    return DynamoCursorStore(stack.tables["CursorsTable"], clock=clock), clock


def _account() -> str:
    return f"acc-{uuid.uuid4().hex[:12]}"


def _run(minutes: int, outcome: str = "success", error: str | None = None, items: int = 0) -> RunReport:
    at = T0 + timedelta(minutes=minutes)
    failed = [
        FailedItem(item_id=f"m-{minutes}-{n}", reason=f"malformed_mime: {n}", at=at) for n in range(items)
    ]
    return RunReport(at=at, outcome=outcome, error=error, failed_items=failed)


@pytest.mark.rule("SYNC-9")
def test_a_run_records_its_attempt_and_a_success_its_time(health_store: Any) -> None:
    account = _account()
    assert health_store.health_of(account) == []
    first = health_store.record(account, "mail", _run(0))
    assert first.last_success_at == T0 and first.last_attempt_at == T0 and first.failures == 0
    health_store.record(account, "mail", _run(5, "progress"))  # ran, but did not reach the end
    [mail] = health_store.health_of(account)
    assert (mail.account_id, mail.name) == (account, "mail")
    assert mail.last_success_at == T0 and mail.last_attempt_at == T0 + timedelta(minutes=5)
    assert mail.version == 2


@pytest.mark.rule("SYNC-9")
def test_failures_count_in_a_row_and_the_last_error_stays_after_a_success(health_store: Any) -> None:
    account = _account()
    health_store.record(account, "calendar", _run(0))
    health_store.record(account, "calendar", _run(1, "error", "TransientError: Google answered 500"))
    after = health_store.record(account, "calendar", _run(2, "error", "TransientError: again"))
    assert after.failures == 2 and after.last_error == "TransientError: again"
    assert after.last_error_at == T0 + timedelta(minutes=2) and after.last_success_at == T0
    healed = health_store.record(account, "calendar", _run(3))
    assert healed.failures == 0 and healed.last_success_at == T0 + timedelta(minutes=3)
    assert healed.last_error == "TransientError: again"  # history: when and why it last failed
    [stored] = health_store.health_of(account)
    assert stored == healed


@pytest.mark.rule("SYNC-9")
def test_failed_items_are_kept_newest_first_once_each_and_bounded(health_store: Any) -> None:
    account = _account()
    health_store.record(account, "mail", _run(0, items=3))
    health_store.record(account, "mail", _run(1))  # a clean run keeps them
    [mail] = health_store.health_of(account)
    assert [i.item_id for i in mail.failed_items] == ["m-0-2", "m-0-1", "m-0-0"]
    again = RunReport(
        at=T0 + timedelta(minutes=2),
        outcome="error",
        error="TransientError: x",
        failed_items=[
            FailedItem(item_id="m-0-0", reason="unprocessable: again", at=T0 + timedelta(minutes=2))
        ],
    )
    after = health_store.record(account, "mail", again)
    assert [i.item_id for i in after.failed_items] == ["m-0-0", "m-0-2", "m-0-1"]
    assert after.failed_items[0].reason == "unprocessable: again" and after.failures == 1
    many = health_store.record(account, "mail", _run(3, items=KEEP_FAILED_ITEMS + 5))
    assert len(many.failed_items) == KEEP_FAILED_ITEMS
    assert many.failed_items[0].item_id == f"m-3-{KEEP_FAILED_ITEMS + 4}"
    assert many.failures == 0 and many.last_success_at == T0 + timedelta(minutes=3)
    assert health_store.health_of(account) == [many]


@pytest.mark.rule("SYNC-9")
def test_each_account_and_sync_has_its_own_record(health_store: Any) -> None:
    account, other = _account(), _account()
    health_store.record(account, "mail", _run(0))
    health_store.record(account, "calendar", _run(1, "error", "PermanentError: no"))
    health_store.record(other, "mail", _run(2, items=1))
    by_name = {r.name: r for r in health_store.health_of(account)}
    assert set(by_name) == {"mail", "calendar"}
    assert by_name["mail"].failures == 0 and by_name["calendar"].failures == 1
    assert by_name["mail"].failed_items == []
    [theirs] = health_store.health_of(other)
    assert [i.item_id for i in theirs.failed_items] == ["m-2-0"]


@pytest.mark.rule("SYNC-9")
def test_a_cursor_knows_when_it_last_moved(timed_cursors: tuple[Any, Clock]) -> None:
    cursors, clock = timed_cursors
    account = _account()
    assert cursors.updated_at(account, "mail") is None
    assert cursors.advance(account, "mail", "100", expected=None)
    assert cursors.updated_at(account, "mail") == datetime.fromtimestamp(clock.now, UTC)
    clock.now += 600
    assert cursors.advance(account, "mail", "200", expected="999") is False  # did not move: same age
    assert cursors.updated_at(account, "mail") == datetime.fromtimestamp(clock.now - 600, UTC)
    assert cursors.advance(account, "mail", "200", expected="100")
    assert cursors.updated_at(account, "mail") == datetime.fromtimestamp(clock.now, UTC)
    clock.now += 60
    cursors.set(account, "calendar", "sync-token")
    assert cursors.updated_at(account, "calendar") == datetime.fromtimestamp(clock.now, UTC)
    assert cursors.updated_at(account, "mail") == datetime.fromtimestamp(clock.now - 60, UTC)


def test_a_cursor_written_before_its_time_was_kept_has_no_age(stack: LocalStack) -> None:
    import boto3

    from crmsync.stores.cursors import DynamoCursorStore

    account = _account()
    table = boto3.resource("dynamodb").Table(stack.tables["CursorsTable"])
    table.put_item(Item={"pk": f"ACC#{account}", "sk": "CUR#mail", "cursor": "old"})
    cursors = DynamoCursorStore(stack.tables["CursorsTable"])
    assert cursors.get(account, "mail") == "old" and cursors.updated_at(account, "mail") is None
    assert cursors.advance(account, "mail", "new", expected="old")
    assert cursors.updated_at(account, "mail") is not None


@pytest.mark.rule("SYNC-9")
def test_items_alone_join_the_failed_items_and_leave_the_runs_record_as_it_was(health_store: Any) -> None:
    account = _account()
    health_store.record(account, "mail", _run(0, "error", "TransientError: x"))
    page = RunReport(
        at=T0 + timedelta(minutes=1),
        outcome="items",
        failed_items=[FailedItem(item_id="r-1", reason="malformed_mime: y", at=T0 + timedelta(minutes=1))],
    )
    after = health_store.record(account, "mail", page)
    assert [i.item_id for i in after.failed_items] == ["r-1"]
    assert after.failures == 1 and after.last_attempt_at == T0 and after.last_success_at is None
    fresh = health_store.record(_account(), "calendar", page)  # none before: made with the items alone
    assert fresh.last_attempt_at is None and [i.item_id for i in fresh.failed_items] == ["r-1"]

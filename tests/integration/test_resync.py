"""The resync state machine from template.yaml, run by moto's interpreter, its Lambda tasks
reaching the real resync handler."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from crmsync.errors import PermanentError, TransientError
from crmsync.resync import Page, ResyncJob
from local.stack import LocalStack
from tests.integration.helpers import executions, run_execution, wait_until


def _resync(stack: LocalStack) -> Any:
    return stack.services.resync()  # the one the stack's ResyncFunction runs


def _job(tenant: str, kind: str = "mail_import") -> dict[str, Any]:
    return {"tenant_id": tenant, "user_id": "u1", "account_id": f"acc-{uuid.uuid4().hex[:8]}", "kind": kind}


class ScriptedProvider:
    """A provider's history as pages; may throttle or fail on a given page (a stand-in for
    the provider adapters the Gmail, Graph and calendar issues plug in)."""

    def __init__(
        self, pages: list[int], throttle_once_at: int | None = None, fail_at: int | None = None
    ) -> None:
        self.pages = pages
        self.throttle_once_at = throttle_once_at
        self.fail_at = fail_at
        self.calls: list[str | None] = []

    def fetch_page(self, job: ResyncJob) -> Page:
        self.calls.append(job.page_token)
        index = int(job.page_token or 0)
        if index == self.throttle_once_at:
            self.throttle_once_at = None
            raise TransientError("429 from the provider")
        if index == self.fail_at:
            raise PermanentError("the provider refused the account")
        following = str(index + 1) if index + 1 < len(self.pages) else None
        return Page(items=self.pages[index], next_token=following, cursor=f"cursor-{index}")


@pytest.fixture
def provider(stack: LocalStack) -> Iterator[Any]:
    resync = _resync(stack)  # the very service the handler calls
    registered: list[str] = []

    def plug(kind: str, source: ScriptedProvider) -> ScriptedProvider:
        resync.register(kind, source)  # type: ignore[arg-type]
        registered.append(kind)
        return source

    before = dict(resync._sources)
    yield plug
    resync._sources.clear()
    resync._sources.update(before)  # the real page sources are back for the tests after


def test_runs_to_success_on_an_empty_account(stack: LocalStack, tenant: str, provider: Any) -> None:
    provider("calendar_resync", ScriptedProvider([0]))  # a calendar with nothing in it
    function = stack.functions["ResyncFunction"]
    # resyncs that earlier tests started (an expired cursor's) end first: they call the same function
    machine = stack.state_machines["ResyncStateMachine"]
    wait_until(lambda: all(e["status"] != "RUNNING" for e in executions(machine)), timeout=60)
    before = function.invocations
    job = _job(tenant, "calendar_resync")
    described = run_execution(stack.state_machines["ResyncStateMachine"], job)
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["done"] is True and output["pages"] == 1 and output["items"] == 0
    assert function.invocations - before == 3  # begin, one page, finish: each reached the real handler
    progress = _resync(stack).progress(job["account_id"], "calendar_resync")
    assert progress is not None and progress.status == "succeeded"
    event = stack.wait_for_event(
        lambda e: e["detail-type"] == "ResyncFinished" and e["detail"]["account_id"] == job["account_id"]
    )
    assert event["detail"]["status"] == "succeeded"


@pytest.mark.rule("SYNC-6")
def test_pages_through_the_provider_and_retries_a_throttled_step(
    stack: LocalStack, tenant: str, provider: Any
) -> None:
    source = provider("mail_import", ScriptedProvider([10, 5, 7], throttle_once_at=1))
    job = _job(tenant)
    described = run_execution(stack.state_machines["ResyncStateMachine"], job)
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert (output["pages"], output["items"], output["cursor"]) == (3, 22, "cursor-2")
    assert source.calls == [None, "1", "1", "2"]  # page 1 throttled once, then retried
    progress = _resync(stack).progress(job["account_id"], "mail_import")
    assert progress is not None
    assert (progress.status, progress.pages, progress.items) == ("succeeded", 3, 22)


@pytest.mark.rule("SYNC-6")
def test_a_step_that_gives_up_is_recorded_and_reported(stack: LocalStack, tenant: str, provider: Any) -> None:
    provider("mail_resync", ScriptedProvider([3, 3], fail_at=1))
    job = _job(tenant, "mail_resync")
    described = run_execution(stack.state_machines["ResyncStateMachine"], job)
    assert described["status"] == "FAILED"
    progress = _resync(stack).progress(job["account_id"], "mail_resync")
    assert progress is not None and progress.status == "failed"
    assert progress.pages == 1 and "refused the account" in (progress.error or "")
    event = stack.wait_for_event(
        lambda e: e["detail-type"] == "ResyncFinished" and e["detail"]["account_id"] == job["account_id"]
    )
    assert event["detail"]["status"] == "failed" and "PermanentError" in event["detail"]["error"]

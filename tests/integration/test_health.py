"""Connection health (SYNC-9) on the local stack: `GET /v1/accounts/{id}/health` for a Gmail
mailbox and a Google calendar connection, after syncs that ran through the sync queue and the
worker against the emulators, after a sync that failed, after a skipped message, and once the
clock has moved past a poll interval; only the caller's own account answers (SEC-4)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from crmsync.auth import Principal
from crmsync.errors import NotFound, TransientError
from crmsync.jobs import Job
from crmsync.stores.health import DynamoHealthStore
from crmsync.sync.health import STALE_GRACE_S, ConnectionHealth, HealthLog
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import run_execution, wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_gmail_batch import arrive_from_carla, connected_mailbox

POLL_S = 900  # the local stack's catch-up and calendar poll intervals (settings' defaults)


def _queue(stack: LocalStack, job_type: str, tenant: str, account_id: str) -> None:
    """A sync job on the account's queue group, as a push or the poll would queue it."""
    boto3.client("sqs").send_message(
        QueueUrl=stack.queues["SyncQueue"],
        MessageBody=Job(type=job_type, tenant_id=tenant, account_id=account_id).model_dump_json(),
        MessageGroupId=account_id,
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def _health(api: Api, token: str, account_id: str) -> dict[str, Any]:
    response = api.call("GET", f"/v1/accounts/{account_id}/health", token)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _sync(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in body["syncs"] if s["name"] == name]
    [one] = found
    return one


def _synced_since(api: Api, token: str, account_id: str, name: str, since: datetime) -> dict[str, Any] | None:
    body = _health(api, token, account_id)
    done = [s["last_success_at"] for s in body["syncs"] if s["name"] == name and s["last_success_at"]]
    return body if done and datetime.fromisoformat(done[0]) >= since else None


def _later(stack: LocalStack, seconds: float) -> ConnectionHealth:
    """The stack's health view on a clock `seconds` ahead (the way other tests move time)."""
    layer = stack.services
    return ConnectionHealth(
        layer.account_store(),
        DynamoHealthStore(stack.tables["CursorsTable"]),
        layer.cursors(),
        {"mail": layer.settings.catchup_after_s, "calendar": layer.settings.calendar_poll_after_s},
        clock=lambda: datetime.now(UTC) + timedelta(seconds=seconds),
    )


def _calendar(api: Api, emulators: Emulators, tenant: str) -> tuple[str, str, str]:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = f"health-{uuid.uuid4().hex[:8]}@gmail.test"
    account_id = connect(api, Browser(emulators), user, "google", address, purpose="calendar")["account_id"]
    return user, address, account_id


def _event(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": "2026-12-10T09:00:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2026-12-10T10:00:00+01:00", "timeZone": "Europe/Paris"},
    }


@pytest.mark.rule("SYNC-9")
def test_a_gmail_account_that_synced_shows_its_last_success_a_small_lag_and_its_cursor_age(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    user = api.token(tenant, "u1")
    before = _health(api, user, account_id)
    assert before["account_id"] == account_id and before["purposes"] == ["mail", "calendar"]
    assert before["status"] == {"state": "connected", "account_status": "connected", "reason": None}
    assert _sync(before, "mail")["last_success_at"] is None and before["stale"] is False

    started = datetime.now(UTC).replace(microsecond=0)
    arrive_from_carla(emulators, address, ["Health check"])
    _queue(stack, "mail.sync", tenant, account_id)
    body = wait_until(lambda: _synced_since(api, user, account_id, "mail", started))
    mail = _sync(body, "mail")
    assert mail["lag_s"] is not None and mail["lag_s"] < 30
    assert mail["cursor_age_s"] is not None and mail["cursor_age_s"] < 60  # set at connect, moved by the sync
    assert mail["poll_interval_s"] == POLL_S and mail["failures"] == 0 and mail["failed_items"] == []
    assert mail["last_attempt_at"] == mail["last_success_at"] and mail["stale"] is False
    assert body["healthy"] is True and body["stale"] is False


@pytest.mark.rule("SYNC-9")
def test_a_calendar_connection_that_synced_shows_it_and_goes_stale_once_it_stops(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    user, address, account_id = _calendar(api, emulators, tenant)
    started = datetime.now(UTC).replace(microsecond=0)
    emulators.google.calendar.create_in_client(address, _event("Health review"))
    _queue(stack, "calendar.sync", tenant, account_id)
    body = wait_until(lambda: _synced_since(api, user, account_id, "calendar", started))
    assert body["purposes"] == ["calendar"] and [s["name"] for s in body["syncs"]] == ["calendar"]
    calendar = _sync(body, "calendar")
    assert calendar["lag_s"] < 30 and calendar["cursor_age_s"] is not None and calendar["failures"] == 0
    assert body["healthy"] is True

    # nothing syncs it any more: within one poll interval (and the scheduler's grace) it shows
    principal = Principal(tenant_id=tenant, user_id="u1", role="member")
    assert _later(stack, POLL_S).of(principal, account_id).stale is False
    later = _later(stack, POLL_S + STALE_GRACE_S + 30).of(principal, account_id)
    assert later.stale is True and later.healthy is False
    assert later.syncs[0].stale is True and (later.syncs[0].lag_s or 0) >= POLL_S + STALE_GRACE_S


@pytest.mark.rule("SYNC-9")
def test_a_failing_sync_shows_its_failures_and_reason_and_is_stale_after_a_poll_interval(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    user, address, account_id = _calendar(api, emulators, tenant)
    account = stack.services.account_store().get(tenant, "u1", account_id)
    assert account is not None
    job = stack.services.calendar_sync_job()
    job.sync(account)  # one good run first
    emulators.google.calendar.fail(address, 50, status=500)  # then Google answers 500, again and again
    try:
        for _ in range(2):  # the worker would retry it with backoff; run it here, twice
            with pytest.raises(TransientError):
                job.sync(account)
    finally:
        emulators.google.calendar.fail(address, 0)
    body = _health(api, user, account_id)
    calendar = _sync(body, "calendar")
    assert calendar["failures"] == 2 and "TransientError" in calendar["last_error"]
    assert "500" in calendar["last_error"] or "backend" in calendar["last_error"].lower()
    assert calendar["last_attempt_at"] > calendar["last_success_at"]
    assert body["healthy"] is False and body["stale"] is False  # failing, but not yet for a poll interval

    principal = Principal(tenant_id=tenant, user_id="u1", role="member")
    later = _later(stack, POLL_S + STALE_GRACE_S + 30).of(principal, account_id)
    assert later.stale is True and later.syncs[0].failures == 2

    job.sync(account)  # Google is back: the next run heals it
    healed = _sync(_health(api, user, account_id), "calendar")
    assert healed["failures"] == 0 and healed["last_success_at"] == healed["last_attempt_at"]
    assert "TransientError" in healed["last_error"]  # when and why it last failed stays readable


@pytest.mark.rule("SYNC-9")
@pytest.mark.rule("CAL-16")
def test_a_refused_mass_trash_is_a_failure_with_its_report(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    from crmsync.calendar.engine import MassTrashRefused

    user, address, account_id = _calendar(api, emulators, tenant)
    calendar = emulators.google.calendar
    made = [calendar.create_in_client(address, _event(f"Standup {n}")) for n in range(12)]
    account = stack.services.account_store().get(tenant, "u1", account_id)
    assert account is not None
    job = stack.services.calendar_sync_job()
    job.sync(account)
    for event in made:
        calendar.delete_in_client(address, event["id"])
    with pytest.raises(MassTrashRefused):
        job.sync(account)
    body = _health(api, user, account_id)
    failing = _sync(body, "calendar")
    assert failing["failures"] == 1 and failing["last_error"].startswith(
        "MassTrashRefused: refused: 12 of 12"
    )
    assert body["healthy"] is False


@pytest.mark.rule("SYNC-9")
def test_the_crms_changes_going_to_the_calendar_have_their_own_health(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    from tests.integration.test_activities_api import _body

    user, address, account_id = _calendar(api, emulators, tenant)
    backend = api.token(tenant, "crm-backend", role="service")
    started = datetime.now(UTC).replace(microsecond=0)
    activity_id = f"a-{uuid.uuid4().hex[:8]}"
    put = api.call("PUT", f"/v1/activities/{activity_id}", backend, json=_body("Pricing call", started))
    assert put.status_code == 200, put.text
    body = wait_until(lambda: _synced_since(api, user, account_id, "calendar_push", started))
    push = _sync(body, "calendar_push")
    assert push["failures"] == 0 and push["poll_interval_s"] is None and push["cursor_age_s"] is None
    assert push["stale"] is False and [s["name"] for s in body["syncs"]] == ["calendar", "calendar_push"]

    # Google fails the next write: the push fails with the activity as its failed item
    later = started + timedelta(minutes=1)
    activities = stack.services.activity_store()
    stored = activities.get_activity(tenant, activity_id)
    assert stored is not None
    activities.put_activity(
        stored.model_copy(update={"subject": "Pricing call (moved)", "updated_at": later})
    )
    emulators.google.calendar.fail(address, 50, status=500)
    try:
        with pytest.raises(TransientError):
            stack.services.calendar_push_job()(
                Job(
                    type="calendar.push",
                    tenant_id=tenant,
                    account_id=f"activity-{activity_id}",
                    payload={"activity_id": activity_id},
                ),
                "m-1",
            )
    finally:
        emulators.google.calendar.fail(address, 0)
    push = _sync(_health(api, user, account_id), "calendar_push")
    assert push["failures"] == 1 and "TransientError" in push["last_error"]
    [item] = push["failed_items"]
    assert item["item_id"] == activity_id and "TransientError" in item["reason"]


@pytest.mark.rule("SYNC-9")
@pytest.mark.rule("SEC-5")
def test_a_skipped_message_shows_in_failed_items_with_its_reason(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    user = api.token(tenant, "u1")
    started = datetime.now(UTC).replace(microsecond=0)
    huge = b"X-Junk: " + b"a" * (300 * 1024) + b"\r\n\r\nbody"  # headers past 256 KiB: unreadable
    bad = emulators.google.gmail.arrive(address, huge)
    arrive_from_carla(emulators, address, ["Fine"])
    _queue(stack, "mail.sync", tenant, account_id)
    body = wait_until(lambda: _synced_since(api, user, account_id, "mail", started))
    mail = _sync(body, "mail")
    [item] = mail["failed_items"]
    assert item["item_id"] == bad.id and item["reason"].startswith("malformed_mime: headers larger")
    assert mail["failures"] == 0  # the run itself succeeded: the message blocked nothing


@pytest.mark.rule("SYNC-9")
def test_a_run_of_many_messages_and_skips_costs_its_health_one_read_and_one_write(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.client import BaseClient

    address, account_id = connected_mailbox(api, emulators, tenant)
    arrive_from_carla(emulators, address, [f"Order {n}" for n in range(30)])
    for n in range(3):
        emulators.google.gmail.arrive(address, b"X-Junk: " + bytes([97 + n]) * (300 * 1024) + b"\r\n\r\nx")
    calls: list[str] = []
    real = BaseClient._make_api_call  # type: ignore[attr-defined]

    def counting(client: Any, operation: str, params: dict[str, Any]) -> Any:
        key = params.get("Key") or params.get("Item")
        if client.meta.service_model.service_name == "dynamodb" and isinstance(key, dict):
            sk = key.get("sk")  # the resource's plain value, or the client's {"S": ...}
            if str(sk.get("S") if isinstance(sk, dict) else sk).startswith("HEALTH#"):
                calls.append(operation)
        return real(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    account = stack.services.account_store().get(tenant, "u1", account_id)
    assert account is not None
    stack.services.mail_sync_job().sync(account)
    assert calls == ["GetItem", "PutItem"]  # 33 messages, 3 failed items: one read, one write
    calls.clear()
    stack.services.mail_sync_job().sync(account)  # nothing new, nothing failed: one update
    assert calls == ["UpdateItem"]
    monkeypatch.undo()
    mail = _sync(_health(api, api.token(tenant, "u1"), account_id), "mail")
    assert len(mail["failed_items"]) == 3 and mail["failures"] == 0


@pytest.mark.rule("SYNC-9")
@pytest.mark.rule("SYNC-6")
def test_a_message_a_resync_skipped_shows_in_failed_items_too(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    address, account_id = connected_mailbox(api, emulators, tenant)
    user = api.token(tenant, "u1")
    bad = emulators.google.gmail.arrive(address, b"X-Junk: " + b"b" * (300 * 1024) + b"\r\n\r\nbody")
    job = {"tenant_id": tenant, "user_id": "u1", "account_id": account_id, "kind": "mail_resync"}
    described = run_execution(stack.state_machines["ResyncStateMachine"], job)
    assert described["status"] == "SUCCEEDED", described

    def failed_items() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = _sync(_health(api, user, account_id), "mail")["failed_items"]
        return found

    [item] = wait_until(failed_items)
    assert item["item_id"] == bad.id and item["reason"].startswith("malformed_mime")


@pytest.mark.rule("SYNC-9")
def test_a_refused_token_shows_as_the_token_state_with_its_reason(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    user, address, account_id = _calendar(api, emulators, tenant)
    store = stack.services.account_store()
    account = store.get(tenant, "u1", account_id)
    assert account is not None
    stack.services.calendar_sync_job().sync(account)
    emulators.google.state.revoke(address)
    emulators.google.calendar.fail(address, 1, status=401)  # the token is refused; the refresh too
    try:
        with pytest.raises(Exception, match="re-authorisation"):
            stack.services.calendar_sync_job().sync(account)
    finally:
        emulators.google.calendar.fail(address, 0)
    body = _health(api, user, account_id)
    assert body["status"]["state"] == "reauth_required" and "refused" in body["status"]["reason"]
    calendar = _sync(body, "calendar")
    assert calendar["failures"] == 1 and "re-authorisation" in calendar["last_error"]
    assert body["healthy"] is False


@pytest.mark.rule("SYNC-9")
def test_only_the_syncs_this_build_runs_are_expected_and_a_stopped_or_gone_connection_is_never_stale(
    stack: LocalStack,
) -> None:
    from crmsync.accounts.models import Account, AccountSettings

    long_ago = datetime.now(UTC) - timedelta(days=2)
    account = Account(
        account_id=f"acc-{uuid.uuid4().hex[:8]}",
        tenant_id="t-health",
        user_id="u1",
        provider="microsoft",
        purpose="both",  # no Microsoft calendar in this build: only its mail is expected to sync
        address="m@outlook.test",
        status="connected",
        settings=AccountSettings(),
        connected_at=long_ago,
        updated_at=long_ago,
    )
    health = stack.services.connection_health()
    view = health.of_account(account)
    assert [s.name for s in view.syncs] == ["mail"] and view.stale is True  # never synced in two days
    assert view.syncs[0].last_success_at is None and view.syncs[0].lag_s is None
    gone = health.of_account(account.model_copy(update={"status": "disconnected"}))
    assert gone.stale is False and gone.healthy is False and gone.status.state == "disconnected"
    paused = health.of_account(account.model_copy(update={"status": "reauth_required"}))
    assert paused.stale is True and paused.status.state == "reauth_required"  # it should sync, and does not
    google = account.model_copy(update={"provider": "google", "calendar_stopped_at": long_ago})
    stopped = health.of_account(google)
    assert [(s.name, s.stale) for s in stopped.syncs] == [("mail", True), ("calendar", False)]  # CAL-9


@pytest.mark.rule("SYNC-9")
@pytest.mark.rule("SEC-4")
def test_another_users_or_tenants_account_is_a_404(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    _, account_id = connected_mailbox(api, emulators, tenant)
    assert _health(api, api.token(tenant, "u1"), account_id)["account_id"] == account_id
    for token in (
        api.token(tenant, "u2"),
        api.token(f"t-{uuid.uuid4().hex[:10]}", "u1"),
        api.token(f"t-{uuid.uuid4().hex[:10]}", "u1", "admin"),
    ):
        response = api.call("GET", f"/v1/accounts/{account_id}/health", token)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    missing = api.call("GET", "/v1/accounts/acc-nope/health", api.token(tenant, "u1"))
    assert missing.status_code == 404
    with pytest.raises(NotFound):
        stack.services.connection_health().of(
            Principal(tenant_id="t-other", user_id="u1", role="member"), account_id
        )


@pytest.mark.rule("SYNC-9")
def test_a_failed_reason_keeps_no_secret_and_a_broken_health_store_never_fails_the_sync() -> None:
    class Broken:
        def health_of(self, account_id: str) -> list[Any]:
            return []

        def record(self, account_id: str, name: str, run: Any) -> Any:
            raise RuntimeError("DynamoDB is down")

    from crmsync.stores.memory_health import MemoryHealthStore

    store = MemoryHealthStore()
    log = HealthLog(store)
    log.failed(
        "acc-1", "mail", RuntimeError("401 for Authorization: Bearer ya29.secret-token?access_token=abc")
    )
    [record] = store.health_of("acc-1")
    assert (
        record.last_error is not None and "ya29" not in record.last_error and "abc" not in record.last_error
    )
    assert "<redacted>" in record.last_error
    HealthLog(Broken()).ran("acc-1", "mail")  # logged, not raised

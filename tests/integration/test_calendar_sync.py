"""A Google calendar connected through the API syncs into CRM activities on the deployed path:
the connect hook records the first cursor, a `calendar.sync` job on the sync queue runs the
worker's calendar loop (the sync core's CursorLoop) through the Google Calendar bundle and the
calendar engine, and the CRM hears of the activity on the bus. Local stack, Google Calendar
emulator, DynamoDB activity store."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from crmsync.jobs import Job
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan


def _calendar_sync(stack: LocalStack, tenant: str, account_id: str) -> None:
    """A calendar.sync job on the account's queue group, as the poll or a push would queue it."""
    boto3.client("sqs").send_message(
        QueueUrl=stack.queues["SyncQueue"],
        MessageBody=Job(type="calendar.sync", tenant_id=tenant, account_id=account_id).model_dump_json(),
        MessageGroupId=account_id,
        MessageDeduplicationId=uuid.uuid4().hex,
    )


def _event(summary: str, day: int = 10) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": f"2026-12-{day:02d}T09:00:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": f"2026-12-{day:02d}T10:00:00+01:00", "timeZone": "Europe/Paris"},
    }


def _told(stack: LocalStack, account_id: str, kind: str, summary: str) -> dict[str, Any]:
    found = stack.wait_for_event(
        lambda e: (
            e.get("detail-type") == kind
            and e["detail"].get("account_id") == account_id
            and e["detail"].get("fields", {}).get("subject") == summary
        ),
        timeout=30,
    )
    detail: dict[str, Any] = found["detail"]
    return detail


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-4")
@pytest.mark.rule("CAL-6")
@pytest.mark.rule("SYNC-1")
def test_a_connected_google_calendar_syncs_its_new_events_into_crm_activities(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = f"cal-{uuid.uuid4().hex[:8]}@gmail.test"
    calendar = emulators.google.calendar
    older = (datetime.now(UTC) - timedelta(days=40)).isoformat()
    calendar.create_in_client(address, _event("Planned last month", 11), created=older)
    account_id = connect(api, Browser(emulators), user, "google", address, purpose="calendar")["account_id"]
    cursors = stack.services.cursors()
    first = wait_until(lambda: cursors.get(account_id, "calendar"))  # the connect hook's first cursor

    made = calendar.create_in_client(address, _event("Kick-off with Carla"))
    _calendar_sync(stack, tenant, account_id)
    created = _told(stack, account_id, "ActivityCreatedFromCalendar", "Kick-off with Carla")
    assert created["provider_event_id"] == made["id"] and created["type"] == "meeting"
    assert created["user_id"] == "u1" and created["fields"]["time_zone"] == "Europe/Paris"
    stored = stack.services.activity_store().get_activity(tenant, created["activity_id"])
    assert stored is not None and stored.subject == "Kick-off with Carla"
    wait_until(lambda: cursors.get(account_id, "calendar") != first)

    # CAL-4: events become the type the connection's settings name
    changed = api.call("PATCH", f"/v1/accounts/{account_id}", user, json={"save_events_as": "call"})
    assert changed.status_code == 200 and changed.json()["settings"]["save_events_as"] == "call"
    calendar.create_in_client(address, _event("Call with Bo", 12))
    _calendar_sync(stack, tenant, account_id)
    assert _told(stack, account_id, "ActivityCreatedFromCalendar", "Call with Bo")["type"] == "call"
    # CAL-6: the event created before the connection never came in
    assert not [
        e
        for e in stack.events
        if e.get("detail-type") == "ActivityCreatedFromCalendar"
        and e["detail"].get("fields", {}).get("subject") == "Planned last month"
    ]


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("ACC-8")
def test_a_calendar_whose_pushes_are_lost_is_synced_by_its_poll_and_a_disconnect_ends_the_poll(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    """The poll is a due item the calendar_poll function fans out from its own lane of the due
    index (no run reads every connection); each sync moves it a period on; disconnecting removes it."""
    from tests.integration.test_graph_notify import _due_items

    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = f"poll-{uuid.uuid4().hex[:8]}@gmail.test"
    account_id = connect(api, Browser(emulators), user, "google", address, purpose="calendar")["account_id"]
    poll = _due_items(stack, account_id)["DUE#calpoll"]
    assert poll["job"]["type"] == "calendar.sync"
    emulators.google.calendar.create_in_client(address, _event("Nobody pushed this"))
    assert stack.services.calendar_poll().run(int(poll["due_at"]) + 1) >= 1
    _told(stack, account_id, "ActivityCreatedFromCalendar", "Nobody pushed this")
    # still scheduled after it ran, a full period after the sync (the same second as the connect here)
    assert _due_items(stack, account_id)["DUE#calpoll"]["due_at"] >= poll["due_at"]
    assert api.call("DELETE", f"/v1/accounts/{account_id}", user).status_code == 200
    assert "DUE#calpoll" not in _due_items(stack, account_id)


@pytest.mark.rule("SYNC-2")
def test_each_sync_moves_the_poll_a_full_period_on_and_a_stopped_one_stays_stopped(stack: LocalStack) -> None:
    from crmsync.accounts.models import Account, AccountSettings
    from crmsync.calendar.schedule import POLL, CalendarPolls
    from tests.integration.test_graph_notify import _due_items

    now = [1_900_000_000.0]
    polls = CalendarPolls(stack.services.due(), 900, clock=lambda: now[0])
    at = datetime.now(UTC)
    account = Account(
        account_id=f"acc-{uuid.uuid4().hex[:8]}",
        tenant_id="t-poll",
        user_id="u1",
        provider="google",
        purpose="calendar",
        address="p@gmail.test",
        status="connected",
        settings=AccountSettings(),
        connected_at=at,
        updated_at=at,
    )
    polls.started(account)
    assert _due_items(stack, account.account_id)[POLL]["due_at"] == 1_900_000_900
    now[0] += 600
    assert polls.synced(account) is True
    assert _due_items(stack, account.account_id)[POLL]["due_at"] == 1_900_001_500
    polls.stopped(account)
    assert polls.synced(account) is False  # a sync that ends after the disconnect brings nothing back
    assert POLL not in _due_items(stack, account.account_id)

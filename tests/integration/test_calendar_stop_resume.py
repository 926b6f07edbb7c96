"""Stop and resume of a calendar connection (CAL-9 to CAL-11), on the local stack with the Google
Calendar emulator: while stopped nothing changes on either side; connecting the same account again
runs the Step Functions resync from the original connection date, which imports what the calendar
made meanwhile, sends out what the CRM changed meanwhile, and reports each change the calendar made
to an already synced event (applied only if the tenant's `apply_gap_changes` is on)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_for_execution, wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_calendar_sync import _calendar_sync, _event, _told
from tests.integration.test_defects_sync import account_executions


def _activity(subject: str, updated: datetime, day: int = 14) -> dict[str, Any]:
    return {
        "owner_user_id": "u1",
        "type": "meeting",
        "subject": subject,
        "start": f"2026-12-{day:02d}T15:00:00+01:00",
        "end": f"2026-12-{day:02d}T16:00:00+01:00",
        "time_zone": "Europe/Paris",
        "created_at": datetime.now(UTC).isoformat(),
        "updated_at": updated.isoformat(),
    }


def _of_activity(emulators: Emulators, address: str, activity_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in emulators.google.calendar.events_of(address)
        if (e.get("extendedProperties") or {}).get("private", {}).get("crmsync_activity") == activity_id
    ]


class Connection:
    """A user's Google calendar connected through the API, with one event synced into the CRM
    (`synced`) and one activity synced into the calendar (`booked`)."""

    def __init__(self, stack: LocalStack, api: Api, emulators: Emulators, tenant: str) -> None:
        self.stack, self.api, self.emulators, self.tenant = stack, api, emulators, tenant
        set_plan(api, tenant, "advanced")
        self.user = api.token(tenant, "u1")
        self.backend = api.token(tenant, "crm-backend", role="service")
        self.address = f"stop-{uuid.uuid4().hex[:8]}@gmail.test"
        self.calendar = emulators.google.calendar
        self.account_id = self.connect()
        self.synced_event = self.calendar.create_in_client(self.address, _event("Synced before the stop"))
        _calendar_sync(stack, tenant, self.account_id)
        self.synced = _told(stack, self.account_id, "ActivityCreatedFromCalendar", "Synced before the stop")
        self.booked = f"a-{uuid.uuid4().hex[:8]}"
        self.put(self.booked, "Booked in the CRM", datetime.now(UTC))
        wait_until(lambda: _of_activity(emulators, self.address, self.booked))

    def connect(self) -> str:
        found = connect(
            self.api, Browser(self.emulators), self.user, "google", self.address, purpose="calendar"
        )
        return found["account_id"]

    def put(self, activity_id: str, subject: str, updated: datetime, day: int = 14) -> None:
        body = _activity(subject, updated, day)
        response = self.api.call("PUT", f"/v1/activities/{activity_id}", self.backend, json=body)
        assert response.status_code == 200, response.text

    def sync_view(self) -> dict[str, Any]:
        response = self.api.call("GET", f"/v1/calendars/{self.account_id}/sync", self.user)
        assert response.status_code == 200, response.text
        found: dict[str, Any] = response.json()
        return found

    def stop(self) -> None:
        response = self.api.call("POST", f"/v1/calendars/{self.account_id}/stop", self.user)
        assert response.status_code == 200, response.text
        assert response.json()["state"] == "stopped"

    def resume(self) -> dict[str, Any]:
        """Connect the same account again; the resync runs to its end."""
        assert self.connect() == self.account_id  # the same connection, not a new one
        execution = wait_until(lambda: account_executions(self.stack, self.account_id), timeout=30)[-1]
        return wait_for_execution(execution["executionArn"])

    def gap_reports(self) -> list[dict[str, Any]]:
        return [
            e["detail"]
            for e in self.stack.events
            if e.get("detail-type") == "CalendarGapChangeReported"
            and e["detail"].get("account_id") == self.account_id
        ]


@pytest.mark.rule("CAL-9")
@pytest.mark.rule("CAL-10")
@pytest.mark.rule("CAL-11")
@pytest.mark.rule("SYNC-6")
def test_a_stopped_calendar_changes_nothing_and_resumes_through_the_resync_from_the_original_date(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    c = Connection(stack, api, emulators, tenant)
    original = c.sync_view()["original_connection_date"]
    c.stop()
    writes = len(c.calendar.writes_of(c.address))
    told = len([e for e in stack.events if e["detail"].get("account_id") == c.account_id])

    # both sides change while stopped
    c.calendar.edit_in_client(c.address, c.synced_event["id"], {"summary": "Renamed in Google while stopped"})
    made = c.calendar.create_in_client(c.address, _event("Made in Google while stopped", 16))
    later = datetime.now(UTC) + timedelta(seconds=1)
    c.put(c.booked, "Renamed in the CRM while stopped", later)
    new_activity = f"a-{uuid.uuid4().hex[:8]}"
    c.put(new_activity, "Booked in the CRM while stopped", later, day=17)
    _calendar_sync(stack, tenant, c.account_id)  # a poll or push meanwhile: dropped
    time.sleep(1.5)  # the queue pollers have run both pushes and the sync by now
    assert len(c.calendar.writes_of(c.address)) == writes  # CAL-9: the calendar was left alone
    assert len([e for e in stack.events if e["detail"].get("account_id") == c.account_id]) == told
    assert c.sync_view()["state"] == "stopped"

    execution = c.resume()
    assert execution["status"] == "SUCCEEDED"
    view = c.sync_view()
    assert view["state"] == "syncing" and view["original_connection_date"] == original  # kept (CAL-6)
    assert view["resync"]["status"] == "succeeded" and view["resync"]["items"] >= 3
    assert view["stopped_at"] < view["resumed_at"]
    health = {s["name"]: s for s in view["health"]["syncs"]}  # SYNC-9 beside it
    assert view["health"]["status"]["state"] == "connected"
    assert health["calendar"]["last_success_at"] is not None and not health["calendar"]["stale"]
    # CAL-10: the event made meanwhile is imported
    imported = _told(stack, c.account_id, "ActivityCreatedFromCalendar", "Made in Google while stopped")
    assert imported["provider_event_id"] == made["id"]
    # CAL-11: the change to the synced event is reported, not applied
    (report,) = wait_until(c.gap_reports)
    assert report["activity_id"] == c.synced["activity_id"] and report["applied"] is False
    assert report["differing"] == ["subject"]
    assert report["calendar_version"]["subject"] == "Renamed in Google while stopped"
    kept = stack.services.activity_store().get_activity(tenant, c.synced["activity_id"])
    assert kept is not None and kept.subject == "Synced before the stop"
    # what the CRM changed and booked meanwhile goes out at the resync's end
    wait_until(
        lambda: (
            _of_activity(emulators, c.address, c.booked)[0]["summary"] == "Renamed in the CRM while stopped"
        )
    )
    (booked_later,) = wait_until(lambda: _of_activity(emulators, c.address, new_activity))
    assert booked_later["summary"] == "Booked in the CRM while stopped"
    assert stack.services.activity_store().held(c.account_id) == []

    # the reported change is not taken up later either: a new sync finds nothing to do
    _calendar_sync(stack, tenant, c.account_id)
    time.sleep(1.0)
    assert len(c.gap_reports()) == 1
    kept = stack.services.activity_store().get_activity(tenant, c.synced["activity_id"])
    assert kept is not None and kept.subject == "Synced before the stop"
    # ... until the user changes the event again after the resume: that is an ordinary change
    c.calendar.edit_in_client(c.address, c.synced_event["id"], {"location": "Room 4"})
    _calendar_sync(stack, tenant, c.account_id)
    wait_until(
        lambda: (
            (a := stack.services.activity_store().get_activity(tenant, c.synced["activity_id"]))
            and a.location == "Room 4"
        )
    )


@pytest.mark.rule("CAL-11")
def test_with_apply_gap_changes_on_the_resync_applies_the_change_and_still_reports_it(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    c = Connection(stack, api, emulators, tenant)
    settings = api.call(
        "PUT", "/v1/directory/settings", c.backend, json={"plan": "advanced", "apply_gap_changes": True}
    )
    assert settings.status_code == 200, settings.text
    c.stop()
    c.calendar.edit_in_client(c.address, c.synced_event["id"], {"summary": "Renamed while stopped"})
    assert c.resume()["status"] == "SUCCEEDED"
    (report,) = wait_until(c.gap_reports)
    assert report["applied"] is True and report["differing"] == ["subject"]
    updated = _told(stack, c.account_id, "ActivityUpdatedFromCalendar", "Renamed while stopped")
    assert updated["activity_id"] == c.synced["activity_id"]


@pytest.mark.rule("CAL-9")
def test_stop_is_for_calendar_connections_of_ones_own(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    c = Connection(stack, api, emulators, tenant)
    other = api.token(tenant, "u2")
    assert api.call("POST", f"/v1/calendars/{c.account_id}/stop", other).status_code == 404
    assert api.call("GET", f"/v1/calendars/{c.account_id}/sync", other).status_code == 404
    assert api.call("POST", "/v1/calendars/no-such-account/stop", c.user).status_code == 404
    c.stop()
    again = api.call("POST", f"/v1/calendars/{c.account_id}/stop", c.user)  # twice: the same stop
    assert again.status_code == 200 and again.json()["stopped_at"] == c.sync_view()["stopped_at"]
    # a mailbox has no calendar to stop
    mailbox = connect(
        api, Browser(emulators), c.user, "google", f"m-{uuid.uuid4().hex[:6]}@gmail.test", purpose="mail"
    )
    assert api.call("POST", f"/v1/calendars/{mailbox['account_id']}/stop", c.user).status_code == 422
    assert api.call("GET", f"/v1/calendars/{mailbox['account_id']}/sync", c.user).status_code == 404

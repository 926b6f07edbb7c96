"""The activities API on the local stack: the CRM backend keeps an activity current, and it
reaches its owner's Google calendar (the emulator) through the sync queue and the calendar
engine: created under our own id, changed by patches, removed when the CRM deletes it, never
notifying anyone; a PUT that repeats itself changes nothing."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan


def _body(subject: str, updated: datetime, owner: str = "u1") -> dict[str, Any]:
    return {
        "owner_user_id": owner,
        "type": "meeting",
        "subject": subject,
        "start": "2026-12-14T15:00:00+01:00",
        "end": "2026-12-14T16:00:00+01:00",
        "time_zone": "Europe/Paris",
        "location": "Lyon",
        "created_at": datetime.now(UTC).isoformat(),
        "updated_at": updated.isoformat(),
    }


@pytest.mark.rule("CAL-1")
@pytest.mark.rule("CAL-15")
@pytest.mark.rule("CAL-17")
def test_an_activity_put_by_the_crm_reaches_its_owners_calendar_and_follows_its_changes(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    address = f"act-{uuid.uuid4().hex[:8]}@gmail.test"
    connect(api, Browser(emulators), api.token(tenant, "u1"), "google", address, purpose="calendar")
    backend = api.token(tenant, "crm-backend", role="service")
    calendar = emulators.google.calendar
    activity_id = f"a-{uuid.uuid4().hex[:8]}"
    first = datetime.now(UTC)

    def mine() -> list[dict[str, Any]]:
        return [
            e
            for e in calendar.events_of(address)
            if (e.get("extendedProperties") or {}).get("private", {}).get("crmsync_activity") == activity_id
        ]

    put = api.call("PUT", f"/v1/activities/{activity_id}", backend, json=_body("Quarterly review", first))
    assert put.status_code == 200, put.text
    (event,) = wait_until(mine)
    assert event["summary"] == "Quarterly review" and event["location"] == "Lyon"
    view = wait_until(lambda: api.call("GET", f"/v1/activities/{activity_id}", backend).json().get("sync"))
    assert view["provider_event_id"] == event["id"]

    # the same PUT again (the CRM retrying, or echoing what it was told): nothing is written
    writes = len(calendar.writes_of(address))
    again = api.call("PUT", f"/v1/activities/{activity_id}", backend, json=_body("Quarterly review", first))
    assert again.status_code == 200
    time.sleep(1.0)  # the queue poller would have run the job by now, had there been one
    assert len(calendar.writes_of(address)) == writes and len(mine()) == 1

    # a change: patched in place, only what changed
    later = first + timedelta(minutes=5)
    api.call("PUT", f"/v1/activities/{activity_id}", backend, json=_body("Quarterly review (moved)", later))
    wait_until(lambda: mine()[0]["summary"] == "Quarterly review (moved)")
    # the CRM deletes it: the event goes
    assert api.call("DELETE", f"/v1/activities/{activity_id}", backend).status_code == 204
    wait_until(lambda: mine()[0]["status"] == "cancelled")
    logged = calendar.writes_of(address)
    assert [w["method"] for w in logged[-3:]] == ["insert", "patch", "delete"][-len(logged[-3:]) :]
    assert all(w.get("sendUpdates") == "none" for w in logged)  # nobody was notified (CAL-17)
    assert "update" not in {w["method"] for w in logged}  # never a full PUT


@pytest.mark.rule("CAL-2")
def test_only_the_crm_backend_writes_activities_and_only_their_owner_reads_them(
    api: Api, tenant: str
) -> None:
    backend = api.token(tenant, "crm-backend", role="service")
    activity_id = f"a-{uuid.uuid4().hex[:8]}"
    body = _body("Lunch", datetime.now(UTC), owner="u7")
    assert (
        api.call("PUT", f"/v1/activities/{activity_id}", api.token(tenant, "u7"), json=body).status_code
        == 403
    )
    assert api.call("PUT", f"/v1/activities/{activity_id}", backend, json=body).status_code == 200
    assert api.call("GET", f"/v1/activities/{activity_id}", api.token(tenant, "u7")).status_code == 200
    assert api.call("GET", f"/v1/activities/{activity_id}", api.token(tenant, "u8")).status_code == 403
    assert (
        api.call("GET", f"/v1/activities/{activity_id}", api.token("other-tenant", "u7")).status_code == 404
    )
    assert api.call("GET", "/v1/activities/a-missing", backend).status_code == 404
    bad = api.call(
        "PUT", f"/v1/activities/{activity_id}", backend, json={**body, "end": "2020-01-01T00:00:00Z"}
    )
    assert bad.status_code in (400, 422)  # end before start: refused, nothing stored

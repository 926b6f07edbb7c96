"""Calendar connections follow the account rules of mailboxes (ACC-1, ACC-2, ACC-9), on the local
stack with the Google emulators: the consent asks for the calendar scopes, one user's connection
never touches another's, and a revoked grant pauses the calendar's sync, tells the CRM, and
reconnecting resumes from the cursor it stopped at (what the calendar made meanwhile comes in)."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlparse

import pytest

from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, accounts_of, connect, last_status_event, set_plan
from tests.integration.test_calendar_sync import _calendar_sync, _event, _told
from tests.integration.test_defects_sync import account_executions


@pytest.mark.rule("ACC-1")
@pytest.mark.rule("ACC-2")
def test_a_calendar_connects_through_googles_consent_with_the_calendar_scopes_for_that_user_only(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    started = api.call(
        "POST",
        "/v1/accounts/connect",
        api.token(tenant, "u1"),
        json={"provider": "google", "purpose": "calendar"},
    )
    assert started.status_code == 200, started.text
    scopes = parse_qs(urlparse(started.json()["authorization_url"]).query)["scope"][0].split()
    assert "https://www.googleapis.com/auth/calendar.events" in scopes
    assert not [s for s in scopes if "gmail" in s]  # a calendar-only connection asks for no mail

    other = f"u2-{uuid.uuid4().hex[:6]}@gmail.test"
    theirs = connect(api, Browser(emulators), api.token(tenant, "u2"), "google", other, purpose="calendar")
    mine = connect(
        api,
        Browser(emulators),
        api.token(tenant, "u1"),
        "google",
        f"u1-{uuid.uuid4().hex[:6]}@gmail.test",
        purpose="calendar",
    )
    assert mine["status"] == "connected"
    assert accounts_of(api, api.token(tenant, "u1"))[0]["purpose"] == "calendar"
    assert [a["account_id"] for a in accounts_of(api, api.token(tenant, "u1"))] == [mine["account_id"]]
    assert [a["account_id"] for a in accounts_of(api, api.token(tenant, "u2"))] == [theirs["account_id"]]
    # the other user's calendar cannot be read, stopped or disconnected by this one
    u1 = api.token(tenant, "u1")
    assert api.call("GET", f"/v1/calendars/{theirs['account_id']}/sync", u1).status_code == 404
    assert api.call("DELETE", f"/v1/accounts/{theirs['account_id']}", u1).status_code == 404
    assert accounts_of(api, api.token(tenant, "u2"))[0]["status"] == "connected"


@pytest.mark.rule("ACC-9")
@pytest.mark.rule("SYNC-1")
def test_a_revoked_calendar_pauses_tells_the_crm_and_resumes_from_its_cursor_on_reconnect(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = f"rev-{uuid.uuid4().hex[:8]}@gmail.test"
    account_id = connect(api, Browser(emulators), user, "google", address, purpose="calendar")["account_id"]
    cursors = stack.services.cursors()
    cursor = wait_until(lambda: cursors.get(account_id, "calendar"))

    emulators.google.state.revoke(address)
    emulators.google.state.expire(address)  # the access token dies with the grant
    made = emulators.google.calendar.create_in_client(address, _event("Booked while revoked"))
    tokens_before = len(emulators.google.state.token_requests)
    for _ in range(3):  # the poll and two pushes: one refusal, then nothing is asked of Google
        _calendar_sync(stack, tenant, account_id)
    wait_until(lambda: accounts_of(api, user)[0]["status"] == "reauth_required")
    last_status_event(stack, account_id, "reauth_required")
    time.sleep(1.0)
    assert len(emulators.google.state.token_requests) == tokens_before + 1
    assert cursors.get(account_id, "calendar") == cursor  # nothing moved while paused

    again = connect(api, Browser(emulators), user, "google", address, purpose="calendar")
    assert again["account_id"] == account_id and again["status"] == "connected"
    _calendar_sync(stack, tenant, account_id)
    created = _told(stack, account_id, "ActivityCreatedFromCalendar", "Booked while revoked")
    assert created["provider_event_id"] == made["id"]
    # a re-authorisation is not a stop: it goes on from its cursor, no resync from the start
    assert account_executions(stack, account_id) == []

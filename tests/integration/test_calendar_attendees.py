"""CAL-13 on the local stack: attendees of events synced from Google Calendar who are neither the
tenant's contacts nor its users are told to the CRM as contacts to make, each address once, however
many events, users or redeliveries meet it; the calendar's own account and rooms never are."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_calendar_sync import _calendar_sync, _event, _told


def _made(stack: LocalStack, tenant: str) -> list[dict[str, Any]]:
    return [
        e["detail"]
        for e in stack.events
        if e.get("detail-type") == "ContactCreatedFromAttendee" and e["detail"].get("tenant_id") == tenant
    ]


@pytest.mark.rule("CAL-13")
def test_attendees_who_are_neither_contacts_nor_users_become_contacts_once_each(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "professional")
    admin = api.token(tenant, "crm", "service")
    for kind, entry_id, body in (
        ("contacts", "c1", {"name": "Carla", "emails": ["carla@client.test"]}),
        ("users", "u2", {"name": "Colleague", "email": "colleague@corp.test"}),
    ):
        assert api.call("PUT", f"/v1/directory/{kind}/{entry_id}", admin, json=body).status_code == 200
    calendar = emulators.google.calendar
    people = [
        {"email": "carla@client.test"},  # a contact
        {"email": "colleague@corp.test"},  # a tenant user
        {"email": "New.Person@Prospect.test", "displayName": "New Person"},
        {"email": "room-4@resource.calendar.google.com", "resource": True},
        {"email": "not an address"},
    ]
    accounts = []
    for user in ("u1", "u3"):  # two users of the tenant meet the same new person
        address = f"att-{user}-{uuid.uuid4().hex[:6]}@gmail.test"
        token = api.token(tenant, user)
        account_id = connect(api, Browser(emulators), token, "google", address, purpose="calendar")[
            "account_id"
        ]
        own = {"email": address, "self": True, "organizer": True}
        accounts.append((address, account_id))
        for n, summary in enumerate(("Intro", "Follow-up")):
            body = {**_event(f"{summary} {user}", 10 + n), "attendees": [own, *people]}
            calendar.create_in_client(address, body)
        _calendar_sync(stack, tenant, account_id)
        _told(stack, account_id, "ActivityCreatedFromCalendar", f"Follow-up {user}")
        _calendar_sync(stack, tenant, account_id)  # a duplicate push: nothing new

    (made,) = _made(stack, tenant)
    assert made["email"] == "new.person@prospect.test" and made["name"] == "New Person"
    assert made["account_id"] == accounts[0][1] and made["user_id"] == "u1"
    activity = stack.services.activity_store().get_activity(tenant, made["activity_id"])
    assert activity is not None and activity.subject in ("Intro u1", "Follow-up u1")

    # the CRM made the contact and keeps us current: a later event with them tells nothing new,
    # and the next new person is told
    contact = {"name": "New Person", "emails": ["new.person@prospect.test"]}
    assert api.call("PUT", "/v1/directory/contacts/c2", admin, json=contact).status_code == 200
    address, account_id = accounts[0]
    more = [{"email": "new.person@prospect.test"}, {"email": "second@prospect.test"}]
    calendar.create_in_client(address, {**_event("Demo", 14), "attendees": more})
    _calendar_sync(stack, tenant, account_id)
    _told(stack, account_id, "ActivityCreatedFromCalendar", "Demo")
    told = wait_until(lambda: _made(stack, tenant) if len(_made(stack, tenant)) >= 2 else None)
    assert sorted(m["email"] for m in told) == ["new.person@prospect.test", "second@prospect.test"]

"""Reading synced mail over the API: newest first, paginated, one account, own mail only."""

from __future__ import annotations

import pytest

from crmsync import services
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.test_mail_engine import OWNER, World, delivered, mail


@pytest.mark.rule("LINK-4")
@pytest.mark.rule("SEC-4")
def test_threads_newest_first_paginated_by_account_and_private(api: Api, stack: LocalStack) -> None:
    world = World()
    other_account = world.account.model_copy(update={"account_id": world.account.account_id + "-b"})
    engine = services.current().mail_sync()
    subjects = []
    for n in range(5):
        account = world.account if n % 2 == 0 else other_account
        message = mail("carla@client.test", [OWNER], f"Topic {n}")
        assert engine.ingest(account, delivered(message)).status == "synced"
        subjects.append(f"Topic {n}")
    owner = api.token(world.tenant, "u1")

    first = api.call("GET", "/v1/threads", owner, params={"limit": 2}).json()
    second = api.call("GET", "/v1/threads", owner, params={"limit": 2, "next": first["next"]}).json()
    third = api.call("GET", "/v1/threads", owner, params={"limit": 2, "next": second["next"]}).json()
    seen = [t["subject"] for page in (first, second, third) for t in page["threads"]]
    assert sorted(seen) == sorted(subjects) and len(seen) == 5  # every thread once across the pages
    dates = [t["last_message_at"] for page in (first, second, third) for t in page["threads"]]
    assert dates == sorted(dates, reverse=True)  # newest first
    assert (
        third["next"] is None
        or api.call("GET", "/v1/threads", owner, params={"next": third["next"]}).json()["threads"] == []
    )

    only_b = api.call("GET", "/v1/threads", owner, params={"account_id": other_account.account_id}).json()
    assert sorted(t["subject"] for t in only_b["threads"]) == ["Topic 1", "Topic 3"]

    thread_id = first["threads"][0]["crm_thread_id"]
    view = api.call("GET", f"/v1/threads/{thread_id}", owner).json()
    assert view["thread"]["crm_thread_id"] == thread_id and len(view["messages"]) == 1
    assert view["messages"][0]["contact_ids"] == ["c1"]

    colleague = api.token(world.tenant, "u2")
    assert api.call("GET", f"/v1/threads/{thread_id}", colleague).status_code == 404
    assert api.call("GET", "/v1/threads", colleague).json()["threads"] == []
    assert api.call("GET", f"/v1/threads/{thread_id}", api.token(world.tenant + "x", "u1")).status_code == 404
    assert api.call("GET", "/v1/threads", owner, params={"next": "garbage!"}).status_code == 400
    assert api.call("GET", "/v1/threads", owner, params={"limit": 0}).status_code == 422

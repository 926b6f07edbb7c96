"""Google Calendar push channels end to end on the local stack: a calendar connected through the
consent page gets a channel on the emulator (events.watch to /webhooks/google-calendar), the
emulator pushes each change to the real webhook, which checks the channel's token and queues
the connection's `calendar.sync`; the real worker syncs it and the CRM hears of it on the bus.
Renewal replaces the channel (new first, then the old one stopped), a disconnect stops it, and
the calendar_poll function fans out the calendar polls from their own lane of the due index."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
import requests

from crmsync import services
from crmsync.calendar.schedule import LANE, POLL, RENEWAL, renewal_due
from crmsync.jobs import Job
from crmsync.stores.calendar_channels import DynamoCalendarChannelStore
from crmsync.stores.queue import SqsJobQueue
from local.emulators.gcal.push import Channel
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_for_quiet_queue, wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_graph_notify import _due_items

WEBHOOK = "/webhooks/google-calendar"
DAY = 86_400


@dataclass
class Pushing:
    """The service as deployed with a calendar webhook URL, and the jobs its worker ran."""

    url: str
    jobs: list[Job] = field(default_factory=list)

    def of(self, account_id: str, job_type: str = "calendar.sync") -> list[Job]:
        return [j for j in list(self.jobs) if j.account_id == account_id and j.type == job_type]


@pytest.fixture
def pushing(stack: LocalStack, api: Api) -> Iterator[Pushing]:
    """Calendar connections get a channel whose address is the local stack's webhook (the
    connect hooks and the worker's `calendar.watch` of a Services with the URL set); the worker's
    calendar jobs are tapped. Put back as configured afterwards."""
    found = Pushing(url=api.base + WEBHOOK)
    watched = services.current().with_settings(google_calendar_webhook_url=found.url)
    accounts = stack.services.accounts()
    runner = stack.services.sync_batch().runner
    real: dict[str, Any] = {
        "calendar.sync": stack.services.calendar_sync_job(),
        "calendar.watch": watched.calendar_watch_job(),
    }

    def tap(handler: Any) -> Any:
        def run(job: Job, message_id: str) -> None:
            found.jobs.append(job)
            handler(job, message_id)

        return run

    accounts.register_hooks("google", watched.calendar_bundle("google").hooks, purpose="calendar")
    for job_type, handler in real.items():
        runner.register(job_type, tap(handler))
    yield found
    accounts.register_hooks("google", None, purpose="calendar")
    runner.register("calendar.sync", stack.services.calendar_sync_job())
    runner.register("calendar.watch", stack.services.calendar_watch_job())


def _event(summary: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "start": {"dateTime": "2026-12-14T09:00:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2026-12-14T10:00:00+01:00", "timeZone": "Europe/Paris"},
    }


def _connected(api: Api, emulators: Emulators, tenant: str, hint: str) -> tuple[str, str]:
    set_plan(api, tenant, "advanced")
    address = f"{hint}-{uuid.uuid4().hex[:8]}@gmail.test"
    result = connect(api, Browser(emulators), api.token(tenant, "u1"), "google", address, purpose="calendar")
    assert result["status"] == "connected", result
    return address, result["account_id"]


def _channels(emulators: Emulators, address: str) -> list[Channel]:
    return [c for c in list(emulators.google.calendar.push.channels.values()) if c.address == address]


def _live(emulators: Emulators, address: str) -> Channel:
    live = [c for c in _channels(emulators, address) if not c.stopped]
    assert len(live) == 1, live
    return live[0]


def _push(
    api: Api,
    channel: Channel,
    *,
    state: str = "exists",
    number: int = 100,
    token: str | None = "genuine",
    resource_id: str | None = None,
    channel_id: str | None = None,
) -> requests.Response:
    """A push as Google sends it: an empty body and X-Goog-* headers (the channel's own token
    unless told otherwise; None: no token header)."""
    headers = {
        "X-Goog-Channel-ID": channel_id or channel.id,
        "X-Goog-Resource-ID": resource_id or channel.resource_id,
        "X-Goog-Resource-URI": channel.resource_uri,
        "X-Goog-Resource-State": state,
        "X-Goog-Message-Number": str(number),
        "X-Goog-Channel-Expiration": "Mon, 07 Dec 2026 09:00:00 GMT",
    }
    if token is not None:
        headers["X-Goog-Channel-Token"] = channel.token if token == "genuine" and channel.token else token
    return api.http.post(api.base + WEBHOOK, data=b"", headers=headers, timeout=10)


def _settled(stack: LocalStack, emulators: Emulators) -> None:
    wait_until(emulators.google.calendar.push.settled)
    assert wait_for_quiet_queue(stack.queues["SyncQueue"], timeout=60)


def _told(stack: LocalStack, account_id: str, summary: str) -> dict[str, Any]:
    found = stack.wait_for_event(
        lambda e: (
            e.get("detail-type") == "ActivityCreatedFromCalendar"
            and e["detail"].get("account_id") == account_id
            and e["detail"].get("fields", {}).get("subject") == summary
        ),
        timeout=30,
    )
    detail: dict[str, Any] = found["detail"]
    return detail


# ---------------------------------------------------------------------------- channel and push


@pytest.mark.rule("SYNC-7")
@pytest.mark.rule("SYNC-1")
def test_connect_opens_a_channel_and_a_change_in_the_calendar_reaches_the_crm_by_push(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    before = int(time.time())
    address, account_id = _connected(api, emulators, tenant, "pushed")
    channel = _live(emulators, address)
    assert channel.url == pushing.url and channel.token and channel.calendar_id == address
    requests_made = emulators.google.calendar.account(address).requests
    assert requests_made.count("calendar.events.watch") == 1
    # the record: the channel, never its token (only the token's SHA-256)
    record = DynamoCalendarChannelStore(stack.tables["CursorsTable"]).current(account_id)
    assert (
        record is not None and record.channel_id == channel.id and record.resource_id == channel.resource_id
    )
    table = boto3.resource("dynamodb").Table(stack.tables["CursorsTable"])
    stored = [table.get_item(Key=k)["Item"] for k in _channel_keys(account_id, channel.id)]
    assert channel.token not in json.dumps(stored, default=str)
    # the renewal: a day before the channel's expiry (the emulator gives a week)
    due = _due_items(stack, account_id)
    renewal = due[RENEWAL]
    assert (
        renewal["job"]["type"] == "calendar.watch"
        and renewal["job"]["payload"]["expires_at"] == record.expires_at
    )
    assert before + 6 * DAY - 5 <= renewal["due_at"] <= int(time.time()) + 6 * DAY
    assert str(renewal["due_shard"]).startswith("due#")  # the scheduler's lane, like the Gmail watch
    assert str(due[POLL]["due_shard"]).startswith(f"{LANE}#")  # the poll: calendar_poll's own lane

    _settled(stack, emulators)
    greeting = [p for p in emulators.google.calendar.push.pushes_of(address) if p["state"] == "sync"]
    assert greeting and greeting[0]["status"] == 200  # `sync` acknowledged, nothing queued
    assert pushing.of(account_id) == []

    made = emulators.google.calendar.create_in_client(address, _event("Pushed, not polled"))
    created = _told(stack, account_id, "Pushed, not polled")  # no job was sent by the test: the push did it
    assert created["provider_event_id"] == made["id"]
    assert [j.payload.get("reason") for j in pushing.of(account_id)] == ["push"]
    delivered = [p for p in emulators.google.calendar.push.pushes_of(address) if p["state"] == "exists"]
    assert delivered and all(p["status"] == 200 for p in delivered)


def _channel_keys(account_id: str, channel_id: str) -> list[dict[str, str]]:
    return [{"pk": f"GCALCH#{channel_id}", "sk": "CHANNEL"}, {"pk": f"ACC#{account_id}", "sk": "GCALCH"}]


@pytest.mark.rule("SEC-5")
def test_the_webhook_refuses_a_wrong_or_missing_channel_token(
    stack: LocalStack,
    api: Api,
    emulators: Emulators,
    tenant: str,
    pushing: Pushing,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue: "webhook refuses a wrong or missing channel token" — 401 without one, 403 with one
    that is not the channel's, nothing queued either way, and the token never logged."""
    address, account_id = _connected(api, emulators, tenant, "refusing")
    channel = _live(emulators, address)
    _settled(stack, emulators)
    caplog.clear()

    missing = _push(api, channel, token=None, number=501)
    assert missing.status_code == 401 and missing.json()["message"] == "no channel token"
    forged = f"forged-{uuid.uuid4().hex}"
    wrong = _push(api, channel, token=forged, number=502)
    assert wrong.status_code == 403 and wrong.json()["message"] == "channel token does not match"
    longer = _push(api, channel, token=(channel.token or "") + "x", number=503)
    assert longer.status_code == 403
    # not a push at all: a clear 400, never a 500
    assert _push(api, channel, state="changed", number=504).status_code == 400
    assert _push(api, channel, number=-1).status_code == 400
    _settled(stack, emulators)
    assert pushing.of(account_id) == []
    refusals = [r for r in caplog.records if r.getMessage() == "calendar push refused"]
    assert len(refusals) == 3 and {getattr(r, "channel_id", None) for r in refusals[1:]} == {channel.id}
    logged = " ".join(str(vars(r)) for r in caplog.records)  # messages and their extra fields
    assert forged not in logged and str(channel.token) not in logged

    assert _push(api, channel, number=505).status_code == 200  # the genuine token is taken
    wait_until(lambda: pushing.of(account_id))


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("SEC-5")
def test_an_unknown_channel_or_resource_is_acknowledged_and_dropped(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    """spec/calendar.md: pushes may still come after channels.stop; unknown channel or resource
    ids are dropped. 200, so Google does not retry them, and nothing queued."""
    address, account_id = _connected(api, emulators, tenant, "unknown")
    channel = _live(emulators, address)
    _settled(stack, emulators)
    stranger = _push(api, channel, channel_id=str(uuid.uuid4()), token="whatever-token", number=7)
    assert stranger.status_code == 200
    assert _push(api, channel, resource_id="someOtherResource", number=8).status_code == 200
    _settled(stack, emulators)
    assert pushing.of(account_id) == []


@pytest.mark.rule("SYNC-2")
def test_a_push_delivered_twice_queues_one_sync(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    address, account_id = _connected(api, emulators, tenant, "twice")
    channel = _live(emulators, address)
    _settled(stack, emulators)
    # the emulator delivers one change's push twice (the same message number)
    faults = {"address": address, "duplicate": 1}
    assert requests.post(f"{emulators.google_url}/_emulator/gcal/push_faults", json=faults, timeout=5).ok
    emulators.google.calendar.create_in_client(address, _event("Told twice"))
    _told(stack, account_id, "Told twice")
    _settled(stack, emulators)
    twice = [p for p in emulators.google.calendar.push.pushes_of(address) if p["state"] == "exists"]
    assert len(twice) == 2 and twice[0]["number"] == twice[1]["number"]
    assert all(p["status"] == 200 for p in twice)
    assert len(pushing.of(account_id)) == 1
    # and by hand, the same push three times: still one job
    for _ in range(3):
        assert _push(api, channel, number=9001).status_code == 200
    _settled(stack, emulators)
    assert len(pushing.of(account_id)) == 2


@pytest.mark.rule("ACC-8")
@pytest.mark.rule("CAL-9")
def test_a_connection_that_may_not_sync_queues_nothing_and_a_disconnect_stops_the_channel(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    address, account_id = _connected(api, emulators, tenant, "stopping")
    channel = _live(emulators, address)
    _settled(stack, emulators)
    store = stack.services.account_store()
    account = store.get_by_id(account_id)
    assert account is not None
    store.save(account.model_copy(update={"status": "reauth_required"}))
    assert _push(api, channel, number=11).status_code == 200  # acknowledged, dropped
    _settled(stack, emulators)
    assert pushing.of(account_id) == []
    paused = store.get_by_id(account_id)
    assert paused is not None
    # a calendar stopped (CAL-9) whose channel is still kept: its pushes are dropped too
    store.save(paused.model_copy(update={"status": "connected", "calendar_stopped_at": datetime.now(UTC)}))
    assert _push(api, channel, number=12).status_code == 200
    _settled(stack, emulators)
    assert pushing.of(account_id) == []
    stopped = store.get_by_id(account_id)
    assert stopped is not None
    store.save(stopped.model_copy(update={"calendar_stopped_at": None}))

    assert api.call("DELETE", f"/v1/accounts/{account_id}", api.token(tenant, "u1")).status_code == 200
    assert all(c.stopped for c in _channels(emulators, address))  # channels.stop at Google
    assert "calendar.channels.stop" in emulators.google.calendar.account(address).requests
    assert DynamoCalendarChannelStore(stack.tables["CursorsTable"]).current(account_id) is None
    assert RENEWAL not in _due_items(stack, account_id) and POLL not in _due_items(stack, account_id)
    # a late push of the stopped channel (Google warns it can come) finds nothing to sync
    assert _push(api, channel, number=13).status_code == 200
    _settled(stack, emulators)
    assert pushing.of(account_id) == []


# ---------------------------------------------------------------------------- renewal


@pytest.mark.rule("SYNC-7")
def test_renewal_is_due_a_day_before_expiry_or_half_way_for_a_short_lived_channel() -> None:
    now = 1_800_000_000
    assert renewal_due(now, now + 7 * DAY) == now + 6 * DAY
    assert renewal_due(now, now + 2 * 3600) == now + 3600  # a short-lived channel: half-way
    assert renewal_due(now, now + 3 * DAY) == now + 2 * DAY
    assert renewal_due(now, now - 60) == now  # lapsed: at once


@pytest.mark.rule("SYNC-7")
def test_renewal_opens_the_new_channel_before_stopping_the_old_and_the_old_ones_pushes_are_dropped(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    address, account_id = _connected(api, emulators, tenant, "renewed")
    old = _live(emulators, address)
    _settled(stack, emulators)
    store = DynamoCalendarChannelStore(stack.tables["CursorsTable"])
    # what the scheduler queues when the renewal comes due: its due item's job
    job = Job.model_validate(_due_items(stack, account_id)[RENEWAL]["job"])
    requests.post(  # the old channel may push once more after its stop (Google warns of it)
        f"{emulators.google_url}/_emulator/gcal/late_push", json={"address": address, "count": 1}, timeout=5
    ).raise_for_status()
    SqsJobQueue(stack.queues["SyncQueue"]).send(job, f"renew-{uuid.uuid4().hex}")
    wait_until(lambda: pushing.of(account_id, "calendar.watch"))
    _settled(stack, emulators)

    new = _live(emulators, address)
    assert new.id != old.id and old.stopped
    made = emulators.google.calendar.account(address).requests
    last_watch = len(made) - 1 - made[::-1].index("calendar.events.watch")
    assert "calendar.channels.stop" in made[last_watch:]  # the new channel first, then the stop
    record = store.current(account_id)
    assert record is not None and record.channel_id == new.id
    assert store.get(old.id) is None  # forgotten with the same write that recorded the new one
    renewal = _due_items(stack, account_id)[RENEWAL]
    assert renewal["job"]["payload"]["expires_at"] == record.expires_at

    # the old channel's late push, and any other push of it, are dropped; the new one's sync
    late = [p for p in emulators.google.calendar.push.pushes_of(address) if p["channel"] == old.id]
    assert late[-1]["state"] == "exists" and late[-1]["status"] == 200
    syncs_before = len(pushing.of(account_id))
    assert _push(api, old, number=77).status_code == 200
    _settled(stack, emulators)
    assert len(pushing.of(account_id)) == syncs_before
    emulators.google.calendar.create_in_client(address, _event("After the renewal"))
    _told(stack, account_id, "After the renewal")
    pushed = [p for p in emulators.google.calendar.push.pushes_of(address) if p["state"] == "exists"]
    assert {p["channel"] for p in pushed[-1:]} == {new.id}


@pytest.mark.rule("SYNC-7")
def test_a_renewal_whose_stop_fails_still_replaces_the_channel_and_the_old_ones_pushes_are_dropped(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    address, account_id = _connected(api, emulators, tenant, "stopfails")
    old = _live(emulators, address)
    _settled(stack, emulators)
    calendar = emulators.google.calendar
    calendar.throttle(address, 5, status=403, method="calendar.channels.stop")  # Google refuses the stop
    job = Job.model_validate(_due_items(stack, account_id)[RENEWAL]["job"])
    SqsJobQueue(stack.queues["SyncQueue"]).send(job, f"renew-{uuid.uuid4().hex}")
    wait_until(lambda: pushing.of(account_id, "calendar.watch"))
    _settled(stack, emulators)
    calendar.throttle(address, 0)

    live = [c for c in _channels(emulators, address) if not c.stopped]
    assert old in live and len(live) == 2  # the old one was not stopped: it lapses on its own
    record = DynamoCalendarChannelStore(stack.tables["CursorsTable"]).current(account_id)
    assert record is not None and record.channel_id != old.id
    assert "calendar.channels.stop" in calendar.account(address).requests  # tried, refused
    # both channels push the next change; only the current one's is taken
    syncs_before = len(pushing.of(account_id))
    calendar.create_in_client(address, _event("Both channels told"))
    _told(stack, account_id, "Both channels told")
    _settled(stack, emulators)
    told = [p for p in calendar.push.pushes_of(address) if p["state"] == "exists"]
    assert {p["channel"] for p in told[-2:]} == {old.id, record.channel_id}
    assert len(pushing.of(account_id)) == syncs_before + 1


@pytest.mark.rule("CAL-9")
@pytest.mark.rule("CAL-10")
def test_stopping_a_calendar_stops_its_channel_and_connecting_again_opens_a_new_one(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    address, account_id = _connected(api, emulators, tenant, "stopresume")
    first = _live(emulators, address)
    _settled(stack, emulators)
    user = api.token(tenant, "u1")
    assert api.call("POST", f"/v1/calendars/{account_id}/stop", user).status_code == 200
    assert first.stopped and not [c for c in _channels(emulators, address) if not c.stopped]
    assert DynamoCalendarChannelStore(stack.tables["CursorsTable"]).current(account_id) is None
    assert RENEWAL not in _due_items(stack, account_id)
    assert _push(api, first, number=21).status_code == 200  # a late push: dropped
    _settled(stack, emulators)
    assert pushing.of(account_id) == []

    again = connect(api, Browser(emulators), user, "google", address, purpose="calendar")
    assert again["account_id"] == account_id
    second = _live(emulators, address)
    assert second.id != first.id
    record = DynamoCalendarChannelStore(stack.tables["CursorsTable"]).current(account_id)
    assert record is not None and record.channel_id == second.id
    assert RENEWAL in _due_items(stack, account_id)


@pytest.mark.rule("SYNC-7")
def test_a_renewal_without_a_webhook_url_stops_the_kept_channel_and_ends_the_renewals(
    stack: LocalStack, api: Api, emulators: Emulators, tenant: str, pushing: Pushing
) -> None:
    """The URL was taken out of the configuration: the next renewal stops the channel kept from
    before and opens none; the poll alone syncs from then on."""
    address, account_id = _connected(api, emulators, tenant, "unwatched")
    kept = _live(emulators, address)
    _settled(stack, emulators)
    runner = stack.services.sync_batch().runner
    unconfigured = stack.services.calendar_watch_job()  # the stack's own: no webhook URL
    ran: list[Job] = []

    def run(job: Job, message_id: str) -> None:
        ran.append(job)
        unconfigured(job, message_id)

    runner.register("calendar.watch", run)  # the fixture puts its own back afterwards
    job = Job.model_validate(_due_items(stack, account_id)[RENEWAL]["job"])
    SqsJobQueue(stack.queues["SyncQueue"]).send(job, f"renew-{uuid.uuid4().hex}")
    wait_until(lambda: ran)
    _settled(stack, emulators)
    assert kept.stopped and not [c for c in _channels(emulators, address) if not c.stopped]
    assert DynamoCalendarChannelStore(stack.tables["CursorsTable"]).current(account_id) is None
    due = _due_items(stack, account_id)
    assert RENEWAL not in due and POLL in due

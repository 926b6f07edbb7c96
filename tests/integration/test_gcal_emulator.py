"""The Google Calendar emulator answers the real google-api-python-client (built from the
calendar.v3 discovery document, as the providers build Gmail), refuses what that document does
not allow, and behaves and fails as Google Calendar documents: client-chosen ids (409 when
taken), etags (412 when stale), cancelled events (410), moves, recurring instances, sync tokens
(410 once expired), push channels with faults, usage limits."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build_from_document
from googleapiclient.discovery_cache import get_static_doc
from googleapiclient.errors import HttpError
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from local.emulators.gcal import CalendarEmulator
from local.emulators.servers import Emulators
from tests.integration.helpers import wait_until

TIMED = {
    "start": {"dateTime": "2026-12-01T09:00:00+01:00", "timeZone": "Europe/Paris"},
    "end": {"dateTime": "2026-12-01T10:00:00+01:00", "timeZone": "Europe/Paris"},
}


def _id() -> str:
    return "crm" + uuid.uuid4().hex  # hex digits and letters a to v: valid base32hex


@pytest.fixture
def user(emulators: Emulators) -> tuple[Any, str, str, CalendarEmulator]:
    address = f"cal-{uuid.uuid4().hex[:8]}@gmail.test"
    token = emulators.google.issue_access_token(address)
    service = build_from_document(
        get_static_doc("calendar", "v3"),
        credentials=Credentials(token=token),
        client_options={"api_endpoint": emulators.google_url + "/calendar/v3/"},  # root + servicePath
    )
    return service, address, token, emulators.google.calendar


def _status(call: Any) -> tuple[int, str]:
    with pytest.raises(HttpError) as raised:
        call.execute()
    reason = raised.value.error_details[0]["reason"] if raised.value.error_details else ""
    return raised.value.resp.status, reason


@pytest.mark.rule("CAL-15")
@pytest.mark.rule("CAL-17")
@pytest.mark.rule("CAL-18")
def test_insert_with_our_id_is_idempotent_and_keeps_what_was_written(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, address, _, calendar = user
    calendar.set_clock("2026-11-30T08:00:00Z")
    try:
        event_id = _id()
        body = {
            "id": event_id,
            "summary": "Call Carla",
            **TIMED,
            "visibility": "private",
            "extendedProperties": {"private": {"crmActivity": "42"}},
            "attendees": [{"email": "carla@client.test"}],
        }
        made = service.events().insert(calendarId="primary", body=body, sendUpdates="none").execute()
        assert made["id"] == event_id and made["status"] == "confirmed"
        assert made["created"] == made["updated"] == "2026-11-30T08:00:00.000Z"
        assert made["extendedProperties"]["private"] == {"crmActivity": "42"}
        assert made["visibility"] == "private" and made["start"] == TIMED["start"]
        assert made["iCalUID"] == f"{event_id}@google.com" and made["etag"]
        # the same id again: 409 duplicate, nothing changes
        assert _status(service.events().insert(calendarId="primary", body=body, sendUpdates="none")) == (
            409,
            "duplicate",
        )
        for bad in ("abc", "UPPERCASE1", "has-dash00", "wxyz0000"):  # too short, not base32hex
            assert _status(
                service.events().insert(calendarId="primary", body={**body, "id": bad}, sendUpdates="none")
            ) == (400, "invalid")
        all_day = (
            service.events()
            .insert(
                calendarId=address,
                body={"summary": "Offsite", "start": {"date": "2026-12-02"}, "end": {"date": "2026-12-03"}},
                sendUpdates="none",
            )
            .execute()
        )
        assert all_day["start"] == {"date": "2026-12-02"} and len(all_day["id"]) >= 5
        assert _status(
            service.events().insert(calendarId="primary", body={**TIMED, "visibility": "secret"})
        ) == (400, "invalid")
        assert (
            _status(service.events().insert(calendarId="primary", body={"start": TIMED["start"]}))[0] == 400
        )
        got = service.events().get(calendarId="primary", eventId=event_id).execute()
        assert got == made
        found = service.events().list(calendarId="primary", iCalUID=made["iCalUID"]).execute()["items"]
        assert [e["id"] for e in found] == [event_id]
        assert _status(service.events().get(calendarId="other@cal.test", eventId=event_id)) == (
            404,
            "notFound",
        )
        # refused inserts wrote nothing; each write says which method and which sendUpdates
        writes = calendar.writes_of(address)
        assert [(w["method"], w["sendUpdates"]) for w in writes] == [("insert", "none"), ("insert", "none")]
    finally:
        calendar.set_clock(None)


def test_requests_calendar_v3_does_not_allow_are_refused(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    _, _, token, calendar = user
    base = emulators.google_url + "/calendar/v3"
    auth = {"Authorization": f"Bearer {token}"}
    before = len(calendar.validator.violations)
    cases = [
        requests.get(f"{base}/calendars/primary/events", params={"colour": "red"}, headers=auth, timeout=5),
        requests.get(
            f"{base}/calendars/primary/events", params={"maxResults": "many"}, headers=auth, timeout=5
        ),
        requests.post(
            f"{base}/calendars/primary/events",
            params={"sendUpdates": "nobody"},
            json=TIMED,
            headers=auth,
            timeout=5,
        ),
        requests.post(
            f"{base}/calendars/primary/events", json={**TIMED, "color": 1}, headers=auth, timeout=5
        ),
        requests.get(f"{base}/calendars/primary/agenda", headers=auth, timeout=5),
        requests.post(f"{base}/calendars/primary/events/x/move", headers=auth, timeout=5),  # no destination
    ]
    assert [r.status_code for r in cases] == [400] * 6
    assert len(calendar.validator.violations) == before + 6
    unauthenticated = requests.get(f"{base}/calendars/primary/events", timeout=5)
    assert unauthenticated.status_code == 401


@pytest.mark.rule("CAL-14")
@pytest.mark.rule("CAL-17")
def test_patch_merges_and_a_stale_etag_is_412_update_is_recorded_delete_twice_is_410(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, address, _, calendar = user
    event_id = _id()
    body = {"id": event_id, "summary": "Demo", **TIMED, "extendedProperties": {"private": {"a": "1"}}}
    made = service.events().insert(calendarId="primary", body=body, sendUpdates="none").execute()
    patched = (
        service.events()
        .patch(
            calendarId="primary",
            eventId=event_id,
            body={"description": "agenda", "extendedProperties": {"private": {"b": "2"}}},
            sendUpdates="none",
        )
        .execute()
    )
    assert patched["summary"] == "Demo" and patched["description"] == "agenda"  # untouched fields stay
    assert patched["extendedProperties"]["private"] == {"a": "1", "b": "2"}  # nested objects merge
    assert patched["etag"] != made["etag"] and patched["updated"] >= made["updated"]

    stale = service.events().patch(
        calendarId="primary", eventId=event_id, body={"summary": "x"}, sendUpdates="none"
    )
    stale.headers["If-Match"] = made["etag"]
    assert _status(stale) == (412, "conditionNotMet")
    fresh = service.events().patch(
        calendarId="primary", eventId=event_id, body={"summary": "Demo 2"}, sendUpdates="none"
    )
    fresh.headers["If-Match"] = patched["etag"]
    assert fresh.execute()["summary"] == "Demo 2"

    # the user edits it in Google Calendar: our etag is stale now
    edited = calendar.edit_in_client(address, event_id, {"location": "Room 1"})
    late = service.events().delete(calendarId="primary", eventId=event_id, sendUpdates="none")
    late.headers["If-Match"] = patched["etag"]
    assert _status(late) == (412, "conditionNotMet")

    replaced = (
        service.events()
        .update(calendarId="primary", eventId=event_id, body={"summary": "Full", **TIMED})
        .execute()
    )
    assert "location" not in replaced and replaced["etag"] != edited["etag"]  # a full PUT drops what it omits
    service.events().delete(calendarId="primary", eventId=event_id, sendUpdates="none").execute()
    gone = service.events().get(calendarId="primary", eventId=event_id).execute()
    assert gone["status"] == "cancelled"
    assert _status(service.events().delete(calendarId="primary", eventId=event_id, sendUpdates="none")) == (
        410,
        "deleted",
    )
    assert _status(service.events().patch(calendarId="primary", eventId=_id(), body={})) == (404, "notFound")
    writes = calendar.writes_of(address)
    assert [w["method"] for w in writes] == ["insert", "patch", "patch", "update", "delete"]
    assert [w["sendUpdates"] for w in writes] == ["none", "none", "none", None, "none"]
    assert [w for w in writes if w["method"] == "update"]  # visible, so a test can insist on none


@pytest.mark.rule("CAL-7")
@pytest.mark.rule("CAL-18")
def test_recurring_events_expand_into_instances_with_google_ids(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, _, _, _ = user
    weekly_id = _id()
    weekly = {
        "id": weekly_id,
        "summary": "Standup",
        "start": {"dateTime": "2026-03-23T09:00:00+01:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2026-03-23T09:15:00+01:00", "timeZone": "Europe/Paris"},
        "recurrence": ["RRULE:FREQ=WEEKLY;BYDAY=MO,WE;COUNT=4"],
    }
    service.events().insert(calendarId="primary", body=weekly, sendUpdates="none").execute()
    instances = service.events().instances(calendarId="primary", eventId=weekly_id).execute()["items"]
    # Mon 23, Wed 25, Mon 30 (after the switch to summer time: still 09:00 Paris), Wed 1 April
    assert [i["id"] for i in instances] == [
        f"{weekly_id}_20260323T080000Z",
        f"{weekly_id}_20260325T080000Z",
        f"{weekly_id}_20260330T070000Z",
        f"{weekly_id}_20260401T070000Z",
    ]
    assert all(i["recurringEventId"] == weekly_id and "recurrence" not in i for i in instances)
    assert instances[2]["originalStartTime"] == instances[2]["start"]

    daily_id = _id()
    daily = {
        "id": daily_id,
        "start": {"date": "2026-12-01"},
        "end": {"date": "2026-12-02"},
        "recurrence": ["RRULE:FREQ=DAILY;INTERVAL=2;UNTIL=20261207"],
    }
    service.events().insert(calendarId="primary", body=daily, sendUpdates="none").execute()
    days = service.events().instances(calendarId="primary", eventId=daily_id).execute()["items"]
    assert [d["id"] for d in days] == [f"{daily_id}_2026120{n}" for n in (1, 3, 5, 7)]
    assert days[1]["start"] == {"date": "2026-12-03"} and days[1]["end"] == {"date": "2026-12-04"}
    one = service.events().get(calendarId="primary", eventId=f"{daily_id}_20261205").execute()
    assert one["recurringEventId"] == daily_id

    masters = service.events().list(calendarId="primary").execute()["items"]
    assert sorted(e["id"] for e in masters) == sorted([weekly_id, daily_id])
    single = service.events().list(calendarId="primary", singleEvents=True, orderBy="startTime").execute()
    assert len(single["items"]) == 8 and single["items"][0]["id"] == f"{weekly_id}_20260323T080000Z"
    assert _status(service.events().list(calendarId="primary", orderBy="startTime"))[0] == 400
    no_zone = {**weekly, "id": _id(), "start": {"dateTime": "2026-03-23T09:00:00+01:00"}}
    assert _status(service.events().insert(calendarId="primary", body=no_zone))[0] == 400


@pytest.mark.rule("CAL-12")
@pytest.mark.rule("CAL-16")
def test_sync_tokens_pages_moves_and_expiry(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, address, _, calendar = user
    events = service.events()
    ids = [_id() for _ in range(5)]
    for event_id in ids:
        events.insert(calendarId="primary", body={"id": event_id, **TIMED}, sendUpdates="none").execute()
    first = events.list(calendarId="primary", maxResults=2).execute()
    assert len(first["items"]) == 2 and "nextPageToken" in first and "nextSyncToken" not in first
    seen, page = [e["id"] for e in first["items"]], first
    while "nextPageToken" in page:
        page = events.list(calendarId="primary", maxResults=2, pageToken=page["nextPageToken"]).execute()
        seen += [e["id"] for e in page["items"]]
    assert seen == ids and "nextSyncToken" in page  # the sync token comes with the last page only
    token = page["nextSyncToken"]

    nothing = events.list(calendarId="primary", syncToken=token).execute()
    assert nothing["items"] == [] and nothing["nextSyncToken"]
    calendar.add_calendar(address, "team@group.calendar.test", "Team")
    events.patch(calendarId="primary", eventId=ids[0], body={"summary": "new"}, sendUpdates="none").execute()
    calendar.delete_in_client(address, ids[1])
    moved = calendar.move_in_client(address, ids[2], "team@group.calendar.test")
    assert moved["status"] == "confirmed"
    created = calendar.create_in_client(address, {"summary": "from the client", **TIMED})
    changes = events.list(calendarId="primary", syncToken=token).execute()
    by_id = {e["id"]: e["status"] for e in changes["items"]}
    assert by_id == {
        ids[0]: "confirmed",
        ids[1]: "cancelled",
        ids[2]: "cancelled",
        created["id"]: "confirmed",
    }
    copy = calendar.create_in_client(address, {"id": ids[3], **TIMED}, "team@group.calendar.test")
    assert (
        _status(
            events.move(calendarId="team@group.calendar.test", eventId=copy["id"], destination="primary")
        )[0]
        == 409
    )  # a live event of that id is there already
    calendar.delete_in_client(address, ids[3], "team@group.calendar.test")
    in_team = events.list(calendarId="team@group.calendar.test").execute()["items"]
    assert [e["id"] for e in in_team] == [ids[2]]
    # moved back with the API: confirmed again in primary, cancelled in the team calendar
    events.move(
        calendarId="team@group.calendar.test", eventId=ids[2], destination="primary", sendUpdates="none"
    ).execute()
    again = events.list(calendarId="primary", syncToken=changes["nextSyncToken"]).execute()["items"]
    assert [(e["id"], e["status"]) for e in again] == [(ids[2], "confirmed")]
    full = events.list(calendarId="primary").execute()["items"]
    assert ids[1] not in [e["id"] for e in full]
    with_deleted = events.list(calendarId="primary", showDeleted=True).execute()["items"]
    assert ids[1] in [e["id"] for e in with_deleted]

    for clash in (
        {"timeMin": "2026-01-01T00:00:00Z"},
        {"q": "x"},
        {"iCalUID": "x"},
        {"updatedMin": "2026-01-01T00:00:00Z"},
    ):
        assert _status(events.list(calendarId="primary", syncToken=token, **clash))[0] == 400
    calendar.expire_sync_tokens(address)
    assert _status(events.list(calendarId="primary", syncToken=token)) == (410, "fullSyncRequired")
    fresh = events.list(calendarId="primary").execute()["nextSyncToken"]
    assert events.list(calendarId="primary", syncToken=fresh).execute()["items"] == []


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, str]]]]:
    """An address that records the headers of each push Google Calendar sends it."""
    received: list[dict[str, str]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        received.append({k: v for k, v in request.headers.items() if k.lower().startswith("x-goog-")})
        return Response(status=200)(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/calendar-push", received
    finally:
        server.shutdown()
        thread.join(timeout=5)


def test_a_watched_calendar_pushes_sync_then_exists_with_faults_on_demand(
    emulators: Emulators,
    user: tuple[Any, str, str, CalendarEmulator],
    webhook: tuple[str, list[dict[str, str]]],
) -> None:
    service, address, _, calendar = user
    url, received = webhook
    channel_id = str(uuid.uuid4())
    body = {"id": channel_id, "type": "web_hook", "address": url, "token": "t-1", "params": {"ttl": "3600"}}
    opened = service.events().watch(calendarId="primary", body=body).execute()
    assert opened["id"] == channel_id and opened["resourceId"] and int(opened["expiration"]) > 0
    assert _status(service.events().watch(calendarId="primary", body=body))[0] == 400  # id not unique
    wait_until(lambda: calendar.push.settled() and len(received) == 1)
    sync = received[0]
    assert sync["X-Goog-Resource-State"] == "sync" and sync["X-Goog-Message-Number"] == "1"
    assert (sync["X-Goog-Channel-Id"], sync["X-Goog-Channel-Token"]) == (channel_id, "t-1")
    assert sync["X-Goog-Resource-Id"] == opened["resourceId"] and sync["X-Goog-Channel-Expiration"]

    calendar.create_in_client(address, {"summary": "one", **TIMED})
    wait_until(lambda: calendar.push.settled() and len(received) == 2)
    assert (received[1]["X-Goog-Resource-State"], received[1]["X-Goog-Message-Number"]) == ("exists", "2")

    faults = {"address": address, "drop": 1, "reorder": 2, "duplicate": 1}
    assert requests.post(f"{emulators.google_url}/_emulator/gcal/push_faults", json=faults, timeout=5).ok
    for n in range(5):  # numbers 3 (dropped), 4 and 5 (held), 6 (sent twice, then 5 and 4), 7
        calendar.create_in_client(address, {"summary": f"change {n}", **TIMED})
    wait_until(lambda: calendar.push.settled() and len(received) == 7)
    numbers = [int(r["X-Goog-Message-Number"]) for r in received[2:]]
    assert numbers == [6, 6, 5, 4, 7]
    fates = {(p["number"], p["fate"]) for p in calendar.push.pushes_of(address)}
    assert (3, "dropped") in fates and (3, "delivered") not in fates

    stop = {"id": channel_id, "resourceId": opened["resourceId"]}
    assert _status(service.channels().stop(body={**stop, "resourceId": "other"})) == (404, "notFound")
    late = {"address": address, "count": 1}
    assert requests.post(f"{emulators.google_url}/_emulator/gcal/late_push", json=late, timeout=5).ok
    service.channels().stop(body=stop).execute()
    wait_until(lambda: calendar.push.settled() and len(received) == 8)  # one late push after stop
    assert received[7]["X-Goog-Message-Number"] == "8"
    calendar.create_in_client(address, {"summary": "after stop", **TIMED})
    assert calendar.push.settled() and len(received) == 8  # nothing more was queued


@pytest.mark.rule("CAL-18")
def test_page_sizes_time_windows_and_wall_clock_times(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, address, _, calendar = user
    events = service.events()
    wall_clock = {
        "start": {"dateTime": "2026-07-01T09:00:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-07-01T09:30:00", "timeZone": "America/New_York"},
    }
    kept = events.insert(calendarId="primary", body=wall_clock, sendUpdates="none").execute()
    assert kept["start"] == wall_clock["start"]  # no offset: the time zone says which instant
    around = {"timeMin": "2026-07-01T12:59:00Z", "timeMax": "2026-07-01T13:01:00Z"}
    assert [e["id"] for e in events.list(calendarId="primary", **around).execute()["items"]] == [kept["id"]]
    later = {"timeMin": "2026-07-01T13:30:00Z"}  # it ends at 13:30 UTC: outside
    assert events.list(calendarId="primary", **later).execute()["items"] == []
    naive = {"start": {"dateTime": "2026-07-01T09:00:00"}, "end": {"dateTime": "2026-07-01T10:00:00"}}
    assert _status(events.insert(calendarId="primary", body=naive))[0] == 400
    for n in range(2600):
        calendar.create_in_client(address, {"summary": f"bulk {n}", **TIMED})
    assert len(events.list(calendarId="primary").execute()["items"]) == 250  # the default page
    biggest = events.list(calendarId="primary", maxResults=5000).execute()
    assert len(biggest["items"]) == 2500 and "nextPageToken" in biggest  # never more than 2500
    assert _status(events.list(calendarId="primary", maxResults=0))[0] == 400


def test_usage_limits_429_and_backend_errors_on_demand(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, address, _, calendar = user
    listing = service.events().list(calendarId="primary")
    calendar.throttle(address, 1, reason="userRateLimitExceeded")
    assert _status(listing) == (403, "userRateLimitExceeded")
    control = f"{emulators.google_url}/_emulator/gcal"
    assert requests.post(f"{control}/throttle", json={"address": address, "requests": 1}, timeout=5).ok
    assert _status(listing) == (403, "rateLimitExceeded")
    calendar.throttle(address, 1, status=429)
    with pytest.raises(HttpError) as raised:
        listing.execute()
    assert raised.value.resp.status == 429 and raised.value.resp["retry-after"] == "1"
    calendar.throttle(address, 1, method="calendar.events.insert")
    assert listing.execute()["items"] == []  # only inserts are throttled
    assert _status(service.events().insert(calendarId="primary", body=TIMED, sendUpdates="none")) == (
        403,
        "rateLimitExceeded",
    )
    assert requests.post(
        f"{control}/fail", json={"address": address, "requests": 2, "status": 500}, timeout=5
    ).ok
    assert _status(listing) == (500, "backendError")
    assert _status(listing) == (500, "backendError")
    assert listing.execute()["items"] == []


def test_controls_over_http_act_as_the_user_in_google_calendar(
    emulators: Emulators, user: tuple[Any, str, str, CalendarEmulator]
) -> None:
    service, address, _, _ = user
    control = f"{emulators.google_url}/_emulator/gcal"

    def post(action: str, **data: Any) -> dict[str, Any]:
        answer = requests.post(f"{control}/{action}", json={"address": address, **data}, timeout=5)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    post("add_calendar", calendarId="other@group.calendar.test")
    made = post("create", event={"summary": "old one", **TIMED}, created="2026-01-05T10:00:00Z")
    assert made["created"] == "2026-01-05T10:00:00.000Z"
    edited = post("edit", eventId=made["id"], changes={"summary": "renamed"})
    assert edited["summary"] == "renamed" and edited["etag"] != made["etag"]
    assert post("move", eventId=made["id"], destination="other@group.calendar.test")["id"] == made["id"]
    post("create", event={"summary": "gone", **TIMED, "id": "gone00001"})
    post("delete", eventId="gone00001")
    listed = requests.get(f"{control}/events", params={"address": address}, timeout=5).json()["events"]
    assert {(e["id"], e["status"]) for e in listed} == {(made["id"], "cancelled"), ("gone00001", "cancelled")}
    service.events().insert(calendarId="primary", body=TIMED, sendUpdates="none").execute()
    writes = requests.get(f"{control}/writes", params={"address": address}, timeout=5).json()["writes"]
    assert [(w["method"], w["sendUpdates"]) for w in writes] == [
        ("insert", "none")
    ]  # the client's are not ours
    clock = requests.post(f"{control}/clock", json={"now": "2027-01-01T00:00:00Z"}, timeout=5)
    try:
        assert post("create", event=TIMED)["created"] == "2027-01-01T00:00:00.000Z"
    finally:
        requests.post(f"{control}/clock", json={"now": None}, timeout=5)
    assert clock.ok
    bad = requests.post(f"{control}/edit", json={"address": address, "eventId": "nothere00"}, timeout=5)
    assert bad.status_code == 400
    missing = requests.post(f"{control}/delete", json={"address": address, "eventId": "nothere00"}, timeout=5)
    assert missing.status_code == 404


@pytest.mark.rule("SYNC-1")
def test_an_event_changed_between_two_pages_shifts_nothing_and_comes_with_the_next_sync(
    user: tuple[Any, str, str, CalendarEmulator],
) -> None:
    """Paging is by change order, not by offset: an event edited while a listing pages leaves that
    listing (it changed after the listing began) and no unchanged event is skipped for it; the
    next sync from the listing's token brings the edit."""
    service, address, _, calendar = user
    made = [calendar.create_in_client(address, {"summary": f"E{n}", **TIMED}) for n in range(5)]
    events = service.events()
    first = events.list(calendarId="primary", maxResults=2).execute()
    assert [e["summary"] for e in first["items"]] == ["E0", "E1"]
    calendar.edit_in_client(address, made[0]["id"], {"summary": "E0 edited"})  # listed already
    calendar.edit_in_client(address, made[3]["id"], {"summary": "E3 edited"})  # not listed yet
    page, seen = first, [e["summary"] for e in first["items"]]
    while "nextPageToken" in page:
        page = events.list(calendarId="primary", maxResults=2, pageToken=page["nextPageToken"]).execute()
        seen += [e["summary"] for e in page["items"]]
    assert seen == ["E0", "E1", "E2", "E4"]  # E2 is not skipped for E0's leaving
    later = events.list(calendarId="primary", syncToken=page["nextSyncToken"]).execute()
    assert [e["summary"] for e in later["items"]] == ["E0 edited", "E3 edited"]

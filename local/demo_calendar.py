"""`make demo`, the calendar part: two-way calendar sync on Google, end to end, against the local
stack (`make run`).

A CRM user connects a Google calendar (the emulator's consent page). The demo then acts as the
CRM backend through the API (`PUT /v1/activities/{id}` with a service token) and as the user in
Google Calendar through the emulator's HTTP controls (`/_emulator/gcal/...`), and checks what
each side sees: the events on the stack's events tap (`/_local/events`), the activities and
their sync state through the API, the calendar's events and write log through the emulator.

Syncs are triggered the real way: the connect opens a push channel (`events.watch`) whose
address is the stack's `/webhooks/google-calendar`, and the emulator posts to it for every
change made through its controls; the webhook queues the connection's `calendar.sync`. The demo
never calls the service's internals. It checks after the connect that the channel's first push
reached the webhook, and fails with that said if it did not.

Something that must stay out of the CRM (an older event, a private one, the occurrences of a
series) is judged only after a later event made in Google has come in: the sync that brought
that one listed every earlier change too.

Step 10 changes one activity on both sides before a sync, timed with the emulator's fault
controls as Google itself can time it: a) the notification of the user's edit comes late
(`push_faults` reorder) and the CRM changes the activity meanwhile; b) Google refuses the CRM's
write for a moment (`throttle` of `events.patch`, a rate limit) while the user edits the event.
Either way the later change must win and the other be kept as a conflict (CAL-14).

A failed check is printed with what was expected and what was found, and the scenario goes on
where it can; the run then fails, listing them. What later steps need fails it at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import requests

from local.browser import ConsentBrowser
from local.demo import DemoFailed, _wait
from local.devissuer import DevIssuer

ZONE = "Europe/Paris"
CARLA = "carla.client@example.test"  # a contact
NINA = "nina.new@prospect.test"  # neither a contact nor a user


def _slot(days: int, hour: int = 9) -> tuple[str, str]:
    """An hour `days` from today, from `hour` o'clock in Paris (RFC 3339 with Paris's offset)."""
    day = (datetime.now(UTC) + timedelta(days=days)).date()
    start = datetime(day.year, day.month, day.day, hour, tzinfo=ZoneInfo(ZONE))
    return start.isoformat(), (start + timedelta(hours=1)).isoformat()


def _event(summary: str, days: int, **more: Any) -> dict[str, Any]:
    start, end = _slot(days)
    return {
        "summary": summary,
        "start": {"dateTime": start, "timeZone": ZONE},
        "end": {"dateTime": end, "timeZone": ZONE},
        **more,
    }


class CalendarDemo:
    def __init__(self, base: str) -> None:
        self.base = base
        port = int(base.rsplit(":", 1)[-1])
        self.google = f"http://127.0.0.1:{port + 1}"  # the Google emulator, beside the API
        self.issuer = DevIssuer(issuer=f"http://127.0.0.1:{port}/_local/issuer")
        self.http = requests.Session()
        suffix = uuid.uuid4().hex[:6]
        self.tenant = f"demo-cal-{suffix}"
        self.user = "u1"
        self.address = f"sam.seller-{suffix}@gmail.test"
        self.other_calendar = f"travel-{suffix}@group.calendar.google.com"
        self.account_id = ""
        self.problems: list[str] = []  # checks that failed; the scenario goes on where it can

    def check(self, holds: bool, step: str, expected: str, found: object) -> bool:
        """A check the rest of the scenario does not depend on: a failure is said and kept."""
        if not holds:
            problem = f"step {step}: expected {expected}; found {found}"
            print(f"   FAILED {problem}")
            self.problems.append(problem)
        return holds

    # ------------------------------------------------------------------ plumbing
    def call(self, method: str, path: str, role: str = "member", user: str | None = None, **kw: Any) -> Any:
        token = self.issuer.mint(self.tenant, user or self.user, role)
        response = self.http.request(
            method, self.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kw
        )
        if response.status_code >= 300:
            raise DemoFailed(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json() if response.content else None

    def backend(self, method: str, path: str, **kw: Any) -> Any:
        """The CRM backend: a service token."""
        return self.call(method, path, "service", "crm-backend", **kw)

    def in_google(self, action: str, **body: Any) -> dict[str, Any]:
        """The user acts in Google Calendar (the emulator's controls)."""
        response = self.http.post(
            f"{self.google}/_emulator/gcal/{action}", json={"address": self.address, **body}, timeout=30
        )
        if response.status_code != 200:
            raise DemoFailed(f"emulator {action} answered {response.status_code}: {response.text[:300]}")
        found: dict[str, Any] = response.json()
        return found

    def google_reads(self, what: str, **query: str) -> list[dict[str, Any]]:
        """The emulator's record: `events` of a calendar, `writes` (the API's write log), `pushes`."""
        response = self.http.get(
            f"{self.google}/_emulator/gcal/{what}", params={"address": self.address, **query}, timeout=30
        )
        if response.status_code != 200:
            raise DemoFailed(f"emulator {what} answered {response.status_code}: {response.text[:300]}")
        found: list[dict[str, Any]] = response.json()[what]
        return found

    def told(self, kind: str, **match: Any) -> list[dict[str, Any]]:
        """The tenant's events of `kind` on the events tap, oldest first, whose detail has `match`."""
        events = self.http.get(f"{self.base}/_local/events", timeout=10).json()["events"]
        return [
            e["detail"]
            for e in reversed(events)
            if e.get("detail-type") == kind
            and e["detail"].get("tenant_id") == self.tenant
            and all(e["detail"].get(k) == v for k, v in match.items())
        ]

    def expect[T](self, what: str, probe: Callable[[], T | None], found: Callable[[], object]) -> T:
        """Waits for `probe`; on time out fails saying what was expected and what was found."""
        try:
            return _wait(what, probe, timeout=45)
        except DemoFailed:
            raise DemoFailed(f"expected {what}; found {found()}") from None

    def told_once(self, kind: str, what: str, step: str, **match: Any) -> dict[str, Any]:
        """The one event of `kind` matching; waits for it, and a second one is a failed check."""
        found = self.expect(what, lambda: self.told(kind, **match), lambda: self.told(kind) or "none")
        self.check(len(found) == 1, step, f"{what} once", f"{len(found)}: {found}")
        return found[0]

    def none_for(self, provider_event_id: str, step: str, what: str) -> bool:
        found = self.told("ActivityCreatedFromCalendar", provider_event_id=provider_event_id)
        return self.check(not found, step, f"no activity for {what}", found)

    def of_activity(self, activity_id: str) -> list[dict[str, Any]]:
        """The primary calendar's events that carry this activity (the sync's own marker)."""
        return [
            e
            for e in self.google_reads("events")
            if (e.get("extendedProperties") or {}).get("private", {}).get("crmsync_activity") == activity_id
        ]

    def activity(self, activity_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.backend("GET", f"/v1/activities/{activity_id}")
        return view

    def put_activity(self, activity_id: str, subject: str, days: int) -> dict[str, Any]:
        start, end = _slot(days, 15)
        now = datetime.now(UTC).isoformat()
        body = {
            "owner_user_id": self.user,
            "type": "meeting",
            "subject": subject,
            "start": start,
            "end": end,
            "time_zone": ZONE,
            "location": "Lyon",
            "created_at": now,
            "updated_at": now,
        }
        view: dict[str, Any] = self.backend("PUT", f"/v1/activities/{activity_id}", json=body)
        return view

    def sync_view(self) -> dict[str, Any]:
        view: dict[str, Any] = self.call("GET", f"/v1/calendars/{self.account_id}/sync")
        return view

    def connect(self) -> str:
        started = self.call(
            "POST", "/v1/accounts/connect", json={"provider": "google", "purpose": "calendar"}
        )
        result, _ = ConsentBrowser().consent(started["authorization_url"], self.address)
        if result.get("status") == "confirm_required":  # the CRM's return page confirms in the session
            result = self.call(
                "POST", "/v1/accounts/connect/confirm", json={"confirmation": result["confirmation"]}
            )
        if not result.get("account_id"):
            raise DemoFailed(f"expected the connect to give an account; found {result}")
        return str(result["account_id"])

    # ------------------------------------------------------------------ the scenario
    def run(self) -> int:
        print(f"tenant {self.tenant}: contact Carla; {self.address} has a Google calendar")
        self.backend("PUT", "/v1/directory/settings", json={"plan": "advanced"})
        carla = {"name": "Carla Client", "emails": [CARLA]}
        self.backend("PUT", "/v1/directory/contacts/carla", json=carla)
        older = (datetime.now(UTC) - timedelta(days=40)).isoformat()
        planned = self.in_google("create", event=_event("Planned last month", 3), created=older)
        self.connected()
        booked, own_event = self.older_event_and_booking(planned)
        kickoff, made = self.made_in_google(planned, own_event)
        self.series_private_and_move()
        self.attendees()
        self.stop_and_resume(made, kickoff, booked)
        self.conflict(booked)
        return self.report()

    def connected(self) -> None:
        print("1. Sam connects the calendar (purpose calendar, through the consent page)")
        self.account_id = self.connect()
        view = self.sync_view()
        if view["state"] != "syncing":
            raise DemoFailed(f"expected the calendar syncing after the connect; found {view['state']}")
        print(f"   connection {self.account_id}, original connection date {view['original_connection_date']}")
        pushes = self.expect(
            "the push channel's first notification delivered to /webhooks/google-calendar",
            lambda: [p for p in self.google_reads("pushes") if p["fate"] == "delivered"],
            lambda: self.google_reads("pushes") or "no push at all (no channel was opened)",
        )
        first = pushes[0]
        print(f"   Google Calendar pushes to us: channel {first['channel'][:8]}, HTTP {first['status']}")

    def older_event_and_booking(self, planned: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        print("2. an event created last month, before the connection, is edited in Google now")
        self.in_google("edit", eventId=planned["id"], changes={"location": "Room 2"})
        print("   (judged at step 4: the sync that brings step 4's event lists this edit too)")

        print("3. the CRM books an activity: it appears in Google Calendar, once, notifying nobody")
        booked = f"act-{uuid.uuid4().hex[:8]}"
        self.put_activity(booked, "Quarterly review", 5)
        events = self.expect(
            "an event in Google Calendar for the activity",
            lambda: self.of_activity(booked) or None,
            lambda: [e["summary"] for e in self.google_reads("events")],
        )
        self.check(len(events) == 1, "3", "one event for the activity", [e["id"] for e in events])
        event = events[0]
        writes = [
            (w["method"], w["sendUpdates"])
            for w in self.google_reads("writes")
            if w["eventId"] == event["id"]
        ]
        if self.check(writes == [("insert", "none")], "3", "one insert, sendUpdates=none", writes):
            print(f'   event {event["id"][:10]}… "{event["summary"]}": one insert, sendUpdates=none')
        sync = self.expect(
            f"GET /v1/activities/{booked} to show its event",
            lambda: self.activity(booked)["sync"],
            lambda: self.activity(booked),
        )
        self.check(sync["provider_event_id"] == event["id"], "3", f"sync state of {event['id']}", sync)
        return booked, event

    def made_in_google(
        self, planned: dict[str, Any], own_event: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        print("4. Sam creates an event in Google Calendar: it becomes an activity")
        kickoff = self.in_google("create", event=_event("Kick-off with Carla", 6))
        made = self.told_once(
            "ActivityCreatedFromCalendar",
            "ActivityCreatedFromCalendar of the kick-off",
            "4",
            provider_event_id=kickoff["id"],
        )
        print(f"   ActivityCreatedFromCalendar: activity {made['activity_id'][:8]}… type {made['type']}")
        if self.none_for(planned["id"], "2", "the event created before the connection"):
            print("   step 2 holds: the event created before the connection was not imported")
        if self.none_for(own_event["id"], "3", "the CRM's own event (an echo)"):
            print("   step 3 holds: the CRM's own event did not come back as a new activity")
        return kickoff, made

    def series_private_and_move(self) -> None:
        print("5. a weekly series (RRULE:FREQ=WEEKLY;COUNT=5) is created in Google")
        weekly = ["RRULE:FREQ=WEEKLY;COUNT=5"]
        series = self.in_google("create", event=_event("Weekly pipeline review", 7, recurrence=weekly))
        print("6. a private event is created in Google")
        private = self.in_google("create", event=_event("Doctor", 8, visibility="private"))
        print("7. an event is moved to another of Sam's calendars, then back")
        self.in_google("add_calendar", calendarId=self.other_calendar, summary="Travel")
        visit = self.in_google("create", event=_event("Site visit in Lyon", 9))
        activity_id = self.told_once(
            "ActivityCreatedFromCalendar", "the site visit imported", "7", provider_event_id=visit["id"]
        )["activity_id"]
        # the visit came in after the series and the private event: that sync listed them too
        self.told_once(
            "ActivityCreatedFromCalendar", "one activity of the series", "5", provider_event_id=series["id"]
        )
        of_occurrences = [
            d["provider_event_id"]
            for d in self.told("ActivityCreatedFromCalendar")
            if d["provider_event_id"].startswith(series["id"] + "_")
        ]
        if self.check(not of_occurrences, "5", "no activity of an occurrence", of_occurrences):
            print("   step 5 holds: one activity for the series, none for its occurrences")
        if self.none_for(private["id"], "6", "the private event"):
            print("   step 6 holds: the private event stayed out")
        self.in_google("move", eventId=visit["id"], destination=self.other_calendar)
        trashed = self.told_once(
            "ActivityTrashed", "ActivityTrashed of the moved visit", "7", activity_id=activity_id
        )
        reason = trashed["reason"]
        if self.check(
            reason == "moved_to_other_calendar", "7", "reason moved_to_other_calendar", repr(reason)
        ):
            print("   moved away: ActivityTrashed reason moved_to_other_calendar")
        self.in_google("move", eventId=visit["id"], destination="primary", calendarId=self.other_calendar)
        self.told_once("ActivityRestored", "ActivityRestored of the visit", "7", activity_id=activity_id)
        trashed_now = self.activity(activity_id)["activity"]["trashed"]
        if self.check(trashed_now is False, "7", "the activity out of the trash", f"trashed={trashed_now}"):
            print("   moved back: ActivityRestored, out of the trash at GET /v1/activities/{id}")

    def attendees(self) -> None:
        print("8. an event with attendees: Sam, Carla (a contact) and Nina (neither contact nor user)")
        people = [
            {"email": self.address, "self": True, "organizer": True},
            {"email": CARLA, "displayName": "Carla Client"},
            {"email": NINA, "displayName": "Nina New"},
        ]
        demo = self.in_google("create", event=_event("Product demo", 10, attendees=people))
        self.told_once(
            "ActivityCreatedFromCalendar", "the product demo imported", "8", provider_event_id=demo["id"]
        )
        contact = self.told_once("ContactCreatedFromAttendee", "ContactCreatedFromAttendee", "8")
        if self.check(contact["email"] == NINA, "8", f"a contact of {NINA} alone", contact):
            print(f"   ContactCreatedFromAttendee {contact['email']} ({contact.get('name')}); no other")

    def stop_and_resume(self, made: dict[str, Any], kickoff: dict[str, Any], booked: str) -> None:
        print("9. Sam stops the sync; both sides change; Sam connects the same account again")
        stopped = self.call("POST", f"/v1/calendars/{self.account_id}/stop")
        if stopped["state"] != "stopped":
            raise DemoFailed(f"expected the calendar stopped; found {stopped['state']}")
        self.in_google("edit", eventId=kickoff["id"], changes={"summary": "Kick-off (renamed in Google)"})
        self.put_activity(booked, "Quarterly review (moved by the CRM)", 5)
        gap = self.in_google("create", event=_event("Made while stopped", 11))
        time.sleep(2)  # the pushes and the CRM's push job have run by now: they must have changed nothing
        summary = self.of_activity(booked)[0]["summary"]
        self.check(summary == "Quarterly review", "9", "Google left alone while stopped", repr(summary))
        self.none_for(gap["id"], "9", "the new event while stopped")
        print("   stopped: neither side changed the other")
        resumed_at = datetime.now(UTC)
        if self.connect() != self.account_id:
            raise DemoFailed("expected the reconnect to resume the same calendar connection")

        def finished() -> dict[str, Any] | None:
            resync = self.sync_view().get("resync") or {}
            begun = resync.get("started_at") and datetime.fromisoformat(resync["started_at"]) >= resumed_at
            return resync if begun and resync["status"] != "running" else None

        resync = self.expect(
            "the resync of the resume to finish", finished, lambda: self.sync_view().get("resync")
        )
        if self.check(resync["status"] == "succeeded", "9", 'resync status "succeeded"', resync):
            print(
                f"   resync (Step Functions) succeeded: {resync['pages']} page(s), {resync['items']} item(s);"
                " the local stack shows no execution status over HTTP, this is the resync's own record"
            )
        self.told_once(
            "ActivityCreatedFromCalendar",
            "the event made while stopped imported",
            "9",
            provider_event_id=gap["id"],
        )
        print("   the event made while stopped is imported")
        report = self.told_once(
            "CalendarGapChangeReported", "the Google edit reported", "9", activity_id=made["activity_id"]
        )
        kept = self.activity(made["activity_id"])["activity"]["subject"]
        found = f"applied={report['applied']}, subject {kept!r}"
        if self.check(
            report["applied"] is False and kept == "Kick-off with Carla",
            "9",
            "applied=false, CRM subject kept",
            found,
        ):
            differing = report["differing"]
            print(f"   CalendarGapChangeReported applied=false {differing}; the activity keeps {kept!r}")
        self.expect(
            "the CRM's change made while stopped to reach Google",
            lambda: self.of_activity(booked)[0]["summary"] == "Quarterly review (moved by the CRM)" or None,
            lambda: repr(self.of_activity(booked)[0]["summary"]),
        )
        print("   the CRM's change made while stopped reached Google at the resync's end")

    def conflict(self, booked: str) -> None:
        print("10. the same activity changes in the CRM and in Google before a sync")
        event = self.of_activity(booked)[0]
        print("   a) in Google first (its notification comes late), then in the CRM: the CRM's is later")
        self.in_google("push_faults", reorder=1)  # Google holds the edit's push until the next one
        self.in_google("edit", eventId=event["id"], changes={"summary": "Quarterly review (Google, first)"})
        self.put_activity(booked, "Quarterly review (CRM, later)", 5)
        self.expect(
            "the CRM's change, the later, in Google",
            lambda: self.of_activity(booked)[0]["summary"] == "Quarterly review (CRM, later)" or None,
            lambda: repr(self.of_activity(booked)[0]["summary"]),
        )
        self.conflict_shown(
            booked, "10a", "Quarterly review (CRM, later)", "Quarterly review (Google, first)"
        )
        print("   b) in the CRM first (Google refuses its write a moment), then in Google: Google's is later")
        # the rate limit keeps the CRM's change in the queue while the calendar's change arrives
        self.in_google("throttle", requests=3, method="calendar.events.patch")
        self.put_activity(booked, "Quarterly review (CRM)", 5)
        self.in_google("edit", eventId=event["id"], changes={"summary": "Quarterly review (Google)"})
        self.conflict_shown(booked, "10b", "Quarterly review (CRM)", "Quarterly review (Google)")

    def conflict_shown(self, booked: str, step: str, crm: str, google: str) -> None:
        """The conflict between these two subjects, at GET /v1/activities/{id} and on the tap, the
        later change (the second made) the winner and the activity's subject."""
        winner, subject = ("crm", crm) if step == "10a" else ("provider", google)

        def recorded() -> list[dict[str, Any]]:
            return [
                d
                for d in self.told("CalendarConflictRecorded", activity_id=booked)
                if (d["crm_version"]["subject"], d["provider_version"]["subject"]) == (crm, google)
            ]

        def kept() -> list[dict[str, Any]]:
            conflicts: list[dict[str, Any]] = self.activity(booked)["conflicts"]
            return [
                c
                for c in conflicts
                if (c["crm_version"]["subject"], c["provider_version"]["subject"]) == (crm, google)
            ]

        try:
            _wait("the conflict", lambda: recorded() and kept(), timeout=15)
        except DemoFailed:
            now = self.activity(booked)["activity"]["subject"], self.of_activity(booked)[0]["summary"]
            found = (
                f"no conflict recorded; the CRM has {now[0]!r}, Google {now[1]!r}; the other version is lost"
            )
            self.check(False, step, f"a conflict of CRM {crm!r} and Google {google!r}", found)
            return
        conflict, event = kept()[-1], recorded()[-1]
        self.check(len(kept()) == len(recorded()) == 1, step, "the conflict once", (kept(), recorded()))
        if self.check(conflict["winner"] == winner, step, f"winner {winner}", conflict):
            print(
                f"   GET /v1/activities/{booked}: conflict on {conflict['differing']}: CRM {crm!r},"
                f" Google {google!r}, winner {winner}; CalendarConflictRecorded winner {event['winner']}"
            )
        self.check(event["winner"] == winner, step, f"CalendarConflictRecorded winner {winner}", event)
        self.expect(
            f"both sides to hold the winner's subject {subject!r}",
            lambda: (
                (
                    self.activity(booked)["activity"]["subject"] == subject
                    and self.of_activity(booked)[0]["summary"] == subject
                )
                or None
            ),
            lambda: (self.activity(booked)["activity"]["subject"], self.of_activity(booked)[0]["summary"]),
        )

    def report(self) -> int:
        print(f"\nevents for {self.tenant} (oldest first):")
        events = self.http.get(f"{self.base}/_local/events", timeout=10).json()["events"]
        for event in reversed(events):
            detail = event.get("detail", {})
            if detail.get("tenant_id") != self.tenant:
                continue
            subject = (detail.get("fields") or detail.get("calendar_version") or {}).get("subject", "")
            extra = detail.get("reason") or detail.get("email") or detail.get("winner") or ""
            activity = str(detail.get("activity_id", ""))[:14]
            print(f"  {event['detail-type']:<28} {activity:<15} {subject} {extra}")
        print()
        for problem in self.problems:
            print(f"FAILED (Google Calendar): {problem}")
        if self.problems:
            return 1
        print("OK (Google Calendar): every step of the calendar scenario held")
        return 0

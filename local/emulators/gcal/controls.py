"""`/_emulator/gcal/<action>`: another process acts as the user in Google Calendar (create,
edit, delete or move an event in the client), sets the clock, expires sync tokens, sets
throttling, failures and push faults, and reads events, the write log and the pushes.
JSON in (query string for GET) and out; `address` names the user."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.gcal.api import CalendarEmulator, Refused


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


def _counts(data: dict[str, Any], *names: str) -> dict[str, int]:
    counts = {name: data.get(name, 0) for name in names}
    if not all(isinstance(v, int) and v >= 0 for v in counts.values()):
        raise ValueError(f"{', '.join(names)} are counts (integers >= 0)")
    return counts


def control(calendar: CalendarEmulator, request: Request) -> Response:
    action = request.path.removeprefix("/_emulator/gcal/")
    data: dict[str, Any] = (
        dict(request.args) if request.method == "GET" else (request.get_json(silent=True) or {})
    )
    if action == "clock" and request.method == "POST":
        calendar.set_clock(data.get("now"))
        return _json({"now": calendar.now()})
    address = str(data.get("address") or "").strip().lower()
    if "@" not in address:
        return _json({"error": "address (the user's address) is required"}, 400)
    calendar_id = str(data.get("calendarId") or "primary")
    try:
        if request.method == "GET":
            readers = {
                "events": lambda: {"events": calendar.events_of(address, calendar_id)},
                "writes": lambda: {"writes": calendar.writes_of(address)},
                "pushes": lambda: {"pushes": calendar.push.pushes_of(address)},
            }
            reader = readers.get(action)
            if reader is None:
                return _json({"error": f"no emulator control GET {action!r}"}, 404)
            return _json({"address": address, **reader()})
        if request.method != "POST":
            return _json({"error": f"{request.method} is not an emulator control"}, 404)
        return _json(_act(calendar, action, address, calendar_id, data))
    except Refused as refusal:
        return refusal.response
    except (KeyError, TypeError, ValueError) as error:
        return _json({"error": f"{action}: {error!r}"}, 400)


def _act(
    calendar: CalendarEmulator, action: str, address: str, calendar_id: str, data: dict[str, Any]
) -> dict[str, Any]:
    if action == "create":
        return calendar.create_in_client(address, data["event"], calendar_id, data.get("created"))
    if action == "edit":
        return calendar.edit_in_client(address, data["eventId"], data["changes"], calendar_id)
    if action == "delete":
        calendar.delete_in_client(address, data["eventId"], calendar_id)
        return {"deleted": data["eventId"]}
    if action == "move":
        return calendar.move_in_client(address, data["eventId"], data["destination"], calendar_id)
    if action == "add_calendar":
        calendar.add_calendar(address, calendar_id, str(data.get("summary") or ""))
        return {"calendarId": calendar_id}
    if action == "expire_sync_tokens":
        calendar.expire_sync_tokens(address, calendar_id)
        return {"expired": calendar_id}
    if action == "throttle":
        calendar.throttle(
            address,
            int(data["requests"]),
            status=int(data.get("status", 403)),
            reason=str(data.get("reason", "rateLimitExceeded")),
            method=data.get("method"),
        )
        return {"throttled": data["requests"]}
    if action == "fail":
        calendar.fail(address, int(data["requests"]), int(data.get("status", 503)))
        return {"failing": data["requests"]}
    if action == "push_faults":
        counts = _counts(data, "drop", "duplicate", "reorder")
        calendar.push.set_faults(address, **counts)
        return counts
    if action == "late_push":
        counts = _counts(data, "count")
        calendar.push.allow_late_push(address, counts["count"])
        return counts
    if action == "release_held":
        return {"released": calendar.push.release_held(address)}
    raise KeyError(f"no emulator control {action!r}")

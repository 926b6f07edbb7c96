"""Push notification channels of Google Calendar (events.watch, channels.stop).

A channel watches one calendar's events. Google POSTs an empty body to the channel's address
with X-Goog-Channel-ID, X-Goog-Channel-Token (if the channel has one), X-Goog-Resource-ID,
X-Goog-Resource-URI, X-Goog-Resource-State (`sync` once when the channel opens, then `exists`
for every change) and X-Goog-Message-Number (increasing per channel), plus
X-Goog-Channel-Expiration. The notification says only that something changed: the receiver
lists with its sync token to learn what.

Sending happens on a background thread, retried with backoff on a 5xx or a refused
connection, as Google retries. Faults are made on demand per user (`PushFaults`): drop a push
(its message number is used up), send one twice, or hold some and send them after the next
one, newest first. A stopped channel sends nothing more, unless `late_pushes` says it may
still send one push after it was stopped (Google warns that this can happen)."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

PUSH_ATTEMPTS = 4


@dataclass
class Channel:
    id: str
    address: str  # the user the channel belongs to
    calendar_id: str
    resource_id: str
    resource_uri: str
    url: str
    token: str | None
    expiration_ms: int
    messages: int = 0  # the last message number used
    stopped: bool = False


@dataclass
class PushFaults:
    drop: int = 0
    duplicate: int = 0
    reorder: int = 0
    held: list[tuple[Channel, int, str]] = field(default_factory=list)  # channel, number, state


class Pusher:
    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.faults: dict[str, PushFaults] = {}
        self.late_pushes: dict[str, int] = {}  # per user: stopped channels that still push once
        self.log: list[dict[str, Any]] = []  # every push: channel, number, state, fate, status
        self._lock = threading.Lock()
        self._outbox: queue.Queue[tuple[Channel, int, str] | None] = queue.Queue()
        self._unsettled = 0
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ what the API calls
    def open(self, channel: Channel) -> None:
        """A new channel: Google confirms it with a `sync` message at once."""
        with self._lock:
            self.channels[channel.id] = channel
        self._send(channel, "sync")

    def stop(self, channel: Channel) -> None:
        with self._lock:
            channel.stopped = True
            late = self.late_pushes.get(channel.address, 0) > 0
            if late:
                self.late_pushes[channel.address] -= 1
                number = self._number(channel)
        if late:
            self._enqueue(channel, number, "exists")  # sent though stopped

    def changed(self, address: str, calendar_id: str, now_ms: int) -> None:
        """A calendar's events changed: every live channel on it is told."""
        with self._lock:
            watching = [
                c
                for c in self.channels.values()
                if c.address == address
                and c.calendar_id == calendar_id
                and not c.stopped
                and c.expiration_ms > now_ms
            ]
        for channel in watching:
            self._send(channel, "exists")

    # ------------------------------------------------------------------ faults and reading
    def set_faults(self, address: str, drop: int = 0, duplicate: int = 0, reorder: int = 0) -> None:
        with self._lock:
            faults = self.faults.setdefault(address, PushFaults())
            faults.drop += drop
            faults.duplicate += duplicate
            faults.reorder += reorder

    def allow_late_push(self, address: str, count: int = 1) -> None:
        """The next `count` channels of the user to be stopped each send one more push after."""
        with self._lock:
            self.late_pushes[address] = self.late_pushes.get(address, 0) + count

    def release_held(self, address: str) -> int:
        with self._lock:
            faults = self.faults.setdefault(address, PushFaults())
            held, faults.held = faults.held, []
        for item in reversed(held):
            self._enqueue(*item)
        return len(held)

    def settled(self) -> bool:
        with self._lock:
            return self._unsettled == 0

    def pushes_of(self, address: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.log if p["address"] == address]

    def close(self) -> None:
        thread = self._thread
        if thread is not None:
            self._outbox.put(None)
            thread.join(timeout=5)
            self._thread = None

    # ------------------------------------------------------------------ sending
    def _number(self, channel: Channel) -> int:
        channel.messages += 1
        return channel.messages

    def _record(self, channel: Channel, number: int, state: str, fate: str, status: int = 0) -> None:
        self.log.append(
            {
                "address": channel.address,
                "channel": channel.id,
                "number": number,
                "state": state,
                "fate": fate,
                "status": status,
            }
        )

    def _send(self, channel: Channel, state: str) -> None:
        sends: list[tuple[Channel, int, str]] = []
        with self._lock:
            number = self._number(channel)
            faults = self.faults.setdefault(channel.address, PushFaults())
            if state == "exists" and faults.drop > 0:
                faults.drop -= 1
                self._record(channel, number, state, "dropped")
                return
            if state == "exists" and faults.reorder > 0:
                faults.reorder -= 1
                faults.held.append((channel, number, state))
                self._record(channel, number, state, "held")
                return
            sends.append((channel, number, state))
            if state == "exists" and faults.duplicate > 0:
                faults.duplicate -= 1
                sends.append((channel, number, state))
            if state == "exists":
                sends += reversed(faults.held)
                faults.held = []
        for item in sends:
            self._enqueue(*item)

    def _enqueue(self, channel: Channel, number: int, state: str) -> None:
        with self._lock:
            self._unsettled += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="emulator:gcal-push", daemon=True)
                self._thread.start()
        self._outbox.put((channel, number, state))

    def _loop(self) -> None:
        import requests

        while (item := self._outbox.get()) is not None:
            channel, number, state = item
            headers = {
                "X-Goog-Channel-ID": channel.id,
                "X-Goog-Resource-ID": channel.resource_id,
                "X-Goog-Resource-URI": channel.resource_uri,
                "X-Goog-Resource-State": state,
                "X-Goog-Message-Number": str(number),
                "X-Goog-Channel-Expiration": format_datetime(
                    datetime.fromtimestamp(channel.expiration_ms / 1000, UTC), usegmt=True
                ),
            }
            if channel.token is not None:
                headers["X-Goog-Channel-Token"] = channel.token
            status = 0
            try:
                for attempt in range(PUSH_ATTEMPTS):
                    try:
                        status = requests.post(channel.url, data=b"", headers=headers, timeout=10).status_code
                    except OSError:
                        status = 0
                    if status < 500 and status != 0:
                        break
                    time.sleep(0.05 * 2**attempt)
            finally:
                with self._lock:
                    fate = "delivered" if 200 <= status < 300 else "failed"
                    self._record(channel, number, state, fate, status)
                    self._unsettled -= 1

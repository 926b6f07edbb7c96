"""Throttling and fault injection, shared by every emulator (Gmail, Graph mail, and the ones to come).

An emulator keeps a `FaultState` for whatever it throttles by (a mailbox: its `Mailbox` extends
`FaultState`) and asks two questions of each request:
- `Admission.admit`: count the request in flight, refuse it when that makes more than the
  state's `concurrency_limit` (Outlook's 4 per app and mailbox), and delay it by `latency`;
- `Throttle.refuses`: is it one of the next N requests (of one kind only, if given, after letting
  `skip` of that kind through) that must answer 429 with Retry-After?
How a refusal looks on the wire (the status, the error body, the Retry-After header) is each
emulator's own; this module only keeps the counts."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Throttle:
    """Refuse the next `requests` requests with 429 (only those of kind `only`, if given: a Graph
    route kind, a Gmail discovery method id), after letting `skip` of them through."""

    requests: int = 0
    retry_after: int = 1
    only: str | None = None
    skip: int = 0
    code: str = ""  # the emulator's name for the refusal, when it has several (Graph)

    def refuses(self, kind: str) -> bool:
        """Whether this request (of route kind or method `kind`) is refused; counts it if so."""
        if self.requests <= 0 or (self.only is not None and self.only != kind):
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.requests -= 1
        return True


@dataclass(kw_only=True)
class FaultState:
    """The faults set on one mailbox, and what its requests did under them. Keyword-only, so that
    a subclass's own fields keep their positions."""

    throttle: Throttle = field(default_factory=Throttle)
    in_flight: int = 0
    max_in_flight: int = 0  # the most requests seen in flight at once
    latency: float = 0.0  # seconds each admitted request waits first
    concurrency_limit: int | None = None  # None: count only; a number: refuse beyond it


class Admission:
    """Counts requests in flight, per `FaultState`, under a lock of its own."""

    def __init__(self) -> None:
        self._counting = threading.Lock()

    @contextmanager
    def admit(self, state: FaultState) -> Iterator[bool]:
        """For the length of a request: True if it may run (after waiting the state's latency),
        False if it would make more than `concurrency_limit` in flight and must be refused."""
        with self._counting:
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
            over = state.concurrency_limit is not None and state.in_flight > state.concurrency_limit
        try:
            if not over and state.latency:
                time.sleep(state.latency)
            yield not over
        finally:
            with self._counting:
                state.in_flight -= 1

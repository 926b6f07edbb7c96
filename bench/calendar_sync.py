"""Calendar sync, both ways, on a Google calendar of the local Google Calendar emulator: what each
changed event asks of Google Calendar, DynamoDB and EventBridge, and what a poll of an unchanged
calendar costs.

The local stack served over HTTP with the provider emulators and one Google account connected
through OAuth for mail and calendar (bench/push_latency.py: the calendar hook stores the first
sync token and the poll's due item). Every job runs through the real SyncWorkerFunction handler
(its SyncBatch, JobRunner, CalendarSync engine, CursorLoop and DynamoDB stores on moto), invoked
in this thread as Lambda's SQS event source would, from a FIFO queue of the bench's own: the
stack's pollers do not take them, so their AWS requests are counted (bench/common.py patches
BaseClient._make_api_call; the pollers' threads are not counted). Google Calendar requests are
read from the emulator's log of the user's requests (one discovery method id per HTTP request
that reached the calendar API; the token refreshes and Gmail are not in it).

For each N (BENCH_CALENDAR_SIZES, "100,1000"), on the same account, in turn:
- put + push: N activities PUT through the Activities service (what the API's PUT calls; its
  calendar.push jobs go to the bench's queue), 100 at a time, each hundred's jobs then run
  through the worker (the PUT's requests and the jobs' are counted apart);
- echo: one calendar.sync job, which reads the N events the pushes wrote coming back;
- create: N events made in the Google Calendar client, then one calendar.sync job;
- edit: each of those events edited in the client (its location), then one calendar.sync job;
- poll: one calendar.sync job when nothing changed.
Each step checks that it did what it counts (N activities told to the CRM, N events inserted,
nothing told for the echo), so a run cut short (a continuation job) cannot pass for a cheap one."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    TARGET_EVENTS_PER_MSG,
    AwsMeter,
    CostLine,
    Usage,
    cost_model,
    function_memory_mb,
    mark,
    print_cost,
)
from bench.push_latency import GmailStack, connected_gmail_stack

SIZES = (100, 1000)
PAGE_SIZE = 250  # the adapter's events.list page (providers/google/calendar.py PAGE_SIZE)
PUSH_CHUNK = 100  # activities PUT, then their jobs drained, at a time
POLL_EVERY_S = 900  # settings.calendar_poll_after_s: one poll per connection this often
# Targets (counts measured in the same run; the reasons are in bench/README.md)
TARGET_DYNAMODB_PER_EVENT = 2.5  # the activity and the state row written, the page's reads batched
TARGET_GOOGLE_PER_PUSH = 1.0  # one events.insert per activity
TARGET_DYNAMODB_PER_PUSH = 6.0  # read: activity, state row, owner's connections, token; write: state, health
TARGET_POLL_GOOGLE = 1  # the floor: one events.list with the sync token
TARGET_POLL_DYNAMODB = 5  # read: account, cursor, sealed token; write: health record, poll's due item


@dataclasses.dataclass
class Phase:
    """What one step cost: `n` changed items (1 for the poll)."""

    name: str
    n: int
    google: Counter[str]  # calendar method ids (calendar.events.list, ...)
    aws: Usage
    invocations: int  # SyncWorkerFunction invocations
    told: Counter[str]  # the account's events put on the bus, by detail type
    seconds: float

    @property
    def google_requests(self) -> int:
        return sum(self.google.values())


@dataclasses.dataclass
class SizeRun:
    n: int
    phases: dict[str, Phase]
    put: Phase  # the PUTs through the Activities service, before their jobs ran


def combined(phases: list[Phase]) -> Phase:
    """Steps measured in parts, added up."""
    first = phases[0]
    return Phase(
        name=first.name,
        n=sum(p.n for p in phases),
        google=sum((p.google for p in phases), Counter()),
        aws=sum((p.aws for p in phases), Usage()),
        invocations=sum(p.invocations for p in phases),
        told=sum((p.told for p in phases), Counter()),
        seconds=sum(p.seconds for p in phases),
    )


class Bench:
    def __init__(self, env: GmailStack, meter: AwsMeter) -> None:
        import boto3

        from crmsync.auth import Principal
        from crmsync.calendar.activities import Activities
        from crmsync.stores.queue import SqsJobQueue

        self.env, self.meter = env, meter
        self.calendar = env.emulators.google.calendar
        self.address = env.address
        url = boto3.client("sqs").create_queue(
            QueueName=f"bench-calendar-{uuid.uuid4().hex[:8]}.fifo",
            Attributes={"FifoQueue": "true", "VisibilityTimeout": "300"},
        )["QueueUrl"]
        self.queue = SqsJobQueue(url)
        worker = next(s for s in env.stack.sqs_sources if s.function.logical_id == "SyncWorkerFunction")
        self.source = dataclasses.replace(worker, queue_url=url, queue_arn=f"bench:{url}")
        services = env.stack.services
        self.activities = Activities(services.activity_store(), self.queue)
        self.backend = Principal(tenant_id=env.tenant, user_id="crm-backend", role="service")
        self.told: Counter[str] = Counter()
        self._thread = threading.get_ident()  # the worker runs here; the stack's pollers do not count
        meter.listeners.append(self._published)

    def _published(self, service: str, operation: str, params: dict[str, Any], _: Any) -> None:
        if service != "events" or operation != "PutEvents" or threading.get_ident() != self._thread:
            return
        for entry in params.get("Entries") or []:
            if json.loads(entry.get("Detail") or "{}").get("account_id") == self.env.account_id:
                self.told[str(entry.get("DetailType"))] += 1

    # ------------------------------------------------------------------ measuring
    def _measure(self, name: str, n: int, step: Callable[[], int]) -> Phase:
        requests = self.calendar.account(self.address).requests
        google_before, aws_before, told_before = len(requests), self.meter.snapshot(), Counter(self.told)
        began = time.perf_counter()
        invocations = step()
        seconds = time.perf_counter() - began
        return Phase(
            name=name,
            n=n,
            google=Counter(requests[google_before:]),
            aws=self.meter.snapshot() - aws_before,
            invocations=invocations,
            told=self.told - told_before,
            seconds=seconds,
        )

    def _drain(self, jobs: int) -> int:
        """`jobs` queued jobs through SyncWorkerFunction, a batch (up to 10) per invocation;
        returns the invocations. Stops at the count, so no empty receive is counted."""
        invocations = taken = 0
        while taken < jobs:
            got = self.env.stack.poll_sqs(self.source)
            if not got:
                raise RuntimeError(f"the bench queue ran dry after {taken} of {jobs} jobs")
            taken += got
            invocations += 1
        return invocations

    def _synced(self, name: str, n: int) -> Phase:
        """One calendar.sync job, queued (not counted: the scheduler's or a push's send) and run."""
        from crmsync.jobs import Job

        job = Job(type="calendar.sync", tenant_id=self.env.tenant, account_id=self.env.account_id)
        self.queue.send(job, uuid.uuid4().hex)
        return self._measure(name, n, lambda: self._drain(1))

    def _activity(self, n: int) -> Any:
        from crmsync.calendar.activities import ActivityPut

        now = datetime.now(UTC)
        start = datetime(2026, 12, 14, 15, 0, tzinfo=UTC) + timedelta(hours=n)
        return ActivityPut(
            owner_user_id="u1",
            type="meeting",
            subject=f"Visit {n}",
            start=start,
            end=start + timedelta(hours=1),
            time_zone="Europe/Paris",
            location="Lyon",
            created_at=now,
            updated_at=now,
        )

    # ------------------------------------------------------------------ the steps
    def run(self, n: int) -> SizeRun:
        """The pushes first, while moto's tables are smallest (its Query reads the whole table)."""
        phases: dict[str, Phase] = {}

        def put(first: int, count: int) -> int:
            for i in range(first, first + count):
                self.activities.put(self.backend, f"bench-{uuid.uuid4().hex[:12]}", self._activity(i))
            return 0

        # in chunks, each drained before the next: moto's FIFO queue slows with every message it holds
        puts, pushes = [], []
        for first in range(0, n, PUSH_CHUNK):
            count = min(PUSH_CHUNK, n - first)
            puts.append(self._measure("put", count, lambda f=first, c=count: put(f, c)))  # type: ignore[misc]
            pushes.append(self._measure("push", count, lambda c=count: self._drain(c)))  # type: ignore[misc]
        phases["push"] = combined(pushes)
        inserted = phases["push"].google["calendar.events.insert"]
        if inserted != n:
            raise RuntimeError(f"the push jobs inserted {inserted} of {n} events ({phases['push'].google})")
        phases["echo"] = self._synced("echo", n)
        if phases["echo"].told:
            raise RuntimeError(f"the engine's own writes came back as changes: {phases['echo'].told}")

        made: list[str] = []
        for i in range(n):
            start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC) + timedelta(hours=i)
            body = {
                "summary": f"Meeting {i}",
                "start": {"dateTime": start.isoformat(), "timeZone": "Europe/Paris"},
                "end": {"dateTime": (start + timedelta(hours=1)).isoformat(), "timeZone": "Europe/Paris"},
            }
            made.append(self.calendar.create_in_client(self.address, body)["id"])
        phases["create"] = self._synced("create", n)
        self._expect(phases["create"], "ActivityCreatedFromCalendar", n)
        for i, event_id in enumerate(made):
            self.calendar.edit_in_client(self.address, event_id, {"location": f"Room {i}"})
        phases["edit"] = self._synced("edit", n)
        self._expect(phases["edit"], "ActivityUpdatedFromCalendar", n)

        phases["poll"] = self._synced("poll", 1)
        return SizeRun(n, phases, combined(puts))

    @staticmethod
    def _expect(phase: Phase, kind: str, n: int) -> None:
        if phase.told[kind] != n:
            raise RuntimeError(
                f"{phase.name}: the CRM was told {phase.told[kind]} {kind} of {n}"
                f" ({dict(phase.told)}; a run out of time would have queued the rest on the sync queue)"
            )


def run(sizes: Iterable[int] = SIZES, say: Callable[[str], None] = print) -> list[SizeRun]:
    meter = AwsMeter()
    with connected_gmail_stack(meter) as env:
        bench = Bench(env, meter)
        bench.run(5)  # warm-up: imports, the handler, clients
        runs = []
        for n in sizes:
            say(f"  N={n} ...")
            runs.append(bench.run(n))
        return runs


def sizes_from_env() -> tuple[int, ...]:
    given = os.environ.get("BENCH_CALENDAR_SIZES", "")
    return tuple(int(n) for n in given.split(",") if n.strip()) or SIZES


# ---------------------------------------------------------------------- printing
def _ddb(phase: Phase) -> float:
    return phase.aws["dynamodb"] / phase.n


def print_table(runs: list[SizeRun]) -> None:
    print(
        f"{'N':>5} {'step':6} {'Google/ev':>9} {'DDB/ev':>7} {'EB/ev':>6} {'KMS/ev':>6} {'SQS/ev':>6}"
        f" {'inv':>4} {'s':>6}  Google methods; DynamoDB operations"
    )
    for r in runs:
        for phase in [r.phases["create"], r.phases["edit"], r.put, r.phases["push"], r.phases["echo"]]:
            _row(r.n, phase)
        _row(r.n, r.phases["poll"])
    print(
        "per changed event (per activity for put/push, per poll for poll): Google/ev: Google Calendar"
        " requests; DDB/ev, EB/ev, KMS/ev, SQS/ev: AWS requests; inv: SyncWorkerFunction"
        " invocations; s: seconds on moto (not a target)"
    )


def _row(n: int, p: Phase) -> None:
    methods = ", ".join(f"{m.removeprefix('calendar.')} {c}" for m, c in p.google.most_common())
    print(
        f"{n:5d} {p.name:6} {p.google_requests / p.n:9.3f} {_ddb(p):7.2f} {p.aws['events'] / p.n:6.2f}"
        f" {p.aws['kms'] / p.n:6.2f} {p.aws['sqs'] / p.n:6.2f} {p.invocations:4d} {p.seconds:6.1f}"
        f"  {methods or '-'}; {p.aws.top('dynamodb') or '-'}"
    )


def _target(label: str, figure: float, target: float, why: str = "") -> str:
    ok = figure <= target
    reason = f" ({why})" if why and not ok else ""
    return f"  {label}: {figure:.3f} <= {target:g} {mark(ok)}{reason}"


def _per(p: Phase, operation: str) -> float:
    return p.aws.operations[operation] / p.n


def _ops(p: Phase, service: str = "dynamodb") -> str:
    """A step's operations of one service, per changed item."""
    return ", ".join(
        f"{op.split('.', 1)[1]} {count / p.n:.2f}"
        for op, count in p.aws.operations.most_common()
        if op.startswith(service + ".")
    )


def _causes(p: Phase, hints: list[tuple[bool, str]]) -> str:
    """The measured operations per item, and the causes they show."""
    found = [text for shown, text in hints if shown]
    return f"per item {_ops(p)}" + ("; " + "; ".join(found) if found else "")


def print_targets(runs: list[SizeRun]) -> None:
    largest = runs[-1]
    n = largest.n
    pages = math.ceil(n / PAGE_SIZE)
    print(f"targets at N={n}:")
    for name in ("create", "edit"):
        p = largest.phases[name]
        print(
            _target(f"{name}: Google requests (events.list pages of {PAGE_SIZE})", p.google_requests, pages)
        )
        print(
            _target(
                f"{name}: DynamoDB requests/event",
                _ddb(p),
                TARGET_DYNAMODB_PER_EVENT,
                _causes(
                    p,
                    [
                        (
                            _per(p, "dynamodb.GetItem") >= 0.9,
                            "a GetItem per event: the state row read again before its write,"
                            " though the page's BatchGetItem read it (ActivityStore.put_state)",
                        )
                    ],
                ),
            )
        )
        print(
            _target(
                f"{name}: EventBridge requests/event",
                p.aws["events"] / n,
                TARGET_EVENTS_PER_MSG,
                f"{p.aws.events} events in {p.aws['events']} PutEvents: the engine publishes each item's"
                " event on its own, between its activity and its state row",
            )
        )
    push = largest.phases["push"]
    print(_target("push job: Google requests/activity", push.google_requests / n, TARGET_GOOGLE_PER_PUSH))
    print(
        _target(
            "push job: DynamoDB requests/activity",
            _ddb(push),
            TARGET_DYNAMODB_PER_PUSH,
            _causes(
                push,
                [
                    (
                        _per(push, "dynamodb.Query") >= 1.9,
                        "the owner's account read again for the access token (Credentials: a gsi1 Query,"
                        " a GetItem, then the sealed token's GetItem) after the job listed it",
                    ),
                    (
                        _per(push, "dynamodb.GetItem") >= 4.9,
                        "the state row read again before its write (ActivityStore.put_state)",
                    ),
                ],
            ),
        )
    )
    for r in runs:
        poll = r.phases["poll"]
        label = f"poll of an unchanged calendar (N={r.n})"
        print(
            _target(
                f"{label}: Google requests", poll.google_requests, TARGET_POLL_GOOGLE, f"{dict(poll.google)}"
            )
        )
        print(
            _target(
                f"{label}: DynamoDB requests",
                poll.aws["dynamodb"],
                TARGET_POLL_DYNAMODB,
                _causes(
                    poll,
                    [
                        (
                            poll.aws.operations["dynamodb.Query"] >= 2,
                            "the account read twice (the job, then Credentials for the token),"
                            " each a gsi1 Query and a GetItem",
                        )
                    ],
                ),
            )
        )


def merged(*blocks: list[CostLine]) -> list[CostLine]:
    """Cost lines of several functions added up by what they bill (the same unit price)."""
    by_what: dict[str, CostLine] = {}
    for block in blocks:
        for line in block:
            found = by_what.get(line.what)
            if found is None:
                by_what[line.what] = dataclasses.replace(line)
            else:
                found.quantity += line.quantity
    return list(by_what.values())


def print_costs(largest: SizeRun) -> None:
    n, worker = largest.n, function_memory_mb("SyncWorkerFunction")
    create = largest.phases["create"]
    print_cost(
        f"modelled cost per million events created in Google Calendar (from the N={n} run)",
        cost_model(create.aws, n, invocations=create.invocations, memory_mb=worker),
        unit="event",
        units="events",
    )
    push = largest.phases["push"]
    print_cost(
        f"modelled cost per million activities pushed to Google Calendar (from the N={n} run:"
        " the PUT's ActivitiesFunction and the push job)",
        merged(
            cost_model(largest.put.aws, n, invocations=n, memory_mb=function_memory_mb("ActivitiesFunction")),
            cost_model(push.aws, n, invocations=push.invocations, memory_mb=worker),
        ),
        unit="activity",
        units="activities",
    )
    poll = largest.phases["poll"]
    lines = cost_model(poll.aws, 1, invocations=poll.invocations, memory_mb=worker)
    per_poll = sum(line.quantity * line.unit_price for line in lines)
    per_month = per_poll * 30 * 86400 / POLL_EVERY_S
    print(
        f"modelled cost of a poll of an unchanged calendar: ${per_poll * 1_000_000:.2f} per million polls;"
        f" ${per_month:.5f} per connection-month at one poll per {POLL_EVERY_S} s"
        " (settings.calendar_poll_after_s; a queued job's SendMessage not included)"
    )


def main() -> None:
    sizes = sizes_from_env()
    print(
        "calendar sync both ways on the Google Calendar emulator (local stack; worker handler, engine,"
        f" CursorLoop, stores on moto), N in {sizes}"
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    logging.getLogger("crmsync").setLevel(logging.WARNING)
    out = sys.stdout

    def say(line: str) -> None:
        print(line, file=out, flush=True)

    with contextlib.redirect_stdout(io.StringIO()):  # the handlers' JSON logs
        runs = run(sizes, say)
    print_table(runs)
    print_targets(runs)
    print_costs(runs[-1])

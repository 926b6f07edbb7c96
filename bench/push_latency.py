"""Latency from a Gmail push reaching the webhook to the CRM's event on the bus, over P pushes
(BENCH_PUSHES, 200 by default), one new message each, one after the other.

The whole local stack: the API served over HTTP (local/http.py), the Google emulator on loopback,
a Gmail account connected through OAuth as a user would. Each push is the emulator's Pub/Sub
POST (OIDC-signed) to /webhooks/gmail -> GmailPushFunction -> the FIFO sync queue -> the stack's
SQS poller -> SyncWorkerFunction -> EventBridge. Two end points are timed from the push's start:
"bus" when the PutEvents carrying the message's MessageSynced returned (the event is on the bus),
and "tap" when the stack's events tap (a rule on the bus to a queue, polled) handed it over, as a
CRM's own target would see it. The local pollers wait up to 0.1 s each when their queue is empty
(Lambda's SQS event source long-polls): a harness delay on top of the service's own time."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import requests

from bench.common import TARGET_PUSH_P99_S, AwsMeter, mark
from local.__main__ import local_parameters
from local.browser import ConsentBrowser
from local.devissuer import DevIssuer
from local.emulators.servers import start_emulators
from local.http import LocalServer
from local.stack import LocalStack

PUSHES = 200
CONTACT = "carla@client.test"


@dataclass
class Latencies:
    pushes: int
    bus: list[float]
    tap: list[float]
    worker_invocations: int


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def _mail(address: str, subject: str) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = CONTACT, address, subject
    mail["Date"] = "Mon, 23 Nov 2026 09:00:00 +0000"
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@client.test>"
    mail.set_content("Can we meet on Tuesday?\n-- \nCarla")
    return mail.as_bytes()


class _Api:
    def __init__(self, base: str, issuer: DevIssuer) -> None:
        self.base, self.issuer, self.http = base, issuer, requests.Session()

    def call(self, method: str, path: str, token: str, **kwargs: Any) -> Any:
        answer = self.http.request(
            method, self.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs
        )
        if answer.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()


@dataclass
class GmailStack:
    stack: LocalStack
    emulators: Any
    server: LocalServer
    tenant: str
    address: str
    account_id: str


@contextlib.contextmanager
def connected_gmail_stack(meter: AwsMeter) -> Iterator[GmailStack]:
    """The local stack served over HTTP with the provider emulators, a tenant with a contact,
    and one Gmail account connected through OAuth as a user would; AWS metered."""
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as state:
        emulators = start_emulators(Path(state) / "emulators")
        server = LocalServer(None, port=0)
        issuer = DevIssuer(key_dir=Path(state) / "issuer")
        try:
            with (
                LocalStack(
                    issuer=issuer,
                    run_schedules=False,
                    parameters=local_parameters(server.url, emulators),
                ) as stack,
                meter.installed(),
            ):
                stack.set_secret("OAuthClientSecret", json.dumps(emulators.oauth_clients()))
                server.api.attach(stack)
                server.start()
                api = _Api(server.url, issuer)
                tenant = f"bench-{uuid.uuid4().hex[:8]}"
                crm = issuer.mint(tenant, "crm", "service")
                api.call("PUT", "/v1/directory/settings", crm, json={"plan": "advanced"})
                api.call("PUT", "/v1/directory/contacts/c1", crm, json={"name": "Carla", "emails": [CONTACT]})
                user = issuer.mint(tenant, "u1", "member")
                address = f"inbox-{uuid.uuid4().hex[:8]}@gmail.test"
                started = api.call("POST", "/v1/accounts/connect", user, json={"provider": "google"})
                result, _ = ConsentBrowser(str(emulators.ca_bundle)).consent(
                    started["authorization_url"], address
                )
                if result.get("status") == "confirm_required":
                    account = api.call(
                        "POST",
                        "/v1/accounts/connect/confirm",
                        user,
                        json={"confirmation": result["confirmation"]},
                    )
                    account_id = account["account_id"]
                elif result.get("status") == "connected":
                    account_id = result["account_id"]
                else:
                    raise RuntimeError(f"the bench's Gmail account did not connect: {result}")
                yield GmailStack(stack, emulators, server, tenant, address, account_id)
        finally:
            server.stop()
            emulators.stop()


def run(pushes: int = PUSHES) -> Latencies:
    meter = AwsMeter()
    on_bus: dict[str, float] = {}
    lock = threading.Lock()

    def published(service: str, operation: str, params: dict[str, Any], _: Any) -> None:
        if service != "events" or operation != "PutEvents":
            return
        now = time.perf_counter()
        for entry in params.get("Entries") or []:
            if entry.get("DetailType") == "MessageSynced":
                subject = json.loads(entry.get("Detail") or "{}").get("subject")
                with lock:
                    on_bus.setdefault(str(subject), now)

    meter.listeners.append(published)
    with connected_gmail_stack(meter) as env:
        stack, address = env.stack, env.address
        google = env.emulators.google
        webhook = f"{env.server.url}/webhooks/gmail"
        worker = stack.functions["SyncWorkerFunction"]
        invocations_before = worker.invocations
        bus: list[float] = []
        tap: list[float] = []
        for n in range(pushes + 1):  # the first one warms the functions up: not counted
            subject = f"Meeting {n} {uuid.uuid4().hex[:6]}"
            google.gmail.arrive(address, _mail(address, subject))
            history = google.gmail.mailbox(address).history_id
            began = time.perf_counter()
            status = google.deliver_push(webhook, address, history, message_id=f"bench-{subject}")
            if status != 204:
                raise RuntimeError(f"the webhook answered {status}")
            stack.wait_for_event(
                lambda e, s=subject: e.get("detail", {}).get("subject") == s,  # type: ignore[misc]
                timeout=30,
            )
            arrived = time.perf_counter()
            if n:
                with lock:
                    bus.append(on_bus[subject] - began)
                tap.append(arrived - began)
        return Latencies(pushes, bus, tap, worker.invocations - invocations_before)


def main() -> None:
    pushes = int(os.environ.get("BENCH_PUSHES", PUSHES))
    print(
        f"latency from a Gmail push reaching the webhook to the CRM event, {pushes} pushes of one new"
        " message each (local stack over HTTP: webhook -> FIFO queue -> worker -> EventBridge)"
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request
    logging.getLogger("crmsync").setLevel(logging.WARNING)  # the handlers' JSON info logs
    with contextlib.redirect_stdout(io.StringIO()):  # the handlers' JSON logs
        result = run(pushes)
    print(f"{'to':26} {'p50 s':>7} {'p99 s':>7} {'max s':>7} {'mean s':>7}")
    for name, values in (
        ("the bus (PutEvents done)", result.bus),
        ("the events tap (a target)", result.tap),
    ):
        print(
            f"{name:26} {percentile(values, 50):7.3f} {percentile(values, 99):7.3f} {max(values):7.3f}"
            f" {statistics.mean(values):7.3f}"
        )
    p99 = percentile(result.bus, 99)
    print(
        f"worker invocations: {result.worker_invocations} for {result.pushes + 1} pushes;"
        f" target: p99 to the bus {p99:.3f} s <= {TARGET_PUSH_P99_S} s {mark(p99 <= TARGET_PUSH_P99_S)}"
        " (the local SQS poller adds up to 0.1 s, the tap's poller up to 0.1 s more)"
    )

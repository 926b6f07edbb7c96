"""Incremental Gmail sync of N new messages: what it asks of Gmail and of AWS per message, and
how long the worker takes next to the least a store of them costs (the bare store).

The Google emulator serves on loopback (a WSGI wrapper counts the HTTP requests that reach it;
the calls inside batch requests are counted by the emulator). The worker is the sync core's real
CursorLoop with the real GmailHistorySource, engine and stores on moto, built from template.yaml
by the local stack. AWS requests are counted on every boto3 client (bench/common.py: requests,
DynamoDB units by item size, events). Baselines, on the same messages in the same run: the bare
fetch (history.list plus batch gets of 50 with the same google-api-python-client, nothing
stored) and the bare store (the bare fetch, then one S3 put per message and one DynamoDB item
per message in BatchWriteItem of 25, on the same moto)."""

from __future__ import annotations

import base64
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from werkzeug.serving import WSGIRequestHandler, make_server

from bench.common import (
    TARGET_DYNAMODB_PER_MSG,
    TARGET_EVENTS_PER_MSG,
    TARGET_WORKER_VS_BARE_STORE,
    AwsMeter,
    BareStore,
    Usage,
    cost_model,
    dynamodb_line,
    mark,
    print_cost,
    worker_memory_mb,
)
from local.emulators.google import GoogleEmulator
from local.moto_patch import moto_transactions_without_table_copies
from local.stack import LocalStack

SIZES = (100, 1000)
CONTACT = "carla@client.test"


class _Quiet(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # thousands of requests: no access log


class CountingApp:
    """The emulator's WSGI app, counting the HTTP requests that reach it by path kind."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        kind = "batch" if path.startswith("/batch") else path.rsplit("/", 1)[-1] or path
        with self._lock:
            self.counts[kind] += 1
        return self.app(environ, start_response)

    def snapshot(self) -> Counter[str]:
        with self._lock:
            return Counter(self.counts)


@dataclass
class Row:
    n: int
    history_lists: int
    batches: int
    inner: int
    http: int
    aws: Usage
    worker_s: float
    bare_s: float  # fetch only
    store_s: float  # fetch + the bare store
    store_aws: Usage


def _message(address: str, n: int) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = CONTACT, address, f"Order {n}"
    mail["Date"] = "Mon, 23 Nov 2026 09:00:00 +0000"
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@client.test>"
    mail.set_content(f"Order {n}: 3 boxes, delivery next week.\n-- \nCarla")
    return mail.as_bytes()


def bare_fetch(token: str, base: str, start: str) -> list[bytes]:
    """history.list from `start`, then the added messages in raw format, 50 per batch."""
    from googleapiclient.http import BatchHttpRequest

    from crmsync.providers.google.gmail import HISTORY_TYPES, gmail_service

    gmail = gmail_service(token, base)
    ids: dict[str, None] = {}
    page_token = None
    while True:
        page = (
            gmail.users()
            .history()
            .list(
                userId="me",
                startHistoryId=start,
                historyTypes=HISTORY_TYPES,
                pageToken=page_token,
                maxResults=500,
            )
            .execute()
        )
        for record in page.get("history", []):
            ids.update(dict.fromkeys(a["message"]["id"] for a in record.get("messagesAdded", [])))
        if not (page_token := page.get("nextPageToken")):
            break
    fetched: list[bytes] = []

    def got(_: str, response: Any, error: Exception | None) -> None:
        if error is not None:
            raise error
        fetched.append(base64.urlsafe_b64decode(response["raw"] + "=" * (-len(response["raw"]) % 4)))

    listed = list(ids)
    for start_at in range(0, len(listed), 50):
        batch = BatchHttpRequest(callback=got, batch_uri=f"{base}/batch")
        for message_id in listed[start_at : start_at + 50]:
            batch.add(gmail.users().messages().get(userId="me", id=message_id, format="raw"))
        batch.execute()
    return fetched


class Bench:
    def __init__(
        self, stack: LocalStack, google: GoogleEmulator, counting: CountingApp, base: str, aws: AwsMeter
    ) -> None:
        self.google, self.counting, self.base, self.aws = google, counting, base, aws
        from crmsync.accounts.models import Account, AccountSettings
        from crmsync.auth import Principal
        from crmsync.directory import ContactEntry
        from crmsync.providers.google.gmail import GmailHistorySource
        from crmsync.settings import get_settings
        from crmsync.stores.cursors import DynamoCursorStore

        services = stack.services
        self.tenant = f"bench-{uuid.uuid4().hex[:8]}"
        admin = Principal(tenant_id=self.tenant, user_id="admin", role="admin")
        services.directory().upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=[CONTACT]))
        self.cursors = DynamoCursorStore(get_settings().cursors_table)
        self.sync = services.mailbox_sync()
        self.bare_store = BareStore(stack)
        self.tokens: dict[str, str] = {}
        self.source = GmailHistorySource(lambda account_id: self.tokens[account_id], base)
        self._account = Account
        self._settings = AccountSettings

    def mailbox(self, n: int) -> tuple[Any, str, str]:
        """A fresh mailbox whose account's cursor is just before `n` new messages."""
        address = f"bench-{uuid.uuid4().hex[:8]}@gmail.test"
        now = datetime.now(UTC)
        account = self._account(
            account_id=f"acc-{uuid.uuid4().hex[:12]}",
            tenant_id=self.tenant,
            user_id="u1",
            provider="google",
            purpose="both",
            address=address,
            status="connected",
            settings=self._settings(),
            connected_at=now,
            updated_at=now,
        )
        self.tokens[account.account_id] = self.google.issue_access_token(address)
        start = str(self.google.gmail.mailbox(address).history_id)
        self.cursors.advance(account.account_id, "mail", start, expected=None)
        for i in range(n):
            self.google.gmail.arrive(address, _message(address, i))
        return account, address, start

    def measure(self, n: int, repeats: int) -> Row:
        rows: list[Row] = []
        for _ in range(repeats):
            account, address, start = self.mailbox(n)
            token = self.tokens[account.account_id]
            box = self.google.gmail.mailbox(address)
            bare_times = []
            for _ in range(3):  # read-only: the same messages, three times; the median counts
                began = time.perf_counter()
                assert len(bare_fetch(token, self.base, start)) == n
                bare_times.append(time.perf_counter() - began)
            store_times = []
            store_aws = Usage()
            for _ in range(3):  # the bare store: fetch, then store under keys of its own each time
                before = self.aws.snapshot()
                began = time.perf_counter()
                assert self.bare_store.store(bare_fetch(token, self.base, start)) == n
                store_times.append(time.perf_counter() - began)
                store_aws = self.aws.snapshot() - before
            http_before, aws_before = self.counting.snapshot(), self.aws.snapshot()
            calls_before, batches_before = len(box.requests), len(box.batches)
            began = time.perf_counter()
            result = self.sync.run(account, self.source)
            worker_s = time.perf_counter() - began
            if result.synced != n:
                raise RuntimeError(f"the worker synced {result.synced} of {n} messages ({result})")
            http = self.counting.snapshot() - http_before
            calls = box.requests[calls_before:]
            rows.append(
                Row(
                    n=n,
                    history_lists=calls.count("gmail.users.history.list"),
                    batches=len(box.batches) - batches_before,
                    inner=sum(box.batches[batches_before:]),
                    http=sum(http.values()),
                    aws=self.aws.snapshot() - aws_before,
                    worker_s=worker_s,
                    bare_s=statistics.median(bare_times),
                    store_s=statistics.median(store_times),
                    store_aws=store_aws,
                )
            )
        rows.sort(key=lambda r: r.worker_s / r.store_s)
        return rows[len(rows) // 2]  # the median run by ratio


def run(sizes: Iterable[int] = SIZES, say: Callable[[str], None] = print) -> list[Row]:
    google = GoogleEmulator()
    counting = CountingApp(google)
    server = make_server("127.0.0.1", 0, counting, threaded=True, request_handler=_Quiet)
    serving = threading.Thread(target=server.serve_forever, name="bench:google", daemon=True)
    serving.start()
    base = f"http://127.0.0.1:{server.server_port}"
    meter = AwsMeter()
    try:
        with (
            moto_transactions_without_table_copies(),
            LocalStack(  # no events tap: moto's rule matching would be counted as the worker's time
                run_schedules=False, tap_events=False, parameters={"GmailApiBase": base}
            ) as stack,
            meter.installed(),
        ):
            bench = Bench(stack, google, counting, base, meter)
            bench.measure(5, 1)  # warm-up: imports, discovery document, clients
            rows = []
            for n in sizes:
                say(f"  N={n} ...")  # N=1000 takes minutes on moto
                rows.append(bench.measure(n, repeats=3 if n <= 10 else 1))
            return rows
    finally:
        google.close()
        server.shutdown()
        serving.join(timeout=5)


def sizes_from_env() -> tuple[int, ...]:
    import os

    given = os.environ.get("BENCH_SYNC_SIZES", "")
    return tuple(int(n) for n in given.split(",") if n.strip()) or SIZES


def main() -> None:
    print(
        "incremental Gmail sync of N new messages (emulator on loopback; CursorLoop, engine, stores on moto)"
    )
    print("(moto's whole-table copy per transaction is replaced by a per-item backup: linear, same answers)")
    rows = run(sizes_from_env())
    print_table(rows)
    largest = rows[-1]
    print_cost(
        f"modelled cost per million messages synced by Gmail (from the N={largest.n} run, one worker"
        " invocation per run)",
        cost_model(largest.aws, largest.n, invocations=1, memory_mb=worker_memory_mb()),
    )


def print_table(rows: list[Row]) -> None:
    print(
        f"{'N':>5} {'hist.list':>9} {'batches':>7} {'HTTP/msg':>8}"
        f" {'DDB/msg':>7} {'EB/msg':>6} {'S3/msg':>6} {'SQS':>4}"
        f" {'worker s':>8} {'bare s':>7} {'store s':>7} {'x bare':>6} {'x store':>7}"
    )
    for r in rows:
        print(
            f"{r.n:5d} {r.history_lists:9d} {r.batches:7d} {r.http / r.n:8.2f}"
            f" {r.aws['dynamodb'] / r.n:7.2f} {r.aws['events'] / r.n:6.2f} {r.aws['s3'] / r.n:6.2f}"
            f" {r.aws['sqs']:4d} {r.worker_s:8.2f} {r.bare_s:7.3f} {r.store_s:7.3f}"
            f" {r.worker_s / r.bare_s:6.1f} {r.worker_s / r.store_s:7.2f}"
        )
    print(
        "HTTP/msg: Gmail requests on the wire (history.list + batch); DDB/msg: DynamoDB requests;"
        " EB/msg: EventBridge requests; S3/msg: S3 requests; SQS: the worker's SQS requests;"
        " x bare: worker s / bare fetch s; x store: worker s / bare store s (fetch + 1 S3 put and"
        " 1 DynamoDB item per message in BatchWriteItem of 25), medians of 3"
    )
    largest = rows[-1]
    aws, n = largest.aws, largest.n
    print(dynamodb_line(aws, n))
    print(
        f"EventBridge at N={n}: {aws['events']} PutEvents requests carrying {aws.events} events"
        " (billed by event)"
    )
    print(
        f"bare store at N={n}: {largest.store_aws['dynamodb']} DynamoDB requests,"
        f" {largest.store_aws['s3']} S3 requests"
    )
    print(
        f"targets at N={n}: DynamoDB/msg {aws['dynamodb'] / n:.2f} <= {TARGET_DYNAMODB_PER_MSG}"
        f" {mark(aws['dynamodb'] / n <= TARGET_DYNAMODB_PER_MSG)};"
        f" EventBridge requests/msg {aws['events'] / n:.3f} <= {TARGET_EVENTS_PER_MSG}"
        f" {mark(aws['events'] / n <= TARGET_EVENTS_PER_MSG)};"
        f" worker/bare store {largest.worker_s / largest.store_s:.2f} <= {TARGET_WORKER_VS_BARE_STORE}"
        f" {mark(largest.worker_s / largest.store_s <= TARGET_WORKER_VS_BARE_STORE)}"
    )

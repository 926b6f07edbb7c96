"""A back-import of N messages (BENCH_IMPORT_N, 1,000 by default so that `make bench` stays
within minutes on moto; issue 10's 20,000 is `BENCH_IMPORT_N=20000 .venv/bin/python -m bench
back_import`) through the resync state machine's pages, with the Resync function's memory per
invocation.

The local stack with the Google emulator and a Gmail account connected through OAuth; N messages
in its mailbox. The bench runs the state machine's loop itself (begin, page until done, finish,
each one invocation of the real ResyncFunction handler, as Step Functions' Lambda tasks would),
so each page is measured alone: tracemalloc's peak of what the invocation allocated, traced from
its start (the first two pages and every fifth: tracing is slow). moto keeps every
stored item in this process, so the process's own size grows with N; the per-invocation peak is
the worker's working set, and stays flat if the import streams page by page."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from bench.common import AwsMeter
from bench.push_latency import CONTACT, connected_gmail_stack

IMPORT_N = 1000
SAMPLE_EVERY = 5  # pages traced: the first two and every fifth


@dataclass
class ImportRun:
    n: int
    imported: int
    pages: int
    invocations: int
    seconds: float
    peaks_kb: list[float]  # per page invocation
    aws_requests: int


def _mail(address: str, n: int) -> bytes:
    mail = EmailMessage()
    mail["From"], mail["To"], mail["Subject"] = CONTACT, address, f"Old order {n}"
    mail["Date"] = "Mon, 02 Nov 2026 09:00:00 +0000"
    mail["Message-ID"] = f"<{uuid.uuid4().hex}@client.test>"
    mail.set_content(f"Order {n}: 3 boxes, delivery next week.\n-- \nCarla")
    return mail.as_bytes()


def run(n: int = IMPORT_N) -> ImportRun:
    meter = AwsMeter()
    with connected_gmail_stack(meter) as env:
        for i in range(n):
            env.emulators.google.gmail.arrive(env.address, _mail(env.address, i))
        resync = env.stack.functions["ResyncFunction"]
        job: dict[str, Any] = {
            "tenant_id": env.tenant,
            "user_id": "u1",
            "account_id": env.account_id,
            "kind": "mail_import",
            "since": (datetime.now(UTC) - timedelta(days=30)).isoformat(),
            "request_id": f"bench-{uuid.uuid4().hex[:8]}",
        }
        before = resync.invocations
        requests_before = meter.snapshot().total()
        peaks: list[float] = []
        began = time.perf_counter()
        job = resync.invoke({"step": "begin", "job": job})
        page = 0
        while not job.get("done"):
            if page < 2 or page % SAMPLE_EVERY == 0:
                tracemalloc.start()  # traced while this page runs only: tracing slows moto down
                try:
                    job = resync.invoke({"step": "page", "job": job})
                    peaks.append(tracemalloc.get_traced_memory()[1] / 1024)
                finally:
                    tracemalloc.stop()
            else:
                job = resync.invoke({"step": "page", "job": job})
            page += 1
        job = resync.invoke({"step": "finish", "job": job})
        seconds = time.perf_counter() - began
        return ImportRun(
            n=n,
            imported=int(job.get("items", 0)),
            pages=int(job.get("pages", 0)),
            invocations=resync.invocations - before,
            seconds=seconds,
            peaks_kb=peaks,
            aws_requests=meter.snapshot().total() - requests_before,
        )


def main() -> None:
    n = int(os.environ.get("BENCH_IMPORT_N", IMPORT_N))
    print(
        f"back-import of {n} Gmail messages through the resync state machine's pages"
        " (local stack; begin, page..., finish as ResyncFunction invocations)"
    )
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    logging.getLogger("crmsync").setLevel(logging.WARNING)  # the handlers' JSON info logs
    with contextlib.redirect_stdout(io.StringIO()):
        result = run(n)
    peaks = result.peaks_kb
    third = max(1, len(peaks) // 3)
    print(
        f"imported {result.imported} of {result.n} in {result.pages} pages, {result.invocations}"
        f" ResyncFunction invocations, {result.seconds:.1f} s on moto"
        f" ({result.aws_requests / max(1, result.imported):.2f} AWS requests per message)"
    )
    print(
        f"peak memory per page invocation ({len(peaks)} traced, tracemalloc): max {max(peaks):.0f} KiB;"
        f" first third max {max(peaks[:third]):.0f} KiB, last third max {max(peaks[-third:]):.0f} KiB"
        " (flat: bounded by the page, not by N)"
    )
    print(f"done: {'ok' if result.imported == result.n else 'MISSED'} (every message imported)")

"""Cold start of each function, two figures, each in a fresh Python process:

- import + init: the handler module is imported and builds what it builds at import, as Lambda's
  init phase does;
- + first call: then the handler answers one typical request (below), in the same process, as
  the first invocation of a new instance does. Work moved out of import (lazy imports, services
  built on first use) shows here: this is what a cold request waits for.

The first calls reach AWS as a deployed function would, over HTTP: a moto server serves the local
stack's resources (built from template.yaml) on loopback, and each process has AWS_ENDPOINT_URL
pointing at it, so it imports and builds exactly what a real call needs (no moto in the process).
The baseline is a fresh process that only runs `import boto3`, measured in the same run,
interleaved. Figures are medians of BENCH_COLD_REPEATS (7) runs."""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import TARGET_COLD_START, mark
from local.stack import ACCOUNT, REGION, LocalStack

ROOT = Path(__file__).resolve().parent.parent

_CHILD = """
import importlib.util, json, sys, time
started = time.perf_counter()
target = sys.argv[1]
if target == "boto3":
    import boto3
    print(json.dumps({"init_ms": (time.perf_counter() - started) * 1000}))
    sys.exit(0)
spec = importlib.util.spec_from_file_location("app", target)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
init_ms = (time.perf_counter() - started) * 1000
event = json.loads(open(sys.argv[2]).read())

class Context:
    function_name = sys.argv[3]
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + sys.argv[3]
    memory_limit_in_mb = 1024
    aws_request_id = "bench-cold-start"
    log_group_name = "/aws/lambda/" + sys.argv[3]
    log_stream_name = "bench"
    def get_remaining_time_in_millis(self):
        return 60000

result = module.handler(event, Context())
first_ms = (time.perf_counter() - started) * 1000
status = result.get("statusCode") if isinstance(result, dict) else None
print(json.dumps({"init_ms": init_ms, "first_ms": first_ms, "status": status}))
"""


@dataclass
class Figure:
    name: str
    init_ms: float
    first_ms: float
    status: Any
    call: str


def _claims(stack: LocalStack, role: str) -> dict[str, str]:
    token = stack.issuer.mint("bench-tenant", "bench-user", role)
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return {k: str(v) for k, v in claims.items()}


def _http(
    stack: LocalStack,
    method: str,
    path: str,
    role: str | None,
    query: str = "",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTP API (payload 2.0) event as API Gateway hands it over after its JWT authorizer."""
    context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": "bench",
        "domainName": "bench.execute-api.us-east-1.amazonaws.com",
        "domainPrefix": "bench",
        "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1"},
        "requestId": str(uuid.uuid4()),
        "routeKey": f"{method} {path}",
        "stage": "$default",
        "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
        "timeEpoch": int(time.time() * 1000),
    }
    if role is not None:
        context["authorizer"] = {"jwt": {"claims": _claims(stack, role), "scopes": None}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": f"{method} {path}",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"content-type": "application/json", **(headers or {})},
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(part.split("=", 1) for part in query.split("&"))
    if body is not None:
        event["body"] = body
    return event


def first_calls(stack: LocalStack) -> dict[str, tuple[str, dict[str, Any]]]:
    """One typical first request per function (what it is, the event)."""
    queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:bench"
    job = {"type": "mail.sync", "tenant_id": "bench-tenant", "account_id": "acc-unknown"}
    sqs_record = {
        "messageId": str(uuid.uuid4()),
        "receiptHandle": "bench",
        "body": json.dumps(job),
        "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": "acc-unknown"},
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }
    resync_job = {
        "tenant_id": "bench-tenant",
        "user_id": "bench-user",
        "account_id": f"acc-{uuid.uuid4().hex[:8]}",
        "kind": "mail_import",
    }
    scheduled = {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "region": REGION,
        "resources": [],
        "detail": {},
    }
    return {
        "HealthFunction": ("GET /health", _http(stack, "GET", "/health", None)),
        "DirectoryFunction": (
            "GET /v1/directory/lookup",
            _http(stack, "GET", "/v1/directory/lookup", "member", "address=ann@example.com"),
        ),
        "AccountsFunction": ("GET /v1/accounts", _http(stack, "GET", "/v1/accounts", "member")),
        "ActivitiesFunction": (
            "GET /v1/activities/{id} (unknown)",
            _http(stack, "GET", "/v1/activities/a-unknown", "service"),
        ),
        "OAuthCallbackFunction": (
            "GET /oauth/google/callback (unknown state)",
            _http(stack, "GET", "/oauth/google/callback", None, "state=bench&code=bench"),
        ),
        "GmailPushFunction": (
            "POST /webhooks/gmail (no token: refused)",
            _http(stack, "POST", "/webhooks/gmail", None, body='{"message": {}}'),
        ),
        "GraphNotifyFunction": (
            "POST /webhooks/graph (validation)",
            _http(stack, "POST", "/webhooks/graph", None, "validationToken=bench"),
        ),
        "MailboxFunction": ("GET /v1/threads", _http(stack, "GET", "/v1/threads", "member")),
        "SendMailFunction": (
            "POST /v1/threads/{id}/archive (unknown)",
            _http(stack, "POST", "/v1/threads/t-unknown/archive", "member"),
        ),
        "SyncWorkerFunction": ("SQS mail.sync (unknown account)", {"Records": [sqs_record]}),
        "SchedulerFunction": ("Scheduled Event (due work)", scheduled),
        "ResyncFunction": ("resync step begin", {"step": "begin", "job": resync_job}),
    }


def _measure(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *args], env=env, capture_output=True, text=True, cwd=ROOT
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold start of {args[0]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(repeats: int = 7) -> tuple[float, list[Figure]]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log per request

    with (
        tempfile.TemporaryDirectory(prefix="bench-cold-") as scratch,
        LocalStack(run_schedules=False) as stack,
    ):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()  # serves the stack's moto backends over HTTP
        try:
            host, port = server.get_host_and_port()
            base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "POWERTOOLS_"))}
            base_env.update(
                {
                    "AWS_DEFAULT_REGION": REGION,
                    "AWS_REGION": REGION,
                    "AWS_ACCESS_KEY_ID": "bench",
                    "AWS_SECRET_ACCESS_KEY": "bench",
                    "PYTHONPATH": str(ROOT / "shared"),
                    "PYTHONDONTWRITEBYTECODE": "",
                }
            )
            calls = first_calls(stack)
            functions: dict[str, tuple[list[str], dict[str, str], str]] = {}
            for logical_id, runtime in stack.functions.items():
                what, event = calls[logical_id]
                event_file = Path(scratch) / f"{logical_id}.json"
                event_file.write_text(json.dumps(event))
                path = runtime.code_dir / f"{runtime.handler.rpartition('.')[0]}.py"
                env = {
                    **base_env,
                    **runtime.environment,
                    "AWS_ENDPOINT_URL": f"http://{host}:{port}",
                    "AWS_LAMBDA_FUNCTION_NAME": runtime.name,
                    "POWERTOOLS_LOG_LEVEL": "ERROR",
                }
                functions[logical_id] = ([str(path), str(event_file), runtime.name], env, what)
            baseline: list[float] = []
            samples: dict[str, list[dict[str, Any]]] = {name: [] for name in functions}
            for _ in range(repeats):  # interleaved, so drift on the machine hits every figure alike
                baseline.append(_measure(["boto3"], base_env)["init_ms"])
                for name, (args, env, _) in functions.items():
                    samples[name].append(_measure(args, env))
        finally:
            server.stop()
    figures = [
        Figure(
            name,
            statistics.median(s["init_ms"] for s in runs),
            statistics.median(s["first_ms"] for s in runs),
            runs[-1]["status"],
            functions[name][2],
        )
        for name, runs in samples.items()
    ]
    return statistics.median(baseline), figures


def main() -> None:
    repeats = int(os.environ.get("BENCH_COLD_REPEATS", "7"))
    baseline, figures = run(repeats)
    print(
        f"cold start: fresh process; import + init, and + the first call against AWS over HTTP"
        f" (a moto server); median of {repeats}"
    )
    print(
        f"{'function':24} {'init ms':>8} {'x boto3':>8} {'+call ms':>9} {'x boto3':>8}  first call (status)"
    )
    print(f"{'import boto3 (baseline)':24} {baseline:8.1f} {1:8.2f}")
    worst_init = worst_first = 0.0
    for f in figures:
        worst_init, worst_first = (
            max(worst_init, f.init_ms / baseline),
            max(worst_first, f.first_ms / baseline),
        )
        status = f" ({f.status})" if f.status is not None else ""
        print(
            f"{f.name:24} {f.init_ms:8.1f} {f.init_ms / baseline:8.2f} {f.first_ms:9.1f}"
            f" {f.first_ms / baseline:8.2f}  {f.call}{status}"
        )
    print(
        f"target: every cold start <= {TARGET_COLD_START} x import boto3: import + init at most"
        f" {worst_init:.2f} {mark(worst_init <= TARGET_COLD_START)};"
        f" + first call at most {worst_first:.2f} {mark(worst_first <= TARGET_COLD_START)}"
    )

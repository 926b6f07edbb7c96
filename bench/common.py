"""What the benches share: the layer's services of a local stack, a meter of AWS requests (count,
kind, DynamoDB request units by item size), the bare-store baseline, and the cost model."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bench import prices

# Targets, printed next to the figures (ratios and counts measured in the same run)
TARGET_DYNAMODB_PER_MSG = 1.5
TARGET_EVENTS_PER_MSG = 0.15
TARGET_WORKER_VS_BARE_STORE = 1.5
TARGET_PUSH_P99_S = 1.0
TARGET_COLD_START = 1.5

# The local stack's own threads (SQS pollers, the events tap, schedules): their requests are
# the harness's, not the function's under measurement
_HARNESS_THREADS = ("sqs:", "events-tap", "schedule:")


def function_memory_mb(logical_id: str) -> int:
    """A function's MemorySize, as template.yaml gives it (else the Globals')."""
    from local.cfn import load_template
    from local.stack import TEMPLATE

    template = load_template(TEMPLATE)
    own = template["Resources"][logical_id]["Properties"].get("MemorySize")
    return int(own or template["Globals"]["Function"]["MemorySize"])


def worker_memory_mb() -> int:
    """SyncWorkerFunction's MemorySize."""
    return function_memory_mb("SyncWorkerFunction")


def mark(ok: bool) -> str:
    return "ok" if ok else "MISSED"


# ---------------------------------------------------------------------- AWS requests
_WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}
_READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}


def item_size(value: Any) -> int:
    """DynamoDB's item size, estimated: names and values by their bytes (strings UTF-8, numbers
    about half their digits), plus a little per map and list. Client-shaped values ({"S": ...})
    are read as maps, a byte or two high per attribute."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, int | float | Decimal):
        return 1 + (len(str(value)) + 1) // 2
    if isinstance(value, dict):
        return 3 + sum(len(str(k).encode("utf-8")) + item_size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return 3 + sum(item_size(v) for v in value)
    return len(str(value).encode("utf-8"))


def _wcu(size: int) -> int:
    return max(1, math.ceil(size / 1024))


def _rcu(size: int, consistent: bool) -> float:
    units = max(1, math.ceil(size / 4096))
    return float(units) if consistent else units / 2


def _update_size(params: dict[str, Any]) -> int:
    """An update's item size is the whole item after it, which the request does not carry: its
    key and new values are a floor (the figure is low for updates of large items)."""
    return item_size(params.get("Key")) + item_size(params.get("ExpressionAttributeValues"))


def _write_units(operation: str, params: dict[str, Any]) -> float:
    if operation == "PutItem":
        return _wcu(item_size(params.get("Item")))
    if operation == "UpdateItem":
        return _wcu(_update_size(params))
    if operation == "DeleteItem":
        return 1
    if operation == "BatchWriteItem":
        units = 0
        for requests in (params.get("RequestItems") or {}).values():
            for request in requests:
                put = request.get("PutRequest")
                units += _wcu(item_size(put["Item"])) if put else 1
        return units
    if operation == "TransactWriteItems":  # two units per KB, a condition check included
        units = 0
        for entry in params.get("TransactItems") or []:
            if "Put" in entry:
                units += 2 * _wcu(item_size(entry["Put"].get("Item")))
            elif "Update" in entry:
                units += 2 * _wcu(_update_size(entry["Update"]))
            else:
                units += 2
        return units
    return 0


def _read_units(operation: str, params: dict[str, Any], response: Any) -> float:
    consistent = bool(params.get("ConsistentRead"))
    if not isinstance(response, dict):
        return 0.5
    if operation == "GetItem":
        return _rcu(item_size(response.get("Item")) if response.get("Item") else 0, consistent)
    if operation in ("Query", "Scan"):  # one figure for all the items a page returns
        return _rcu(sum(item_size(i) for i in response.get("Items") or []), consistent)
    if operation == "BatchGetItem":
        found = [i for items in (response.get("Responses") or {}).values() for i in items]
        return sum(_rcu(item_size(i), consistent) for i in found) or 0.5
    if operation == "TransactGetItems":
        return sum(2 * _rcu(item_size(r.get("Item")), True) for r in response.get("Responses") or [])
    return 0.0


@dataclass
class Usage:
    """AWS requests by service and by (service, operation), DynamoDB units, events, S3 kinds."""

    requests: Counter[str] = field(default_factory=Counter)
    operations: Counter[str] = field(default_factory=Counter)
    write_units: float = 0.0
    read_units: float = 0.0
    events: int = 0  # EventBridge entries (each one billed event up to 64 KB)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.requests - other.requests,
            self.operations - other.operations,
            self.write_units - other.write_units,
            self.read_units - other.read_units,
            self.events - other.events,
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.requests + other.requests,
            self.operations + other.operations,
            self.write_units + other.write_units,
            self.read_units + other.read_units,
            self.events + other.events,
        )

    def copy(self) -> Usage:
        return Usage(
            Counter(self.requests),
            Counter(self.operations),
            self.write_units,
            self.read_units,
            self.events,
        )

    def __getitem__(self, service: str) -> int:
        return self.requests[service]

    def total(self) -> int:
        return sum(self.requests.values())

    def s3_puts(self) -> int:
        return sum(n for op, n in self.operations.items() if op.startswith("s3.") and _s3_put_tier(op))

    def s3_gets(self) -> int:
        return self.requests["s3"] - self.s3_puts()

    def top(self, service: str) -> str:
        ops = sorted(
            ((op.split(".", 1)[1], n) for op, n in self.operations.items() if op.startswith(service + ".")),
            key=lambda item: -item[1],
        )
        return ", ".join(f"{op} {n}" for op, n in ops)


def _s3_put_tier(operation: str) -> bool:
    name = operation.split(".", 1)[1]
    return name.startswith(("Put", "Copy", "List", "Create", "Complete", "Upload", "Post"))


class AwsMeter:
    """Counts every boto3 request made in this process (botocore's BaseClient._make_api_call),
    except the local stack's harness threads. One request per API call: retries not included."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._lock = threading.Lock()
        # called after every request of any thread: (service, operation, params, response)
        self.listeners: list[Callable[[str, str, dict[str, Any], Any], None]] = []

    def snapshot(self) -> Usage:
        with self._lock:
            return self.usage.copy()

    @contextmanager
    def installed(self) -> Iterator[AwsMeter]:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call  # type: ignore[attr-defined]
        meter = self

        def counted(client: Any, operation: str, params: dict[str, Any]) -> Any:
            response = original(client, operation, params)
            service = client.meta.service_model.service_name
            if not threading.current_thread().name.startswith(_HARNESS_THREADS):
                meter._count(service, operation, params, response)
            for listener in meter.listeners:
                listener(service, operation, params, response)
            return response

        BaseClient._make_api_call = counted  # type: ignore[attr-defined]
        try:
            yield self
        finally:
            BaseClient._make_api_call = original  # type: ignore[attr-defined]

    def _count(self, service: str, operation: str, params: dict[str, Any], response: Any) -> None:
        write = _write_units(operation, params) if service == "dynamodb" and operation in _WRITES else 0
        read = (
            _read_units(operation, params, response) if service == "dynamodb" and operation in _READS else 0
        )
        with self._lock:
            self.usage.requests[service] += 1
            self.usage.operations[f"{service}.{operation}"] += 1
            self.usage.write_units += write
            self.usage.read_units += read
            if service == "events" and operation == "PutEvents":
                self.usage.events += len(params.get("Entries") or [])


# ---------------------------------------------------------------------- the bare-store baseline
class BareStore:
    """What storing N fetched messages costs at the least: one S3 put and one DynamoDB item per
    message, the items in BatchWriteItem of 25 (unprocessed items resent), in the stack's data
    bucket and messages table, under keys of their own."""

    def __init__(self, stack: Any) -> None:
        import boto3

        self.bucket = stack.buckets["DataBucket"]
        self.table = stack.tables["MessagesTable"]
        self.s3 = boto3.client("s3")
        self.dynamodb = boto3.client("dynamodb")
        schema = self.dynamodb.describe_table(TableName=self.table)["Table"]
        types = {a["AttributeName"]: a["AttributeType"] for a in schema["AttributeDefinitions"]}
        self.keys = [(k["AttributeName"], types[k["AttributeName"]]) for k in schema["KeySchema"]]

    def store(self, raws: Iterable[bytes]) -> int:
        run = uuid.uuid4().hex[:12]
        items: list[dict[str, Any]] = []
        for n, raw in enumerate(raws):
            key = f"bare/{run}/{n}"
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=raw)
            item: dict[str, Any] = {
                name: ({"S": f"{key}#{name}"} if kind == "S" else {"N": str(n)}) for name, kind in self.keys
            }
            item["raw_key"] = {"S": key}
            item["size"] = {"N": str(len(raw))}
            items.append(item)
        for start in range(0, len(items), 25):
            pending: dict[str, Any] = {
                self.table: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]
            }
            while pending:
                pending = self.dynamodb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}
        return len(items)


# ---------------------------------------------------------------------- the cost model
@dataclass
class CostLine:
    what: str
    quantity: float  # per message
    unit_price: float

    @property
    def per_million(self) -> float:
        return self.quantity * self.unit_price * 1_000_000


def cost_model(
    usage: Usage, messages: int, invocations: float, memory_mb: int, fifo_queue: bool = True
) -> list[CostLine]:
    """Per message, from what a run measured: AWS requests times prices.py's prices; the Lambda
    seconds modelled from the requests (prices.ASSUMED_MS_PER_REQUEST), not moto's seconds."""
    per = 1 / messages
    seconds = (
        sum(
            n * prices.ASSUMED_MS_PER_REQUEST.get(service, prices.ASSUMED_MS_OTHER)
            for service, n in usage.requests.items()
        )
        / 1000
    )
    lines = [
        CostLine("Lambda GB-s (modelled)", seconds * memory_mb / 1024 * per, prices.LAMBDA_ARM64_GB_SECOND),
        CostLine("Lambda requests", invocations * per, prices.LAMBDA_REQUEST),
        CostLine("DynamoDB write units", usage.write_units * per, prices.DYNAMODB_WRITE_UNIT),
        CostLine("DynamoDB read units", usage.read_units * per, prices.DYNAMODB_READ_UNIT),
        CostLine("S3 PUT-class requests", usage.s3_puts() * per, prices.S3_PUT),
        CostLine("S3 GET-class requests", usage.s3_gets() * per, prices.S3_GET),
        CostLine("EventBridge events", usage.events * per, prices.EVENTBRIDGE_EVENT),
        CostLine(
            "SQS requests",
            usage["sqs"] * per,
            prices.SQS_FIFO_REQUEST if fifo_queue else prices.SQS_STANDARD_REQUEST,
        ),
        CostLine("KMS requests", usage["kms"] * per, prices.KMS_REQUEST),
        CostLine("Secrets Manager requests", usage["secretsmanager"] * per, prices.SECRETS_MANAGER_REQUEST),
    ]
    return [line for line in lines if line.quantity]


def print_cost(title: str, lines: list[CostLine], unit: str = "msg", units: str = "messages") -> None:
    """`unit`: what the quantities are per (one message, one event...); `units`: its plural."""
    print(f"{title} (AWS {prices.REGION} on-demand list prices of {prices.AS_OF}, bench/prices.py):")
    for line in lines:
        print(
            f"  {line.what:28} {line.quantity:10.4f}/{unit}"
            f" x ${line.unit_price:.10f} = ${line.per_million:9.2f}"
        )
    print(f"  {'total per million ' + units:28} {'':10}{'':17}  ${sum(x.per_million for x in lines):9.2f}")


def dynamodb_line(usage: Usage, n: int) -> str:
    return (
        f"DynamoDB at N={n}: {usage['dynamodb'] / n:.2f} requests/msg"
        f" ({usage.top('dynamodb')}); {usage.write_units / n:.2f} write units/msg,"
        f" {usage.read_units / n:.2f} read units/msg (estimated by item size)"
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)

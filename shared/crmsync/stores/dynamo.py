"""Helpers shared by the DynamoDB stores."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from crmsync.stores.aws import dynamodb


def plain(value: Any) -> Any:
    """DynamoDB returns numbers as Decimal; give back ints and floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def batch_get(table_name: str, keys: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """BatchGetItem in chunks of 100, following UnprocessedKeys with backoff."""
    resource = dynamodb()
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {table_name: {"Keys": list(keys[start : start + 100])}}
        attempt = 0
        while request:
            response = resource.batch_get_item(RequestItems=request)
            found.extend(plain(item) for item in response["Responses"].get(table_name, []))
            request = dict(response.get("UnprocessedKeys") or {})
            if request:
                time.sleep(min(0.05 * 2**attempt, 1.0))
                attempt += 1
    return found


def is_condition_failure(error: Exception) -> bool:
    response = getattr(error, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    if code == "ConditionalCheckFailedException":
        return True
    if code == "TransactionCanceledException":
        reasons = response.get("CancellationReasons") or []
        return any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)
    return False

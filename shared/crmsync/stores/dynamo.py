"""Helpers shared by the DynamoDB stores."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from crmsync.errors import TransientError
from crmsync.stores.aws import dynamodb

BATCH_GET_KEYS = 100  # BatchGetItem: at most 100 keys per call
BATCH_ATTEMPTS = 8  # unprocessed keys are asked for again, with backoff, this many times


def plain(value: Any) -> Any:
    """DynamoDB returns numbers as Decimal; give back ints and floats."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def batch_get(
    table_name: str, keys: Iterable[Mapping[str, Any]], consistent: bool = False
) -> list[dict[str, Any]]:
    """The items at `keys` that exist (duplicate keys asked once), BATCH_GET_KEYS per
    BatchGetItem. Keys DynamoDB leaves unprocessed (throttling) are asked for again with
    backoff, BATCH_ATTEMPTS times; TransientError if they stay unread."""
    unique = list({tuple(sorted(k.items())): k for k in keys}.values())
    resource = dynamodb()
    found: list[dict[str, Any]] = []
    for start in range(0, len(unique), BATCH_GET_KEYS):
        chunk = unique[start : start + BATCH_GET_KEYS]
        request: dict[str, Any] = {table_name: {"Keys": chunk, "ConsistentRead": consistent}}
        for attempt in range(BATCH_ATTEMPTS):
            response = resource.batch_get_item(RequestItems=request)
            found.extend(plain(item) for item in response.get("Responses", {}).get(table_name, []))
            request = dict(response.get("UnprocessedKeys") or {})
            if not request:
                break
            time.sleep(min(0.05 * 2**attempt, 1.0))
        else:
            raise TransientError(f"DynamoDB left {len(request[table_name]['Keys'])} keys unread; retried")
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


def transact(table: Any, actions: list[dict[str, Any]]) -> bool:
    """One TransactWriteItems: True when written, False when one of its conditions refused it
    (the whole transaction then wrote nothing); any other error is raised."""
    from botocore.exceptions import ClientError

    try:
        table.meta.client.transact_write_items(TransactItems=actions)
    except ClientError as error:
        if is_condition_failure(error):
            return False
        raise
    return True

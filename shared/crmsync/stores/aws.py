"""boto3 clients and resources, built once per process (Lambda init) and shared."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBServiceResource

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=3, read_timeout=10)


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_CONFIG)  # type: ignore[call-overload]


@cache
def dynamodb() -> DynamoDBServiceResource:
    return boto3.resource("dynamodb", config=_CONFIG)


def reset() -> None:
    """Forget cached clients (tests and the local stack switch moto backends)."""
    client.cache_clear()
    dynamodb.cache_clear()


def classify_failure(error: BaseException) -> str:
    """What a failure while ingesting one message is: 'refused' (AWS refused what the message
    made us write), 'retry' (AWS or the network failed: the job is retried), or 'other'."""
    from botocore.exceptions import BotoCoreError, ClientError

    from crmsync.errors import TransientError

    if is_refused_input(error):
        return "refused"
    if isinstance(error, TransientError | ClientError | BotoCoreError):
        return "retry"
    return "other"


_REFUSED_INPUT_CODES = frozenset({"ValidationException", "KeyTooLongError", "EntityTooLarge"})


def is_refused_input(error: BaseException) -> bool:
    """An AWS refusal of what one message made us write (a key or an item too large). Anything
    else (access denied, a missing table) is the deployment's problem: it is retried and
    dead-lettered with its reason, never taken as the message's fault."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return False
    response = error.response
    code = str(response.get("Error", {}).get("Code", ""))
    if code == "TransactionCanceledException":
        return any(
            str(r.get("Code", "")) == "ValidationError" for r in response.get("CancellationReasons") or []
        )
    return code in _REFUSED_INPUT_CODES

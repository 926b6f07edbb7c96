"""Secrets Manager reads, cached for the life of the Lambda instance."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from crmsync.stores.aws import client


@cache
def secret_json(secret_id: str) -> dict[str, Any]:
    value = client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    parsed = json.loads(value)
    if not isinstance(parsed, dict):
        raise ValueError(f"secret {secret_id} does not hold a JSON object")
    return parsed


@cache
def secret_text(secret_id: str) -> str:
    value: str = client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    return value

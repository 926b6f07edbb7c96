"""Identifiers and addresses as they are accepted at the edges."""

from __future__ import annotations

import hashlib
import re

from crmsync.errors import Unprocessable

_ID = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")
# A deliberately plain check: one @, no whitespace or control characters, a dotted domain.
_ADDRESS = re.compile(
    r"^[^\s@<>()\[\],;:\"\\]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)


def check_id(value: str, what: str = "id") -> str:
    """Ids become parts of storage keys, so only a safe alphabet is accepted."""
    if not _ID.match(value):
        raise Unprocessable(f"{what} must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return value


def is_address(value: str) -> bool:
    return len(value) <= 254 and bool(_ADDRESS.match(value))


def normalize_address(value: str) -> str:
    """Addresses compare case-insensitively everywhere in the service."""
    return value.strip().lower()


MAX_ID_KEY_BYTES = 400


def id_key(value: str) -> str:
    """A header value (Message-ID) or provider id as a key part, bounded: DynamoDB refuses a
    partition key over 2 KB, and anyone who can mail the user chooses the Message-ID. Long
    values are keyed by their SHA-256 (the full value stays in the item)."""
    if len(value.encode()) <= MAX_ID_KEY_BYTES:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()

"""Page tokens: where a listing goes on, opaque to the caller and signed by the service.

A token is `base64url(position).base64url(mac)`. The MAC is HMAC-SHA256 under a key of its
own, derived from the service's signing secret for this purpose only (so a page token can
never pass as an OAuth state, nor the other way round), over the listing's name, the scope
it was given for (tenant, user, filters) and the position. A token is read back only for the
same listing and scope: one forged, altered, or given to another user, tenant or filter is a
400, and its position never reaches the database.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from crmsync.errors import BadRequest

_PURPOSE = b"crmsync page token v1"


class InvalidPageToken(BadRequest):
    code = "invalid_page_token"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PageTokens:
    """`secret` is the signing secret, or a function that fetches it on first use."""

    def __init__(self, secret: bytes | Callable[[], bytes]) -> None:
        self._secret_source = secret
        self._key: bytes | None = None

    def _mac(self, listing: str, scope: tuple[str, ...], body: str) -> bytes:
        if self._key is None:
            secret = self._secret_source() if callable(self._secret_source) else self._secret_source
            if len(secret) < 32:
                raise ValueError("the signing secret must be at least 32 bytes")
            self._key = hmac.new(secret, _PURPOSE, hashlib.sha256).digest()
        signed = json.dumps([listing, *scope, body], separators=(",", ":")).encode()
        return hmac.new(self._key, signed, hashlib.sha256).digest()

    def issue(self, listing: str, scope: tuple[str, ...], position: dict[str, Any]) -> str:
        body = _b64(json.dumps(position, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._mac(listing, scope, body))}"

    def read(self, listing: str, scope: tuple[str, ...], token: str) -> dict[str, Any]:
        invalid = InvalidPageToken("next: not a page token this API gave you for this listing")
        body, dot, mac = token.partition(".")
        if not body or not dot or not mac:
            raise invalid
        try:
            given = _unb64(mac)
        except (binascii.Error, ValueError) as error:
            raise invalid from error
        if not hmac.compare_digest(given, self._mac(listing, scope, body)):
            raise invalid
        try:
            position = json.loads(_unb64(body))
        except (binascii.Error, ValueError) as error:  # cannot happen for a token we signed
            raise invalid from error
        if not isinstance(position, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int) for k, v in position.items()
        ):
            raise invalid
        return position

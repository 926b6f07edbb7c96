"""The OAuth `state`: signed, expiring, single-use, bound to the tenant and user who asked.

The token is `base64url(claims).base64url(hmac_sha256(key, claims))`. The server keeps the
rest of the connect (PKCE verifier, settings) under the state id and deletes it on first use,
so a state can complete one connect, only before it expires, only for the user it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError


class StateError(Exception):
    """The state is forged, expired, reused or foreign; `reason` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StateClaims(BaseModel):
    sid: str
    tenant_id: str
    user_id: str
    provider: str
    exp: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StateSigner:
    """`key` is the key, or a function that fetches it on first use (no secret read at init)."""

    def __init__(self, key: bytes | Callable[[], bytes], ttl_s: int = 600) -> None:
        self._key_source = key
        self._loaded: bytes | None = None
        self.ttl_s = ttl_s

    @property
    def _key(self) -> bytes:
        if self._loaded is None:
            key = self._key_source() if callable(self._key_source) else self._key_source
            if len(key) < 32:
                raise ValueError("the state signing key must be at least 32 bytes")
            self._loaded = key
        return self._loaded

    def issue(self, tenant_id: str, user_id: str, provider: str, now: float | None = None) -> StateClaims:
        return StateClaims(
            sid=secrets.token_urlsafe(24),
            tenant_id=tenant_id,
            user_id=user_id,
            provider=provider,
            exp=int((now or time.time()) + self.ttl_s),
        )

    def sign(self, claims: StateClaims) -> str:
        body = _b64(json.dumps(claims.model_dump(), separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._mac(body))}"

    def verify(self, token: str, provider: str, now: float | None = None) -> StateClaims:
        body, _, mac = token.partition(".")
        if not body or not mac:
            raise StateError("invalid_state")
        try:
            given = _unb64(mac)
        except ValueError as error:
            raise StateError("invalid_state") from error
        if not hmac.compare_digest(given, self._mac(body)):
            raise StateError("invalid_state")
        try:
            data: Any = json.loads(_unb64(body))
            claims = StateClaims.model_validate(data)
        except (ValueError, ValidationError) as error:
            raise StateError("invalid_state") from error
        if claims.provider != provider:
            raise StateError("invalid_state")
        if claims.exp < (now or time.time()):
            raise StateError("expired_state")
        return claims

    def _mac(self, body: str) -> bytes:
        return hmac.new(self._key, body.encode(), hashlib.sha256).digest()

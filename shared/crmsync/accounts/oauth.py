"""What every vendor's OAuth adapter is (OAuthClient) and shares: the pinned HTTP session,
PKCE, scopes per purpose. The adapters live in their vendor's package
(providers/google/oauth.py, providers/microsoft/oauth.py). Every endpoint is configuration
(crmsync.settings), so the same code talks to the providers in AWS and to the emulators in tests
and `make run`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any, Protocol

import requests

from crmsync.accounts.models import Purpose, TokenSet

TIMEOUT = 10


def scopes_for(table: dict[str, list[str]], purpose: Purpose) -> list[str]:
    parts = ["mail", "calendar"] if purpose == "both" else [purpose]
    return [scope for part in parts for scope in table[part]]


class OAuthClient(Protocol):
    provider: str

    def begin(
        self, redirect_uri: str, state: str, purpose: Purpose, login_hint: str | None
    ) -> tuple[str, dict[str, Any]]:
        """The authorization URL, and what must be kept server-side until the callback."""
        ...

    def exchange(self, flow: dict[str, Any], params: dict[str, str], redirect_uri: str) -> TokenSet: ...

    def address(self, tokens: TokenSet, purpose: Purpose) -> str: ...

    def refresh(self, tokens: TokenSet) -> TokenSet: ...


class PinnedSession(requests.Session):
    """A session whose `verify` and timeout hold for every request. (A plain Session's
    `verify` loses to REQUESTS_CA_BUNDLE in the environment.)"""

    def __init__(self, verify: str | bool) -> None:
        super().__init__()
        self._pinned_verify = verify

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self._pinned_verify)
        kwargs.setdefault("timeout", TIMEOUT)
        return super().request(method, url, *args, **kwargs)


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def json_of(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}

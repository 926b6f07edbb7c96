"""What Google's and Microsoft's authorization servers have in common: registered clients,
a consent page, single-use authorization codes bound to PKCE (S256) and the redirect URI,
access tokens that expire, refresh tokens that can be revoked (then `invalid_grant`)."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from werkzeug.wrappers import Request, Response

ACCESS_TTL_S = 3599


@dataclass
class Client:
    client_id: str
    client_secret: str


@dataclass
class Grant:
    email: str
    client_id: str
    scope: str
    revoked: bool = False


@dataclass
class OAuthState:
    """Everything the emulator remembers; tests may look and change (revoke, expire)."""

    clients: dict[str, Client] = field(default_factory=dict)
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, Grant] = field(default_factory=dict)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)
    token_requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Google revokes the access tokens of a revoked grant with it (the API answers 401 at once);
    # Microsoft's access tokens live on until they expire
    revoke_access_tokens: bool = False

    def revoke(self, email: str) -> int:
        """The user revoked access (or changed the password): every grant of theirs dies."""
        with self.lock:
            grants = [g for g in self.refresh_tokens.values() if g.email == email.lower()]
            for grant in grants:
                grant.revoked = True
            if self.revoke_access_tokens:
                for token in [t for t, (owner, _) in self.access_tokens.items() if owner == email.lower()]:
                    del self.access_tokens[token]
            return len(grants)

    def expire(self, email: str) -> int:
        """Access tokens of this user expire now (the next use must refresh)."""
        with self.lock:
            mine = [t for t, (owner, _) in self.access_tokens.items() if owner == email.lower()]
            for token in mine:
                self.access_tokens[token] = (email.lower(), 0.0)
            return len(mine)

    def owner_of(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        found = self.access_tokens.get(authorization[7:])
        if found is None or found[1] < time.time():
            return None
        return found[0]


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method == "S256":
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        return secrets.compare_digest(digest, challenge)
    return method == "plain" and secrets.compare_digest(verifier, challenge)


AUTHORIZE_FIELDS = ("client_id", "redirect_uri", "state", "scope", "code_challenge", "code_challenge_method")


def carried_fields(args: Any, *extra: str) -> dict[str, str]:
    """What the consent form carries from the authorize request to the decision."""
    return {k: args.get(k, "") for k in (*AUTHORIZE_FIELDS, *extra)}


def consent_page(
    provider: str, action: str, fields: dict[str, str], default_email: str, scope: str
) -> Response:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in sorted(fields.items())
    )
    body = f"""<!doctype html><meta charset="utf-8"><title>{provider} (emulator): sign in</title>
<style>body{{font-family:sans-serif;max-width:34em;margin:3em auto}}button{{margin-right:1em}}</style>
<h1>{html.escape(provider)} emulator</h1>
<p>An application asks for access to your account:</p><pre>{html.escape(scope.replace(" ", chr(10)))}</pre>
<form method="post" action="{html.escape(action)}">{hidden}
<label>Account <input name="email" value="{html.escape(default_email)}" size="32"></label>
<p><button name="decision" value="allow">Allow</button><button name="decision" value="deny">Deny</button></p>
</form>"""
    return Response(body, content_type="text/html; charset=utf-8")


def oauth_error(status: int, error: str, description: str, **extra: Any) -> Response:
    import json

    return Response(
        json.dumps({"error": error, "error_description": description, **extra}),
        status=status,
        content_type="application/json",
    )


def redirect(location: str, params: dict[str, str]) -> Response:
    separator = "&" if "?" in location else "?"
    return Response(status=302, headers={"Location": f"{location}{separator}{urlencode(params)}"})


def client_credentials(request: Request) -> tuple[str, str]:
    """client_secret_post or client_secret_basic."""
    if request.authorization and request.authorization.type == "basic":
        return request.authorization.username or "", request.authorization.password or ""
    return request.form.get("client_id", ""), request.form.get("client_secret", "")

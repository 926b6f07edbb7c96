"""Google's OAuth 2.0 server, OpenID userinfo and Gmail's users.getProfile, as documented:
authorization code flow with PKCE, `access_type=offline` refresh tokens, `invalid_grant`
("Token has been expired or revoked.") once a grant is revoked."""

from __future__ import annotations

import base64
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.wrappers import Request, Response

from local.emulators.gmail import GmailEmulator
from local.emulators.oauth import (
    ACCESS_TTL_S,
    Client,
    Grant,
    OAuthState,
    carried_fields,
    client_credentials,
    consent_page,
    oauth_error,
    pkce_matches,
    redirect,
)

AUTH_PATH = "/o/oauth2/v2/auth"


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


PUSH_SERVICE_ACCOUNT = "gmail-push@crmsync-local.iam.gserviceaccount.com"


class GoogleEmulator:
    def __init__(self, client_id: str = "google-local-client", client_secret: str | None = None) -> None:
        self.state = OAuthState()
        self.client = Client(client_id, client_secret or secrets.token_urlsafe(24))
        self.state.clients[client_id] = self.client
        self.gmail = GmailEmulator(self.state.owner_of)
        # Pub/Sub signs push requests with Google's keys, published at oauth2/v3/certs
        self._push_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._push_kid = secrets.token_hex(20)

    def issue_access_token(self, email: str) -> str:
        """A token for `email` as if it had consented (tests and demos that start past sign-in)."""
        with self.state.lock:
            return self._issue_access(email.lower())

    # ------------------------------------------------------------------ Pub/Sub push
    def push_token(
        self, audience: str, email: str = PUSH_SERVICE_ACCOUNT, key: Any = None, **claims: Any
    ) -> str:
        """The OIDC token Pub/Sub puts in a push's Authorization header."""
        now = int(time.time())
        body = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "email": email,
            "email_verified": True,
            "sub": "1" + str(abs(hash(email)) % 10**20),
            "iat": now,
            "exp": now + 3600,
            **claims,
        }
        return jwt.encode(body, key or self._push_key, algorithm="RS256", headers={"kid": self._push_kid})

    @staticmethod
    def push_body(email_address: str, history_id: int, message_id: str | None = None) -> str:
        data = base64.b64encode(
            json.dumps({"emailAddress": email_address, "historyId": history_id}).encode()
        ).decode()
        return json.dumps(
            {
                "message": {
                    "data": data,
                    "messageId": message_id or str(secrets.randbelow(10**16)),
                    "publishTime": "2026-11-22T00:00:00Z",
                },
                "subscription": "projects/crmsync-local/subscriptions/gmail-push",
            }
        )

    def deliver_push(
        self,
        url: str,
        email_address: str,
        history_id: int,
        message_id: str | None = None,
        token: str | None = None,
    ) -> int:
        """POST one push to the webhook as Pub/Sub would; returns the status (2xx acks it)."""
        import requests

        response = requests.post(
            url,
            data=self.push_body(email_address, history_id, message_id),
            headers={
                "Authorization": f"Bearer {token or self.push_token(url)}",
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        return response.status_code

    def certs(self, request: Request) -> Response:
        numbers = self._push_key.public_key().public_numbers()

        def b64(n: int) -> str:
            return (
                base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
            )

        key = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self._push_kid,
            "n": b64(numbers.n),
            "e": b64(numbers.e),
        }
        return _json({"keys": [key]})

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.dispatch(Request(environ))(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        routes = {
            ("GET", AUTH_PATH): self.authorize,
            ("POST", AUTH_PATH + "/decide"): self.decide,
            ("POST", "/token"): self.token,
            ("GET", "/v1/userinfo"): self.userinfo,
            ("GET", "/oauth2/v3/certs"): self.certs,
            ("POST", "/_emulator/revoke"): lambda r: _json(
                {"revoked": self.state.revoke(r.get_json()["email"])}
            ),
            ("POST", "/_emulator/expire"): lambda r: _json(
                {"expired": self.state.expire(r.get_json()["email"])}
            ),
        }
        if request.path.startswith("/gmail/v1/"):
            return self.gmail.dispatch(request)
        handler: Callable[[Request], Response] | None = routes.get((request.method, request.path))
        if handler is None:
            return _json({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}, 404)
        return handler(request)

    def authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") not in self.state.clients:
            return Response("Error 401: invalid_client. The OAuth client was not found.", status=401)
        if args.get("response_type") != "code" or not args.get("redirect_uri"):
            return Response("Error 400: invalid_request", status=400)
        fields = carried_fields(args, "access_type")
        return consent_page(
            "Google",
            AUTH_PATH + "/decide",
            fields,
            args.get("login_hint") or "user@gmail.test",
            fields["scope"],
        )

    def decide(self, request: Request) -> Response:
        form = request.form
        target = form["redirect_uri"]
        if form.get("decision") != "allow":
            return redirect(target, {"error": "access_denied", "state": form.get("state", "")})
        code = "4/" + secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.codes[code] = {
                "client_id": form["client_id"],
                "redirect_uri": target,
                "challenge": form.get("code_challenge", ""),
                "method": form.get("code_challenge_method") or "plain",
                "email": form.get("email", "user@gmail.test").strip().lower(),
                "scope": form.get("scope", ""),
                "offline": form.get("access_type") == "offline",
                "expires": time.time() + 600,
            }
        return redirect(
            target, {"code": code, "state": form.get("state", ""), "scope": form.get("scope", "")}
        )

    def _issue_access(self, email: str) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        self.state.access_tokens[token] = (email, time.time() + ACCESS_TTL_S)
        return token

    def token(self, request: Request) -> Response:
        form = request.form
        client_id, secret = client_credentials(request)
        self.state.token_requests.append({"grant_type": form.get("grant_type", ""), "client_id": client_id})
        client = self.state.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            return oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type")
        with self.state.lock:
            if grant_type == "authorization_code":
                return self._code_grant(form, client_id)
            if grant_type == "refresh_token":
                grant = self.state.refresh_tokens.get(form.get("refresh_token", ""))
                if grant is None or grant.revoked or grant.client_id != client_id:
                    return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
                access = self._issue_access(grant.email)
                return _json(
                    {
                        "access_token": access,
                        "expires_in": ACCESS_TTL_S,
                        "scope": grant.scope,
                        "token_type": "Bearer",
                    }
                )
        return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _code_grant(self, form: Any, client_id: str) -> Response:
        found = self.state.codes.pop(form.get("code", ""), None)  # single use
        if found is None or found["expires"] < time.time() or found["client_id"] != client_id:
            return oauth_error(400, "invalid_grant", "Malformed auth code.")
        if found["redirect_uri"] != form.get("redirect_uri"):
            return oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if found["challenge"] and not pkce_matches(
            form.get("code_verifier", ""), found["challenge"], found["method"]
        ):
            return oauth_error(400, "invalid_grant", "Invalid code verifier.")
        body: dict[str, Any] = {
            "access_token": self._issue_access(found["email"]),
            "expires_in": ACCESS_TTL_S,
            "scope": found["scope"],
            "token_type": "Bearer",
        }
        if found["offline"]:
            refresh = "1//" + secrets.token_urlsafe(40)
            self.state.refresh_tokens[refresh] = Grant(found["email"], client_id, found["scope"])
            body["refresh_token"] = refresh
        return _json(body)

    def _owner(self, request: Request) -> str | None:
        return self.state.owner_of(request.headers.get("Authorization"))

    def userinfo(self, request: Request) -> Response:
        email = self._owner(request)
        if email is None:
            return _json({"error": "invalid_token", "error_description": "Invalid Credentials"}, 401)
        return _json({"sub": str(abs(hash(email)) % 10**20), "email": email, "email_verified": True})

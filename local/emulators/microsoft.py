"""The Microsoft identity platform (v2.0 endpoints) as msal uses it, and Graph's /me.

OpenID configuration, authorize with a consent page, token endpoint for authorization codes
(PKCE S256, the nonce carried into the id_token, client_info for msal's account) and refresh
tokens (`invalid_grant` AADSTS50173 once revoked). Served over https: msal refuses others."""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import time
import uuid
from typing import Any, Protocol

import jwt
from werkzeug.wrappers import Request, Response

from local.emulators.graph import GraphMail, graph_error
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

_TENANT_ROUTE = re.compile(
    r"^/(?P<tenant>[^/]+)/(?P<rest>v2\.0/\.well-known/openid-configuration|oauth2/v2\.0/\S+)$"
)
HOME_TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


class GraphPart(Protocol):
    """A part of Graph served by another module (change notifications: /v1.0/subscriptions)."""

    def dispatch(self, request: Request) -> Response: ...


def _b64(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class MicrosoftEmulator:
    def __init__(
        self,
        base_url: str = "https://127.0.0.1",
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.state = OAuthState()
        self.client = Client(client_id or str(uuid.uuid4()), client_secret or secrets.token_urlsafe(24))
        self.state.clients[self.client.client_id] = self.client
        self._signing_key = secrets.token_bytes(32)
        self.users: dict[str, str] = {}  # email -> object id
        # Graph mail (/v1.0/me/messages, mailFolders, sendMail, $batch); see graph/
        self.graph = GraphMail(self.state.owner_of, lambda: self.base_url, route=self.graph_dispatch)
        # Graph change notifications (/v1.0/subscriptions...), set by graph_subscriptions.py
        self.subscriptions: GraphPart | None = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.dispatch(Request(environ))(environ, start_response)

    def issue_access_token(self, email: str) -> str:
        """A token for `email` as if it had consented (tests and demos that start past sign-in)."""
        with self.state.lock:
            email = email.strip().lower()
            self.users.setdefault(email, str(uuid.uuid4()))
            access = "eyJ0eXAi." + secrets.token_urlsafe(40)
            self.state.access_tokens[access] = (email, time.time() + ACCESS_TTL_S)
            return access

    def graph_dispatch(self, request: Request) -> Response:
        """Everything under /v1.0/: /me here, /subscriptions to `subscriptions` (501 until one is
        set), the rest (mail, $batch) to `graph`. Inner $batch requests come through here too."""
        if request.path == "/v1.0/me":
            if request.method != "GET":
                return graph_error(
                    405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
                )
            return self.me(request)
        if request.path == "/v1.0/subscriptions" or request.path.startswith("/v1.0/subscriptions/"):
            if self.subscriptions is None:
                return graph_error(501, "NotImplemented", "Subscriptions are not emulated here.")
            return self.subscriptions.dispatch(request)
        return self.graph.dispatch(request)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/v1.0/"):
            return self.graph_dispatch(request)
        if request.path.startswith("/_emulator/graph/"):
            return self.graph.control(request)
        if request.path.startswith("/_upload/"):  # attachment upload sessions (pre-authenticated)
            return self.graph.upload(request)
        if request.path == "/_emulator/revoke" and request.method == "POST":
            return _json({"revoked": self.state.revoke(request.get_json()["email"])})
        if request.path == "/_emulator/expire" and request.method == "POST":
            return _json({"expired": self.state.expire(request.get_json()["email"])})
        match = _TENANT_ROUTE.match(request.path)
        if match is None:
            return _json({"error": {"code": "ResourceNotFound", "message": "Resource not found."}}, 404)
        tenant, rest = match.group("tenant"), match.group("rest")
        if rest.endswith("openid-configuration"):
            return _json(self.configuration(tenant))
        if rest == "oauth2/v2.0/authorize" and request.method == "GET":
            return self.authorize(request, tenant)
        if rest == "oauth2/v2.0/authorize/decide" and request.method == "POST":
            return self.decide(request)
        if rest == "oauth2/v2.0/token" and request.method == "POST":
            return self.token(request, tenant)
        return _json({"error": "not_found"}, 404)

    def issuer(self, tenant: str) -> str:
        return f"{self.base_url}/{tenant}/v2.0"

    def configuration(self, tenant: str) -> dict[str, Any]:
        root = f"{self.base_url}/{tenant}"
        return {
            "issuer": self.issuer(tenant),
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "response_types_supported": ["code", "id_token", "code id_token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "tenant_region_scope": "EU",
        }

    def authorize(self, request: Request, tenant: str) -> Response:
        args = request.args
        if args.get("client_id") not in self.state.clients:
            return Response("AADSTS700016: Application not found in the directory.", status=400)
        fields = carried_fields(args, "nonce", "response_mode")
        fields["tenant"] = tenant
        action = f"/{tenant}/oauth2/v2.0/authorize/decide"
        return consent_page(
            "Microsoft", action, fields, args.get("login_hint") or "user@contoso.test", fields["scope"]
        )

    def decide(self, request: Request) -> Response:
        form = request.form
        target = form["redirect_uri"]
        if form.get("decision") != "allow":
            return self._respond(
                form,
                {
                    "error": "access_denied",
                    "error_description": "AADSTS65004: User declined to consent to access the app.",
                    "state": form.get("state", ""),
                },
            )
        code = secrets.token_urlsafe(48)
        email = form.get("email", "user@contoso.test").strip().lower()
        with self.state.lock:
            self.users.setdefault(email, str(uuid.uuid4()))
            self.state.codes[code] = {
                "client_id": form["client_id"],
                "redirect_uri": target,
                "challenge": form.get("code_challenge", ""),
                "method": form.get("code_challenge_method") or "plain",
                "email": email,
                "scope": form.get("scope", ""),
                "nonce": form.get("nonce", ""),
                "tenant": form.get("tenant", "common"),
                "expires": time.time() + 600,
            }
        return self._respond(
            form, {"code": code, "state": form.get("state", ""), "session_state": str(uuid.uuid4())}
        )

    @staticmethod
    def _respond(form: Any, params: dict[str, str]) -> Response:
        """response_mode=form_post: a page that posts the result to the redirect URI;
        otherwise a redirect with the result in the query."""
        target = form["redirect_uri"]
        if form.get("response_mode") != "form_post":
            return redirect(target, params)
        fields = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
        )
        page = (
            '<!doctype html><html><body onload="document.forms[0].submit()">'
            f'<form method="post" action="{html.escape(target)}">{fields}'
            "<noscript><button>Continue</button></noscript></form></body></html>"
        )
        return Response(page, content_type="text/html; charset=utf-8")

    def _tokens(
        self, email: str, client_id: str, scope: str, tenant: str, nonce: str | None
    ) -> dict[str, Any]:
        oid = self.users.setdefault(email, str(uuid.uuid4()))
        access = "eyJ0eXAi." + secrets.token_urlsafe(40)
        self.state.access_tokens[access] = (email, time.time() + ACCESS_TTL_S)
        refresh = "0.A" + secrets.token_urlsafe(60)
        self.state.refresh_tokens[refresh] = Grant(email, client_id, scope)
        now = int(time.time())
        claims = {
            "aud": client_id,
            "iss": self.issuer(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "oid": oid,
            "sub": oid,
            "tid": HOME_TENANT,
            "preferred_username": email,
            "name": email.split("@")[0],
            "ver": "2.0",
        }
        if nonce:
            claims["nonce"] = nonce
        granted = " ".join(s for s in scope.split() if s not in ("openid", "profile", "offline_access"))
        return {
            "token_type": "Bearer",
            "scope": granted,
            "expires_in": ACCESS_TTL_S,
            "ext_expires_in": ACCESS_TTL_S,
            "access_token": access,
            "refresh_token": refresh,
            "id_token": jwt.encode(claims, self._signing_key, algorithm="HS256"),
            "client_info": _b64({"uid": oid, "utid": HOME_TENANT}),
        }

    def token(self, request: Request, tenant: str) -> Response:
        form = request.form
        client_id, secret = client_credentials(request)
        self.state.token_requests.append({"grant_type": form.get("grant_type", ""), "client_id": client_id})
        client = self.state.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            return oauth_error(
                401, "invalid_client", "AADSTS7000215: Invalid client secret provided.", error_codes=[7000215]
            )
        with self.state.lock:
            if form.get("grant_type") == "authorization_code":
                found = self.state.codes.pop(form.get("code", ""), None)
                if found is None or found["expires"] < time.time() or found["client_id"] != client_id:
                    return oauth_error(
                        400,
                        "invalid_grant",
                        "AADSTS70008: The provided authorization code has expired or was already used.",
                        error_codes=[70008],
                    )
                if found["redirect_uri"] != form.get("redirect_uri"):
                    return oauth_error(
                        400, "invalid_grant", "AADSTS50148: redirect_uri does not match.", error_codes=[50148]
                    )
                if found["challenge"] and not pkce_matches(
                    form.get("code_verifier", ""), found["challenge"], found["method"]
                ):
                    return oauth_error(
                        400,
                        "invalid_grant",
                        "AADSTS501481: The Code_Verifier does not match the code_challenge.",
                        error_codes=[501481],
                    )
                return _json(
                    self._tokens(found["email"], client_id, found["scope"], found["tenant"], found["nonce"])
                )
            if form.get("grant_type") == "refresh_token":
                grant = self.state.refresh_tokens.get(form.get("refresh_token", ""))
                if grant is None or grant.revoked or grant.client_id != client_id:
                    return oauth_error(
                        400,
                        "invalid_grant",
                        "AADSTS50173: The provided grant has expired due to it being revoked,"
                        " a fresh auth token is needed.",
                        error_codes=[50173],
                        suberror="bad_token",
                    )
                return _json(self._tokens(grant.email, client_id, grant.scope, tenant, None))
        return oauth_error(
            400, "unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."
        )

    def me(self, request: Request) -> Response:
        email = self.state.owner_of(request.headers.get("Authorization"))
        if email is None:
            return _json(
                {
                    "error": {
                        "code": "InvalidAuthenticationToken",
                        "message": "Access token has expired or is not yet valid.",
                    }
                },
                401,
            )
        oid = self.users.setdefault(email, str(uuid.uuid4()))
        return _json(
            {"id": oid, "displayName": email.split("@")[0], "mail": email, "userPrincipalName": email}
        )

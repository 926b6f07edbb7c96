"""OAuth adapters: Google through its token endpoint, Microsoft through msal's auth-code flow.

Every endpoint is configuration (crmsync.settings), so the same code talks to the providers
in AWS and to the emulators in tests and `make run`.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import Any, Protocol
from urllib.parse import urlencode

import requests

from crmsync.accounts.failures import InvalidGrant as InvalidGrant
from crmsync.accounts.failures import ProviderRefused as ProviderRefused
from crmsync.accounts.models import Purpose, TokenSet
from crmsync.errors import TransientError

_TIMEOUT = 10

GOOGLE_SCOPES = {
    "mail": ["https://www.googleapis.com/auth/gmail.modify"],
    "calendar": [
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.readonly",
    ],
}
MICROSOFT_SCOPES = {
    "mail": ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"],
    "calendar": ["https://graph.microsoft.com/Calendars.ReadWrite"],
}


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
        kwargs.setdefault("timeout", _TIMEOUT)
        return super().request(method, url, *args, **kwargs)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = {}
    return body if isinstance(body, dict) else {}


class GoogleOAuth:
    provider = "google"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        auth_uri: str,
        token_uri: str,
        userinfo_uri: str,
        gmail_base: str,
        verify: str | bool = True,
    ) -> None:
        self._id = client_id
        self._secret = client_secret
        self._auth_uri = auth_uri
        self._token_uri = token_uri
        self._userinfo_uri = userinfo_uri
        self._gmail = gmail_base.rstrip("/")
        self._verify = verify
        self._http = PinnedSession(verify)

    def begin(
        self, redirect_uri: str, state: str, purpose: Purpose, login_hint: str | None
    ) -> tuple[str, dict[str, Any]]:
        verifier, challenge = _pkce()
        params = {
            "client_id": self._id,
            "redirect_uri": redirect_uri,
            "response_type": "code",
            "scope": " ".join(["openid", "email", *scopes_for(GOOGLE_SCOPES, purpose)]),
            "state": state,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "access_type": "offline",  # a refresh token
            "prompt": "consent",  # a new refresh token also when the user consented before
            "include_granted_scopes": "true",
        }
        if login_hint:
            params["login_hint"] = login_hint
        return f"{self._auth_uri}?{urlencode(params)}", {"code_verifier": verifier}

    def _token(self, data: dict[str, str]) -> dict[str, Any]:
        try:
            response = self._http.post(self._token_uri, data=data, timeout=_TIMEOUT, verify=self._verify)
        except requests.RequestException as error:
            raise TransientError(f"google token endpoint unreachable: {type(error).__name__}") from error
        body = _json(response)
        if response.status_code >= 500:
            raise TransientError(f"google token endpoint answered {response.status_code}")
        if response.status_code != 200:
            code = str(body.get("error", response.status_code))
            if code == "invalid_grant":
                raise InvalidGrant(str(body.get("error_description", "invalid_grant")))
            raise ProviderRefused("token_exchange_failed", f"Google refused the code ({code})")
        return body

    def exchange(self, flow: dict[str, Any], params: dict[str, str], redirect_uri: str) -> TokenSet:
        code = params.get("code")
        if not code:
            raise ProviderRefused("missing_code", "Google did not return an authorization code")
        try:
            body = self._token(
                {
                    "code": code,
                    "client_id": self._id,
                    "client_secret": self._secret,
                    "redirect_uri": redirect_uri,
                    "grant_type": "authorization_code",
                    "code_verifier": str(flow.get("code_verifier", "")),
                }
            )
        except InvalidGrant as error:
            raise ProviderRefused(
                "token_exchange_failed", "Google refused the code (invalid_grant)"
            ) from error
        if not body.get("refresh_token"):
            raise ProviderRefused("no_refresh_token", "Google returned no refresh token; connect again")
        return TokenSet(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_at=int(time.time()) + int(body.get("expires_in", 3600)),
            scope=body.get("scope"),
        )

    def _get(self, url: str, tokens: TokenSet) -> dict[str, Any]:
        try:
            response = self._http.get(
                url,
                headers={"Authorization": f"Bearer {tokens.access_token}"},
                timeout=_TIMEOUT,
                verify=self._verify,
            )
        except requests.RequestException as error:
            raise TransientError(f"google unreachable: {type(error).__name__}") from error
        if response.status_code != 200:
            raise ProviderRefused(
                "profile_unavailable", f"Google answered {response.status_code} for the profile"
            )
        return _json(response)

    def address(self, tokens: TokenSet, purpose: Purpose) -> str:
        if purpose in ("mail", "both"):  # the mailbox's own address (Gmail users.getProfile)
            profile = self._get(f"{self._gmail}/gmail/v1/users/me/profile", tokens)
            return str(profile["emailAddress"]).lower()
        info = self._get(self._userinfo_uri, tokens)
        return str(info["email"]).lower()

    def refresh(self, tokens: TokenSet) -> TokenSet:
        if not tokens.refresh_token:
            raise InvalidGrant("no refresh token stored")
        body = self._token(
            {
                "client_id": self._id,
                "client_secret": self._secret,
                "refresh_token": tokens.refresh_token,
                "grant_type": "refresh_token",
            }
        )
        return tokens.model_copy(
            update={
                "access_token": body["access_token"],
                "refresh_token": body.get("refresh_token") or tokens.refresh_token,
                "expires_at": int(time.time()) + int(body.get("expires_in", 3600)),
            }
        )


class MicrosoftOAuth:
    provider = "microsoft"
    DEFAULT_HOST = "https://login.microsoftonline.com"

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        tenant: str,
        authority_host: str,
        graph_base: str,
        verify: str | bool = True,
    ) -> None:
        self._id = client_id
        self._secret = client_secret
        self._authority = f"{authority_host.rstrip('/')}/{tenant}"
        self._custom_host = authority_host.rstrip("/") != self.DEFAULT_HOST
        self._graph = graph_base.rstrip("/")
        self._verify = verify
        self._http = PinnedSession(verify)

    def _app(self, cache: Any = None) -> Any:
        import msal  # only the functions that talk to Microsoft pay for importing msal

        return msal.ConfidentialClientApplication(
            self._id,
            client_credential=self._secret,
            authority=self._authority,
            token_cache=cache,
            http_client=self._http,
            # a non-Microsoft host (the emulator) cannot be validated against Microsoft's discovery
            instance_discovery=False if self._custom_host else None,
        )

    def begin(
        self, redirect_uri: str, state: str, purpose: Purpose, login_hint: str | None
    ) -> tuple[str, dict[str, Any]]:
        scopes = ["User.Read", *scopes_for(MICROSOFT_SCOPES, purpose)]
        flow: dict[str, Any] = self._app().initiate_auth_code_flow(
            scopes,
            redirect_uri=redirect_uri,
            state=state,
            login_hint=login_hint,
            prompt="select_account",
            response_mode="form_post",  # the code travels in a POST body, not in URLs and history
        )
        flow["scopes"] = scopes
        return str(flow["auth_uri"]), flow

    def exchange(self, flow: dict[str, Any], params: dict[str, str], redirect_uri: str) -> TokenSet:
        import msal

        cache = msal.SerializableTokenCache()
        scopes = list(flow.pop("scopes", []))
        try:
            result = self._app(cache).acquire_token_by_auth_code_flow(flow, params)
        except ValueError as error:  # msal: the state or flow does not match
            raise ProviderRefused(
                "invalid_state", "the sign-in response does not match this connect"
            ) from error
        if "error" in result:
            raise ProviderRefused("token_exchange_failed", f"Microsoft refused the code ({result['error']})")
        return TokenSet(
            access_token=result["access_token"],
            expires_at=int(time.time()) + int(result.get("expires_in", 3600)),
            scope=" ".join(scopes),
            msal_cache=cache.serialize(),
        )

    def address(self, tokens: TokenSet, purpose: Purpose) -> str:
        try:
            response = self._http.get(
                f"{self._graph}/v1.0/me",
                headers={"Authorization": f"Bearer {tokens.access_token}"},
                timeout=_TIMEOUT,
                verify=self._verify,
            )
        except requests.RequestException as error:
            raise TransientError(f"graph unreachable: {type(error).__name__}") from error
        if response.status_code != 200:
            raise ProviderRefused(
                "profile_unavailable", f"Microsoft Graph answered {response.status_code} for /me"
            )
        me = _json(response)
        return str(me.get("mail") or me["userPrincipalName"]).lower()

    def refresh(self, tokens: TokenSet) -> TokenSet:
        import msal

        cache = msal.SerializableTokenCache()
        cache.deserialize(tokens.msal_cache or "{}")
        app = self._app(cache)
        accounts = app.get_accounts()
        if not accounts:
            raise InvalidGrant("no account in the token cache")
        scopes = [s for s in (tokens.scope or "").split() if s not in ("openid", "profile", "offline_access")]
        result = app.acquire_token_silent_with_error(scopes, account=accounts[0], force_refresh=True)
        if not result:
            raise InvalidGrant("no token could be acquired silently")
        if "error" in result:
            if result["error"] in ("invalid_grant", "interaction_required"):
                raise InvalidGrant(str(result.get("error_description", result["error"]))[:200])
            raise TransientError(f"microsoft token refresh failed ({result['error']})")
        return tokens.model_copy(
            update={
                "access_token": result["access_token"],
                "expires_at": int(time.time()) + int(result.get("expires_in", 3600)),
                "msal_cache": cache.serialize() if cache.has_state_changed else tokens.msal_cache,
            }
        )

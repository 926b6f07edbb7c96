"""Google sign-in (ACC-2): the authorization-code flow with PKCE against Google's token endpoint."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import requests

from crmsync.accounts.failures import InvalidGrant, ProviderRefused
from crmsync.accounts.models import Purpose, TokenSet
from crmsync.accounts.oauth import TIMEOUT, PinnedSession, json_of, pkce, scopes_for
from crmsync.errors import TransientError

GOOGLE_SCOPES = {
    "mail": ["https://www.googleapis.com/auth/gmail.modify"],
    "calendar": [
        "https://www.googleapis.com/auth/calendar.events",
        "https://www.googleapis.com/auth/calendar.readonly",
    ],
}


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
        verifier, challenge = pkce()
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
            response = self._http.post(self._token_uri, data=data, timeout=TIMEOUT, verify=self._verify)
        except requests.RequestException as error:
            raise TransientError(f"google token endpoint unreachable: {type(error).__name__}") from error
        body = json_of(response)
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
                timeout=TIMEOUT,
                verify=self._verify,
            )
        except requests.RequestException as error:
            raise TransientError(f"google unreachable: {type(error).__name__}") from error
        if response.status_code != 200:
            raise ProviderRefused(
                "profile_unavailable", f"Google answered {response.status_code} for the profile"
            )
        return json_of(response)

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

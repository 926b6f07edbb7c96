"""Microsoft sign-in (ACC-2): msal's authorization-code flow."""

from __future__ import annotations

import time
from typing import Any

import requests

from crmsync.accounts.failures import InvalidGrant, ProviderRefused
from crmsync.accounts.models import Purpose, TokenSet
from crmsync.accounts.oauth import TIMEOUT, PinnedSession, json_of, scopes_for
from crmsync.errors import TransientError

MICROSOFT_SCOPES = {
    "mail": ["https://graph.microsoft.com/Mail.ReadWrite", "https://graph.microsoft.com/Mail.Send"],
    "calendar": ["https://graph.microsoft.com/Calendars.ReadWrite"],
}


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
                timeout=TIMEOUT,
                verify=self._verify,
            )
        except requests.RequestException as error:
            raise TransientError(f"graph unreachable: {type(error).__name__}") from error
        if response.status_code != 200:
            raise ProviderRefused(
                "profile_unavailable", f"Microsoft Graph answered {response.status_code} for /me"
            )
        me = json_of(response)
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

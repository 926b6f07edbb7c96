"""What every Google API adapter shares (Gmail, Calendar): a discovery-built client holding the
account's token, one refresh after a 401, and how Google's errors read (status, Retry-After,
throttling and 5xx as TransientError). Imported only where Google is called (cold start)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from crmsync.errors import PermanentError, TransientError, retry_after_seconds

TIMEOUT_S = 20


class AccessTokenRefused(PermanentError):
    """Google answered 401 to the access token, and no new one could be had: a reason for the
    dead-letter record, never google-auth's RefreshError retried until the token expires."""


def _bearer(access_token: str, refresh: Callable[[str], str] | None, api: str) -> Any:
    """google-auth credentials holding our token. On a 401, google-auth asks them to refresh:
    they get a new token from `refresh` (Credentials.refused: a forced refresh, or the account
    paused for re-authorisation, ACC-9) once; a second 401, or no `refresh`, is a PermanentError."""
    from google.oauth2.credentials import Credentials

    class Bearer(Credentials):
        refreshed = False

        def refresh(self, request: Any) -> None:
            if refresh is None or self.refreshed:
                raise AccessTokenRefused(f"{api} refused the access token (401)")
            self.refreshed = True
            self.token = refresh(str(self.token))

    return Bearer(token=access_token)  # type: ignore[no-untyped-call]


def google_service(
    discovery: Any, access_token: str, endpoint: str, refresh: Callable[[str], str] | None, api: str
) -> Any:
    """A client of the API described by `discovery` on `endpoint`, with the token (see _bearer)."""
    import google_auth_httplib2
    import httplib2
    from googleapiclient.discovery import build_from_document

    credentials = _bearer(access_token, refresh, api)
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=httplib2.Http(timeout=TIMEOUT_S))
    return build_from_document(discovery, http=http, client_options={"api_endpoint": endpoint})


class AccountClients:
    """What an adapter keeps to make an account's client: Credentials.access_token (refreshes,
    or raises AccountPaused), the API base, and Credentials.refused (after a 401)."""

    def __init__(
        self,
        access_token: Callable[[str], str],
        api_base: str,
        refused: Callable[[str, str], str] | None = None,
    ) -> None:
        self._token = access_token
        self._base = api_base
        self._refused = refused

    def _refresh_for(self, account_id: str) -> Callable[[str], str] | None:
        refused = self._refused
        return (lambda old: refused(account_id, old)) if refused is not None else None


def headers_get(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A header of a webhook's event, whatever case the gateway gave its name."""
    return next((v for k, v in (headers or {}).items() if k.lower() == name.lower()), None)


def status_of(error: Any) -> int:
    return int(getattr(getattr(error, "resp", None), "status", 0) or 0)


def retry_after_of(error: Any) -> str:
    return str(getattr(getattr(error, "resp", None), "get", lambda *_: None)("retry-after") or "")


def raise_transient(error: Any, what: str, api: str, throttled: Callable[[Any], bool]) -> None:
    """Throttling (as `throttled` reads it) and 5xx are TransientError with Retry-After."""
    if throttled(error) or status_of(error) >= 500:
        raise TransientError(
            f"{api} answered {status_of(error)} for {what}; retry after {retry_after_of(error) or 'a while'}",
            retry_after=retry_after_seconds(retry_after_of(error)),
        ) from error

"""The Microsoft Graph transport, apart from what any one API does with it (mail now, calendar
next): one mailbox's requests with its token, immutable ids asked for on every request
(`Prefer: IdType="ImmutableId"`), 429/503/504 and network failures as TransientError with
Retry-After (SYNC-4), a 401 as a refused token, `$batch` in chunks of 20 (a 429 inside a 200
envelope counts as one), and at most 4 requests of one mailbox in flight at once in this process
(Graph's limit per app and mailbox; one worker holds an account at a time, SYNC-5)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import requests

from crmsync.errors import PermanentError, TransientError, retry_after_seconds

BATCH_MAX = 20
CONCURRENT_PER_MAILBOX = 4
TIMEOUT_S = 30
IMMUTABLE = 'IdType="ImmutableId"'

_slots: dict[str, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def slot(account_id: str) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(account_id, threading.BoundedSemaphore(CONCURRENT_PER_MAILBOX))


def error_code(body: Any) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("code") or "")
    return ""


class GraphClient:
    def __init__(
        self,
        access_token: str,
        api_base: str,
        verify: str | bool,
        account_id: str,
        forget: Callable[[], object] | None = None,
    ) -> None:
        self._forget = forget  # drops this client from the reuse cache when its token is refused
        self._base = api_base.rstrip("/") + "/v1.0"
        self._account_id = account_id
        self._session = requests.Session()
        self._verify = verify  # pinned per request: REQUESTS_CA_BUNDLE would override a session's
        self._headers = {"Authorization": f"Bearer {access_token}", "Prefer": IMMUTABLE}

    def url(self, path: str) -> str:
        return path if path.startswith("https://") or path.startswith("http://") else self._base + path

    @contextmanager
    def _in_flight(self) -> Iterator[None]:
        with slot(self._account_id):
            yield

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """One request; throttling and server errors raise TransientError, the rest is returned."""
        with self._in_flight():
            try:
                response = self._session.request(
                    method,
                    self.url(path),
                    json=body,
                    headers={**self._headers, **(headers or {})},
                    verify=self._verify,
                    timeout=TIMEOUT_S,
                )
            except requests.RequestException as error:
                raise TransientError(f"graph unreachable: {type(error).__name__}") from error
        if response.status_code == 401:  # a token revoked or expired early: the retry gets a fresh one
            if self._forget is not None:
                self._forget()
            raise TransientError("graph refused the access token (401)")
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"graph answered {response.status_code} to {method} {path.split('?')[0][-60:]}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        return response

    def upload(self, url: str, chunk: bytes, content_range: str) -> requests.Response:
        """A PUT to a pre-authenticated upload URL: no Authorization header goes there."""
        with self._in_flight():
            try:
                response = self._session.put(
                    url,
                    data=chunk,
                    headers={"Content-Range": content_range, "Content-Type": "application/octet-stream"},
                    verify=self._verify,
                    timeout=TIMEOUT_S,
                )
            except requests.RequestException as error:
                raise TransientError(f"graph upload unreachable: {type(error).__name__}") from error
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"graph answered {response.status_code} to an upload range",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        return response

    def json(self, method: str, path: str, body: Any = None, what: str = "") -> Any:
        response = self.request(method, path, body)
        if response.status_code >= 400:
            raise PermanentError(
                f"graph answered {response.status_code} to {what or method}: {error_code(body_of(response))}"
            )
        return body_of(response)

    def batch(self, requests_: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """Inner responses by id. Chunks of 20 go out up to 4 at a time; any inner 429 or 5xx
        raises TransientError (with the longest Retry-After) once every chunk has answered."""
        chunks = [requests_[i : i + BATCH_MAX] for i in range(0, len(requests_), BATCH_MAX)]

        def send(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
            answer = self.json("POST", "/$batch", {"requests": chunk}, "$batch")
            return list(answer.get("responses", []))

        if len(chunks) <= 1:
            answered = [send(c) for c in chunks]
        else:
            with ThreadPoolExecutor(max_workers=CONCURRENT_PER_MAILBOX) as pool:
                answered = list(pool.map(send, chunks))
        found: dict[str, dict[str, Any]] = {}
        waits: list[float] = []
        throttled = 0
        for item in (r for chunk in answered for r in chunk):
            status = int(item.get("status", 0))
            if status == 429 or status >= 500:
                throttled += 1
                headers = {k.lower(): v for k, v in (item.get("headers") or {}).items()}
                waits.append(retry_after_seconds(headers.get("retry-after")) or 0.0)
            found[str(item.get("id"))] = item
        if throttled:
            raise TransientError(
                f"graph throttled {throttled} of {len(requests_)} requests in a batch",
                retry_after=max(waits) if any(waits) else None,
            )
        return found


def body_of(response: requests.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return {}

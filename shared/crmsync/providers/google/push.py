"""Gmail's Pub/Sub push (SEC-1): a Google-signed OIDC token, then the notification queued for
the account's worker. Answers fast; the work happens behind the queue."""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from typing import Any, Protocol

import jwt
from pydantic import BaseModel, ValidationError

from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.schedule import JobQueue

GOOGLE_ISSUERS = ("https://accounts.google.com", "accounts.google.com")
KEYS_REFETCH_S = 60  # a key id not in the cache fetches Google's keys again at most this often
KEYS_MAX_AGE_S = 3600  # cached keys are fetched again after this, whatever the tokens say
KEYS_TIMEOUT_S = 5


def _monotonic() -> float:
    return time.monotonic()


class GoogleSigningKeys:
    """Google's token-signing keys (the JWKS at oauth2/v3/certs), cached per process.

    The webhook is public, and a token's key id is the sender's to choose: a key id not in the
    cache fetches the keys again only if the last fetch, successful or not, was a minute ago or
    more. Within that minute the token is refused without a request, so made-up key ids (or an
    endpoint that fails) cost one fetch a minute, not one per push. A key Google rotates in is
    found by the first push that names it a minute after the last fetch; Pub/Sub delivers a
    refused push again, with backoff."""

    def __init__(self, url: str) -> None:
        self._client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=KEYS_TIMEOUT_S)
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # the last try, failed or not
        self._lock = threading.Lock()

    def get_signing_key_from_jwt(self, token: str) -> jwt.PyJWK:
        kid = jwt.get_unverified_header(token).get("kid")
        if not isinstance(kid, str) or not kid:
            raise jwt.InvalidTokenError("the token names no signing key")
        with self._lock:
            now = _monotonic()
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is None or age >= KEYS_MAX_AGE_S or (kid not in self._keys and age >= KEYS_REFETCH_S):
                self._fetched_at = now
                fetched = self._client.get_signing_keys()  # PyJWKClientError when it fails
                self._keys = {key.key_id: key for key in fetched if key.key_id}
            key = self._keys.get(kid)
        if key is None:
            raise jwt.PyJWKClientError("no Google signing key has the token's key id")
        return key


class PushRefused(Exception):
    """The request is not a genuine push (401)."""


class AccountLookup(Protocol):
    def find_by_address(self, provider: str, address: str) -> list[tuple[str, str]]: ...


class PushOutcome(BaseModel):
    status: str  # queued | dropped
    reason: str | None = None
    account_ids: list[str] = []


class _Envelope(BaseModel):
    class Message(BaseModel):
        data: str
        messageId: str
        publishTime: str | None = None

    message: Message
    subscription: str | None = None


def _decode(data: str) -> dict[str, Any]:
    """Pub/Sub data is base64 (url-safe or not, padding or not)."""
    text = data.replace("-", "+").replace("_", "/")
    decoded = json.loads(base64.b64decode(text + "=" * (-len(text) % 4)))
    if not isinstance(decoded, dict):
        raise ValueError("not an object")
    return decoded


class GmailPush:
    def __init__(
        self, jwks: Any, audience: str, service_account: str, accounts: AccountLookup, queue: JobQueue
    ) -> None:
        self._jwks = jwks  # GoogleSigningKeys on Google's certs (or the emulator's)
        self._audience = audience
        self._service_account = service_account
        self._accounts = accounts
        self._queue = queue

    def verify(self, authorization: str | None) -> dict[str, Any]:
        if not authorization or not authorization.startswith("Bearer "):
            raise PushRefused("no bearer token")
        token = authorization[7:].strip()
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                audience=self._audience,
                issuer=GOOGLE_ISSUERS,
                options={"require": ["exp", "iat", "iss", "aud", "email"]},
            )
        except jwt.PyJWTError as error:
            raise PushRefused(f"token refused: {type(error).__name__}") from error
        if claims.get("email") != self._service_account or claims.get("email_verified") is not True:
            raise PushRefused("token of another service account")
        return claims

    def accept(self, authorization: str | None, body: str) -> PushOutcome:
        self.verify(authorization)
        try:
            envelope = _Envelope.model_validate_json(body)
            data = _decode(envelope.message.data)
            address = str(data["emailAddress"]).lower()
            history_id = str(int(data["historyId"]))
        except (ValidationError, ValueError, KeyError, TypeError, binascii.Error) as error:
            # acknowledged, not retried: a malformed push will not get better
            return PushOutcome(status="dropped", reason=f"unreadable push: {type(error).__name__}")
        accounts = self._accounts.find_by_address("google", address)
        if not accounts:
            return PushOutcome(status="dropped", reason="no connected account for this mailbox")
        for tenant_id, account_id in accounts:
            job = Job(
                type=JobType.MAIL_SYNC,
                tenant_id=tenant_id,
                account_id=account_id,
                payload={"history_id": history_id},
            )
            self._queue.send(
                job, f"{envelope.message.messageId}-{account_id}"
            )  # Pub/Sub's id: duplicates collapse
        return PushOutcome(status="queued", account_ids=[a for _, a in accounts])

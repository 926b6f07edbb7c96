"""The one place a provider adapter gets a valid access token (ACC-9, SEC-3).

Tokens are refreshed shortly before they expire. Two workers that both decide to refresh do
not fight: the sealed secret carries a version, the write is conditional on it, and the loser
uses the winner's token. When the provider refuses the grant, the account becomes
`reauth_required`, the CRM is told, and callers get AccountPaused: the job is dropped, not
retried, so there is no retry storm.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from crmsync.accounts.failures import InvalidGrant
from crmsync.accounts.models import Account, Status, TokenSet
from crmsync.accounts.ports import (
    AccountStore,
    ConcurrentSecretUpdate,
    secret_context,
    status_changed,
    update_account,
)
from crmsync.crypto import SecretBox
from crmsync.errors import Paused
from crmsync.events import EventPublisher

if TYPE_CHECKING:
    from crmsync.accounts.oauth import OAuthClient

REFRESH_MARGIN_S = 300


class AccountPaused(Paused):
    """The account may not sync now (reauth required, replaced, disconnected)."""


class Credentials:
    def __init__(
        self,
        store: AccountStore,
        box: SecretBox,
        oauth: Callable[[str], OAuthClient],
        publisher: EventPublisher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._box = box
        self._oauth = oauth
        self._publisher = publisher
        self._clock = clock

    def _read(self, account: Account) -> tuple[TokenSet, int]:
        found = self._store.get_secret(account.account_id)
        if found is None:
            raise AccountPaused(f"account {account.account_id} has no stored credentials")
        sealed, version = found
        return TokenSet.model_validate_json(self._box.open(sealed, secret_context(account))), version

    def access_token(self, account_id: str) -> str:
        return self._token(account_id, refused=None)

    def refused(self, account_id: str, token: str | None = None) -> str:
        """The provider answered 401 to `token` (revoked with its grant, or expired early): a
        new one now, whatever its stored expiry says; or, when the grant itself is refused,
        the account pauses for re-authorisation (AccountPaused)."""
        return self._token(account_id, refused=token or "")

    def _token(self, account_id: str, refused: str | None) -> str:
        account = self._store.get_by_id(account_id)
        if account is None:
            raise AccountPaused(f"account {account_id} does not exist")
        if not account.can_sync:
            raise AccountPaused(f"account {account_id} is {account.status}")
        tokens, version = self._read(account)
        still_good = tokens.access_token and (tokens.expires_at or 0) > self._clock() + REFRESH_MARGIN_S
        if still_good and (refused is None or (refused and tokens.access_token != refused)):
            # not refused, or another worker has stored a new token since the refused one
            return str(tokens.access_token)
        try:
            fresh = self._oauth(account.provider).refresh(tokens)
        except InvalidGrant as error:
            self._pause(account, f"the provider refused the stored grant: {error}")
            raise AccountPaused(f"account {account_id} needs re-authorisation") from error
        sealed = self._box.seal(fresh.model_dump_json().encode(), secret_context(account))
        try:
            self._store.put_secret(account.account_id, sealed, version)
        except ConcurrentSecretUpdate:
            winner, _ = self._read(account)  # someone refreshed meanwhile: theirs is as good
            if winner.access_token:
                return winner.access_token
            raise
        if not fresh.access_token:
            raise AccountPaused(f"account {account_id} got no access token")
        return fresh.access_token

    def password(self, account_id: str) -> str:
        account = self._store.get_by_id(account_id)
        if account is None or not account.can_sync:
            raise AccountPaused(f"account {account_id} may not sync")
        tokens, _ = self._read(account)
        if not tokens.password:
            raise AccountPaused(f"account {account_id} has no password")
        return tokens.password

    def _pause(self, account: Account, reason: str) -> None:
        """reauth_required, only over an account that may still sync: a disconnect or a
        replace that came meanwhile stays (the write is conditional on the version read)."""
        seen: list[Status] = []

        def paused(current: Account) -> bool:
            if not current.can_sync:
                return False
            seen.append(current.status)
            current.status = "reauth_required"
            current.status_reason = reason
            return True

        saved = update_account(self._store, account, paused)
        if saved is not None:
            self._publisher.publish([status_changed(saved, seen[-1])])

"""The accounts' ports and the small rules the account service and the credentials share:
the account store, the providers' connect hooks, optimistic-locking failures, the secret's
sealing context, the versioned update loop and the status event."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol, runtime_checkable

from crmsync.accounts.models import (
    Account,
    AccountSettings,
    PendingConfirmation,
    PendingConnect,
    Status,
    TokenSet,
)
from crmsync.errors import Conflict
from crmsync.events import AccountStatusChanged

WRITE_ATTEMPTS = 8  # writes retried after losing a race, before giving up with a 409


class ConcurrentSecretUpdate(Exception):
    """Another writer changed the sealed secret first (optimistic locking)."""


class ConcurrentAccountUpdate(Exception):
    """Another writer changed the account (or the user's default) since it was read."""


class AccountStore(Protocol):
    """Port: accounts, their sealed secrets and pending connects (stores/accounts.py)."""

    def list_for_user(self, tenant_id: str, user_id: str) -> list[Account]: ...

    def list_for_tenant(self, tenant_id: str) -> list[Account]: ...

    def get(self, tenant_id: str, user_id: str, account_id: str) -> Account | None: ...

    def get_by_id(self, account_id: str) -> Account | None: ...

    def create(self, account: Account, sealed: Mapping[str, str] | None) -> None: ...

    def save(self, account: Account) -> None:
        """Only over the version that was read (else ConcurrentAccountUpdate)."""
        ...

    def delete(self, account: Account) -> None: ...

    def default_marker(self, tenant_id: str, user_id: str) -> int: ...

    def set_default(self, account: Account, previous: Account | None, marker: int) -> None:
        """Both accounts at the versions read, the user's default marker still `marker`
        (else ConcurrentAccountUpdate)."""
        ...

    def get_secret(self, account_id: str) -> tuple[dict[str, str], int] | None: ...

    def put_secret(self, account_id: str, sealed: Mapping[str, str], expected_version: int | None) -> int: ...

    def delete_secret(self, account_id: str) -> None: ...

    def put_pending(self, pending: PendingConnect) -> None: ...

    def take_pending(self, state_id: str) -> PendingConnect | None: ...

    def put_confirmation(self, confirmation: PendingConfirmation) -> None: ...

    def take_confirmation(self, confirmation_id: str) -> PendingConfirmation | None: ...


class ProviderHooks(Protocol):
    """What a provider does when an account starts or stops syncing (watches, subscriptions).
    The Gmail and Outlook work registers theirs; none is needed for an account to exist."""

    def on_connected(self, account: Account, tokens: TokenSet) -> None: ...

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None: ...


@runtime_checkable
class SettingsHooks(Protocol):
    """Providers whose mailbox-side set-up follows the settings (Outlook's per-folder
    subscriptions follow the folders chosen for sync, MAIL-8)."""

    def on_settings_changed(self, account: Account, before: AccountSettings) -> None: ...


def secret_context(account: Account) -> dict[str, str]:
    return {"tenant_id": account.tenant_id, "account_id": account.account_id}


def update_account(
    store: AccountStore, account: Account, change: Callable[[Account], bool], attempts: int = WRITE_ATTEMPTS
) -> Account | None:
    """Apply `change` and write, over the version read; after a lost race read the account
    again and apply `change` to what is there now. `change` returns False when there is
    nothing (more) to do: then nothing is written and None is returned."""
    current: Account | None = account
    for _ in range(attempts):
        if current is None or not change(current):
            return None
        try:
            store.save(current)
            return current
        except ConcurrentAccountUpdate:
            current = store.get(account.tenant_id, account.user_id, account.account_id)
    raise Conflict(f"account {account.account_id} kept changing meanwhile; try again")


def status_changed(account: Account, previous: Status | None) -> AccountStatusChanged:
    """The event for an account now in `account.status`, coming from `previous`."""
    return AccountStatusChanged(
        tenant_id=account.tenant_id,
        user_id=account.user_id,
        account_id=account.account_id,
        provider=account.provider,
        address=account.address,
        status=account.status,
        previous_status=previous,
        reason=account.status_reason,
    )

"""The resync state machine's page source for mailboxes: per provider, for the job's account."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from crmsync.accounts.models import Account
from crmsync.errors import Paused, PermanentError
from crmsync.resync import Page, ResyncJob


class AccountById(Protocol):
    def get_by_id(self, account_id: str) -> Account | None: ...


class ProviderPages:
    """Dispatches `fetch_page` to the account's provider; a provider without one has nothing
    to import. Providers are built on first use (their client libraries are heavy)."""

    def __init__(self, accounts: AccountById, providers: Mapping[str, Callable[[], Any]]) -> None:
        self._accounts = accounts
        self._factories = providers
        self._built: dict[str, Any] = {}

    def fetch_page(self, job: ResyncJob) -> Page:
        account = self._accounts.get_by_id(job.account_id)
        if account is None or account.tenant_id != job.tenant_id:
            raise PermanentError(f"no account {job.account_id} in tenant {job.tenant_id}")
        if not account.can_sync:
            raise Paused(f"account {account.account_id} is {account.status}")
        factory = self._factories.get(account.provider)
        if factory is None:
            return Page(items=0)
        if account.provider not in self._built:
            self._built[account.provider] = factory()
        page: Page = self._built[account.provider].fetch_page(account, job)
        return page

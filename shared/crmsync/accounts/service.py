"""The accounts' rules: connect (OAuth, IMAP), list, settings, default, replace, disconnect,
and the plan limit (ACC-1 … ACC-10, SEC-3, SEC-4)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from urllib.parse import urlencode

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from crmsync.accounts.imap import LoginRefused, MailLoginVerifier, ServerUnreachable
from crmsync.accounts.models import (
    Account,
    AccountSettings,
    AccountSettingsPatch,
    AdminAccounts,
    ConnectRequest,
    ConnectStarted,
    ImapConnectRequest,
    OAuthProvider,
    PendingConnect,
    PlanUsage,
    Status,
    TokenSet,
)
from crmsync.accounts.oauth import OAuthClient, ProviderRefused
from crmsync.accounts.state import StateError, StateSigner
from crmsync.auth import Principal
from crmsync.crypto import SecretBox
from crmsync.directory import Directory
from crmsync.errors import Conflict, Forbidden, NotFound, TransientError, Unprocessable
from crmsync.events import AccountSettingsChanged, AccountStatusChanged, DefaultAccountChanged, EventPublisher
from crmsync.ids import is_address, normalize_address
from crmsync.jobs import Job
from crmsync.schedule import JobQueue

logger = Logger()

IMPORT_MONTHS = {"1m": 1, "3m": 3, "6m": 6, "12m": 12}


class ConcurrentSecretUpdate(Exception):
    """Another writer changed the sealed secret first (optimistic locking)."""


class AccountStore(Protocol):
    """Port: accounts, their sealed secrets and pending connects (stores/accounts.py)."""

    def list_for_user(self, tenant_id: str, user_id: str) -> list[Account]: ...

    def list_for_tenant(self, tenant_id: str) -> list[Account]: ...

    def get(self, tenant_id: str, user_id: str, account_id: str) -> Account | None: ...

    def get_by_id(self, account_id: str) -> Account | None: ...

    def create(self, account: Account, sealed: Mapping[str, str] | None) -> None: ...

    def save(self, account: Account) -> None: ...

    def delete(self, account: Account) -> None: ...

    def set_default(self, account: Account, previous: Account | None) -> None: ...

    def get_secret(self, account_id: str) -> tuple[dict[str, str], int] | None: ...

    def put_secret(self, account_id: str, sealed: Mapping[str, str], expected_version: int | None) -> int: ...

    def delete_secret(self, account_id: str) -> None: ...

    def put_pending(self, pending: PendingConnect) -> None: ...

    def take_pending(self, state_id: str) -> PendingConnect | None: ...


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


class ConnectOutcome(BaseModel):
    """What the OAuth callback tells the CRM (as query parameters of its return URL)."""

    status: str
    account_id: str | None = None
    provider: str | None = None
    address: str | None = None
    reason: str | None = None
    message: str | None = None

    def query(self) -> str:
        return urlencode({k: v for k, v in self.model_dump().items() if v is not None})


def secret_context(account: Account) -> dict[str, str]:
    return {"tenant_id": account.tenant_id, "account_id": account.account_id}


class Accounts:
    def __init__(
        self,
        store: AccountStore,
        box: SecretBox,
        directory: Directory,
        publisher: EventPublisher,
        queue: JobQueue,
        signer: StateSigner,
        oauth: Callable[[str], OAuthClient],
        verifier: MailLoginVerifier,
        hooks: Mapping[str, ProviderHooks] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._box = box
        self._directory = directory
        self._publisher = publisher
        self._queue = queue
        self._signer = signer
        self._oauth = oauth
        self._verifier = verifier
        self._hooks: dict[str, ProviderHooks] = dict(hooks or {})
        self._now = now

    def register_hooks(self, provider: str, hooks: ProviderHooks) -> None:
        self._hooks[provider] = hooks

    # ------------------------------------------------------------------ reading
    def list(self, principal: Principal) -> list[Account]:
        return self._store.list_for_user(principal.tenant_id, principal.user_id)

    def get(self, principal: Principal, account_id: str) -> Account:
        account = self._store.get(principal.tenant_id, principal.user_id, account_id)
        if account is None:
            raise NotFound(f"no account {account_id!r} among your accounts")
        return account

    def admin_overview(self, principal: Principal) -> AdminAccounts:
        """ACC-10: every user's accounts in the tenant, with plan usage; metadata only."""
        if principal.role != "admin":
            raise Forbidden("only an admin may list the tenant's accounts")
        settings = self._directory.settings(principal.tenant_id)
        accounts = self._store.list_for_tenant(principal.tenant_id)
        users: dict[str, int] = {}
        for account in accounts:
            users.setdefault(account.user_id, 0)
            users[account.user_id] += int(account.holds_plan_slot)
        return AdminAccounts(
            plan=settings.plan,
            limit_per_user=settings.mailbox_limit,
            usage=[
                PlanUsage(user_id=u, mailbox_accounts=n, limit=settings.mailbox_limit)
                for u, n in sorted(users.items())
            ],
            accounts=accounts,
        )

    # ------------------------------------------------------------------ plan (ACC-4)
    def _check_plan(self, tenant_id: str, user_id: str, ignoring: Sequence[str] = ()) -> None:
        settings = self._directory.settings(tenant_id)
        held = [
            a
            for a in self._store.list_for_user(tenant_id, user_id)
            if a.holds_plan_slot and a.account_id not in ignoring
        ]
        if len(held) >= settings.mailbox_limit:
            raise Forbidden(
                f"the {settings.plan} plan allows {settings.mailbox_limit} mailbox account(s) per user "
                f"and {len(held)} are connected; disconnect one or upgrade the plan"
            )

    # ------------------------------------------------------------------ OAuth connect (ACC-2)
    def start_connect(
        self, principal: Principal, request: ConnectRequest, api_base: str, replaces: str | None = None
    ) -> ConnectStarted:
        if request.purpose != "calendar":
            # an account waiting for re-authorisation may be what this connect brings back:
            # the callback, which knows the address, decides (ACC-9)
            waiting = [a.account_id for a in self.list(principal) if a.status == "reauth_required"]
            self._check_plan(
                principal.tenant_id, principal.user_id, ignoring=[*waiting, *([replaces] if replaces else [])]
            )
        client = self._oauth(request.provider)
        claims = self._signer.issue(principal.tenant_id, principal.user_id, request.provider)
        state = self._signer.sign(claims)
        redirect_uri = f"{api_base.rstrip('/')}/oauth/{request.provider}/callback"
        url, flow = client.begin(redirect_uri, state, request.purpose, request.login_hint)
        settings = AccountSettings(
            sharing=request.sharing,
            labels_or_folders=request.labels_or_folders,
            import_since=request.import_since,
        )
        self._store.put_pending(
            PendingConnect(
                state_id=claims.sid,
                tenant_id=principal.tenant_id,
                user_id=principal.user_id,
                provider=request.provider,
                purpose=request.purpose,
                settings=settings,
                redirect_uri=redirect_uri,
                flow=flow,
                replaces=replaces,
                expires_at=claims.exp,
            )
        )
        return ConnectStarted(
            authorization_url=url, state=state, expires_at=datetime.fromtimestamp(claims.exp, UTC)
        )

    def start_replace(
        self, principal: Principal, account_id: str, request: ConnectRequest, api_base: str
    ) -> ConnectStarted:
        """ACC-7: a connect whose result takes this account's place."""
        old = self.get(principal, account_id)
        if old.status in ("replaced", "disconnected"):
            raise Conflict(f"account {account_id} is {old.status}; connect a new one instead")
        return self.start_connect(principal, request, api_base, replaces=old.account_id)

    def complete_connect(self, provider: OAuthProvider, params: Mapping[str, str]) -> ConnectOutcome:
        """The OAuth callback. Never raises: every failure is an outcome with a readable reason,
        and nothing half-made is left behind."""
        try:
            claims = self._signer.verify(params.get("state", ""), provider)
        except StateError as error:
            return _failed(
                provider, error.reason, "this connect link is not valid (forged, expired or already used)"
            )
        pending = self._store.take_pending(claims.sid)  # single use: the first caller takes it
        if pending is None:
            return _failed(provider, "invalid_state", "this connect link was already used or has expired")
        if (pending.tenant_id, pending.user_id, pending.provider) != (
            claims.tenant_id,
            claims.user_id,
            provider,
        ):
            return _failed(provider, "invalid_state", "this connect link belongs to another user")
        if "error" in params:
            reason = "consent_denied" if params["error"] == "access_denied" else "provider_error"
            return _failed(
                provider, reason, f"the provider said: {params.get('error_description') or params['error']}"
            )
        try:
            client = self._oauth(provider)
            tokens = client.exchange(dict(pending.flow), dict(params), pending.redirect_uri)
            address = client.address(tokens, pending.purpose)
            account = self._finish_connect(pending, address, tokens)
        except ProviderRefused as error:
            return _failed(provider, error.reason, error.message)
        except Forbidden as error:
            return _failed(provider, "plan_limit", error.message)
        except TransientError as error:
            return _failed(provider, "provider_unavailable", f"the provider could not be reached ({error})")
        except Exception:  # the user still gets a readable answer; the details go to the log
            logger.exception("connect failed", extra={"provider": provider})
            return _failed(provider, "internal_error", "the connect failed on our side; try again")
        return ConnectOutcome(
            status="connected", account_id=account.account_id, provider=provider, address=address
        )

    def _finish_connect(self, pending: PendingConnect, address: str, tokens: TokenSet) -> Account:
        mine = self._store.list_for_user(pending.tenant_id, pending.user_id)
        again = next((a for a in mine if a.provider == pending.provider and a.address == address), None)
        if again is not None and again.status != "replaced":
            return self._reconnect(again, pending, tokens)
        if pending.purpose != "calendar":  # checked again: another connect may have finished meanwhile
            self._check_plan(
                pending.tenant_id, pending.user_id, ignoring=[pending.replaces] if pending.replaces else []
            )
        now = self._now()
        account = Account(
            account_id=str(uuid.uuid4()),
            tenant_id=pending.tenant_id,
            user_id=pending.user_id,
            provider=pending.provider,
            purpose=pending.purpose,
            address=address,
            status="connected",
            settings=pending.settings,
            connected_at=now,
            updated_at=now,
            replaces=pending.replaces,
        )
        return self._activate(account, tokens, mine)

    def _activate(self, account: Account, tokens: TokenSet, mine: Sequence[Account]) -> Account:
        """Store a new account with its sealed secret, start its provider, then publish."""
        old = next((a for a in mine if a.account_id == account.replaces), None) if account.replaces else None
        if account.is_mailbox and (
            not any(a.is_default and a.can_sync for a in mine) or (old is not None and old.is_default)
        ):
            account.is_default = True
        sealed = self._box.seal(tokens.model_dump_json().encode(), secret_context(account))
        self._store.create(account, sealed)
        try:
            self._start_provider(account, tokens)
        except Exception as error:
            self._store.delete(account)  # nothing half-made: no account without its watch
            logger.exception("provider start failed", extra={"provider": account.provider})
            raise ProviderRefused(
                "provider_start_failed", f"{account.provider} could not start syncing this mailbox; try again"
            ) from error
        previous_default = next((a for a in mine if a.is_default), None)
        if account.is_default:
            self._store.set_default(account, previous_default)
        if old is not None:
            self._retire(old, "replaced", f"replaced by {account.address}", replaced_by=account.account_id)
        self._publish(account, None)
        if account.is_default:
            self._publish_default(account, previous_default)
        self._start_import(account)
        return account

    def _reconnect(self, account: Account, pending: PendingConnect, tokens: TokenSet) -> Account:
        """The same address again: fresh tokens, the same account and cursors (ACC-9 resume)."""
        previous = account.status
        if previous == "disconnected" and account.is_mailbox:
            self._check_plan(account.tenant_id, account.user_id, ignoring=[account.account_id])
        sealed = self._box.seal(tokens.model_dump_json().encode(), secret_context(account))
        existing = self._store.get_secret(account.account_id)
        self._store.put_secret(account.account_id, sealed, existing[1] if existing else None)
        account.status = "connected"
        account.status_reason = None
        account.updated_at = self._now()
        if previous == "disconnected":
            account.settings = pending.settings
            self._start_provider(account, tokens)
        self._store.save(account)
        if previous != "connected":
            self._publish(account, previous)
        return account

    def _start_provider(self, account: Account, tokens: TokenSet) -> None:
        hooks = self._hooks.get(account.provider)
        if hooks is not None:
            hooks.on_connected(account, tokens)

    def _start_import(self, account: Account) -> None:
        """ACC-5: a back-import runs as a resync execution from the chosen date."""
        months = IMPORT_MONTHS.get(account.settings.import_since)
        if not months or not account.is_mailbox:
            return
        since = account.connected_at - timedelta(days=30 * months)
        job = Job(
            type="resync.start",
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"user_id": account.user_id, "kind": "mail_import", "since": since.isoformat()},
        )
        self._queue.send(job, f"import-{account.account_id}")

    # ------------------------------------------------------------------ IMAP (ACC-3)
    def connect_imap(self, principal: Principal, request: ImapConnectRequest) -> Account:
        if not is_address(request.address):
            raise Unprocessable("address: not a valid e-mail address")
        address = normalize_address(request.address)
        mine = self._store.list_for_user(principal.tenant_id, principal.user_id)
        if any(
            a.provider == "imap" and a.address == address and a.status in ("connected", "syncing")
            for a in mine
        ):
            raise Conflict(f"{address} is already connected")
        self._check_plan(principal.tenant_id, principal.user_id)
        try:
            self._verifier.verify(request.server, request.password)
        except LoginRefused as error:
            raise Unprocessable(f"login failed: {error}; check the user name and (app) password") from error
        except ServerUnreachable as error:
            raise Unprocessable(f"cannot reach the mail server: {error}") from error
        now = self._now()
        account = Account(
            account_id=str(uuid.uuid4()),
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            provider="imap",
            purpose="mail",
            address=address,
            status="connected",
            settings=AccountSettings(
                sharing=request.sharing,
                labels_or_folders=request.labels_or_folders,
                import_since=request.import_since,
                inbound_from_contacts=False,  # MAIL-4: on by default for Gmail and Microsoft only
            ),
            imap=request.server,
            connected_at=now,
            updated_at=now,
        )
        try:
            return self._activate(account, TokenSet(password=request.password), mine)
        except ProviderRefused as error:
            raise Unprocessable(error.message) from error

    # ------------------------------------------------------------------ changes
    def update_settings(self, principal: Principal, account_id: str, patch: AccountSettingsPatch) -> Account:
        account = self.get(principal, account_id)
        changes = patch.model_dump(exclude_none=True)
        updated = account.settings.model_copy(update=changes)
        if updated == account.settings:
            return account
        before = account.settings
        account.settings = updated
        account.updated_at = self._now()
        self._store.save(account)
        self._publisher.publish(
            [
                AccountSettingsChanged(
                    tenant_id=account.tenant_id,
                    user_id=account.user_id,
                    account_id=account.account_id,
                    settings=updated.model_dump(mode="json"),
                )
            ]
        )
        hooks = self._hooks.get(account.provider)
        if isinstance(hooks, SettingsHooks):
            hooks.on_settings_changed(account, before)
        return account

    def set_default(self, principal: Principal, account_id: str) -> Account:
        """ACC-6: exactly zero or one default; the new one unsets the old."""
        account = self.get(principal, account_id)
        if not account.is_mailbox:
            raise Unprocessable("only a mailbox account can be the default sender")
        if not account.can_sync:
            raise Conflict(f"account {account_id} is {account.status} and cannot be the default")
        if account.is_default:
            return account
        previous = next(
            (a for a in self.list(principal) if a.is_default and a.account_id != account_id), None
        )
        account.is_default = True
        account.updated_at = self._now()
        self._store.set_default(account, previous)
        self._publish_default(account, previous)
        return account

    def _publish_default(self, account: Account, previous: Account | None) -> None:
        self._publisher.publish(
            [
                DefaultAccountChanged(
                    tenant_id=account.tenant_id,
                    user_id=account.user_id,
                    account_id=account.account_id,
                    previous_account_id=previous.account_id if previous else None,
                )
            ]
        )

    def disconnect(self, principal: Principal, account_id: str) -> Account:
        """ACC-8: stop everything now, delete the tokens, keep what was synced."""
        account = self.get(principal, account_id)
        if account.status == "disconnected":
            return account
        return self._retire(account, "disconnected", "disconnected by the user")

    def _retire(
        self, account: Account, status: Status, reason: str, replaced_by: str | None = None
    ) -> Account:
        tokens = self.tokens(account)
        hooks = self._hooks.get(account.provider)
        if hooks is not None:
            hooks.on_disconnected(account, tokens)
        self._store.delete_secret(account.account_id)
        previous = account.status
        account.status = status
        account.status_reason = reason
        account.is_default = False
        account.replaced_by = replaced_by or account.replaced_by
        account.updated_at = self._now()
        self._store.save(account)
        self._publish(account, previous)
        return account

    # ------------------------------------------------------------------ secrets
    def tokens(self, account: Account) -> TokenSet | None:
        found = self._store.get_secret(account.account_id)
        if found is None:
            return None
        return TokenSet.model_validate_json(self._box.open(found[0], secret_context(account)))

    def _publish(self, account: Account, previous: Status | None) -> None:
        self._publisher.publish([status_changed(account, previous)])


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


def _failed(provider: str, reason: str, message: str) -> ConnectOutcome:
    return ConnectOutcome(status="error", provider=provider, reason=reason, message=message)

"""The accounts' rules: connect (OAuth, IMAP), list, settings, default, replace, disconnect,
and the plan limit (ACC-1 … ACC-10, SEC-3, SEC-4)."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from aws_lambda_powertools import Logger
from pydantic import BaseModel

from crmsync.accounts.failures import LoginRefused, ProviderRefused, ServerUnreachable
from crmsync.accounts.models import (
    Account,
    AccountSettings,
    AccountSettingsPatch,
    AdminAccounts,
    ConfirmConnect,
    ConnectRequest,
    ConnectStarted,
    ImapConnectRequest,
    OAuthProvider,
    PendingConfirmation,
    PendingConnect,
    PlanUsage,
    Status,
    TokenSet,
)
from crmsync.accounts.ports import (
    WRITE_ATTEMPTS,
    AccountStore,
    ConcurrentAccountUpdate,
    ProviderHooks,
    SettingsHooks,
    secret_context,
    status_changed,
    update_account,
)
from crmsync.accounts.state import StateError, StateSigner
from crmsync.auth import Principal
from crmsync.crypto import SecretBox
from crmsync.directory import Directory
from crmsync.errors import (
    Conflict,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    ServiceError,
    TransientError,
    Unprocessable,
)
from crmsync.errors import ProviderRefused as ProviderRefusedError
from crmsync.events import AccountSettingsChanged, DefaultAccountChanged, EventPublisher
from crmsync.ids import is_address, normalize_address
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.schedule import JobQueue

if TYPE_CHECKING:
    from crmsync.accounts.imap import MailLoginVerifier
    from crmsync.accounts.oauth import OAuthClient

logger = Logger()

IMPORT_MONTHS = {"1m": 1, "3m": 3, "6m": 6, "12m": 12}
CONFIRM_TTL_S = 600  # a consent waits this long for the CRM user's confirmation

# ACC-2, SEC-5: the CRM's return page says why a connect failed in our words, never the
# provider's (its error_description, or any other text, could be planted in the callback URL)
PROVIDER_ERRORS = {
    "access_denied": ("consent_denied", "you declined the access the CRM asked for; nothing was connected"),
    "consent_required": ("consent_denied", "the provider needs your consent; connect again and allow access"),
    "interaction_required": ("consent_denied", "the provider needs you to sign in again; connect again"),
    "login_required": ("consent_denied", "the provider needs you to sign in again; connect again"),
    "temporarily_unavailable": (
        "provider_unavailable",
        "the provider is unavailable right now; try again later",
    ),
    "server_error": ("provider_unavailable", "the provider is unavailable right now; try again later"),
}
PROVIDER_ERROR = ("provider_error", "the provider did not grant access; try again or ask your administrator")


class ConnectOutcome(BaseModel):
    """What the OAuth callback tells the CRM (as query parameters of its return URL)."""

    status: str
    account_id: str | None = None
    provider: str | None = None
    address: str | None = None
    reason: str | None = None
    message: str | None = None
    confirmation: str | None = None

    def query(self) -> str:
        return urlencode({k: v for k, v in self.model_dump().items() if v is not None})


def _confirmation_context(pending: PendingConnect) -> dict[str, str]:
    return {"tenant_id": pending.tenant_id, "connect_id": pending.state_id}


def confirmation_id(code: str) -> str:
    """What a confirmation is stored under: a hash, so the table never holds the code."""
    return hashlib.sha256(code.encode()).hexdigest()


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
        hooks: Mapping[tuple[str, str], ProviderHooks] | None = None,
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
        # (provider, purpose) → what connecting and disconnecting starts and stops there; a
        # Google account used for mail and calendar runs both purposes' hooks
        self._hooks: Mapping[tuple[str, str], ProviderHooks] = hooks if hooks is not None else {}
        self._overrides: dict[tuple[str, str], ProviderHooks] = {}
        self._now = now

    def register_hooks(self, provider: str, hooks: ProviderHooks | None, purpose: str = "mail") -> None:
        """Hooks in place of the bundle's (a test's recorder); None puts the bundle's back."""
        if hooks is None:
            self._overrides.pop((provider, purpose), None)
        else:
            self._overrides[(provider, purpose)] = hooks

    def _hooks_of(self, account: Account, only: str | None = None) -> list[ProviderHooks]:
        """The hooks of each purpose the account syncs (or of `only` that one), for its provider
        (none for IMAP today)."""
        found = []
        for purpose in account.purposes:
            if only is not None and purpose != only:
                continue
            key = (account.provider, purpose)
            hooks = self._overrides.get(key) or self._hooks.get(key)
            if hooks is not None:
                found.append(hooks)
        return found

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
            reason, message = PROVIDER_ERRORS.get(params["error"], PROVIDER_ERROR)
            return _failed(provider, reason, message)
        try:
            client = self._oauth(provider)
            tokens = client.exchange(dict(pending.flow), dict(params), pending.redirect_uri)
            address = client.address(tokens, pending.purpose)
            self._check_plan_for(pending, address)  # said now; checked again when confirmed
            code = self._hold_for_confirmation(pending, address, tokens)
        except ProviderRefused as error:
            return _failed(provider, error.reason, error.message)
        except Forbidden as error:
            return _failed(provider, "plan_limit", error.message)
        except TransientError:
            return _failed(provider, "provider_unavailable", "the provider could not be reached; try again")
        except Exception:  # the user still gets a readable answer; the details go to the log
            logger.exception("connect failed", extra={"provider": provider})
            return _failed(provider, "internal_error", "the connect failed on our side; try again")
        return ConnectOutcome(
            status="confirm_required", provider=provider, address=address, confirmation=code
        )

    def _check_plan_for(self, pending: PendingConnect, address: str) -> None:
        """The plan check of a connect about to bring `address` (ACC-4); the same address
        again is a reconnect and takes no further place."""
        if pending.purpose == "calendar":
            return
        mine = self._store.list_for_user(pending.tenant_id, pending.user_id)
        again = next((a for a in mine if a.provider == pending.provider and a.address == address), None)
        if again is not None and again.status != "replaced":
            if again.status == "disconnected":
                self._check_plan(pending.tenant_id, pending.user_id, ignoring=[again.account_id])
            return
        self._check_plan(
            pending.tenant_id, pending.user_id, ignoring=[pending.replaces] if pending.replaces else []
        )

    def _hold_for_confirmation(self, pending: PendingConnect, address: str, tokens: TokenSet) -> str:
        """ACC-1: the consent waits, sealed, for the CRM user who started the connect to
        confirm it from their own session. The code goes to the browser only."""
        code = secrets.token_urlsafe(32)
        sealed = self._box.seal(tokens.model_dump_json().encode(), _confirmation_context(pending))
        self._store.put_confirmation(
            PendingConfirmation(
                confirmation_id=confirmation_id(code),
                pending=pending,
                address=address,
                sealed=sealed,
                expires_at=int(self._now().timestamp()) + CONFIRM_TTL_S,
            )
        )
        return code

    def confirm_connect(self, principal: Principal, request: ConfirmConnect) -> Account:
        """The CRM's return page, in the session of the user who came back from the provider,
        finishes the connect. Only the user who started it can: a connect link sent to someone
        else and consented to there connects nothing (the consent is thrown away)."""
        held = self._store.take_confirmation(confirmation_id(request.confirmation))  # single use
        if held is None or held.expires_at < self._now().timestamp():
            raise NotFound(
                "no connect waits for this confirmation (it was used, has expired, or never existed)"
            )
        pending = held.pending
        if (pending.tenant_id, pending.user_id) != (principal.tenant_id, principal.user_id):
            logger.warning("a connect was confirmed by another CRM user than the one who started it")
            raise Forbidden(
                "this connect was started by another CRM user; nothing was connected. If you did not"
                " start it, someone may have sent you their connect link: tell your administrator"
            )
        tokens = TokenSet.model_validate_json(self._box.open(held.sealed, _confirmation_context(pending)))
        try:
            return self._finish_connect(pending, held.address, tokens)
        except ProviderRefused as error:  # the same reason codes the callback gives
            raise _coded(ProviderRefusedError(error.message), error.reason) from error
        except Forbidden as error:
            raise _coded(Forbidden(error.message), "plan_limit") from error
        except TransientError as error:
            raise ProviderUnavailable("the provider could not be reached; connect again") from error

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
        """Store a new account with its sealed secret, start its provider, then publish. The
        replacement of a default account is the default; so is the first mailbox that can sync."""
        old_was_default = any(a.account_id == account.replaces and a.is_default for a in mine)
        account.is_default = False  # the default changes only through _make_default (ACC-6)
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
        previous_default: Account | None = None
        if account.is_mailbox:
            made = self._make_default(account, only_if_none=not old_was_default)
            if made is not None:
                account, previous_default = made
        old = (
            self._store.get(account.tenant_id, account.user_id, account.replaces)
            if account.replaces
            else None
        )
        if old is not None and old.status not in ("replaced", "disconnected"):
            self._retire(old, "replaced", f"replaced by {account.address}", replaced_by=account.account_id)
        self._publish(account, None)
        if account.is_default:
            self._publish_default(account, previous_default)
        self._start_import(account)
        return account

    def _make_default(
        self, account: Account, only_if_none: bool = False
    ) -> tuple[Account, Account | None] | None:
        """ACC-6: make `account` the user's one default, unsetting the old one, in a write that
        fails if either account or the user's default changed since they were read (then read
        again and decide again). With `only_if_none`, only when no account that can sync is the
        default. Returns the account and the previous default, or None when nothing changed."""
        for _ in range(WRITE_ATTEMPTS):
            marker = self._store.default_marker(account.tenant_id, account.user_id)
            mine = self._store.list_for_user(account.tenant_id, account.user_id)
            current = next((a for a in mine if a.account_id == account.account_id), None)
            if current is None or not current.can_sync:
                raise Conflict(f"account {account.account_id} cannot be the default now")
            if current.is_default:
                return None
            previous = next((a for a in mine if a.is_default and a.account_id != account.account_id), None)
            if only_if_none and previous is not None and previous.can_sync:
                return None
            current.updated_at = self._now()
            try:
                self._store.set_default(current, previous, marker)
            except ConcurrentAccountUpdate:
                continue
            return current, previous
        raise Conflict("the default account kept changing meanwhile; try again")

    def _reconnect(self, account: Account, pending: PendingConnect, tokens: TokenSet) -> Account:
        """The same address again: fresh tokens, the same account and cursors (ACC-9 resume)."""
        previous = account.status
        if previous == "disconnected" and account.is_mailbox:
            self._check_plan(account.tenant_id, account.user_id, ignoring=[account.account_id])
        sealed = self._box.seal(tokens.model_dump_json().encode(), secret_context(account))
        existing = self._store.get_secret(account.account_id)
        self._store.put_secret(account.account_id, sealed, existing[1] if existing else None)
        # CAL-10: a calendar stopped (or disconnected) and connected again resumes
        resuming = "calendar" in account.purposes and (account.calendar_stopped or previous == "disconnected")
        now = self._now()
        if previous == "disconnected":
            account.settings = pending.settings
            self._start_provider(account, tokens)
        elif resuming:
            self._start_provider(account, tokens, only="calendar")
        seen: list[Status] = []

        def reconnected(current: Account) -> bool:
            if current.status == "replaced":
                raise Conflict(f"account {current.account_id} was replaced meanwhile; connect again")
            seen.append(current.status)
            current.status = "connected"
            current.status_reason = None
            current.updated_at = self._now()
            if previous == "disconnected":
                current.settings = pending.settings
            if resuming and current.calendar_stopped_at is not None and current.calendar_resumed_at is None:
                current.calendar_resumed_at = now
            return True

        saved = update_account(self._store, account, reconnected) or account
        if seen and seen[-1] != "connected":
            self._publish(saved, seen[-1])
        if resuming:
            self._resume_calendar(saved, now)
        return saved

    def _resume_calendar(self, account: Account, now: datetime) -> None:
        """CAL-10: a resync from the original connection date through the state machine imports
        what the calendar made meanwhile; the activities the CRM changed meanwhile go out at its
        end (CalendarSync.settle), and changes the calendar made to synced events meanwhile are
        reported and applied only if the tenant says so (CAL-11)."""
        job = Job(
            type=JobType.RESYNC_START,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={
                "user_id": account.user_id,
                "kind": "calendar_resync",
                "since": account.connected_at.isoformat(),
            },
        )
        self._queue.send(job, f"resume-{account.account_id}-{int(now.timestamp())}")

    def stop_calendar(self, principal: Principal, account_id: str) -> Account:
        """CAL-9: from now on the sync changes neither the CRM's activities from the calendar nor
        the calendar from activities. The connection, its tokens and what it synced stay;
        connecting the same account again resumes (CAL-10)."""
        account = self.get(principal, account_id)
        if "calendar" not in account.purposes:
            raise Unprocessable(f"account {account_id} is not connected for calendar")
        if account.calendar_stopped or account.status in ("disconnected", "replaced"):
            return account
        now = self._now()

        def stopped(current: Account) -> bool:
            if current.calendar_stopped:
                return False
            current.calendar_stopped_at = now
            current.calendar_resumed_at = None
            current.updated_at = now
            return True

        saved = update_account(self._store, account, stopped)
        self._stop_provider(account, self._tokens_quietly(account), only="calendar")
        return saved or self.get(principal, account_id)

    def _start_provider(self, account: Account, tokens: TokenSet, only: str | None = None) -> None:
        for hooks in self._hooks_of(account, only):
            hooks.on_connected(account, tokens)

    def _start_import(self, account: Account) -> None:
        """ACC-5: a back-import runs as a resync execution from the chosen date."""
        months = IMPORT_MONTHS.get(account.settings.import_since)
        if not months or not account.is_mailbox:
            return
        since = account.connected_at - timedelta(days=30 * months)
        job = Job(
            type=JobType.RESYNC_START,
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

        def changed(current: Account) -> bool:
            nonlocal before, updated
            before = current.settings
            updated = current.settings.model_copy(update=changes)
            if updated == before:
                return False
            current.settings = updated
            current.updated_at = self._now()
            return True

        saved = update_account(self._store, account, changed)
        if saved is None:
            return self.get(principal, account_id)
        account = saved
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
        for hooks in self._hooks_of(account):
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
        made = self._make_default(account)
        if made is None:
            return self.get(principal, account_id)
        chosen, previous = made
        self._publish_default(chosen, previous)
        return chosen

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
        """ACC-7, ACC-8: the account stops at once (its status first, so that no worker takes
        it up again), the provider's watch or subscriptions are removed as far as the
        provider lets us, and the tokens are deleted whatever the provider said."""
        tokens = self._tokens_quietly(account)
        seen: list[Status] = []

        def retired(current: Account) -> bool:
            if current.status in ("replaced", "disconnected"):
                return False  # someone else retired it meanwhile
            seen.append(current.status)
            current.status = status
            current.status_reason = reason
            current.is_default = False
            current.replaced_by = replaced_by or current.replaced_by
            current.updated_at = self._now()
            if "calendar" in current.purposes and not current.calendar_stopped:
                current.calendar_stopped_at = current.updated_at  # a reconnect resumes (CAL-10)
                current.calendar_resumed_at = None
            return True

        saved = update_account(self._store, account, retired)
        try:
            self._stop_provider(account, tokens)
        finally:
            self._store.delete_secret(account.account_id)
        if saved is None:
            return self._store.get(account.tenant_id, account.user_id, account.account_id) or account
        self._publish(saved, seen[-1])
        return saved

    def _tokens_quietly(self, account: Account) -> TokenSet | None:
        try:
            return self.tokens(account)
        except Exception as error:  # a secret that no longer opens is deleted all the same
            logger.warning("stored tokens unreadable", extra={"error_type": type(error).__name__})
            return None

    def _fresh(self, account: Account, tokens: TokenSet | None) -> TokenSet | None:
        """Best effort: a freshly refreshed token for the provider calls of a disconnect (the
        stored one may have expired); the stored one when the provider refuses."""
        if tokens is None:
            return tokens
        try:
            return self._oauth(account.provider).refresh(tokens)
        except Exception as error:  # revoked, unreachable: the stop is best effort
            logger.warning(
                "no fresh token to stop the provider with",
                extra={"provider": account.provider, "error_type": type(error).__name__},
            )
            return tokens

    def _stop_provider(self, account: Account, tokens: TokenSet | None, only: str | None = None) -> None:
        found = self._hooks_of(account, only)
        if not found:  # nothing at the provider to stop (IMAP): no token is refreshed either
            return
        fresh = self._fresh(account, tokens)
        for hooks in found:
            try:
                hooks.on_disconnected(account, fresh)
            except Exception as error:  # the provider's side lapses on its own (a watch in 7 days)
                logger.warning(
                    "the provider's watch could not be stopped; it lapses on its own",
                    extra={"provider": account.provider, "error_type": type(error).__name__},
                )

    # ------------------------------------------------------------------ secrets
    def tokens(self, account: Account) -> TokenSet | None:
        found = self._store.get_secret(account.account_id)
        if found is None:
            return None
        return TokenSet.model_validate_json(self._box.open(found[0], secret_context(account)))

    def _publish(self, account: Account, previous: Status | None) -> None:
        self._publisher.publish([status_changed(account, previous)])


def _coded(error: ServiceError, code: str) -> ServiceError:
    error.code = code
    return error


def _failed(provider: str, reason: str, message: str) -> ConnectOutcome:
    return ConnectOutcome(status="error", provider=provider, reason=reason, message=message)

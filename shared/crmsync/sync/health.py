"""Connection health (SYNC-9): how each sync of a mailbox account or calendar connection is doing.

The layer keeps one small record per account and sync name ("mail", "calendar" — the
CursorLoop's name, which is also its cursor's — and "calendar_push" for the CRM's changes going
to the calendar): when it last succeeded, when it was last tried, the last error and how many
runs in a row failed, and the newest failed items with their reasons. A job writes it once per
run (`HealthLog`), never once per item, and a failed health write never fails the job.

`ConnectionHealth` answers `GET /v1/accounts/{id}/health` (and whatever else shows the same):
the lag since the last success, the cursor's age, the token's state, and whether a sync that
should run periodically has gone quiet for longer than its poll interval plus a grace (`stale`),
so that a connection that stops syncing shows it within one poll interval.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel, Field

from crmsync.accounts.models import ACTIVE, SYNCABLE, Account
from crmsync.auth import Principal
from crmsync.errors import NotFound

logger = Logger()

KEEP_FAILED_ITEMS = 20  # the newest this many failed items are kept per sync
MAX_REASON = 500
# the scheduler's period (template.yaml, rate(5 minutes)) and a minute more: how late a poll may
# run without its connection counting as stale
STALE_GRACE_S = 360
PUSH = "calendar_push"
# Skip reasons that are decisions of the sync rules (mail/rules.py, MAIL-5/6/8, MAIL-1/4), not
# failures: the message was read and is deliberately not the CRM's. Every other skip is a failed
# item (malformed or unreadable content, a refused attachment, AWS refusing a write, …).
POLICY_SKIPS = frozenset({"internal_mail", "label_not_selected", "not_a_crm_thread", "blocked"})

_SECRETS = re.compile(
    r"(?i)(bearer\s+|(?:access_token|refresh_token|token|password|secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"'&,;]+"
)


def scrub(text: str) -> str:
    """A reason fit to store and show: one line, bounded, token-like values blanked."""
    return _SECRETS.sub(r"\1<redacted>", " ".join(text.split()))[:MAX_REASON]


def reason_of(error: BaseException) -> str:
    return scrub(f"{type(error).__name__}: {error}")


class FailedItem(BaseModel):
    item_id: str = Field(description="The provider's id of the item (message, event) or our activity id.")
    reason: str = Field(description="Why it did not sync.")
    at: datetime = Field(description="When it failed (the run that met it).")


class SyncHealth(BaseModel):
    """The stored record of one sync of one account."""

    account_id: str
    name: str
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    failures: int = Field(default=0, description="Runs in a row that failed (0 after any run that did not).")
    failed_items: list[FailedItem] = Field(default_factory=list, description="Newest first, bounded.")
    version: int = 0


class RunReport(BaseModel):
    """What one run of a sync came to."""

    at: datetime
    # progress: ran without error, not to the end; items: only failed items (a resync's page)
    outcome: Literal["success", "progress", "error", "items"]
    error: str | None = None
    failed_items: list[FailedItem] = Field(default_factory=list)


def merged(record: SyncHealth | None, account_id: str, name: str, run: RunReport) -> SyncHealth:
    """The record after `run` (pure: both stores apply it)."""
    base = record or SyncHealth(account_id=account_id, name=name)
    changes: dict[str, object] = {}
    if run.outcome == "error":
        changes.update(failures=base.failures + 1, last_error=run.error, last_error_at=run.at)
    elif run.outcome != "items":
        changes["failures"] = 0
        if run.outcome == "success":
            changes["last_success_at"] = run.at
    if run.outcome != "items":
        changes["last_attempt_at"] = run.at
    if run.failed_items:
        fresh: dict[str, FailedItem] = {}
        for item in reversed(run.failed_items):  # newest first; an item met twice is kept once
            fresh.setdefault(item.item_id, item)
        older = [item for item in base.failed_items if item.item_id not in fresh]
        changes["failed_items"] = [*fresh.values(), *older][:KEEP_FAILED_ITEMS]
    return base.model_copy(update=changes)


class HealthStore(Protocol):
    def health_of(self, account_id: str) -> list[SyncHealth]:
        """Every sync's record of the account."""
        ...

    def record(self, account_id: str, name: str, run: RunReport) -> SyncHealth:
        """Apply one run to the record (one write; a run with failed items reads first)."""
        ...


class ItemOutcome(Protocol):
    """What the sync core reports of an item that did not sync (sync/core.py ItemFailure)."""

    @property
    def item_id(self) -> str: ...

    @property
    def reason(self) -> str: ...


def is_failure(reason: str) -> bool:
    return reason.split(":", 1)[0].strip() not in POLICY_SKIPS


class HealthLog:
    """The jobs' side: one write per run, best effort (a health write never fails the sync)."""

    def __init__(self, store: HealthStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._clock = clock

    def ran(
        self, account_id: str, name: str, completed: bool = True, items: Sequence[ItemOutcome] = ()
    ) -> None:
        """A run that ended without error: `completed` if it reached the provider's present."""
        self._write(account_id, name, "success" if completed else "progress", None, items)

    def failed(
        self, account_id: str, name: str, error: BaseException | str, items: Sequence[ItemOutcome] = ()
    ) -> None:
        reason = error if isinstance(error, str) else reason_of(error)
        self._write(account_id, name, "error", scrub(reason), items)

    def items(self, account_id: str, name: str, items: Sequence[ItemOutcome]) -> None:
        """Items a resync's or back-import's page did not sync: kept among the sync's failed
        items, the runs' record left as it is; no write when none failed."""
        self._write(account_id, name, "items", None, items)

    def _write(
        self,
        account_id: str,
        name: str,
        outcome: Literal["success", "progress", "error", "items"],
        error: str | None,
        items: Sequence[ItemOutcome],
    ) -> None:
        at = self._clock()
        failed = [
            FailedItem(item_id=i.item_id[:512], reason=scrub(i.reason), at=at)
            for i in items
            if is_failure(i.reason)
        ][-KEEP_FAILED_ITEMS:]
        if outcome == "items" and not failed:
            return
        run = RunReport(at=at, outcome=outcome, error=error, failed_items=failed)
        try:
            self._store.record(account_id, name, run)
        except Exception as problem:  # health tells of the sync; it never makes it fail
            logger.warning(
                "connection health not recorded",
                extra={"account_id": account_id, "sync": name, "error_type": type(problem).__name__},
            )


# ---------------------------------------------------------------------------- the API's view

TokenStateName = Literal["connected", "reauth_required", "disconnected"]


class TokenState(BaseModel):
    state: TokenStateName = Field(description="connected (syncs), reauth_required, or disconnected.")
    account_status: str = Field(description="The account's own status (connected, syncing, replaced, …).")
    reason: str | None = Field(default=None, description="Why, when it is not connected.")


class SyncHealthView(BaseModel):
    name: str = Field(description='"mail", "calendar", or "calendar_push" (CRM changes to the calendar).')
    last_success_at: datetime | None = None
    last_attempt_at: datetime | None = None
    lag_s: int | None = Field(default=None, description="Seconds since the last successful sync.")
    cursor_age_s: int | None = Field(
        default=None, description="Seconds since the provider cursor last moved."
    )
    poll_interval_s: int | None = Field(
        default=None, description="How often the sync runs at least (none for calendar_push)."
    )
    failures: int = Field(default=0, description="Runs in a row that failed.")
    last_error: str | None = None
    last_error_at: datetime | None = None
    failed_items: list[FailedItem] = Field(default_factory=list, description="Newest first, at most 20.")
    stale: bool = Field(
        default=False,
        description="No successful sync within one poll interval and a grace, though it should.",
    )


class ConnectionHealthView(BaseModel):
    account_id: str
    purposes: list[str]
    status: TokenState
    syncs: list[SyncHealthView]
    healthy: bool = Field(description="Connected, no sync stale, and no sync's latest run failed.")
    stale: bool = Field(description="Any sync is stale.")
    checked_at: datetime


class AccountReader(Protocol):
    def get(self, tenant_id: str, user_id: str, account_id: str) -> Account | None: ...


class CursorAges(Protocol):
    def updated_at(self, account_id: str, name: str) -> datetime | None: ...


def token_state(account: Account) -> TokenState:
    state: TokenStateName = (
        "connected"
        if account.status in SYNCABLE
        else "reauth_required"
        if account.status == "reauth_required"
        else "disconnected"
    )
    return TokenState(state=state, account_status=account.status, reason=account.status_reason)


def _seconds(now: datetime, then: datetime | None) -> int | None:
    return None if then is None else max(0, int((now - then).total_seconds()))


class ConnectionHealth:
    """SYNC-9's answer for one account: `of(principal, account_id)` for the caller's own account
    (SEC-4: anyone else's is a 404), `of_account(account)` once the caller is known to own it."""

    def __init__(
        self,
        accounts: AccountReader,
        store: HealthStore,
        cursors: CursorAges,
        poll_intervals: Mapping[str, int],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        served: Callable[[str, str], bool] = lambda provider, name: True,
    ) -> None:
        self._accounts = accounts
        self._store = store
        self._cursors = cursors
        self._polls = poll_intervals  # sync name → its poll interval (s): the syncs that run periodically
        self._clock = clock
        self._served = served  # (provider, purpose): whether this build syncs it (providers/registry.py)

    def of(self, principal: Principal, account_id: str) -> ConnectionHealthView:
        account = self._accounts.get(principal.tenant_id, principal.user_id, account_id)
        if account is None:
            raise NotFound(f"no account {account_id!r} among your accounts")
        return self.of_account(account)

    def of_account(self, account: Account) -> ConnectionHealthView:
        now = self._clock()
        records = {r.name: r for r in self._store.health_of(account.account_id)}
        expected = [
            name for name in account.purposes if name in self._polls and self._served(account.provider, name)
        ]
        names = [*expected, *sorted(n for n in records if n not in expected)]
        # a sync that should run: the account has not been disconnected or replaced
        should_run = account.status in ACTIVE
        syncs = [self._view(account, name, records.get(name), now, should_run) for name in names]
        stale = any(s.stale for s in syncs)
        state = token_state(account)
        return ConnectionHealthView(
            account_id=account.account_id,
            purposes=list(account.purposes),
            status=state,
            syncs=syncs,
            healthy=state.state == "connected" and not stale and not any(s.failures for s in syncs),
            stale=stale,
            checked_at=now,
        )

    def _view(
        self, account: Account, name: str, record: SyncHealth | None, now: datetime, should_run: bool
    ) -> SyncHealthView:
        record = record or SyncHealth(account_id=account.account_id, name=name)
        poll = self._polls.get(name)
        stale = False
        cursor_age = None
        if poll is not None:
            cursor_age = _seconds(now, self._cursors.updated_at(account.account_id, name))
            since = record.last_success_at or account.connected_at  # a new one has a poll's time
            if name == "calendar" and account.calendar_stopped:
                should_run = False  # CAL-9: the user stopped the calendar sync
            stale = should_run and (now - since).total_seconds() > poll + min(STALE_GRACE_S, poll // 2)
        return SyncHealthView(
            name=name,
            last_success_at=record.last_success_at,
            last_attempt_at=record.last_attempt_at,
            lag_s=_seconds(now, record.last_success_at),
            cursor_age_s=cursor_age,
            poll_interval_s=poll,
            failures=record.failures,
            last_error=record.last_error,
            last_error_at=record.last_error_at,
            failed_items=record.failed_items,
            stale=stale,
        )

"""The provider fixtures of the calendar contract suite: one module per provider, each with one
`ContractCalendar` subclass named by `FIXTURE`. The scenarios (test_calendar_contract.py) run once
per module found here: adding a provider (CalDAV, Outlook) is one new module, nothing else.

A fixture is one user's calendar at the provider: the adapter's three ports for the sync (the
ChangeSource, the ImportSource, the CalendarWriter), the user's own edits in the provider's
client (in the engine's terms: synced fields, visibility, recurrence lines), the faults (an
expired cursor, throttling), and what the provider holds, read past the adapter."""

from __future__ import annotations

import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal

from crmsync.accounts.models import Account
from crmsync.calendar.models import CalendarEvent, SyncedFields, Visibility
from crmsync.calendar.ports import CalendarWriter
from crmsync.sync.core import ChangeSource, ImportSource

Where = Literal["primary", "other"]


class ContractCalendar(ABC):
    """One user's calendars at one provider: a primary one (the one that syncs, CAL-3) and another."""

    name: ClassVar[str]
    account: Account
    source: ChangeSource[CalendarEvent]
    importer: ImportSource[CalendarEvent]
    writer: CalendarWriter

    @abstractmethod
    def __init__(self, fixture: Callable[[str], Any]) -> None:
        """`fixture` gives a pytest fixture by name (the emulators, for one)."""

    @abstractmethod
    def now(self) -> datetime:
        """The provider's clock (what `created` and `updated` are stamped with)."""

    @abstractmethod
    def set_clock(self, moment: datetime | None) -> None:
        """Fix the provider's clock; None: real time again."""

    # ------------------------------------------------------------------ the user, in the client
    @abstractmethod
    def user_creates(
        self,
        fields: SyncedFields,
        *,
        visibility: Visibility = "default",
        recurrence: Sequence[str] = (),
        created: datetime | None = None,
        color: str | None = None,
        where: Where = "primary",
    ) -> str:
        """A new event; `created` back-dates it; `color` is a property the sync does not own.
        The provider's id of it."""

    @abstractmethod
    def user_edits(
        self,
        event_id: str,
        fields: SyncedFields | None = None,
        *,
        visibility: Visibility | None = None,
        recurrence: Sequence[str] | None = None,
    ) -> None:
        """An edit of an event of the primary calendar: every synced field to `fields`, and/or
        the visibility, and/or the recurrence lines (empty: no longer recurring)."""

    @abstractmethod
    def user_deletes(self, event_id: str) -> None: ...

    @abstractmethod
    def user_moves(self, event_id: str, to: Where) -> None:
        """Moves an event from the primary calendar to the other one, or back."""

    # ------------------------------------------------------------------ faults
    @abstractmethod
    def expire_cursor(self) -> None:
        """Every cursor handed out so far is refused from now on (Google: 410 fullSyncRequired)."""

    @abstractmethod
    def throttle_listing(self) -> None:
        """The next listing request is refused as throttled (Google: 403 usageLimits)."""

    # ------------------------------------------------------------------ what the provider holds
    @abstractmethod
    def primary_events(self) -> list[CalendarEvent]:
        """Every event of the primary calendar, cancelled ones too, read past the adapter."""

    @abstractmethod
    def color_of(self, event_id: str) -> str | None: ...

    @abstractmethod
    def writes(self) -> list[dict[str, Any]]:
        """The sync's writes, in order: `method` (insert, patch, update, delete, move) and
        `sendUpdates`."""


def names() -> list[str]:
    """The provider fixtures: every module of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def fixture_class(name: str) -> type[ContractCalendar]:
    found: type[ContractCalendar] = importlib.import_module(f"{__name__}.{name}").FIXTURE
    return found

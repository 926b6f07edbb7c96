"""What a vendor package gives for one purpose (mail now, calendar next): one bundle of the parts
the provider-neutral code plugs in. The composition root (services.py) builds each bundle once,
from a `MailWiring` of the layer's shared services; each part is built on first use, so that a
function imports only the vendor code it calls (cold start)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from crmsync.accounts.models import Account
    from crmsync.accounts.ports import ProviderHooks
    from crmsync.calendar.models import CalendarEvent
    from crmsync.calendar.ports import CalendarWriter
    from crmsync.calendar.schedule import CalendarPolls
    from crmsync.calendar.watch import CalendarWatcher
    from crmsync.jobs import Job
    from crmsync.mail.actions import MailboxActions
    from crmsync.mail.engine import MailSync
    from crmsync.mail.limits import AttachmentLimits
    from crmsync.mail.models import ProviderMessage
    from crmsync.mail.send import MailSender
    from crmsync.mail.watch import SyncSchedule, Watcher
    from crmsync.settings import Settings
    from crmsync.sync.core import ChangeSource, CursorStore, ImportSource
    from crmsync.sync.jobs import SyncJob


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str) -> None: ...


class MailWiring(Protocol):
    """The layer's shared services a vendor's mail bundle may use."""

    @property
    def settings(self) -> Settings: ...

    def access_token(self, account_id: str) -> str:
        """A valid access token for the account (refreshed when due; AccountPaused if refused)."""
        ...

    def refused(self, account_id: str, token: str) -> str:
        """After a 401: a new token, or the account paused for re-authorisation (ACC-9)."""
        ...

    def engine(self) -> MailSync: ...

    def cursors(self) -> CursorStore: ...

    def schedule(self) -> SyncSchedule: ...

    def calendar_polls(self) -> CalendarPolls: ...

    def queue(self) -> JobQueue: ...

    def sync_job(self) -> SyncJob[ProviderMessage]: ...


class MailBundle(ABC):
    """A vendor's mail parts. `source` pages through changes since a cursor, `pages` through
    what a resync or back-import lists; both only read, and the sync core hands what they return
    to the engine. `jobs` are job types of the vendor's own (Graph's lifecycle events),
    registered with the worker beside the neutral ones."""

    # the provider's attachment limits (ATT-5), overridable by ATTACHMENT_LIMITS
    limits: ClassVar[AttachmentLimits]

    def __init__(self, wiring: MailWiring) -> None:
        self.wiring = wiring

    @property
    @abstractmethod
    def source(self) -> ChangeSource[ProviderMessage]: ...

    @property
    @abstractmethod
    def pages(self) -> ImportSource[ProviderMessage]: ...

    @property
    @abstractmethod
    def hooks(self) -> ProviderHooks: ...

    @property
    @abstractmethod
    def watcher(self) -> Watcher: ...

    @property
    @abstractmethod
    def sender(self) -> MailSender: ...

    @property
    @abstractmethod
    def actions(self) -> MailboxActions: ...

    @property
    def jobs(self) -> Mapping[str, Callable[[Job, str], None]]:
        return {}


class CalendarBundle(ABC):
    """A vendor's calendar parts: `source` pages through changes since a cursor, `pages` through
    what a calendar resync lists, `writer` writes events (CAL-15, CAL-17), `hooks` give a new
    connection its first cursor. Built over the same wiring as the mail bundle."""

    def __init__(self, wiring: MailWiring) -> None:
        self.wiring = wiring

    @property
    @abstractmethod
    def source(self) -> ChangeSource[CalendarEvent]: ...

    @property
    @abstractmethod
    def pages(self) -> ImportSource[CalendarEvent]: ...

    @property
    @abstractmethod
    def writer(self) -> CalendarWriter: ...

    @property
    @abstractmethod
    def hooks(self) -> ProviderHooks: ...

    @property
    def watcher(self) -> CalendarWatcher | None:
        """The connection's push channel, renewed by `calendar.watch` (SYNC-7); None: the
        provider keeps none, and the poll alone syncs its calendars."""
        return None

    @abstractmethod
    def calendar_id(self, account: Account) -> str:
        """The id of the account's primary calendar, the one that syncs (CAL-3)."""

"""The composition root: one `Services` object builds the layer's services over their real stores.

A Lambda instance builds one when its handler module is imported (`current()`), and keeps it for
its life; the local stack builds one per stack and binds it (`bind`), so its handlers and its
tests share it. Each service and store is built once per `Services`, on first use, importing
only what it needs (cold start). Nothing here holds a rule: the rules live in the layer's
modules, and this file only says which implementation serves which port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Concatenate

from crmsync.jobtypes import JobType
from crmsync.providers import registry

if TYPE_CHECKING:
    from crmsync.accounts.credentials import Credentials
    from crmsync.accounts.models import Account
    from crmsync.accounts.oauth import OAuthClient
    from crmsync.accounts.ports import ProviderHooks
    from crmsync.accounts.service import Accounts
    from crmsync.calendar.activities import Activities, CalendarPushJob
    from crmsync.calendar.engine import CalendarSync
    from crmsync.calendar.models import CalendarEvent, CalendarLink
    from crmsync.calendar.schedule import CalendarPolls
    from crmsync.calendar.watch import CalendarWatchJob
    from crmsync.crypto import SecretBox
    from crmsync.directory import Directory
    from crmsync.jobs import JobRunner
    from crmsync.mail.actions import MailActions
    from crmsync.mail.engine import MailSync
    from crmsync.mail.models import ProviderMessage
    from crmsync.mail.read import Mailbox
    from crmsync.mail.send import Outbox
    from crmsync.mail.watch import MailWatchJob, SyncSchedule
    from crmsync.providers.bundle import CalendarBundle, MailBundle
    from crmsync.providers.google.calendar_push import CalendarPush
    from crmsync.providers.google.push import GmailPush
    from crmsync.providers.microsoft.notify import GraphNotifications
    from crmsync.resync import Resync, ResyncRequests
    from crmsync.schedule import Scheduler
    from crmsync.settings import Settings
    from crmsync.stores.accounts import DynamoAccountStore
    from crmsync.stores.activities import DynamoActivityStore
    from crmsync.stores.cursors import DynamoCursorStore, DynamoDueStore, DynamoSyncStateStore
    from crmsync.stores.eventbridge import EventBridgePublisher
    from crmsync.stores.mail import DynamoMailStore
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.sync.core import ChangeSource, CursorLoop
    from crmsync.sync.health import ConnectionHealth, HealthLog
    from crmsync.sync.jobs import SyncJob
    from crmsync.worker import SyncBatch


def _once[**P, R](build: Callable[Concatenate[Services, P], R]) -> Callable[Concatenate[Services, P], R]:
    """A method whose result is built once per Services and per arguments."""

    def cached(self: Services, /, *args: P.args, **kwargs: P.kwargs) -> R:
        key = (build.__name__, args, tuple(sorted(kwargs.items())))
        try:
            return self._built[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        with self._lock:  # the local stack runs functions on threads
            if key not in self._built:
                self._built[key] = build(self, *args, **kwargs)
            return self._built[key]  # type: ignore[no-any-return]

    cached.__name__ = cached.__qualname__ = build.__name__
    cached.__doc__ = build.__doc__
    return cached


class Services:
    """The layer's services for one deployment's settings (from the environment by default)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self._settings = settings
        self._built: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.RLock()

    @property
    def settings(self) -> Settings:
        """Read from the environment when first needed (a function that needs none reads none)."""
        if self._settings is None:
            from crmsync.settings import Settings

            self._settings = Settings()
        return self._settings

    def with_settings(self, **changes: Any) -> Services:
        """Services over the same resources with some settings changed (a test's Pub/Sub topic)."""
        return Services(self.settings.model_copy(update=changes))

    # ------------------------------------------------------------------ stores
    @_once
    def publisher(self) -> EventBridgePublisher:
        from crmsync.stores.eventbridge import EventBridgePublisher

        return EventBridgePublisher(self.settings.event_bus_name, self.settings.event_source)

    @_once
    def account_store(self) -> DynamoAccountStore:
        from crmsync.stores.accounts import DynamoAccountStore

        return DynamoAccountStore(self.settings.accounts_table)

    @_once
    def mail_store(self) -> DynamoMailStore:
        from crmsync.stores.mail import DynamoMailStore

        return DynamoMailStore(self.settings.threads_table, self.settings.messages_table)

    @_once
    def cursors(self) -> DynamoCursorStore:
        from crmsync.stores.cursors import DynamoCursorStore

        return DynamoCursorStore(self.settings.cursors_table)

    @_once
    def sync_state(self) -> DynamoSyncStateStore:
        from crmsync.stores.cursors import DynamoSyncStateStore

        return DynamoSyncStateStore(self.settings.cursors_table)

    @_once
    def due(self) -> DynamoDueStore:
        from crmsync.stores.cursors import DynamoDueStore

        return DynamoDueStore(self.settings.cursors_table, self.settings.due_shards)

    @_once
    def health_log(self) -> HealthLog:
        """SYNC-9: each sync job's run, recorded once per run beside the account's cursors."""
        from crmsync.stores.health import DynamoHealthStore
        from crmsync.sync.health import HealthLog

        return HealthLog(DynamoHealthStore(self.settings.cursors_table))

    @_once
    def connection_health(self) -> ConnectionHealth:
        """SYNC-9's view of one account: `.of(principal, account_id)`, `.of_account(account)`."""
        from crmsync.stores.health import DynamoHealthStore
        from crmsync.sync.health import ConnectionHealth

        s = self.settings
        return ConnectionHealth(
            self.account_store(),
            DynamoHealthStore(s.cursors_table),
            self.cursors(),
            poll_intervals={"mail": s.catchup_after_s, "calendar": s.calendar_poll_after_s},
            served=lambda provider, purpose: provider in registry.providers(purpose),
        )

    @_once
    def queue(self) -> SqsJobQueue:
        from crmsync.stores.queue import SqsJobQueue

        return SqsJobQueue(self.settings.sync_queue_url)

    @_once
    def secret_box(self) -> SecretBox:
        from crmsync.crypto import SecretBox
        from crmsync.stores.kms import KmsKeyService

        return SecretBox(KmsKeyService(self.settings.user_secrets_key_id))

    def _secret_text(self, arn: str) -> str:
        from crmsync.stores.secrets import secret_text

        return secret_text(arn)

    # ------------------------------------------------------------------ directory and accounts
    @_once
    def directory(self) -> Directory:
        from crmsync.directory import Directory
        from crmsync.stores.directory import DynamoDirectoryStore

        return Directory(DynamoDirectoryStore(self.settings.directory_table), self.publisher())

    @_once
    def credentials(self) -> Credentials:
        from crmsync.accounts.credentials import Credentials

        return Credentials(self.account_store(), self.secret_box(), self.oauth_client, self.publisher())

    def oauth_client(self, provider: str) -> OAuthClient:
        """The OAuth adapter of a provider, with the client credentials from Secrets Manager; one
        per provider and credentials (new credentials in the secret make a new adapter)."""
        from crmsync.accounts.failures import ProviderRefused
        from crmsync.stores.secrets import secret_json

        config = secret_json(self.settings.oauth_clients_secret_arn).get(provider) or {}
        if (provider, "oauth") not in registry.BUNDLES:
            raise ProviderRefused("unknown_provider", f"no OAuth provider {provider!r}")
        if not config.get("client_id") or not config.get("client_secret"):
            raise ProviderRefused(
                "provider_not_configured", f"{provider} sign-in is not configured on this service"
            )
        key = ("oauth_client", provider, tuple(sorted((str(k), str(v)) for k, v in config.items())))
        with self._lock:
            if key not in self._built:
                self._built[key] = registry.oauth_client(provider, config, self.settings)
            client: OAuthClient = self._built[key]
            return client

    @_once
    def accounts(self) -> Accounts:
        from crmsync.accounts.imap import ImapSmtpVerifier
        from crmsync.accounts.service import Accounts
        from crmsync.accounts.state import StateSigner

        s = self.settings
        return Accounts(
            hooks=registry.ByPurpose(self._hooks),
            store=self.account_store(),
            box=self.secret_box(),
            directory=self.directory(),
            publisher=self.publisher(),
            queue=self.queue(),
            signer=StateSigner(lambda: self._secret_text(s.state_signing_secret_arn).encode()),
            oauth=self.oauth_client,
            verifier=ImapSmtpVerifier(s.imap_ca_bundle or None, s.imap_allow_private_hosts),
        )

    def _hooks(self, provider: str, purpose: str) -> ProviderHooks:
        if purpose == "calendar":
            return self.calendar_bundle(provider).hooks
        return self.mail_bundle(provider).hooks

    # ------------------------------------------------------------------ providers
    @_once
    def mail_bundle(self, provider: str) -> MailBundle:
        """A provider's mail parts over these services (KeyError: no such provider)."""
        return registry.mail_bundle(provider, _Wiring(self))

    def _mail_parts[T](self, part: Callable[[MailBundle], T]) -> Mapping[str, T]:
        return registry.ByProvider("mail", lambda provider: part(self.mail_bundle(provider)))

    @_once
    def calendar_bundle(self, provider: str) -> CalendarBundle:
        """A provider's calendar parts over these services (KeyError: no such provider)."""
        return registry.calendar_bundle(provider, _Wiring(self))

    def _calendar_parts[T](self, part: Callable[[CalendarBundle], T]) -> Mapping[str, T]:
        return registry.ByProvider("calendar", lambda provider: part(self.calendar_bundle(provider)))

    @_once
    def change_sources(self) -> Mapping[str, ChangeSource[ProviderMessage]]:
        """provider → its mail ChangeSource, each built on first use."""
        return self._mail_parts(lambda b: b.source)

    # ------------------------------------------------------------------ mail sync
    @_once
    def mail_sync(self) -> MailSync:
        from crmsync.mail.engine import MailSync
        from crmsync.mail.limits import limits_for
        from crmsync.stores.aws import classify_failure
        from crmsync.stores.mail import S3RawStore

        s = self.settings
        return MailSync(
            self.mail_store(),
            S3RawStore(s.data_bucket),
            self.directory(),
            self.publisher(),
            limits=lambda provider: limits_for(provider, s.attachment_limits),
            classify=classify_failure,
        )

    @_once
    def mailbox_sync(self) -> CursorLoop[ProviderMessage]:
        from crmsync.resync import ResyncTrigger
        from crmsync.sync.core import CursorLoop

        trigger = ResyncTrigger(self.resync_requests(), self.queue(), "mail_resync")
        return CursorLoop(self.mail_sync(), self.cursors(), trigger, "mail")

    @_once
    def sync_schedule(self) -> SyncSchedule:
        """Each mailbox's watch renewal and catch-up poll, as due items (SYNC-2, SYNC-7)."""
        from crmsync.mail.watch import SyncSchedule

        return SyncSchedule(self.due(), self.settings.catchup_after_s)

    @_once
    def mail_sync_job(self) -> SyncJob[ProviderMessage]:
        from crmsync.sync.jobs import SyncJob

        return SyncJob(
            self.account_store(),
            self.mailbox_sync(),
            self.change_sources(),
            synced=self.sync_schedule().synced,
            continuation=self.queue(),
            health=self.health_log(),
        )

    @_once
    def mail_watch_job(self) -> MailWatchJob:
        """The `mail.watch` job (SYNC-7): every provider's watcher."""
        from crmsync.mail.watch import MailWatchJob

        return MailWatchJob(self.mail_sync_job(), self._mail_parts(lambda b: b.watcher), self.sync_schedule())

    @_once
    def resync_requests(self) -> ResyncRequests:
        """Starting resync executions, one per account and kind at a time (SYNC-3)."""
        from crmsync.resync import ResyncRequests
        from crmsync.stores.stepfunctions import StepFunctionsResyncStarter

        arn = self.settings.resync_state_machine_arn
        if not arn:
            raise RuntimeError("RESYNC_STATE_MACHINE_ARN must be set to start resyncs")
        return ResyncRequests(self.sync_state(), StepFunctionsResyncStarter(arn))

    @_once
    def resync(self) -> Resync:
        from crmsync.resync import CursorHandover, Resync
        from crmsync.sync.core import ImportPages

        health = self.health_log()
        pages = ImportPages(
            self.account_store(),
            self._mail_parts(lambda b: b.pages),
            self.mail_sync(),
            failed=lambda account_id, items: health.items(account_id, "mail", items),
        )
        events = ImportPages(
            self.account_store(),
            self._calendar_parts(lambda b: b.pages),
            self.calendar_sync(),
            failed=lambda account_id, items: health.items(account_id, "calendar", items),
        )
        return Resync(
            self.sync_state(),
            self.publisher(),
            sources={"mail_resync": pages, "mail_import": pages, "calendar_resync": events},
            cursor_sink=CursorHandover(self.cursors(), self.queue()),
        )

    @_once
    def job_runner(self) -> JobRunner:
        from crmsync.jobs import JobRunner
        from crmsync.mail.actions import PropagateJob
        from crmsync.stores.queue import SqsDeadLetters

        s = self.settings
        if not s.resync_state_machine_arn or not s.sync_dlq_url:
            raise RuntimeError("RESYNC_STATE_MACHINE_ARN and SYNC_DLQ_URL must be set for the sync worker")
        runner = JobRunner(self.resync_requests(), SqsDeadLetters(s.sync_dlq_url))
        runner.register(JobType.MAIL_SYNC, self.mail_sync_job())
        runner.register(JobType.MAIL_WATCH, self.mail_watch_job())  # SYNC-7
        runner.register(JobType.CALENDAR_SYNC, self.calendar_sync_job())
        runner.register(JobType.CALENDAR_PUSH, self.calendar_push_job())
        runner.register(JobType.CALENDAR_WATCH, self.calendar_watch_job())  # SYNC-7
        runner.register(
            JobType.MAIL_PROPAGATE, PropagateJob(self.account_store(), self._mail_parts(lambda b: b.actions))
        )
        for provider in registry.providers("mail"):  # a vendor's own job types (Graph's lifecycle events)
            for job_type, handler in self.mail_bundle(provider).jobs.items():
                runner.register(job_type, handler)
        return runner

    @_once
    def sync_batch(self) -> SyncBatch:
        from crmsync.stores.queue import SqsVisibility
        from crmsync.worker import SyncBatch

        return SyncBatch(self.job_runner(), SqsVisibility(self.settings.sync_queue_url))

    @_once
    def scheduler(self) -> Scheduler:
        from crmsync.schedule import Scheduler

        return Scheduler(self.due(), self.queue())

    @_once
    def calendar_poll(self) -> Scheduler:
        """The calendar polls' own lane of the due index (functions/calendar_poll)."""
        from crmsync.calendar.schedule import LANE
        from crmsync.schedule import Scheduler

        return Scheduler(self.due(), self.queue(), lane=LANE)

    # ------------------------------------------------------------------ calendar sync
    @_once
    def activity_store(self) -> DynamoActivityStore:
        from crmsync.stores.activities import DynamoActivityStore

        return DynamoActivityStore(self.settings.activities_table)

    def calendar_link(self, account: Account) -> CalendarLink:
        """What the calendar engine plans an account's items for: its owner, its primary
        calendar, the original connection date (CAL-6) and its settings (CAL-4, CAL-5)."""
        from crmsync.calendar.models import CalendarLink, CalendarSettings, StopGap

        gap = None
        if account.calendar_stopped_at is not None:  # CAL-11: the tenant decides about gap changes
            apply = self.directory().settings(account.tenant_id).apply_gap_changes
            gap = StopGap(
                stopped_at=account.calendar_stopped_at, resumed_at=account.calendar_resumed_at, apply=apply
            )
        return CalendarLink(
            tenant_id=account.tenant_id,
            owner_user_id=account.user_id,
            calendar_id=self.calendar_bundle(account.provider).calendar_id(account),
            original_connection_date=account.connected_at,
            settings=CalendarSettings(
                save_events_as=account.settings.save_events_as,
                activity_types=list(account.settings.activity_types),
            ),
            gap=gap,
        )

    @_once
    def calendar_sync(self) -> CalendarSync:
        from crmsync.calendar.attendees import DirectoryPeople
        from crmsync.calendar.engine import CalendarSync

        writers = self._calendar_parts(lambda b: b.writer)
        return CalendarSync(
            self.activity_store(),
            writers,
            self.publisher(),
            self.calendar_link,
            people=DirectoryPeople(self.directory()),
        )

    @_once
    def calendar_loop(self) -> CursorLoop[CalendarEvent]:
        from crmsync.resync import ResyncTrigger
        from crmsync.sync.core import CursorLoop

        trigger = ResyncTrigger(self.resync_requests(), self.queue(), "calendar_resync")
        return CursorLoop(self.calendar_sync(), self.cursors(), trigger, "calendar")

    @_once
    def calendar_polls(self) -> CalendarPolls:
        """Each calendar connection's poll, as a due item the scheduler fans out (SYNC-2)."""
        from crmsync.calendar.schedule import CalendarPolls

        return CalendarPolls(self.due(), self.settings.calendar_poll_after_s)

    @_once
    def calendar_sync_job(self) -> SyncJob[CalendarEvent]:
        from crmsync.sync.jobs import SyncJob

        return SyncJob(
            self.account_store(),
            self.calendar_loop(),
            self._calendar_parts(lambda b: b.source),
            synced=self.calendar_polls().synced,
            continuation=self.queue(),
            job_type=JobType.CALENDAR_SYNC,
            paused=lambda a: "calendar sync is stopped" if a.calendar_stopped else None,  # CAL-9
            health=self.health_log(),
        )

    @_once
    def calendar_watch_job(self) -> CalendarWatchJob:
        """`calendar.watch` (SYNC-7): every calendar provider's push channel renewed."""
        from crmsync.calendar.watch import CalendarWatchJob

        watchers = self._calendar_parts(lambda b: b.watcher)
        return CalendarWatchJob(self.calendar_sync_job(), watchers, self.calendar_polls())

    @_once
    def calendar_push_job(self) -> CalendarPushJob:
        from crmsync.calendar.activities import CalendarPushJob

        return CalendarPushJob(
            self.activity_store(), self.account_store(), self.calendar_sync(), health=self.health_log()
        )

    @_once
    def activities(self) -> Activities:
        from crmsync.calendar.activities import Activities

        return Activities(self.activity_store(), self.queue())

    # ------------------------------------------------------------------ webhooks
    @_once
    def gmail_push(self, default_audience: str) -> GmailPush:
        from crmsync.providers.google.push import GmailPush, GoogleSigningKeys

        s = self.settings
        return GmailPush(
            GoogleSigningKeys(s.google_push_certs_url),
            s.gmail_push_audience or default_audience,
            s.gmail_push_service_account,
            self.account_store(),
            self.queue(),
        )

    @_once
    def calendar_push(self) -> CalendarPush:
        """Google Calendar's webhook: channels looked up, `calendar.sync` queued."""
        from crmsync.providers.google.calendar_push import CalendarPush
        from crmsync.stores.calendar_channels import DynamoCalendarChannelStore

        channels = DynamoCalendarChannelStore(self.settings.cursors_table)
        return CalendarPush(channels, self.account_store(), self.queue())

    @_once
    def graph_notifications(self) -> GraphNotifications:
        """Graph's webhook (SEC-2): subscriptions looked up, jobs queued."""
        from crmsync.providers.microsoft.notify import GraphNotifications
        from crmsync.stores.subscriptions import DynamoGraphSubscriptionStore

        return GraphNotifications(DynamoGraphSubscriptionStore(self.settings.cursors_table), self.queue())

    # ------------------------------------------------------------------ the CRM's side of mail
    @_once
    def mailbox(self) -> Mailbox:
        from crmsync.mail.read import Mailbox
        from crmsync.pagetoken import PageTokens

        s = self.settings
        # page tokens are signed with a key derived from the state signing secret (its own purpose)
        tokens = PageTokens(lambda: self._secret_text(s.state_signing_secret_arn).encode())
        return Mailbox(self.mail_store(), tokens)

    @_once
    def outbox(self) -> Outbox:
        from crmsync.mail.limits import limits_for
        from crmsync.mail.send import Outbox
        from crmsync.stores.staging import S3Staging

        s = self.settings
        return Outbox(
            self.account_store(),
            self.mail_store(),
            self.mail_sync(),
            S3Staging(s.data_bucket),
            self._mail_parts(lambda b: b.sender),
            lambda provider: limits_for(provider, s.attachment_limits),
        )

    @_once
    def mail_actions(self) -> MailActions:
        from crmsync.mail.actions import MailActions

        return MailActions(self.mail_store(), self.account_store(), self.queue())


class _Wiring:
    """The layer's shared services, as the vendors' bundles see them (providers/bundle.py)."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self.settings = services.settings

    def access_token(self, account_id: str) -> str:
        return self._services.credentials().access_token(account_id)

    def refused(self, account_id: str, token: str) -> str:
        return self._services.credentials().refused(account_id, token)  # a 401: a new token, or ACC-9

    def engine(self) -> MailSync:
        return self._services.mail_sync()

    def cursors(self) -> DynamoCursorStore:
        return self._services.cursors()

    def schedule(self) -> SyncSchedule:
        return self._services.sync_schedule()

    def calendar_polls(self) -> CalendarPolls:
        return self._services.calendar_polls()

    def queue(self) -> SqsJobQueue:
        return self._services.queue()

    def sync_job(self) -> SyncJob[ProviderMessage]:
        return self._services.mail_sync_job()


_bound: Services | None = None
_bind_lock = threading.Lock()


def current() -> Services:
    """This process's Services: the one bound (a local stack's), else one built from the
    environment on first use and kept for the life of the Lambda instance."""
    global _bound
    with _bind_lock:
        if _bound is None:
            _bound = Services()
        return _bound


def bind(services: Services | None) -> Services | None:
    """Make `services` this process's, and return the one it replaces (a local stack binds its
    own on start and puts the one before back on stop, so that stacks nest)."""
    global _bound
    with _bind_lock:
        previous, _bound = _bound, services
        return previous

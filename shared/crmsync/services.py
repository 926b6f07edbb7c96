"""Builds the layer's services over their real stores, once per process (cached factories)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING

from crmsync.directory import Directory
from crmsync.jobs import JobRunner
from crmsync.jobtypes import JobType
from crmsync.providers import registry
from crmsync.resync import Resync, ResyncJob, ResyncRequests
from crmsync.schedule import Scheduler
from crmsync.settings import get_settings

if TYPE_CHECKING:
    from crmsync.accounts.credentials import Credentials
    from crmsync.accounts.models import Account
    from crmsync.accounts.oauth import OAuthClient
    from crmsync.accounts.service import Accounts, ProviderHooks
    from crmsync.crypto import SecretBox
    from crmsync.jobs import Job
    from crmsync.mail.actions import MailActions
    from crmsync.mail.engine import MailSync
    from crmsync.mail.graph_notify import GraphNotifications
    from crmsync.mail.jobs import MailSyncJob
    from crmsync.mail.models import ProviderMessage
    from crmsync.mail.push import GmailPush
    from crmsync.mail.read import Mailbox
    from crmsync.mail.send import MailSender, Outbox
    from crmsync.mail.watch import MailWatchJob, SyncSchedule, Watcher
    from crmsync.providers.bundle import MailBundle
    from crmsync.settings import Settings
    from crmsync.stores.accounts import DynamoAccountStore
    from crmsync.stores.eventbridge import EventBridgePublisher
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.sync.core import ChangeSource, CursorLoop, CursorStore
    from crmsync.worker import SyncBatch


@cache
def publisher() -> EventBridgePublisher:
    from crmsync.stores.eventbridge import EventBridgePublisher

    settings = get_settings()
    return EventBridgePublisher(settings.event_bus_name, settings.event_source)


@cache
def directory() -> Directory:
    from crmsync.stores.directory import DynamoDirectoryStore

    return Directory(DynamoDirectoryStore(get_settings().directory_table), publisher())


@cache
def resync() -> Resync:
    from crmsync.stores.cursors import DynamoCursorStore, DynamoSyncStateStore

    settings = get_settings()
    cursors = DynamoCursorStore(settings.cursors_table)

    from crmsync.sync.core import ImportPages

    pages = ImportPages(account_store(), _mail_parts(lambda b: b.pages), mail_sync())

    def store_cursor(job: ResyncJob) -> None:
        """SYNC-3: the resync's fresh cursor, then one incremental sync from it: what arrived
        while the resync ran, whose sync requests were absorbed, is read at once."""
        from crmsync.jobs import Job
        from crmsync.stores.queue import SqsJobQueue

        cursors.set(job.account_id, "mail", job.cursor or "")
        follow = Job(type=JobType.MAIL_SYNC, tenant_id=job.tenant_id, account_id=job.account_id)
        digest = hashlib.sha256(f"{job.account_id}|{job.request_id}|{job.cursor}".encode()).hexdigest()
        SqsJobQueue(settings.sync_queue_url).send(follow, f"after-resync-{digest[:40]}")

    return Resync(
        DynamoSyncStateStore(settings.cursors_table),
        publisher(),
        sources={"mail_resync": pages, "mail_import": pages},
        cursor_sink=store_cursor,
    )


@cache
def job_runner() -> JobRunner:
    from crmsync.stores.queue import SqsDeadLetters

    settings = get_settings()
    if not settings.resync_state_machine_arn or not settings.sync_dlq_url:
        raise RuntimeError("RESYNC_STATE_MACHINE_ARN and SYNC_DLQ_URL must be set for the sync worker")
    runner = JobRunner(resync_requests(), SqsDeadLetters(settings.sync_dlq_url))
    runner.register(JobType.MAIL_SYNC, mail_sync_job())
    runner.register(JobType.MAIL_WATCH, mail_watch_job(settings.gmail_push_topic or None))  # SYNC-7
    from crmsync.mail.actions import PropagateJob

    runner.register(JobType.MAIL_PROPAGATE, PropagateJob(account_store(), _mail_parts(lambda b: b.actions)))
    for provider in registry.providers("mail"):  # a vendor's own job types (Graph's lifecycle events)
        for job_type, handler in mail_bundle(provider).jobs.items():
            runner.register(job_type, handler)
    return runner


@cache
def resync_requests() -> ResyncRequests:
    """Starting resync executions, one per account and kind at a time (SYNC-3)."""
    from crmsync.resync import ResyncRequests
    from crmsync.stores.cursors import DynamoSyncStateStore
    from crmsync.stores.stepfunctions import StepFunctionsResyncStarter

    settings = get_settings()
    if not settings.resync_state_machine_arn:
        raise RuntimeError("RESYNC_STATE_MACHINE_ARN must be set to start resyncs")
    return ResyncRequests(
        DynamoSyncStateStore(settings.cursors_table),
        StepFunctionsResyncStarter(settings.resync_state_machine_arn),
    )


@cache
def sync_batch() -> SyncBatch:
    from crmsync.stores.queue import SqsVisibility
    from crmsync.worker import SyncBatch

    return SyncBatch(job_runner(), SqsVisibility(get_settings().sync_queue_url))


@cache
def gmail_push(default_audience: str) -> GmailPush:
    from crmsync.mail.push import GmailPush, GoogleSigningKeys
    from crmsync.stores.queue import SqsJobQueue

    settings = get_settings()
    return GmailPush(
        GoogleSigningKeys(settings.google_push_certs_url),
        settings.gmail_push_audience or default_audience,
        settings.gmail_push_service_account,
        account_store(),
        SqsJobQueue(settings.sync_queue_url),
    )


@cache
def scheduler() -> Scheduler:
    from crmsync.stores.cursors import DynamoDueStore
    from crmsync.stores.queue import SqsJobQueue

    settings = get_settings()
    return Scheduler(
        DynamoDueStore(settings.cursors_table, settings.due_shards), SqsJobQueue(settings.sync_queue_url)
    )


@cache
def sync_schedule() -> SyncSchedule:
    """Each mailbox's watch renewal and catch-up poll, as due items (SYNC-2, SYNC-7)."""
    from crmsync.mail.watch import SyncSchedule
    from crmsync.stores.cursors import DynamoDueStore

    settings = get_settings()
    return SyncSchedule(DynamoDueStore(settings.cursors_table, settings.due_shards), settings.catchup_after_s)


@cache
def mail_sync_job() -> MailSyncJob:
    from crmsync.mail.jobs import MailSyncJob
    from crmsync.stores.queue import SqsJobQueue

    return MailSyncJob(
        account_store(),
        mailbox_sync(),
        CHANGE_SOURCES,
        synced=sync_schedule().synced,
        continuation=SqsJobQueue(get_settings().sync_queue_url),
    )


def mail_watch_job(gmail_push_topic: str | None) -> MailWatchJob:
    """The `mail.watch` job (SYNC-7): every provider's watcher. Tests name the Gmail Pub/Sub
    topic (the test stack has none); the worker passes the configured one."""
    from crmsync.mail.watch import MailWatchJob

    bundle = _bundle_for_topic(gmail_push_topic)
    watchers = registry.ByProvider("mail", lambda p: bundle(p).watcher)
    return MailWatchJob(mail_sync_job(), watchers, sync_schedule())


def gmail_hooks(gmail_push_topic: str | None) -> ProviderHooks:
    """What connecting and disconnecting a Gmail mailbox starts and stops, with this Pub/Sub topic."""
    return _bundle_for_topic(gmail_push_topic)("google").hooks


def _bundle_for_topic(gmail_push_topic: str | None) -> Callable[[str], MailBundle]:
    if gmail_push_topic == (get_settings().gmail_push_topic or None):
        return mail_bundle
    wiring = _Wiring(get_settings().model_copy(update={"gmail_push_topic": gmail_push_topic or ""}))
    return lambda provider: registry.mail_bundle(provider, wiring)


def graph_lifecycle_jobs() -> Mapping[str, Callable[[Job, str], None]]:
    return mail_bundle("microsoft").jobs


def graph_watcher() -> Watcher:
    return mail_bundle("microsoft").watcher


class _Wiring:
    """The layer's shared services, as the vendors' bundles see them (providers/bundle.py)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def access_token(self, account_id: str) -> str:
        return credentials().access_token(account_id)

    def refused(self, account_id: str, token: str) -> str:
        return credentials().refused(account_id, token)  # a 401: a new token, or ACC-9

    def engine(self) -> MailSync:
        return mail_sync()

    def cursors(self) -> CursorStore:
        from crmsync.stores.cursors import DynamoCursorStore

        return DynamoCursorStore(self.settings.cursors_table)

    def schedule(self) -> SyncSchedule:
        return sync_schedule()

    def queue(self) -> SqsJobQueue:
        from crmsync.stores.queue import SqsJobQueue

        return SqsJobQueue(self.settings.sync_queue_url)

    def sync_job(self) -> MailSyncJob:
        return mail_sync_job()


@cache
def mail_bundle(provider: str) -> MailBundle:
    """A provider's mail parts over this deployment's services (KeyError: no such provider)."""
    return registry.mail_bundle(provider, _Wiring(get_settings()))


def _mail_parts[T](part: Callable[[MailBundle], T]) -> Mapping[str, T]:
    return registry.ByProvider("mail", lambda provider: part(mail_bundle(provider)))


# provider → ChangeSource, each built on first use (a vendor's client is imported only then)
CHANGE_SOURCES: Mapping[str, ChangeSource[ProviderMessage]] = registry.ByProvider(
    "mail", lambda p: mail_bundle(p).source
)


@cache
def graph_notifications() -> GraphNotifications:
    """Graph's webhook (SEC-2): subscriptions looked up, jobs queued."""
    from crmsync.mail.graph_notify import GraphNotifications
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.stores.subscriptions import DynamoGraphSubscriptionStore

    settings = get_settings()
    return GraphNotifications(
        DynamoGraphSubscriptionStore(settings.cursors_table), SqsJobQueue(settings.sync_queue_url)
    )


@cache
def accounts() -> Accounts:
    from crmsync.accounts.imap import ImapSmtpVerifier
    from crmsync.accounts.service import Accounts
    from crmsync.accounts.state import StateSigner
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.stores.secrets import secret_text

    settings = get_settings()
    return Accounts(
        hooks=_mail_parts(lambda b: b.hooks),
        store=account_store(),
        box=secret_box(),
        directory=directory(),
        publisher=publisher(),
        queue=SqsJobQueue(settings.sync_queue_url),
        signer=StateSigner(lambda: secret_text(settings.state_signing_secret_arn).encode()),
        oauth=oauth_client,
        verifier=ImapSmtpVerifier(settings.imap_ca_bundle or None, settings.imap_allow_private_hosts),
    )


@cache
def account_store() -> DynamoAccountStore:
    from crmsync.stores.accounts import DynamoAccountStore

    return DynamoAccountStore(get_settings().accounts_table)


@cache
def secret_box() -> SecretBox:
    from crmsync.crypto import SecretBox
    from crmsync.stores.kms import KmsKeyService

    return SecretBox(KmsKeyService(get_settings().user_secrets_key_id))


@cache
def credentials() -> Credentials:
    from crmsync.accounts.credentials import Credentials

    return Credentials(account_store(), secret_box(), oauth_client, publisher())


@cache
def oauth_client(provider: str) -> OAuthClient:
    """The OAuth adapter of a provider, with the client credentials from Secrets Manager."""
    from crmsync.accounts.oauth import ProviderRefused
    from crmsync.stores.secrets import secret_json

    settings = get_settings()
    clients = secret_json(settings.oauth_clients_secret_arn)
    config = clients.get(provider) or {}
    if not config.get("client_id") or not config.get("client_secret"):
        raise ProviderRefused(
            "provider_not_configured", f"{provider} sign-in is not configured on this service"
        )
    if (provider, "oauth") in registry.BUNDLES:
        return registry.oauth_client(provider, config, settings)
    raise ProviderRefused("unknown_provider", f"no OAuth provider {provider!r}")


@cache
def mail_sync() -> MailSync:
    from crmsync.mail.engine import MailSync
    from crmsync.mail.limits import limits_for
    from crmsync.stores.aws import classify_failure
    from crmsync.stores.mail import DynamoMailStore, S3RawStore

    settings = get_settings()
    return MailSync(
        DynamoMailStore(settings.threads_table, settings.messages_table),
        S3RawStore(settings.data_bucket),
        directory(),
        publisher(),
        limits=lambda provider: limits_for(provider, settings.attachment_limits),
        classify=classify_failure,
    )


@cache
def mailbox() -> Mailbox:
    from crmsync.mail.read import Mailbox
    from crmsync.pagetoken import PageTokens
    from crmsync.stores.mail import DynamoMailStore
    from crmsync.stores.secrets import secret_text

    settings = get_settings()
    # page tokens are signed with a key derived from the state signing secret (its own purpose)
    tokens = PageTokens(lambda: secret_text(settings.state_signing_secret_arn).encode())
    return Mailbox(DynamoMailStore(settings.threads_table, settings.messages_table), tokens)


@cache
def mailbox_sync() -> CursorLoop[ProviderMessage]:
    from crmsync.jobs import Job
    from crmsync.stores.cursors import DynamoCursorStore
    from crmsync.stores.queue import SqsJobQueue
    from crmsync.sync.core import CursorLoop

    settings = get_settings()
    queue = SqsJobQueue(settings.sync_queue_url)

    def start_resync(account: Account, reason: str) -> None:
        """SYNC-3: a full resync through the state machine, as a queued job of the account;
        nothing is queued while one runs or backs off after a failure."""
        if not resync_requests().wanted(account.account_id, "mail_resync"):
            return
        job = Job(
            type=JobType.RESYNC_START,
            tenant_id=account.tenant_id,
            account_id=account.account_id,
            payload={"user_id": account.user_id, "kind": "mail_resync"},
        )
        queue.send(job, f"resync-{account.account_id}-{int(time.time() // 300)}")

    return CursorLoop(mail_sync(), DynamoCursorStore(settings.cursors_table), start_resync, "mail")


@cache
def outbox() -> Outbox:
    from crmsync.mail.limits import limits_for
    from crmsync.mail.send import Outbox
    from crmsync.stores.mail import DynamoMailStore
    from crmsync.stores.staging import S3Staging

    settings = get_settings()
    senders: Mapping[str, MailSender] = _mail_parts(lambda b: b.sender)
    return Outbox(
        account_store(),
        DynamoMailStore(settings.threads_table, settings.messages_table),
        mail_sync(),
        S3Staging(settings.data_bucket),
        senders,
        lambda provider: limits_for(provider, settings.attachment_limits),
    )


@cache
def mail_actions() -> MailActions:
    from crmsync.mail.actions import MailActions
    from crmsync.stores.mail import DynamoMailStore
    from crmsync.stores.queue import SqsJobQueue

    settings = get_settings()
    return MailActions(
        DynamoMailStore(settings.threads_table, settings.messages_table),
        account_store(),
        SqsJobQueue(settings.sync_queue_url),
    )


def reset() -> None:
    """Forget built services (tests rebuild them against a fresh moto)."""
    from crmsync.stores import aws, secrets

    factories = [
        publisher,
        directory,
        resync,
        resync_requests,
        job_runner,
        scheduler,
        accounts,
        account_store,
        secret_box,
    ]
    mail = [mail_sync, mailbox_sync, mailbox, gmail_push, outbox, mail_actions, sync_batch, mail_bundle]
    for factory in [*factories, credentials, oauth_client, *mail]:
        factory.cache_clear()
    secrets.secret_json.cache_clear()
    secrets.secret_text.cache_clear()
    sync_schedule.cache_clear()
    mail_sync_job.cache_clear()
    graph_notifications.cache_clear()
    get_settings.cache_clear()
    aws.reset()

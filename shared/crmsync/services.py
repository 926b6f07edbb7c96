"""Builds the layer's services over their real stores, once per process (cached factories)."""

from __future__ import annotations

import hashlib
import time
from functools import cache
from typing import TYPE_CHECKING

from crmsync.directory import Directory
from crmsync.jobs import JobRunner
from crmsync.jobtypes import JobType
from crmsync.resync import Resync, ResyncJob, ResyncRequests
from crmsync.schedule import Scheduler
from crmsync.settings import get_settings

if TYPE_CHECKING:
    from crmsync.accounts.credentials import Credentials
    from crmsync.accounts.models import Account
    from crmsync.accounts.oauth import OAuthClient
    from crmsync.accounts.service import Accounts, ProviderHooks
    from crmsync.crypto import SecretBox
    from crmsync.mail.actions import MailActions
    from crmsync.mail.engine import MailSync
    from crmsync.mail.graph_notify import GraphNotifications
    from crmsync.mail.jobs import MailSyncJob
    from crmsync.mail.push import GmailPush
    from crmsync.mail.read import Mailbox
    from crmsync.mail.send import Outbox
    from crmsync.mail.sync import ChangeSource, MailboxSync
    from crmsync.mail.watch import MailWatchJob, SyncSchedule
    from crmsync.providers.google.actions import GmailActions
    from crmsync.providers.google.watch import GmailWatcher, GmailWatchHooks
    from crmsync.providers.microsoft.mail import GraphActions, GraphMailbox
    from crmsync.providers.microsoft.subscriptions import (
        GraphLifecycleJobs,
        GraphSubscriptionHooks,
        GraphWatcher,
    )
    from crmsync.stores.accounts import DynamoAccountStore
    from crmsync.stores.eventbridge import EventBridgePublisher
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
    from crmsync.mail.pages import ProviderPages
    from crmsync.stores.cursors import DynamoCursorStore, DynamoSyncStateStore

    settings = get_settings()
    cursors = DynamoCursorStore(settings.cursors_table)

    def gmail_pages() -> object:
        from crmsync.providers.google.gmail import GmailPages

        return GmailPages(
            lambda a: credentials().access_token(a),
            settings.gmail_api_base,
            mail_sync().ingest,
            refused=lambda a, token: credentials().refused(a, token),  # a 401: new token, or ACC-9
        )

    def graph_pages() -> object:
        from crmsync.providers.microsoft.mail import GraphPages

        return GraphPages(graph_mailbox(), mail_sync().ingest)

    pages = ProviderPages(account_store(), {"google": gmail_pages, "microsoft": graph_pages})

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
    from crmsync.mail.actions import MailboxActions, PropagateJob

    providers: dict[str, MailboxActions] = {"google": gmail_actions(), "microsoft": graph_actions()}
    runner.register(JobType.MAIL_PROPAGATE, PropagateJob(account_store(), providers))
    lifecycle = graph_lifecycle_jobs()  # Graph's lifecycle events (SYNC-7)
    runner.register(JobType.GRAPH_REAUTHORIZE, lifecycle.reauthorize)
    runner.register(JobType.GRAPH_RESUBSCRIBE, lifecycle.resubscribe)
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


class _ChangeSources(dict[str, "ChangeSource"]):
    """provider → ChangeSource, built on first use (Gmail's client is imported only then)."""

    def __missing__(self, provider: str) -> ChangeSource:
        source: ChangeSource
        if provider == "google":
            from crmsync.providers.google.gmail import GmailHistorySource

            source = GmailHistorySource(
                lambda account_id: credentials().access_token(account_id),
                get_settings().gmail_api_base,
                refused=lambda a, token: credentials().refused(a, token),  # a 401: new token, or ACC-9
            )
        elif provider == "microsoft":
            from crmsync.providers.microsoft.mail import GraphDeltaSource

            source = GraphDeltaSource(graph_mailbox(), mail_sync().settled)
        else:
            raise KeyError(provider)
        self[provider] = source
        return source


CHANGE_SOURCES: dict[str, ChangeSource] = _ChangeSources()


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


def gmail_watcher(topic: str | None) -> GmailWatcher:
    from crmsync.providers.google.watch import GmailWatcher

    return GmailWatcher(
        lambda a: credentials().access_token(a),
        get_settings().gmail_api_base,
        topic,
        refused=lambda a, token: credentials().refused(a, token),  # a 401: new token, or ACC-9
    )


def mail_watch_job(topic: str | None) -> MailWatchJob:
    """The `mail.watch` job; `topic` is Gmail's Pub/Sub topic (None: no watch to renew)."""
    from crmsync.mail.watch import MailWatchJob

    return MailWatchJob(
        mail_sync_job(), {"google": gmail_watcher(topic), "microsoft": graph_watcher()}, sync_schedule()
    )


def gmail_hooks(topic: str | None) -> GmailWatchHooks:
    """What connecting and disconnecting a Gmail mailbox starts and stops (watch, schedule)."""
    from crmsync.providers.google.gmail import GmailHooks
    from crmsync.providers.google.watch import GmailWatchHooks
    from crmsync.stores.cursors import DynamoCursorStore

    settings = get_settings()
    cursors = DynamoCursorStore(settings.cursors_table)
    return GmailWatchHooks(
        GmailHooks(cursors, settings.gmail_api_base, topic), gmail_watcher(topic), cursors, sync_schedule()
    )


def microsoft_hooks() -> ProviderHooks:
    """What connecting and disconnecting a Microsoft mailbox starts and stops: the first delta
    cursor (and the subscriptions, when their hooks are registered)."""
    from crmsync.providers.microsoft.mail import GraphMailHooks
    from crmsync.stores.cursors import DynamoCursorStore

    return GraphMailHooks(graph_mailbox(), DynamoCursorStore(get_settings().cursors_table))


@cache
def graph_watcher() -> GraphWatcher:
    """Microsoft mailboxes' Graph subscriptions (SYNC-7); off without PUBLIC_API_BASE."""
    from crmsync.providers.microsoft.mail import find_folder
    from crmsync.providers.microsoft.subscriptions import GraphSubscriptionApi, GraphWatcher
    from crmsync.stores.subscriptions import DynamoGraphSubscriptionStore

    settings = get_settings()
    return GraphWatcher(
        GraphSubscriptionApi(settings.graph_api_base, settings.provider_ca_bundle or True),
        DynamoGraphSubscriptionStore(settings.cursors_table),
        lambda a: credentials().access_token(a),
        settings.public_api_base or None,
        # a chosen folder's id, looked up with the token the subscription is made with
        locate=lambda account, token, folder: find_folder(graph_mailbox().client(account, token), folder),
    )


def graph_hooks() -> GraphSubscriptionHooks:
    """What connecting and disconnecting a Microsoft mailbox starts and stops: the first delta
    cursor (microsoft_hooks), the subscriptions and the renewal/catch-up schedule."""
    from crmsync.providers.microsoft.subscriptions import GraphSubscriptionHooks
    from crmsync.stores.queue import SqsJobQueue

    return GraphSubscriptionHooks(
        graph_watcher(),
        sync_schedule(),
        base=microsoft_hooks(),
        queue=SqsJobQueue(get_settings().sync_queue_url),
    )


def graph_lifecycle_jobs() -> GraphLifecycleJobs:
    from crmsync.providers.microsoft.subscriptions import GraphLifecycleJobs
    from crmsync.stores.queue import SqsJobQueue

    return GraphLifecycleJobs(mail_sync_job(), graph_watcher(), SqsJobQueue(get_settings().sync_queue_url))


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
        hooks={"google": gmail_hooks(settings.gmail_push_topic or None), "microsoft": graph_hooks()},
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
    from crmsync.accounts.oauth import GoogleOAuth, MicrosoftOAuth, ProviderRefused
    from crmsync.stores.secrets import secret_json

    settings = get_settings()
    clients = secret_json(settings.oauth_clients_secret_arn)
    config = clients.get(provider) or {}
    if not config.get("client_id") or not config.get("client_secret"):
        raise ProviderRefused(
            "provider_not_configured", f"{provider} sign-in is not configured on this service"
        )
    verify: str | bool = settings.provider_ca_bundle or True
    if provider == "google":
        return GoogleOAuth(
            config["client_id"],
            config["client_secret"],
            settings.google_auth_uri,
            settings.google_token_uri,
            settings.google_userinfo_uri,
            settings.gmail_api_base,
            verify,
        )
    if provider == "microsoft":
        return MicrosoftOAuth(
            config["client_id"],
            config["client_secret"],
            config.get("tenant") or "common",
            settings.microsoft_authority_host,
            settings.graph_api_base,
            verify,
        )
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
def mailbox_sync() -> MailboxSync:
    from crmsync.jobs import Job
    from crmsync.mail.sync import MailboxSync
    from crmsync.stores.cursors import DynamoCursorStore
    from crmsync.stores.queue import SqsJobQueue

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

    return MailboxSync(mail_sync(), DynamoCursorStore(settings.cursors_table), start_resync)


@cache
def graph_mailbox() -> GraphMailbox:
    from crmsync.providers.microsoft.mail import GraphMailbox

    settings = get_settings()
    return GraphMailbox(
        lambda account_id: credentials().access_token(account_id),
        settings.graph_api_base,
        settings.provider_ca_bundle or True,
        refused=lambda a, token: credentials().refused(a, token),  # a 401: new token, or ACC-9
    )


@cache
def graph_actions() -> GraphActions:
    from crmsync.providers.microsoft.mail import GraphActions

    return GraphActions(graph_mailbox())


@cache
def gmail_actions() -> GmailActions:
    from crmsync.providers.google.actions import GmailActions

    return GmailActions(
        lambda account_id: credentials().access_token(account_id),
        get_settings().gmail_api_base,
        refused=lambda a, token: credentials().refused(a, token),  # a 401: new token, or ACC-9
    )


@cache
def outbox() -> Outbox:
    from crmsync.mail.limits import limits_for
    from crmsync.mail.send import MailSender, Outbox
    from crmsync.stores.mail import DynamoMailStore
    from crmsync.stores.staging import S3Staging

    settings = get_settings()
    senders: dict[str, MailSender] = {"google": gmail_actions(), "microsoft": graph_actions()}
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
    mail = [mail_sync, mailbox_sync, mailbox, gmail_push, gmail_actions, outbox, mail_actions, sync_batch]
    mail += [graph_mailbox, graph_actions]
    for factory in [*factories, credentials, oauth_client, *mail]:
        factory.cache_clear()
    secrets.secret_json.cache_clear()
    secrets.secret_text.cache_clear()
    sync_schedule.cache_clear()
    mail_sync_job.cache_clear()
    graph_watcher.cache_clear()
    graph_notifications.cache_clear()
    get_settings.cache_clear()
    aws.reset()

"""Outlook's mail bundle: the delta change source and resync pages, subscriptions (the watcher,
its hooks and Graph's lifecycle jobs) and send/archive/trash, all on one Graph transport."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from crmsync.jobtypes import JobType
from crmsync.mail.limits import MB, SEND_MAX_BYTES, AttachmentLimits
from crmsync.providers.bundle import MailBundle

if TYPE_CHECKING:
    from crmsync.accounts.oauth import OAuthClient
    from crmsync.jobs import Job
    from crmsync.providers.microsoft.mail import GraphActions, GraphDeltaSource, GraphImport, GraphMailbox
    from crmsync.providers.microsoft.subscriptions import GraphSubscriptionHooks, GraphWatcher
    from crmsync.settings import Settings


class MicrosoftMail(MailBundle):
    # 3 MB per file and a type allowlist (ATT-3), and 35 MB in total per message sent from the
    # CRM: Graph itself takes up to 150 MB through upload sessions, but the send function holds
    # the message in memory (the staged files and its MIME), so its memory is the real bound
    limits = AttachmentLimits(
        provider_label="Microsoft 365",
        per_file_bytes=3 * MB,
        send_total_bytes=SEND_MAX_BYTES,
        allowed_types=frozenset(
            {"jpg", "jpeg", "png", "mp4", "mpeg", "zip", "rar", "pdf", "doc", "docx", "txt"}
        ),
        inbound="skip",
    )

    @cached_property
    def mailbox(self) -> GraphMailbox:
        from crmsync.providers.microsoft.mail import GraphMailbox

        w = self.wiring
        verify = w.settings.provider_ca_bundle or True
        return GraphMailbox(w.access_token, w.settings.graph_api_base, verify, refused=w.refused)

    @cached_property
    def source(self) -> GraphDeltaSource:
        from crmsync.providers.microsoft.mail import GraphDeltaSource

        return GraphDeltaSource(self.mailbox, self.wiring.engine().settled_many)

    @cached_property
    def pages(self) -> GraphImport:
        from crmsync.providers.microsoft.mail import GraphImport

        return GraphImport(self.mailbox)

    @cached_property
    def watcher(self) -> GraphWatcher:
        """Subscriptions per synced folder (SYNC-7); none without a public API base."""
        from crmsync.providers.microsoft.mail import find_folder
        from crmsync.providers.microsoft.subscriptions import GraphSubscriptionApi, GraphWatcher
        from crmsync.stores.subscriptions import DynamoGraphSubscriptionStore

        w = self.wiring
        return GraphWatcher(
            GraphSubscriptionApi(w.settings.graph_api_base, w.settings.provider_ca_bundle or True),
            DynamoGraphSubscriptionStore(w.settings.cursors_table),
            w.access_token,
            w.settings.public_api_base or None,
            # a chosen folder's id, looked up with the token the subscription is made with
            locate=lambda account, token, folder: find_folder(self.mailbox.client(account, token), folder),
        )

    @cached_property
    def hooks(self) -> GraphSubscriptionHooks:
        """The first delta cursor, the subscriptions and the renewal/catch-up schedule."""
        from crmsync.providers.microsoft.mail import GraphMailHooks
        from crmsync.providers.microsoft.subscriptions import GraphSubscriptionHooks

        w = self.wiring
        first_cursor = GraphMailHooks(self.mailbox, w.cursors())
        return GraphSubscriptionHooks(self.watcher, w.schedule(), base=first_cursor, queue=w.queue())

    @cached_property
    def _actions(self) -> GraphActions:
        from crmsync.providers.microsoft.mail import GraphActions

        return GraphActions(self.mailbox)

    @property
    def sender(self) -> GraphActions:
        return self._actions

    @property
    def actions(self) -> GraphActions:
        return self._actions

    @cached_property
    def jobs(self) -> Mapping[str, Callable[[Job, str], None]]:
        """Graph's lifecycle events (reauthorizationRequired, subscriptionRemoved), SYNC-7."""
        from crmsync.providers.microsoft.subscriptions import GraphLifecycleJobs

        lifecycle = GraphLifecycleJobs(self.wiring.sync_job(), self.watcher, self.wiring.queue())
        return {
            JobType.GRAPH_REAUTHORIZE: lifecycle.reauthorize,
            JobType.GRAPH_RESUBSCRIBE: lifecycle.resubscribe,
        }


def oauth_client(config: Mapping[str, str], settings: Settings) -> OAuthClient:
    """Microsoft sign-in (ACC-2) with the operator's client credentials (msal)."""
    from crmsync.providers.microsoft.oauth import MicrosoftOAuth

    return MicrosoftOAuth(
        config["client_id"],
        config["client_secret"],
        config.get("tenant") or "common",
        settings.microsoft_authority_host,
        settings.graph_api_base,
        settings.provider_ca_bundle or True,
    )

"""Gmail's mail bundle: the history change source, the resync and import pages, the watch and its hooks,
and send/archive/trash, over Google's API with the account's token."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import TYPE_CHECKING

from crmsync.mail.limits import MB, AttachmentLimits
from crmsync.providers.bundle import CalendarBundle, MailBundle

if TYPE_CHECKING:
    from crmsync.accounts.models import Account
    from crmsync.accounts.oauth import OAuthClient
    from crmsync.providers.google.actions import GmailActions
    from crmsync.providers.google.calendar import (
        GoogleCalendarHooks,
        GoogleCalendarImport,
        GoogleCalendarSource,
        GoogleCalendarWriter,
    )
    from crmsync.providers.google.calendar_watch import GoogleCalendarWatcher
    from crmsync.providers.google.gmail import GmailHistorySource, GmailImport
    from crmsync.providers.google.watch import GmailWatcher, GmailWatchHooks
    from crmsync.settings import Settings


class GoogleMail(MailBundle):
    limits = AttachmentLimits(provider_label="Gmail", total_bytes=25 * MB)  # in total per message (ATT-2)

    @property
    def _topic(self) -> str | None:
        return self.wiring.settings.gmail_push_topic or None  # None: no push watch is kept

    @cached_property
    def source(self) -> GmailHistorySource:
        from crmsync.providers.google.gmail import GmailHistorySource

        w = self.wiring
        return GmailHistorySource(w.access_token, w.settings.gmail_api_base, refused=w.refused)

    @cached_property
    def pages(self) -> GmailImport:
        from crmsync.providers.google.gmail import GmailImport

        w = self.wiring
        return GmailImport(w.access_token, w.settings.gmail_api_base, refused=w.refused)

    @cached_property
    def watcher(self) -> GmailWatcher:
        from crmsync.providers.google.watch import GmailWatcher

        w = self.wiring
        return GmailWatcher(w.access_token, w.settings.gmail_api_base, self._topic, refused=w.refused)

    @cached_property
    def hooks(self) -> GmailWatchHooks:
        from crmsync.providers.google.gmail import GmailHooks
        from crmsync.providers.google.watch import GmailWatchHooks

        w = self.wiring
        first_cursor = GmailHooks(w.cursors(), w.settings.gmail_api_base, self._topic)
        return GmailWatchHooks(first_cursor, self.watcher, w.cursors(), w.schedule())

    @cached_property
    def _actions(self) -> GmailActions:
        from crmsync.providers.google.actions import GmailActions

        w = self.wiring
        return GmailActions(w.access_token, w.settings.gmail_api_base, refused=w.refused)

    @property
    def sender(self) -> GmailActions:
        return self._actions

    @property
    def actions(self) -> GmailActions:
        return self._actions


def oauth_client(config: Mapping[str, str], settings: Settings) -> OAuthClient:
    """Google sign-in (ACC-2) with the operator's client credentials."""
    from crmsync.providers.google.oauth import GoogleOAuth

    return GoogleOAuth(
        config["client_id"],
        config["client_secret"],
        settings.google_auth_uri,
        settings.google_token_uri,
        settings.google_userinfo_uri,
        settings.gmail_api_base,
        settings.provider_ca_bundle or True,
    )


class GoogleCalendar(CalendarBundle):
    """Google Calendar's parts: the primary calendar's sync-token listing, its full listing for a
    resync, the writer, the push channel, and the hooks (first cursor, channel, poll)."""

    @property
    def _base(self) -> str:
        return self.wiring.settings.google_calendar_api_base

    @cached_property
    def source(self) -> GoogleCalendarSource:
        from crmsync.providers.google.calendar import GoogleCalendarSource

        return GoogleCalendarSource(self.wiring.access_token, self._base, refused=self.wiring.refused)

    @cached_property
    def pages(self) -> GoogleCalendarImport:
        from crmsync.providers.google.calendar import GoogleCalendarImport

        return GoogleCalendarImport(self.wiring.access_token, self._base, refused=self.wiring.refused)

    @cached_property
    def writer(self) -> GoogleCalendarWriter:
        from crmsync.providers.google.calendar import GoogleCalendarWriter

        return GoogleCalendarWriter(self.wiring.access_token, self._base, refused=self.wiring.refused)

    @cached_property
    def watcher(self) -> GoogleCalendarWatcher:
        """The connection's push channel (SYNC-7); none without GOOGLE_CALENDAR_WEBHOOK_URL."""
        from crmsync.providers.google.calendar_watch import GoogleCalendarWatcher
        from crmsync.stores.calendar_channels import DynamoCalendarChannelStore

        w = self.wiring
        return GoogleCalendarWatcher(
            w.access_token,
            self._base,
            w.settings.google_calendar_webhook_url or None,
            DynamoCalendarChannelStore(w.settings.cursors_table),
            refused=w.refused,
        )

    @cached_property
    def hooks(self) -> GoogleCalendarHooks:
        from crmsync.providers.google.calendar import GoogleCalendarHooks

        w = self.wiring
        return GoogleCalendarHooks(self._base, w.cursors(), w.calendar_polls(), self.watcher)

    def calendar_id(self, account: Account) -> str:
        from crmsync.providers.google.calendar import primary_id

        return primary_id(account)

"""Runtime configuration, read from the environment and validated (once per Services)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every name here is an environment variable (upper case) set by template.yaml."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    stage: str = "dev"
    event_bus_name: str
    event_source: str = "crmsync"
    accounts_table: str
    cursors_table: str
    threads_table: str
    directory_table: str
    messages_table: str
    activities_table: str
    idempotency_table: str
    data_bucket: str
    sync_queue_url: str
    sync_dlq_url: str | None = None
    resync_state_machine_arn: str | None = None
    # Claims of the CRM's JWT that carry the tenant and the role; `sub` is the user.
    jwt_tenant_claim: str = "tenant_id"
    jwt_role_claim: str = "role"
    # How many shards the due index is spread over (scheduler fan-out).
    due_shards: int = 16
    # SYNC-2: a mailbox that has not synced for this long gets a catch-up sync (lost pushes).
    catchup_after_s: int = 900
    calendar_poll_after_s: int = 900  # a calendar connection is synced at least this often (SYNC-2)

    # Accounts: secrets, OAuth clients, where the connect flow returns.
    user_secrets_key_id: str = ""
    oauth_clients_secret_arn: str = ""
    state_signing_secret_arn: str = ""
    public_api_base: str = ""  # empty: derived from the request (https://<api domain>)
    connect_return_url: str = ""
    # Provider endpoints: the real ones by default; the emulators' in tests and `make run`.
    google_auth_uri: str = "https://accounts.google.com/o/oauth2/v2/auth"
    google_token_uri: str = "https://oauth2.googleapis.com/token"
    google_userinfo_uri: str = "https://openidconnect.googleapis.com/v1/userinfo"
    gmail_api_base: str = "https://gmail.googleapis.com"
    google_calendar_api_base: str = "https://www.googleapis.com"  # calendar.v3 adds its own path
    microsoft_authority_host: str = "https://login.microsoftonline.com"
    graph_api_base: str = "https://graph.microsoft.com"
    # A CA bundle to trust for provider TLS (the emulators' local CA); empty: the system's.
    provider_ca_bundle: str = ""
    imap_ca_bundle: str = ""
    imap_allow_private_hosts: bool = False
    # Gmail push (Pub/Sub OIDC): who signs, for whom, as whom
    google_push_certs_url: str = "https://www.googleapis.com/oauth2/v3/certs"
    gmail_push_audience: str = ""  # empty: https://<api domain>/webhooks/gmail
    gmail_push_service_account: str = ""
    gmail_push_topic: str = (
        ""  # projects/<p>/topics/<t>; empty: no users.watch (pushes come from elsewhere or not at all)
    )
    # Google Calendar push channels: the https address Google posts to (…/webhooks/google-calendar);
    # empty: no channel is opened, and each calendar connection's poll alone keeps it in sync
    google_calendar_webhook_url: str = ""
    # Attachment limits per provider (ATT-5): JSON overriding mail/limits.py's table; empty: the table
    attachment_limits: str = ""


def get_settings() -> Settings:
    """The settings of this process's composition root (services.current())."""
    from crmsync import services

    return services.current().settings

"""Accounts as stored and shown. Secrets (tokens, passwords) never live on these models."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    WithJsonSchema,
)

Provider = Literal["google", "microsoft", "imap"]
OAuthProvider = Literal["google", "microsoft"]
Purpose = Literal["mail", "calendar", "both"]
ImportSince = Literal["none", "1m", "3m", "6m", "12m"]
Sharing = Literal["private", "shared"]
Status = Literal["connected", "syncing", "reauth_required", "replaced", "disconnected"]

# Accounts in these states hold a place in the plan (ACC-4) and may sync.
ACTIVE: frozenset[str] = frozenset({"connected", "syncing", "reauth_required"})
SYNCABLE: frozenset[str] = frozenset({"connected", "syncing"})

Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\r\n\x00]+$")]
# a CRM activity type's name (custom types included), as the CRM spells it
ActivityType = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\r\n\x00]+$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class AccountSettings(_Strict):
    """What the user picks before sync starts (ACC-5), and may change later."""

    sharing: Sharing = Field(default="private", description="LINK-6: who else sees this mail.")
    labels_or_folders: list[Label] = Field(
        default_factory=list,
        max_length=50,
        description=(
            "MAIL-8: sync only these Gmail labels, or Outlook folders (well-known names such as"
            " `inbox`, or display paths such as `Clients` or `Inbox/Acme`). Empty: all mail on"
            " Gmail, Inbox on Outlook. Sent mail of synced threads always syncs."
        ),
    )
    import_since: ImportSince = Field(default="none", description="ACC-5: how far back to import.")
    scope: Literal["crm_threads", "all"] = Field(default="crm_threads", description="MAIL-1.")
    inbound_from_contacts: bool = Field(default=True, description="MAIL-4.")
    archive_propagation: bool = Field(default=False, description="MAIL-9.")
    save_events_as: ActivityType = Field(
        default="meeting", description="CAL-4: the CRM activity type events from the calendar become."
    )
    activity_types: list[ActivityType] = Field(
        default_factory=lambda: ["meeting"],
        max_length=50,
        description="CAL-5: the activity types (custom ones included) that go to the calendar.",
    )


class AccountSettingsPatch(_Strict):
    sharing: Sharing | None = None
    labels_or_folders: list[Label] | None = Field(default=None, max_length=50)
    scope: Literal["crm_threads", "all"] | None = None
    inbound_from_contacts: bool | None = None
    archive_propagation: bool | None = None
    save_events_as: ActivityType | None = None
    activity_types: list[ActivityType] | None = Field(default=None, max_length=50)


# A mail server's DNS name (labels of 1-63 letters, digits and hyphens, no hyphen at either
# end, an optional final dot) or an IPv4 address: what a resolver takes, checked before it does.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_PATTERN = rf"^(?:{_LABEL}\.)*{_LABEL}\.?$"


def _host_name(value: str) -> str:
    if not re.fullmatch(_HOST_PATTERN, value):
        raise ValueError(
            "not a host name: labels of 1 to 63 letters, digits or hyphens (no hyphen at either end),"
            " separated by single dots"
        )
    return value


HostName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=253),
    AfterValidator(_host_name),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 253, "pattern": _HOST_PATTERN}),
]


class ImapServer(_Strict):
    """Where an IMAP/SMTP account lives. TLS only: implicit TLS or STARTTLS (ACC-3)."""

    imap_host: HostName
    imap_port: int = Field(default=993, ge=1, le=65535)
    imap_security: Literal["tls", "starttls"] = "tls"
    smtp_host: HostName
    smtp_port: int = Field(default=465, ge=1, le=65535)
    smtp_security: Literal["tls", "starttls"] = "tls"
    username: Annotated[str, StringConstraints(min_length=1, max_length=254, pattern=r"^[^\r\n\x00]+$")]


class Account(BaseModel):
    account_id: str
    tenant_id: str
    user_id: str
    provider: Provider
    purpose: Purpose
    address: str
    status: Status
    is_default: bool = False
    settings: AccountSettings
    imap: ImapServer | None = None
    connected_at: datetime
    updated_at: datetime
    last_sync_at: datetime | None = None
    status_reason: str | None = None
    replaces: str | None = None
    replaced_by: str | None = None
    calendar_stopped_at: datetime | None = Field(
        default=None, description="CAL-9: when the calendar's sync was last stopped (or disconnected)"
    )
    calendar_resumed_at: datetime | None = Field(
        default=None, description="CAL-10: when it was resumed since; None while still stopped"
    )
    # the stored item's version when this was read (0: never stored); every write of the
    # account is conditional on it, so no writer overwrites a change it has not seen
    _version: int = PrivateAttr(default=0)

    @property
    def version(self) -> int:
        return self._version

    @property
    def is_mailbox(self) -> bool:
        return self.purpose in ("mail", "both")

    @property
    def purposes(self) -> tuple[str, ...]:
        """What the account syncs: "mail", "calendar" or both (the keys of its providers' bundles)."""
        return {"mail": ("mail",), "calendar": ("calendar",)}.get(self.purpose, ("mail", "calendar"))

    @property
    def holds_plan_slot(self) -> bool:
        return self.is_mailbox and self.status in ACTIVE

    @property
    def can_sync(self) -> bool:
        return self.status in SYNCABLE

    @property
    def calendar_stopped(self) -> bool:
        """CAL-9: stopped through POST /v1/calendars/{id}/stop and not reconnected since."""
        return self.calendar_stopped_at is not None and self.calendar_resumed_at is None

    @property
    def calendar_syncing(self) -> bool:
        return "calendar" in self.purposes and self.can_sync and not self.calendar_stopped


class TokenSet(BaseModel):
    """Secret material of one account, only ever stored encrypted (SEC-3)."""

    access_token: str | None = None
    refresh_token: str | None = None
    expires_at: int | None = Field(default=None, description="epoch seconds when the access token expires")
    scope: str | None = None
    msal_cache: str | None = Field(default=None, description="msal's serialized token cache (Microsoft)")
    password: str | None = Field(default=None, description="IMAP/SMTP password")

    def __repr__(self) -> str:  # never print secrets, even by accident
        return "TokenSet(<redacted>)"

    __str__ = __repr__


class ConnectRequest(_Strict):
    provider: OAuthProvider
    purpose: Purpose = "both"
    import_since: ImportSince = "none"
    sharing: Sharing = "private"
    labels_or_folders: list[Label] = Field(default_factory=list, max_length=50)
    login_hint: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^\r\n\x00]*$")] | None = None


class ImapConnectRequest(_Strict):
    address: Annotated[str, StringConstraints(min_length=3, max_length=254)]
    server: ImapServer
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024)] = Field(
        description="The password or app password; stored encrypted, never returned."
    )
    import_since: ImportSince = "none"
    sharing: Sharing = "private"
    labels_or_folders: list[Label] = Field(default_factory=list, max_length=50)


class ConnectStarted(BaseModel):
    authorization_url: str = Field(
        description="Send the user's browser here; it returns through /oauth/*/callback."
    )
    state: str
    expires_at: datetime


class PendingConnect(BaseModel):
    """Server-side half of an OAuth connect: bound to the user, used once, expires."""

    state_id: str
    tenant_id: str
    user_id: str
    provider: OAuthProvider
    purpose: Purpose
    settings: AccountSettings
    redirect_uri: str
    flow: dict[str, object] = Field(default_factory=dict, description="PKCE verifier, nonce, msal's flow")
    replaces: str | None = None
    expires_at: int


class PendingConfirmation(BaseModel):
    """A consent the provider granted, waiting for the CRM user who started the connect to
    confirm it from their own session (the connect is bound to that session, ACC-1). The
    tokens are sealed; the key is a hash of the confirmation code, which only the browser
    that came back from the provider holds."""

    confirmation_id: str
    pending: PendingConnect
    address: str
    sealed: dict[str, str]
    expires_at: int


class ConfirmConnect(_Strict):
    confirmation: Annotated[
        str, StringConstraints(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    ] = Field(description="The `confirmation` the OAuth callback put on the CRM's return URL.")


class PlanUsage(BaseModel):
    user_id: str
    mailbox_accounts: int
    limit: int


class AdminAccounts(BaseModel):
    plan: str
    limit_per_user: int
    usage: list[PlanUsage]
    accounts: list[Account]

"""The one place that names providers: which vendor package serves which purpose. Adding a
provider is a package under providers/ with a bundle, and one line here. Bundles are imported
on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmsync.accounts.oauth import OAuthClient
    from crmsync.mail.limits import AttachmentLimits
    from crmsync.providers.bundle import CalendarBundle, MailBundle, MailWiring
    from crmsync.settings import Settings

# (provider, purpose) → "module:name" of its bundle class (or, for "oauth", its sign-in factory)
BUNDLES: dict[tuple[str, str], str] = {
    ("google", "mail"): "crmsync.providers.google.bundle:GoogleMail",
    ("google", "oauth"): "crmsync.providers.google.bundle:oauth_client",
    ("google", "calendar"): "crmsync.providers.google.bundle:GoogleCalendar",
    ("microsoft", "mail"): "crmsync.providers.microsoft.bundle:MicrosoftMail",
    ("microsoft", "oauth"): "crmsync.providers.microsoft.bundle:oauth_client",
}


def _load(provider: str, purpose: str) -> Any:
    module, name = BUNDLES[(provider, purpose)].split(":")
    return getattr(importlib.import_module(module), name)


def providers(purpose: str) -> list[str]:
    """The providers that serve `purpose`, in registry order."""
    return [provider for provider, served in BUNDLES if served == purpose]


def mail_bundle(provider: str, wiring: MailWiring) -> MailBundle:
    """The provider's mail bundle; KeyError for a provider with none."""
    bundle: MailBundle = _load(provider, "mail")(wiring)
    return bundle


def calendar_bundle(provider: str, wiring: MailWiring) -> CalendarBundle:
    """The provider's calendar bundle; KeyError for a provider with none."""
    bundle: CalendarBundle = _load(provider, "calendar")(wiring)
    return bundle


def mail_limits(provider: str) -> AttachmentLimits | None:
    """What the provider's mail bundle states as its attachment limits (ATT-5); None without one.
    Read from the bundle's class: nothing is built."""
    if (provider, "mail") not in BUNDLES:
        return None
    limits: AttachmentLimits = _load(provider, "mail").limits
    return limits


def oauth_client(provider: str, config: Mapping[str, str], settings: Settings) -> OAuthClient:
    """The provider's sign-in adapter (ACC-2); KeyError for a provider with none."""
    client: OAuthClient = _load(provider, "oauth")(config, settings)
    return client


class ByProvider[T](Mapping[str, T]):
    """provider → one part of its bundle, each built on first use (what the neutral code takes:
    the change sources, senders, hooks, ... keyed by provider)."""

    def __init__(self, purpose: str, part: Callable[[str], T]) -> None:
        self._names = providers(purpose)
        self._part = part
        self._built: dict[str, T] = {}

    def __getitem__(self, provider: str) -> T:
        if provider not in self._names:
            raise KeyError(provider)
        if provider not in self._built:
            self._built[provider] = self._part(provider)
        return self._built[provider]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class ByPurpose[T](Mapping[tuple[str, str], T]):
    """(provider, purpose) → one part of that bundle, each built on first use: what the neutral
    code takes where one account may serve several purposes (the connect hooks)."""

    def __init__(self, part: Callable[[str, str], T]) -> None:
        self._keys = [key for key in BUNDLES if key[1] != "oauth"]
        self._part = part
        self._built: dict[tuple[str, str], T] = {}

    def __getitem__(self, key: tuple[str, str]) -> T:
        if key not in self._keys:
            raise KeyError(key)
        if key not in self._built:
            self._built[key] = self._part(*key)
        return self._built[key]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

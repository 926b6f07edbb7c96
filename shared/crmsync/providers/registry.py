"""The one place that names providers: which vendor package serves which purpose. Adding a
provider is a package under providers/ with a bundle, and one line here. Bundles are imported
on first use."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crmsync.providers.bundle import MailBundle, MailWiring

# (provider, purpose) → "module:Class" of its bundle
BUNDLES: dict[tuple[str, str], str] = {
    ("google", "mail"): "crmsync.providers.google.bundle:GoogleMail",
    ("microsoft", "mail"): "crmsync.providers.microsoft.bundle:MicrosoftMail",
}


def providers(purpose: str) -> list[str]:
    """The providers that serve `purpose`, in registry order."""
    return [provider for provider, served in BUNDLES if served == purpose]


def mail_bundle(provider: str, wiring: MailWiring) -> MailBundle:
    """The provider's mail bundle; KeyError for a provider with none."""
    module, name = BUNDLES[(provider, "mail")].split(":")
    bundle: MailBundle = getattr(importlib.import_module(module), name)(wiring)
    return bundle


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

"""How connecting and refreshing accounts fails, apart from the adapters that fail that way, so
that the account service can catch these without importing HTTP, IMAP or SMTP clients (cold
start): accounts/oauth.py and accounts/imap.py raise them."""

from __future__ import annotations


class ProviderRefused(Exception):
    """The provider or the user said no; `reason` is a short code, `message` is readable."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class InvalidGrant(Exception):
    """The provider no longer accepts the stored grant (revoked, expired, password changed)."""


class LoginRefused(Exception):
    """The server answered, and said no to these credentials."""


class ServerUnreachable(Exception):
    """No TLS conversation with the server could be had."""

"""Trying an IMAP/SMTP login before an account is saved (ACC-3). TLS only, certificates
verified against the host name the user gave.

The connect must not become a probe of other hosts:
- each host name is resolved once; every address it gives is checked (hosts on private or
  reserved networks are refused unless allowed: they would let a user make the service probe
  the operator's own network), and the connection goes to the first address checked, so a
  name that rebinds between the check and the connection gains nothing;
- what the user is told is generic (reached or not, login accepted or not): never the remote
  server's greeting or error text, which would make the API a banner grabber.

User names and passwords outside ASCII cannot go through IMAP LOGIN or smtplib's AUTH (both
ASCII only): such credentials log in with AUTH PLAIN in UTF-8 (RFC 4616), and a server that
does not offer PLAIN refuses them as a failed login.
"""

from __future__ import annotations

import base64
import contextlib
import imaplib
import ipaddress
import smtplib
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

from aws_lambda_powertools import Logger

from crmsync.accounts.failures import LoginRefused as LoginRefused
from crmsync.accounts.failures import ServerUnreachable as ServerUnreachable
from crmsync.accounts.models import ImapServer

logger = Logger(child=True)

_TIMEOUT = 15.0

# host, port -> the addresses the name resolves to (a seam: tests pass a resolver that rebinds)
Resolver = Callable[[str, int], list[str]]


class MailLoginVerifier(Protocol):
    def verify(self, server: ImapServer, password: str) -> None: ...


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _plain(user: str, password: str) -> bytes:
    return b"\0" + user.encode() + b"\0" + password.encode()


def _is_ascii(*texts: str) -> bool:
    return all(text.isascii() for text in texts)


class _PinnedIMAP4(imaplib.IMAP4):
    """IMAP to a fixed address; the host name stays for STARTTLS's certificate check."""

    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        self._address = address
        super().__init__(host, port, timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        return socket.create_connection((self._address, self.port), timeout)


class _PinnedIMAP4_SSL(imaplib.IMAP4_SSL):
    def __init__(self, address: str, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        self._address = address
        super().__init__(host, port, ssl_context=context, timeout=timeout)

    def _create_socket(self, timeout: float | None = None) -> socket.socket:
        sock = socket.create_connection((self._address, self.port), timeout)
        context: ssl.SSLContext = self.ssl_context
        return context.wrap_socket(sock, server_hostname=self.host)


class _PinnedSMTP(smtplib.SMTP):
    def __init__(self, address: str, host: str, port: int, timeout: float) -> None:
        self._address = address
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return socket.create_connection((self._address, port), timeout)


class _PinnedSMTP_SSL(smtplib.SMTP_SSL):
    def __init__(self, address: str, host: str, port: int, context: ssl.SSLContext, timeout: float) -> None:
        self._address = address
        self._name = host
        super().__init__(host, port, context=context, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._address, port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self._name)


class ImapSmtpVerifier:
    def __init__(
        self,
        ca_bundle: str | None = None,
        allow_private_hosts: bool = False,
        resolve: Resolver = resolve,
        timeout_s: float = _TIMEOUT,
    ) -> None:
        self._ca = ca_bundle or None
        self._allow_private = allow_private_hosts
        self._resolve = resolve
        self._timeout = timeout_s

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _address(self, host: str, port: int) -> str:
        """The one address to connect to, after every address of the name was checked."""
        refused = ServerUnreachable(f"{host} does not resolve to a public address this service may use")
        try:
            addresses = self._resolve(host, port)
            parsed = [ipaddress.ip_address(address.split("%", 1)[0]) for address in addresses]
        except (OSError, UnicodeError, ValueError) as error:
            raise refused from error
        if not parsed:
            raise refused
        for address in parsed:
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            if not self._allow_private and not (address.is_global and (mapped is None or mapped.is_global)):
                raise refused
        return str(addresses[0])

    def verify(self, server: ImapServer, password: str) -> None:
        imap_address = self._address(server.imap_host, server.imap_port)
        smtp_address = self._address(server.smtp_host, server.smtp_port)
        self._imap(server, imap_address, password)
        self._smtp(server, smtp_address, password)

    def _unreachable(self, where: str, what: str, error: BaseException) -> ServerUnreachable:
        # the error's text may hold what the remote sent: only its type goes to the log
        logger.info("mail server check failed", extra={"where": where, "error_type": type(error).__name__})
        return ServerUnreachable(f"{where}: {what}")

    def _imap(self, server: ImapServer, address: str, password: str) -> None:
        where = f"IMAP {server.imap_host}:{server.imap_port}"
        try:
            if server.imap_security == "tls":
                connection: imaplib.IMAP4 = _PinnedIMAP4_SSL(
                    address, server.imap_host, server.imap_port, self._context(), self._timeout
                )
            else:
                connection = _PinnedIMAP4(address, server.imap_host, server.imap_port, self._timeout)
                connection.starttls(ssl_context=self._context())
        except (OSError, imaplib.IMAP4.error, EOFError, ValueError) as error:
            raise self._unreachable(where, "no TLS connection to an IMAP server", error) from error
        try:
            if _is_ascii(server.username, password):
                connection.login(server.username, password)
            elif "AUTH=PLAIN" in connection.capabilities:
                connection.authenticate("PLAIN", lambda _: _plain(server.username, password))
            else:
                raise LoginRefused(
                    f"{where} offers no login for a user name or password outside ASCII"
                    f" (AUTH=PLAIN); refused the login of {server.username}"
                )
        except imaplib.IMAP4.error as error:
            raise LoginRefused(f"{where} refused the login of {server.username}") from error
        except (OSError, EOFError) as error:  # timeouts and resets during the login
            raise self._unreachable(where, "no answer to the login", error) from error
        finally:
            with contextlib.suppress(OSError, EOFError, imaplib.IMAP4.error):
                connection.logout()

    def _smtp(self, server: ImapServer, address: str, password: str) -> None:
        where = f"SMTP {server.smtp_host}:{server.smtp_port}"
        try:
            if server.smtp_security == "tls":
                smtp: smtplib.SMTP = _PinnedSMTP_SSL(
                    address, server.smtp_host, server.smtp_port, self._context(), self._timeout
                )
            else:
                smtp = _PinnedSMTP(address, server.smtp_host, server.smtp_port, self._timeout)
                smtp.starttls(context=self._context())
        except (OSError, smtplib.SMTPException, ValueError) as error:
            raise self._unreachable(where, "no TLS connection to an SMTP server", error) from error
        try:
            if _is_ascii(server.username, password):
                smtp.login(server.username, password)
            else:
                self._smtp_plain_utf8(smtp, where, server.username, password)
        except smtplib.SMTPAuthenticationError as error:
            raise LoginRefused(f"{where} refused the login of {server.username}") from error
        except smtplib.SMTPNotSupportedError as error:
            raise LoginRefused(f"{where} offers no login (AUTH); refused {server.username}") from error
        except (OSError, smtplib.SMTPException) as error:
            raise self._unreachable(where, "no answer to the login", error) from error
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()

    @staticmethod
    def _smtp_plain_utf8(smtp: smtplib.SMTP, where: str, user: str, password: str) -> None:
        """AUTH PLAIN with the UTF-8 bytes (smtplib encodes its AUTH as ASCII)."""
        smtp.ehlo_or_helo_if_needed()
        if "PLAIN" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise LoginRefused(
                f"{where} offers no login for a user name or password outside ASCII (AUTH PLAIN);"
                f" refused the login of {user}"
            )
        code, _ = smtp.docmd("AUTH", "PLAIN " + base64.b64encode(_plain(user, password)).decode())
        if code == 235:
            return
        if code in (534, 535):
            raise LoginRefused(f"{where} refused the login of {user}")
        raise smtplib.SMTPResponseException(code, b"")

"""Trying an IMAP/SMTP login before an account is saved (ACC-3). TLS only, certificates
verified; hosts on private networks are refused unless allowed (they would let a user make
the service probe the operator's own network)."""

from __future__ import annotations

import contextlib
import imaplib
import ipaddress
import smtplib
import socket
import ssl
from typing import Protocol

from crmsync.accounts.models import ImapServer

_TIMEOUT = 15


class LoginRefused(Exception):
    """The server answered, and said no to these credentials."""


class ServerUnreachable(Exception):
    """No TLS conversation with the server could be had."""


class MailLoginVerifier(Protocol):
    def verify(self, server: ImapServer, password: str) -> None: ...


class ImapSmtpVerifier:
    def __init__(self, ca_bundle: str | None = None, allow_private_hosts: bool = False) -> None:
        self._ca = ca_bundle or None
        self._allow_private = allow_private_hosts

    def _context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self._ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def _check_host(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            raise ServerUnreachable(f"{host} does not resolve") from error
        for info in infos:
            address = ipaddress.ip_address(info[4][0])
            if not self._allow_private and not address.is_global:
                raise ServerUnreachable(f"{host} resolves to a private or reserved address")

    def verify(self, server: ImapServer, password: str) -> None:
        self._check_host(server.imap_host, server.imap_port)
        self._check_host(server.smtp_host, server.smtp_port)
        self._imap(server, password)
        self._smtp(server, password)

    def _imap(self, server: ImapServer, password: str) -> None:
        where = f"IMAP {server.imap_host}:{server.imap_port}"
        try:
            if server.imap_security == "tls":
                connection: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    server.imap_host, server.imap_port, ssl_context=self._context(), timeout=_TIMEOUT
                )
            else:
                connection = imaplib.IMAP4(server.imap_host, server.imap_port, timeout=_TIMEOUT)
                connection.starttls(ssl_context=self._context())
        except (OSError, imaplib.IMAP4.error) as error:
            raise ServerUnreachable(
                f"{where}: no TLS connection ({type(error).__name__}: {error})"
            ) from error
        try:
            connection.login(server.username, password)
        except imaplib.IMAP4.error as error:
            raise LoginRefused(f"{where} refused the login of {server.username}") from error
        except OSError as error:  # timeouts and resets during the login
            raise ServerUnreachable(f"{where}: no answer to the login ({type(error).__name__})") from error
        finally:
            with contextlib.suppress(OSError, imaplib.IMAP4.error):
                connection.logout()

    def _smtp(self, server: ImapServer, password: str) -> None:
        where = f"SMTP {server.smtp_host}:{server.smtp_port}"
        try:
            if server.smtp_security == "tls":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    server.smtp_host, server.smtp_port, context=self._context(), timeout=_TIMEOUT
                )
            else:
                smtp = smtplib.SMTP(server.smtp_host, server.smtp_port, timeout=_TIMEOUT)
                smtp.starttls(context=self._context())
        except (OSError, smtplib.SMTPException) as error:
            raise ServerUnreachable(
                f"{where}: no TLS connection ({type(error).__name__}: {error})"
            ) from error
        try:
            smtp.login(server.username, password)
        except smtplib.SMTPAuthenticationError as error:
            raise LoginRefused(f"{where} refused the login of {server.username}") from error
        except (OSError, smtplib.SMTPException) as error:
            raise ServerUnreachable(f"{where}: {type(error).__name__}: {error}") from error
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.quit()

"""Bad input answered with a clear 4xx, never a 500 (SEC-5): bodies that are not JSON, odd
JSON, IMAP host names and non-ASCII credentials, forged page tokens; and the IMAP connect
that must not become a probe of other hosts (resolved once, generic errors)."""

from __future__ import annotations

import base64
import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from crmsync import services
from crmsync.accounts.imap import ImapSmtpVerifier, ServerUnreachable
from crmsync.accounts.models import ImapServer
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.test_accounts import _imap_body, accounts_of, mail_servers
from tests.integration.test_mail_engine import OWNER, World, delivered, mail
from tests.mailservers import Dovecot, Smtp

__all__ = ["mail_servers"]  # the fixture, shared with the accounts tests

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def json_routes() -> list[tuple[str, str]]:
    """Every operation of the published API that takes a JSON body."""
    spec = json.loads(OPENAPI.read_text())
    found = []
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                found.append((method.upper(), path.replace("{", "").replace("}", "")))
    return found


def set_plan(api: Api, tenant: str, plan: str) -> None:
    """The plan is the CRM backend's to set (a service token)."""
    response = api.call(
        "PUT", "/v1/directory/settings", api.token(tenant, "crm", "service"), json={"plan": plan}
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------- bodies (item 9)


@pytest.mark.rule("SEC-5")
def test_every_json_route_answers_415_to_a_body_that_is_not_json(api: Api, tenant: str) -> None:
    routes = json_routes()
    assert len(routes) >= 12
    token = api.token(tenant, "u1", "admin")
    seen: dict[tuple[str, str, str], int] = {}
    for method, path in routes:
        for content_type in (
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "multipart/form-data; boundary=xyz",
            "application/xml",
        ):
            response = api.call(method, path, token, data=b"{}", headers={"Content-Type": content_type})
            seen[(method, path, content_type)] = response.status_code
            if response.status_code == 415:
                error = response.json()["error"]
                assert error["code"] == "unsupported_media_type"
                assert "application/json" in error["message"]
    assert {k: v for k, v in seen.items() if v != 415} == {}


@pytest.mark.rule("SEC-5")
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"", "application/json"),
        (b"\xff\xfe{", "application/json"),  # not UTF-8
        (b"\xff\xfe{", None),  # no content type: the stack base64-encodes it
        (b"[1, 2]", "application/json"),
        (b'"a string"', "application/json"),
        (b"null", "application/json"),
        (b"{", "application/json; charset=utf-8"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),  # deeper than the parser's stack
        (b'{"plan": ' + b"9" * 5000 + b"}", "application/json"),  # more digits than int() takes
    ],
    ids=["empty", "bad-utf8", "bad-utf8-untyped", "array", "string", "null", "truncated", "deep", "digits"],
)
def test_odd_bodies_are_a_clear_4xx(api: Api, tenant: str, body: bytes, content_type: str | None) -> None:
    token = api.token(tenant, "u1", "admin")
    headers = {"Content-Type": content_type} if content_type else {}
    for method, path in (("PUT", "/v1/directory/settings"), ("PUT", "/v1/blocklist")):
        response = api.call(method, path, token, data=body, headers=headers)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:300])
        assert response.json()["error"]["message"]


@pytest.mark.rule("SEC-5")
def test_json_with_a_charset_or_in_any_case_is_still_json(api: Api, tenant: str) -> None:
    token = api.token(tenant, "u1", "admin")
    for content_type in ("application/json; charset=utf-8", "Application/JSON"):
        response = api.call(
            "PUT", "/v1/blocklist", token, data=b'{"entries": []}', headers={"Content-Type": content_type}
        )
        assert response.status_code == 200, (content_type, response.text)


# ---------------------------------------------------------------------------- IMAP input (item 10)


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("ACC-3")
@pytest.mark.parametrize(
    "host",
    [
        "a..com",
        ".",
        "..",
        "a" * 64 + ".example.com",
        "-mail.example.com",
        "mail-.example.com",
        ".example.com",
    ],
)
def test_imap_host_names_that_are_not_host_names_are_422(api: Api, tenant: str, host: str) -> None:
    set_plan(api, tenant, "professional")
    user = api.token(tenant, "u1")
    for field in ("imap_host", "smtp_host"):
        body: dict[str, Any] = {
            "address": "ann@example.test",
            "password": "pw",
            "server": {"imap_host": "127.0.0.1", "smtp_host": "127.0.0.1", "username": "ann"},
        }
        body["server"][field] = host
        response = api.call("POST", "/v1/accounts/imap", user, json=body)
        assert response.status_code == 422, (field, response.text)
        assert f"server.{field}" in response.json()["error"]["message"]


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("ACC-3")
def test_non_ascii_imap_user_name_and_password_log_in_with_utf8(
    api: Api, mail_servers: tuple[Dovecot, Smtp], tenant: str
) -> None:
    """IMAP LOGIN and smtplib's AUTH only take ASCII: such credentials go by AUTH PLAIN in
    UTF-8 (RFC 4616), and a wrong one is the usual 422."""
    dovecot, smtp = mail_servers
    set_plan(api, tenant, "professional")
    user = api.token(tenant, "u1")
    address = f"jörg-{uuid.uuid4().hex[:6]}@example.test"
    password = f"pässwörd-ü-{uuid.uuid4().hex[:6]}"
    dovecot.add_user(address, password)
    smtp.users[address] = password

    created = api.call("POST", "/v1/accounts/imap", user, json=_imap_body(dovecot, smtp, address, password))
    assert created.status_code == 201, created.text

    # a wrong one is the usual 422 (after the good login: Dovecot penalises failures)
    other = f"zoë-{uuid.uuid4().hex[:6]}@example.test"
    dovecot.add_user(other, password)
    wrong = api.call("POST", "/v1/accounts/imap", user, json=_imap_body(dovecot, smtp, other, "fälsch"))
    assert wrong.status_code == 422 and "login failed" in wrong.json()["error"]["message"], wrong.text
    assert [a["address"] for a in accounts_of(api, user)] == [address]


# ---------------------------------------------------------------------------- page tokens (item 10)


def _threads(world: World, n: int, account_ids: tuple[str, ...] = ()) -> None:
    engine = services.current().mail_sync()
    for i in range(n):
        account = world.account
        if account_ids:
            account = account.model_copy(update={"account_id": account_ids[i % len(account_ids)]})
        assert engine.ingest(account, delivered(mail("carla@client.test", [OWNER], f"Page {i}"))).status == (
            "synced"
        )


def _b64(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("SEC-4")
def test_page_tokens_are_signed_and_bound_to_the_caller(api: Api, stack: LocalStack) -> None:
    world = World()
    _threads(world, 3)
    owner = api.token(world.tenant, "u1")
    first = api.call("GET", "/v1/threads", owner, params={"limit": 1})
    assert first.status_code == 200, first.text
    token = first.json()["next"]
    assert token
    second = api.call("GET", "/v1/threads", owner, params={"limit": 1, "next": token})
    assert second.status_code == 200 and len(second.json()["threads"]) == 1
    assert second.json()["threads"][0]["crm_thread_id"] != first.json()["threads"][0]["crm_thread_id"]

    # another user of the tenant, the same user of another tenant, or with another filter
    for caller, params in (
        (api.token(world.tenant, "u2"), {"next": token}),
        (api.token(world.tenant + "x", "u1"), {"next": token}),
        (owner, {"next": token, "account_id": "some-account"}),
    ):
        response = api.call("GET", "/v1/threads", caller, params=params)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_page_token"

    # made up, tampered with, or the old unsigned form pointing at another user's partition
    their_key = {"gsi1pk": f"T#{world.tenant}#U#u2", "gsi1sk": "9", "pk": "x", "sk": "y"}
    for forged in (
        "WzFd",
        "garbage!",
        "e30",
        "%%%",
        _b64(their_key),
        token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
        token.split(".")[0] if "." in token else token[:10],
        _b64(their_key) + "." + token.rsplit(".", 1)[-1],
        "x" * 2048,
    ):
        response = api.call("GET", "/v1/threads", owner, params={"next": forged})
        assert response.status_code == 400, (forged[:40], response.status_code, response.text)
        assert response.json()["error"]["code"] == "invalid_page_token"


@pytest.mark.rule("SEC-4")
def test_a_page_token_of_an_account_filter_goes_on_with_that_filter(api: Api, stack: LocalStack) -> None:
    world = World()
    other = world.account.account_id + "-b"
    _threads(world, 4, (world.account.account_id, other))
    owner = api.token(world.tenant, "u1")
    params = {"limit": 1, "account_id": other}
    first = api.call("GET", "/v1/threads", owner, params=params).json()
    second = api.call("GET", "/v1/threads", owner, params={**params, "next": first["next"]})
    assert second.status_code == 200, second.text
    subjects = {t["subject"] for t in first["threads"] + second.json()["threads"]}
    assert subjects == {"Page 1", "Page 3"}


# ---------------------------------------------------------------------------- IMAP connect (item 11)


def _server(dovecot: Dovecot, smtp: Smtp, host: str, user: str) -> ImapServer:
    return ImapServer(
        imap_host=host,
        imap_port=dovecot.tls_port,
        smtp_host=host,
        smtp_port=smtp.port,
        username=user,
    )


class Resolver:
    """A resolver that answers each name from a list of answers, one per call (DNS that
    rebinds), and records the calls."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        seen = sum(1 for h, _ in self.calls if h == host)
        options = self.answers[host]
        return options[min(seen, len(options)) - 1]


@pytest.fixture
def ca_bundle(emulators: Emulators) -> str:
    return str(emulators.ca_bundle)


@pytest.mark.rule("SEC-5")
@pytest.mark.rule("ACC-3")
def test_imap_connect_goes_to_the_address_it_checked(
    mail_servers: tuple[Dovecot, Smtp], ca_bundle: str
) -> None:
    """Resolved once per server; a later answer (here: where nothing listens) is never used;
    the certificate is checked against the host name (the local CA's covers `localhost`)."""
    dovecot, smtp = mail_servers
    address, password = f"pin-{uuid.uuid4().hex[:6]}@example.test", "pin-password"
    dovecot.add_user(address, password)
    smtp.users[address] = password
    resolver = Resolver({"localhost": [["127.0.0.1"], ["127.0.0.1"], ["127.0.0.2"]]})
    verifier = ImapSmtpVerifier(ca_bundle, allow_private_hosts=True, resolve=resolver)
    verifier.verify(_server(dovecot, smtp, "localhost", address), password)
    assert resolver.calls == [("localhost", dovecot.tls_port), ("localhost", smtp.port)]

    # the address the name gave (127.0.0.1) is in the certificate, the name is not: refused
    elsewhere = Resolver({"mail.example.test": [["127.0.0.1"]]})
    with pytest.raises(ServerUnreachable):
        ImapSmtpVerifier(ca_bundle, allow_private_hosts=True, resolve=elsewhere).verify(
            _server(dovecot, smtp, "mail.example.test", address), password
        )


@pytest.mark.rule("SEC-5")
def test_a_name_that_rebinds_to_a_private_address_is_refused_before_any_connection(
    mail_servers: tuple[Dovecot, Smtp], ca_bundle: str
) -> None:
    dovecot, smtp = mail_servers
    server = _server(dovecot, smtp, "rebind.example.test", "x@example.test")
    for answers in (
        [["127.0.0.1"]],
        [["93.184.215.14", "127.0.0.1"]],  # every address is checked, not only the first
        [["::ffff:127.0.0.1"]],
        [["10.0.0.8"]],
    ):
        resolver = Resolver({"rebind.example.test": answers})
        connections_before = _dovecot_logins(dovecot)
        with pytest.raises(ServerUnreachable) as refused:
            ImapSmtpVerifier(ca_bundle, allow_private_hosts=False, resolve=resolver).verify(server, "pw")
        assert resolver.calls == [("rebind.example.test", dovecot.tls_port)]
        assert "127.0.0.1" not in str(refused.value) and "10.0.0.8" not in str(refused.value)
        assert _dovecot_logins(dovecot) == connections_before


def _dovecot_logins(dovecot: Dovecot) -> int:
    log = dovecot.root / "dovecot.log"
    return log.read_text(errors="replace").count("imap-login") if log.exists() else 0


class BannerServer:
    """A TCP service that is not a mail server: it greets with its banner and waits."""

    def __init__(self, banner: bytes) -> None:
        self.banner = banner
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.sendall(self.banner)
                conn.settimeout(2)
                try:
                    while conn.recv(4096):
                        conn.sendall(b"ERR " + self.banner)
                except OSError:
                    pass

    def stop(self) -> None:
        self.stopped = True
        self.listener.close()


@pytest.fixture
def banner_server() -> Iterator[Callable[[bytes], BannerServer]]:
    started: list[BannerServer] = []

    def start(banner: bytes) -> BannerServer:
        started.append(BannerServer(banner))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.mark.rule("SEC-5")
def test_connect_errors_do_not_echo_what_the_remote_server_said(
    api: Api,
    mail_servers: tuple[Dovecot, Smtp],
    banner_server: Callable[[bytes], BannerServer],
    tenant: str,
) -> None:
    dovecot, smtp = mail_servers
    set_plan(api, tenant, "professional")
    user = api.token(tenant, "u1")
    address, password = f"ban-{uuid.uuid4().hex[:6]}@example.test", "banner-password"
    dovecot.add_user(address, password)
    smtp.users[address] = password
    secret = uuid.uuid4().hex
    ssh = banner_server(f"SSH-2.0-OpenSSH_9.6 {secret}\r\n".encode())
    smtpish = banner_server(f"220 {secret} ESMTP\r\n".encode())

    cases = []
    for security in ("tls", "starttls"):  # IMAP spoken to an SSH server
        body = _imap_body(dovecot, smtp, address, password)
        body["server"].update(imap_port=ssh.port, imap_security=security)
        cases.append(body)
    for port, security in ((ssh.port, "starttls"), (ssh.port, "tls"), (smtpish.port, "starttls")):
        body = _imap_body(dovecot, smtp, address, password)  # IMAP fine, SMTP is not
        body["server"].update(smtp_port=port, smtp_security=security)
        cases.append(body)
    for body in cases:
        response = api.call("POST", "/v1/accounts/imap", user, json=body)
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "cannot reach the mail server" in message
        assert secret not in response.text and "SSH" not in message and "ESMTP" not in message

"""Real mail servers for the tests: Dovecot (IMAP, Debian's package) and aiosmtpd (SMTP
submission with AUTH), both over TLS with a certificate of the local CA."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

DOVECOT_CONF = """
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
# any character in user names (Dovecot's default set is ASCII): UTF-8 names log in by AUTH PLAIN
auth_username_chars =
default_login_user = dovenull
default_internal_user = dovecot
first_valid_uid = 0
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=dovecot gid=dovecot home={root}/home/%u
}}
service imap-login {{
  inet_listener imap {{
    port = {starttls_port}
  }}
  inet_listener imaps {{
    port = {tls_port}
    ssl = yes
  }}
}}
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@dataclass
class Dovecot:
    root: Path
    tls_port: int
    starttls_port: int

    def add_user(self, user: str, password: str) -> None:
        path = self.root / "users"
        before = path.stat().st_mtime
        with path.open("a") as users:
            users.write(f"{user}:{{PLAIN}}{password}\n")
        # Dovecot re-reads the file when its mtime (in seconds) changes: make sure it does
        later = max(before + 1, time.time())
        os.utime(path, (later, later))

    def stop(self) -> None:
        subprocess.run(
            ["doveadm", "-c", str(self.root / "dovecot.conf"), "stop"], check=False, capture_output=True
        )
        shutil.rmtree(self.root, ignore_errors=True)


def start_dovecot(cert: Path, key: Path) -> Dovecot:
    """A Dovecot in a fresh folder under the system temp dir: its auth process runs as the
    `dovecot` user, who must be able to reach the folder (pytest's own temp root is 0700)."""
    binary = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)
    if binary is None:
        raise RuntimeError(
            "Dovecot is not installed: `make test` installs it (apt-get install dovecot-imapd)"
        )
    root = Path(tempfile.mkdtemp(prefix="crmsync-dovecot-"))
    server = Dovecot(root, free_port(), free_port())
    for sub in ("run", "state", "mail", "home"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "users").touch()
    shutil.chown(root / "mail", "dovecot", "dovecot")
    shutil.chown(root / "home", "dovecot", "dovecot")
    os.chmod(root, 0o755)
    conf = DOVECOT_CONF.format(
        root=root, cert=cert, key=key, tls_port=server.tls_port, starttls_port=server.starttls_port
    )
    (root / "dovecot.conf").write_text(conf)
    subprocess.run([binary, "-c", str(root / "dovecot.conf")], check=True)
    _wait_for(server.tls_port)
    return server


class _Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


@dataclass
class Smtp:
    controller: Controller
    port: int
    users: dict[str, str]

    def stop(self) -> None:
        self.controller.stop()


def start_smtp(cert: Path, key: Path, implicit_tls: bool = True) -> Smtp:
    """Submission with AUTH: implicit TLS (port 465 style) or STARTTLS required (587 style)."""
    import ssl

    users: dict[str, str] = {}

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and users.get(data.login.decode()) == data.password.decode()
        return AuthResult(success=ok, handled=False)

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))
    port = free_port()
    if implicit_tls:
        controller = Controller(
            _Accept(),
            hostname="127.0.0.1",
            port=port,
            ssl_context=context,
            authenticator=authenticate,
            auth_require_tls=False,  # the whole connection is TLS already
        )
    else:
        controller = Controller(
            _Accept(),
            hostname="127.0.0.1",
            port=port,
            tls_context=context,
            require_starttls=True,
            authenticator=authenticate,
            auth_require_tls=True,
        )
    controller.start()
    return Smtp(controller, port, users)

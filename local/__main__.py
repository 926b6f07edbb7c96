"""`python -m local run` serves the whole service; `python -m local token` prints a dev JWT."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from local.devissuer import ROOT, DevIssuer
from local.emulators.servers import Emulators, start_emulators

STATE_DIR = ROOT / ".local"
# Gmail's watch topic in `make run`: the Google emulator pushes its changes to the webhook
LOCAL_GMAIL_TOPIC = "projects/crmsync-local/topics/gmail"


def local_parameters(api_url: str, emulators: Emulators) -> dict[str, str]:
    """Template parameters of the local stack: its own URLs, the emulators, loopback IMAP."""
    return {
        **emulators.parameters(),
        "PublicApiBaseUrl": api_url,
        "ConnectReturnUrl": f"{api_url}/_local/connected",
        "ImapAllowPrivateHosts": "true",
    }


def _issuer(port: int) -> DevIssuer:
    return DevIssuer(issuer=f"http://127.0.0.1:{port}/_local/issuer")


def run(args: argparse.Namespace) -> int:
    from local.http import LocalServer
    from local.stack import LocalStack

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        server = LocalServer(None, host=args.host, port=args.port)
        emulators = start_emulators(STATE_DIR, args.host, args.port + 1, args.port + 2)
    except OSError as error:
        print(f"cannot listen on {args.host}:{args.port} to {args.port + 2}: {error}", file=sys.stderr)
        return 1
    # connected Gmail mailboxes are watched; the emulated Pub/Sub subscription pushes to the webhook;
    # connected Google calendars get a push channel whose address is the calendar webhook
    parameters = {
        **local_parameters(server.url, emulators),
        "GmailPushTopic": LOCAL_GMAIL_TOPIC,
        "GoogleCalendarWebhookUrl": f"{server.url}/webhooks/google-calendar",
    }
    emulators.google.pubsub_endpoint = f"{server.url}/webhooks/gmail"
    stack = LocalStack(issuer=_issuer(args.port), say=say, parameters=parameters)
    say("crmsync local stack: building template.yaml in moto ...")
    stack.start()
    stack.set_secret("OAuthClientSecret", json.dumps(emulators.oauth_clients()))
    server.api.attach(stack)
    server.start()
    for line in stack.describe():
        say(line)
    say("")
    say(f"HTTP API        {server.url}            (try GET {server.url}/health)")
    say(f"Events          {server.url}/_local/events   (newest first; also printed below as they come)")
    say(f"Dev JWT issuer  {stack.issuer.issuer}   audience {stack.issuer.audience}")
    say("A token:        make token TENANT=t1 USER=u1 ROLE=admin")
    say(
        f"Google emulator {emulators.google_url}   Microsoft emulator {emulators.microsoft_url}"
        f" (CA {emulators.ca_bundle})"
    )
    say("Connect:        POST /v1/accounts/connect, then open its authorization_url in a browser")
    say(
        f"Gmail push      watch topic {LOCAL_GMAIL_TOPIC} -> {emulators.google.pubsub_endpoint};"
        f" mail arrives with POST {emulators.google_url}/_emulator/gmail/arrive"
    )
    say(
        f"Calendar push   channels -> {server.url}/webhooks/google-calendar;"
        f" events change with POST {emulators.google_url}/_emulator/gcal/create"
    )
    say("Ctrl-C stops.")
    stopped = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stopped.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    stopped.wait()
    say("stopping ...")
    server.stop()
    emulators.stop()
    stack.stop()
    say("stopped.")
    return 0


def token(args: argparse.Namespace) -> int:
    print(_issuer(args.port).mint(args.tenant, args.user, args.role, ttl=args.ttl))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local")
    commands = parser.add_subparsers(dest="command", required=True)
    port = int(os.environ.get("LOCAL_PORT", "3000"))
    run_parser = commands.add_parser("run", help="serve the whole service on this machine")
    run_parser.add_argument("--host", default="127.0.0.1")
    run_parser.add_argument("--port", type=int, default=port)
    run_parser.set_defaults(func=run)
    token_parser = commands.add_parser("token", help="print a JWT of the local dev issuer")
    token_parser.add_argument("--tenant", required=True)
    token_parser.add_argument("--user", required=True)
    token_parser.add_argument("--role", default="member", choices=["admin", "member", "service"])
    token_parser.add_argument("--ttl", type=int, default=12 * 3600)
    token_parser.add_argument("--port", type=int, default=port)
    token_parser.set_defaults(func=token)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

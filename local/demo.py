"""`make demo`: the mail scenario, end to end, against the local stack (`make run`), on a
Gmail account and then on an Outlook account.

A CRM user connects the account (through the emulator's consent page) and writes to a contact
from the CRM; the contact replies; the user answers from the mail client; the contact replies
again. Notifications come from the emulators (Pub/Sub pushes, Graph change notifications);
nothing is called by hand on the service's side. The CRM's thread is printed with its links
and events, and the demo fails unless it holds the four messages, each exactly once, all
linked to the contact and the open deal. On Outlook the contact then sends a file Microsoft
accounts do not take, and the demo shows the message skipped with its reason. Then the calendar
scenario on Google (local/demo_calendar.py). If nothing answers on the port, the demo starts
`make run`'s stack itself and stops it at the end."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import requests

from local.browser import ConsentBrowser
from local.devissuer import DevIssuer

ROOT = Path(__file__).resolve().parent.parent


class DemoFailed(RuntimeError):
    pass


def _wait[T](what: str, probe: Callable[[], T | None], timeout: float = 60) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.3)
    raise DemoFailed(f"gave up waiting for {what} after {timeout:.0f} s")


PROVIDERS = {
    # provider: (label, mailbox domain, emulator control prefix, emulator port offset)
    "google": ("Gmail", "gmail.test", "/_emulator/gmail", 1),
    "microsoft": ("Outlook", "outlook.test", "/_emulator/graph", 2),
}
CA_BUNDLE = ROOT / ".local" / "tls" / "ca.pem"  # the emulators' local CA (Microsoft speaks TLS)


class Demo:
    def __init__(self, base: str, provider: str) -> None:
        self.base = base
        self.provider = provider
        self.label, domain, self.controls, offset = PROVIDERS[provider]
        port = int(base.rsplit(":", 1)[-1])
        scheme = "https" if provider == "microsoft" else "http"
        self.emulator = f"{scheme}://127.0.0.1:{port + offset}"
        self.verify: str | bool = str(CA_BUNDLE) if provider == "microsoft" else True
        self.issuer = DevIssuer(issuer=f"http://127.0.0.1:{port}/_local/issuer")
        self.http = requests.Session()
        suffix = uuid.uuid4().hex[:6]
        self.tenant = f"demo-{provider[:2]}-{suffix}"
        self.user = "u1"
        self.mailbox = f"sam.seller-{suffix}@{domain}"
        self.contact = "carla.client@example.test"

    # ------------------------------------------------------------------ plumbing
    def call(self, method: str, path: str, role: str = "member", user: str | None = None, **kw: Any) -> Any:
        token = self.issuer.mint(self.tenant, user or self.user, role)
        response = self.http.request(
            method, self.base + path, headers={"Authorization": f"Bearer {token}"}, timeout=60, **kw
        )
        if response.status_code >= 300:
            raise DemoFailed(f"{method} {path} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    def mail_client(self, action: str, **body: Any) -> Any:
        """The emulator's controls: mail arrives, or the user writes in the mail client."""
        response = self.http.post(
            f"{self.emulator}{self.controls}/{action}", json=body, timeout=30, verify=self.verify
        )
        if response.status_code != 200:
            raise DemoFailed(f"emulator {action} answered {response.status_code}: {response.text[:300]}")
        return response.json()

    @staticmethod
    def arrived(answer: dict[str, Any]) -> str:
        """The Message-ID of what the emulator stored."""
        return str(answer.get("messageId") or answer.get("internetMessageId"))

    def thread(self, thread_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.call("GET", f"/v1/threads/{thread_id}")
        return view

    def wait_for(self, thread_id: str, count: int) -> dict[str, Any]:
        def enough() -> dict[str, Any] | None:
            view = self.thread(thread_id)
            return view if len(view["messages"]) >= count else None

        return _wait(f"the CRM thread to hold {count} messages", enough)

    @staticmethod
    def message(sender: str, to: str, subject: str, body: str, parent: list[str]) -> str:
        mail = EmailMessage()
        mail["From"] = sender
        mail["To"] = to
        mail["Subject"] = subject
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
        if parent:
            mail["In-Reply-To"] = parent[-1]
            mail["References"] = " ".join(parent)
        mail.set_content(body)
        return mail.as_string()

    # ------------------------------------------------------------------ the scenario
    def run(self) -> int:
        say = print
        say(f"tenant {self.tenant}: a contact and an open deal")
        self.call("PUT", "/v1/directory/settings", "service", "crm", json={"plan": "advanced"})
        contact = {"name": "Carla Client", "emails": [self.contact]}
        self.call("PUT", "/v1/directory/contacts/carla", "admin", "admin", json=contact)
        deal = {"name": "Carla's renewal", "status": "open", "contact_ids": ["carla"]}
        self.call("PUT", "/v1/directory/deals/renewal", "admin", "admin", json=deal)

        say(f"connecting {self.label} {self.mailbox} (the emulator's consent page) ...")
        started = self.call("POST", "/v1/accounts/connect", json={"provider": self.provider})
        result, _ = ConsentBrowser(self.verify).consent(started["authorization_url"], self.mailbox)
        if result.get("status") != "confirm_required":
            raise DemoFailed(f"the connect ended {result}")
        # the CRM's return page confirms in the session of the user who started the connect
        confirmed = self.call(
            "POST", "/v1/accounts/connect/confirm", json={"confirmation": result["confirmation"]}
        )
        account_id = confirmed["account_id"]
        say(f"  account {account_id} connected")

        say("1. the CRM writes to Carla")
        sent = self.call(
            "POST",
            "/v1/messages",
            json={
                "to": [{"address": self.contact, "name": "Carla Client"}],
                "subject": "Your renewal",
                "text": "Hi Carla,\n\nshall we renew for another year?\n\nSam",
            },
        )
        thread_id = sent["thread_id"]
        chain = [sent["rfc822_message_id"]]

        say(f"2. Carla replies (mail arrives in the {self.label} mailbox; the provider notifies)")
        raw = self.message(self.contact, self.mailbox, "Re: Your renewal", "Yes, send me the quote.", chain)
        chain.append(self.arrived(self.mail_client("arrive", address=self.mailbox, raw=raw)))
        self.wait_for(thread_id, 2)

        say(f"3. Sam answers from the {self.label} client")
        raw = self.message(self.mailbox, self.contact, "Re: Your renewal", "Quote attached tomorrow.", chain)
        chain.append(self.arrived(self.mail_client("send_from_client", address=self.mailbox, raw=raw)))
        self.wait_for(thread_id, 3)

        say("4. Carla replies again")
        raw = self.message(self.contact, self.mailbox, "Re: Your renewal", "Great, thanks!", chain)
        chain.append(self.arrived(self.mail_client("arrive", address=self.mailbox, raw=raw)))
        self.wait_for(thread_id, 4)
        skipped = None
        if self.provider == "microsoft":
            say(
                "5. Carla sends an installer named tool.pdf: Microsoft accounts do not take it (ATT-3, ATT-4)"
            )
            skipped = self.skipped_installer(chain)
        time.sleep(2)  # let any late duplicate arrive before judging "exactly once"
        view = self.thread(thread_id)
        return self.report(view, chain, skipped)

    def skipped_installer(self, chain: list[str]) -> dict[str, Any]:
        mail = EmailMessage()
        mail["From"] = self.contact
        mail["To"] = self.mailbox
        mail["Subject"] = "Re: Your renewal"
        mail["Date"] = format_datetime(datetime.now(UTC))
        mail["Message-ID"] = make_msgid(domain="example.test")
        mail["In-Reply-To"] = chain[-1]
        mail["References"] = " ".join(chain)
        mail.set_content("Here is our tool.")
        mail.add_attachment(b"MZ" + b"\x00" * 512, maintype="application", subtype="pdf", filename="tool.pdf")
        stored = self.mail_client("arrive", address=self.mailbox, raw=mail.as_string())

        def skip_event() -> dict[str, Any] | None:
            events = self.http.get(f"{self.base}/_local/events", timeout=10).json()["events"]
            return next(
                (
                    e
                    for e in events
                    if e["detail-type"] == "MessageSkipped"
                    and e["detail"].get("provider_message_id") == stored["id"]
                ),
                None,
            )

        found: dict[str, Any] = _wait("the skipped message's event", skip_event)
        return found

    def report(self, view: dict[str, Any], chain: list[str], skipped: dict[str, Any] | None) -> int:
        thread, messages = view["thread"], view["messages"]
        print()
        print(f'{self.label}: CRM thread {thread["crm_thread_id"]}  "{thread["subject"]}"')
        print(f"  contacts {thread['contact_ids']}  deal {thread['deal_id']}  messages {len(messages)}")
        for n, m in enumerate(messages, 1):
            print(
                f"  {n}. {m['direction']:<8} {m['sender']:<36} {m['subject']:<18} "
                f"contacts {m['contact_ids']} deal {m['deal_id']}  id {m['crm_message_id'][:8]}"
            )
        events = self.http.get(f"{self.base}/_local/events", timeout=10).json()["events"]
        mine = [e for e in reversed(events) if e.get("detail", {}).get("tenant_id") == self.tenant]
        print(f"\nevents for {self.tenant} (oldest first):")
        for event in mine:
            detail = event["detail"]
            what = {
                "MessageSynced": lambda d: f"{d['direction']} {d['subject']!r} message {d['message_id'][:8]}",
                "AccountStatusChanged": lambda d: f"{d.get('address', '')} {d.get('status')}",
                "DirectoryEntryUpserted": lambda d: f"{d['kind']} {d['id']}",
                "DefaultAccountChanged": lambda d: f"default account {str(d.get('account_id'))[:8]}",
                "TenantSettingsChanged": lambda d: f"plan {d.get('plan', '')}",
                "MessageSkipped": lambda d: str(d["detail"]),
            }.get(event["detail-type"], lambda d: "")(detail)
            print(f"  {event['detail-type']:<24} {what}")
        problems = []
        ids = [m["crm_message_id"] for m in messages]
        if len(messages) != 4 or len(set(ids)) != 4:
            problems.append(f"expected 4 distinct messages, found {len(messages)} ({len(set(ids))} distinct)")
        if [m["message_id"] for m in messages] != chain:
            problems.append("the messages are not the four of the scenario, in order")
        if [m["direction"] for m in messages] != ["outbound", "inbound", "outbound", "inbound"]:
            problems.append("directions are not outbound, inbound, outbound, inbound")
        if any(m["contact_ids"] != ["carla"] or m["deal_id"] != "renewal" for m in messages):
            problems.append("not every message is linked to the contact and the open deal")
        synced = [e for e in mine if e["detail-type"] == "MessageSynced"]
        if sorted({e["detail"]["message_id"] for e in synced}) != sorted(ids):
            problems.append("MessageSynced events do not match the thread's messages")
        if skipped is not None:
            detail = skipped["detail"]
            print(f"\nskipped, as it should be: {detail['detail']}")
            if len(messages) != 4:
                problems.append("the installer's message reached the thread")
        print()
        if problems:
            for problem in problems:
                print(f"FAILED ({self.label}): {problem}")
            return 1
        print(
            f"OK ({self.label}): four messages, each exactly once, linked to contact carla and deal renewal"
        )
        return 0


def _up(base: str) -> bool:
    try:
        return requests.get(f"{base}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.demo")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument(
        "providers",
        nargs="*",
        default=[*PROVIDERS, "calendar"],
        help="google, microsoft (mail), calendar (Google Calendar); all three by default",
    )
    args = parser.parse_args(argv)
    unknown = set(args.providers) - {*PROVIDERS, "calendar"}
    if unknown:
        parser.error(f"unknown scenario {', '.join(sorted(unknown))}: google, microsoft or calendar")
    base = f"http://127.0.0.1:{args.port}"
    stack = None
    if not _up(base):
        log = ROOT / ".local" / "demo-stack.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"nothing answers on {base}: starting the local stack (log: {log}) ...")
        stack = subprocess.Popen(
            [sys.executable, "-m", "local", "run", "--port", str(args.port)],
            cwd=ROOT,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        try:
            _wait("the local stack to answer /health", lambda: _up(base) or None, timeout=120)
        except DemoFailed:
            stack.terminate()
            print(f"the local stack did not start; see {log}", file=sys.stderr)
            return 1
    try:
        failed = 0
        for number, provider in enumerate(args.providers):
            if number:
                print("\n" + "-" * 100 + "\n")
            if provider == "calendar":
                from local.demo_calendar import CalendarDemo  # it builds on this module's helpers

                failed += CalendarDemo(base).run()
            else:
                failed += Demo(base, provider).run()
        return 1 if failed else 0
    except DemoFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        return 1
    finally:
        if stack is not None:
            stack.terminate()
            stack.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())

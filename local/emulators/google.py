"""Google's OAuth 2.0 server, OpenID userinfo and Gmail's users.getProfile, as documented:
authorization code flow with PKCE, `access_type=offline` refresh tokens, `invalid_grant`
("Token has been expired or revoked.") once a grant is revoked; the grant's access tokens die
with it, so Gmail answers 401 to them at once, as Google does.

Also a Pub/Sub push subscription on Gmail's watch topic: when `pubsub_endpoint` is set, every
history change of a watched mailbox is POSTed there, OIDC-signed, from a background thread,
retried with backoff until acknowledged (2xx). Duplicates, reordering and losses are made on
demand per mailbox (`push_faults`). `/_emulator/gmail/...` lets another process make mail arrive,
write in the Gmail client, read a mailbox and set push faults.

Google Calendar (v3, `local/emulators/gcal`) answers beside Gmail under `/calendar/v3/`, with the
same accounts and tokens; its controls are under `/_emulator/gcal/`."""

from __future__ import annotations

import base64
import json
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.wrappers import Request, Response

from local.emulators.gcal import CalendarEmulator
from local.emulators.gcal.controls import control as calendar_control
from local.emulators.gmail import BATCH_PATHS, GmailEmulator
from local.emulators.oauth import (
    ACCESS_TTL_S,
    Client,
    Grant,
    OAuthState,
    carried_fields,
    client_credentials,
    consent_page,
    oauth_error,
    pkce_matches,
    redirect,
)

AUTH_PATH = "/o/oauth2/v2/auth"


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")


PUSH_SERVICE_ACCOUNT = "gmail-push@crmsync-local.iam.gserviceaccount.com"
PUSH_ATTEMPTS = 5  # Pub/Sub retries a push that is not acknowledged; here a few times, backing off


@dataclass
class PushFaults:
    """Per mailbox, for its next pushes: lose `drop` of them, send `duplicate` of them twice (the
    same Pub/Sub messageId), hold `reorder` of them and send them after the push that follows,
    newest first."""

    drop: int = 0
    duplicate: int = 0
    reorder: int = 0
    held: list[tuple[int, str]] = field(default_factory=list)  # (historyId, messageId)


class GoogleEmulator:
    def __init__(self, client_id: str = "google-local-client", client_secret: str | None = None) -> None:
        self.state = OAuthState(revoke_access_tokens=True)
        self.client = Client(client_id, client_secret or secrets.token_urlsafe(24))
        self.state.clients[client_id] = self.client
        self.gmail = GmailEmulator(self.state.owner_of)
        self.calendar = CalendarEmulator(self.state.owner_of)  # Google Calendar, beside Gmail
        # Pub/Sub signs push requests with Google's keys, published at oauth2/v3/certs
        self._push_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._push_kid = secrets.token_hex(20)
        # Pub/Sub push subscription: None delivers nothing (tests push by hand with deliver_push)
        self.pubsub_endpoint: str | None = None
        self.push_log: list[dict[str, Any]] = []  # every push: address, historyId, messageId, fate
        self.certs_requests = 0  # GETs of the signing keys (oauth2/v3/certs)
        self.certs_status = 200  # set another status to make the keys endpoint fail
        self._faults: dict[str, PushFaults] = {}
        self._push_lock = threading.Lock()
        self._outbox: queue.Queue[tuple[str, str, int, str] | None] = queue.Queue()
        self._unsettled = 0
        self._pusher: threading.Thread | None = None
        self.gmail.on_change = self._published

    def issue_access_token(self, email: str) -> str:
        """A token for `email` as if it had consented (tests and demos that start past sign-in)."""
        with self.state.lock:
            return self._issue_access(email.lower())

    # ------------------------------------------------------------------ Pub/Sub push
    def push_token(
        self, audience: str, email: str = PUSH_SERVICE_ACCOUNT, key: Any = None, **claims: Any
    ) -> str:
        """The OIDC token Pub/Sub puts in a push's Authorization header."""
        now = int(time.time())
        body = {
            "iss": "https://accounts.google.com",
            "aud": audience,
            "email": email,
            "email_verified": True,
            "sub": "1" + str(abs(hash(email)) % 10**20),
            "iat": now,
            "exp": now + 3600,
            **claims,
        }
        return jwt.encode(body, key or self._push_key, algorithm="RS256", headers={"kid": self._push_kid})

    @staticmethod
    def push_body(email_address: str, history_id: int, message_id: str | None = None) -> str:
        data = base64.b64encode(
            json.dumps({"emailAddress": email_address, "historyId": history_id}).encode()
        ).decode()
        return json.dumps(
            {
                "message": {
                    "data": data,
                    "messageId": message_id or str(secrets.randbelow(10**16)),
                    "publishTime": "2026-11-22T00:00:00Z",
                },
                "subscription": "projects/crmsync-local/subscriptions/gmail-push",
            }
        )

    def deliver_push(
        self,
        url: str,
        email_address: str,
        history_id: int,
        message_id: str | None = None,
        token: str | None = None,
    ) -> int:
        """POST one push to the webhook as Pub/Sub would; returns the status (2xx acks it)."""
        import requests

        response = requests.post(
            url,
            data=self.push_body(email_address, history_id, message_id),
            headers={
                "Authorization": f"Bearer {token or self.push_token(url)}",
                "Content-Type": "application/json",
            },
            timeout=10,
        )
        return response.status_code

    def push_faults(self, address: str, drop: int = 0, duplicate: int = 0, reorder: int = 0) -> None:
        """Faults for the next pushes of a mailbox (see PushFaults); counts add to what is left."""
        with self._push_lock:
            faults = self._faults.setdefault(address.lower(), PushFaults())
            faults.drop += drop
            faults.duplicate += duplicate
            faults.reorder += reorder

    def release_held(self, address: str) -> int:
        """Sends the pushes of a mailbox still held for reordering (late); returns how many."""
        endpoint = self.pubsub_endpoint
        with self._push_lock:
            faults = self._faults.setdefault(address.lower(), PushFaults())
            held, faults.held = faults.held, []
        for history_id, message_id in reversed(held):
            if endpoint:
                self._enqueue(endpoint, address.lower(), history_id, message_id)
        return len(held)

    def pushes_settled(self) -> bool:
        """No push is waiting to be sent or being sent (held ones wait for release_held)."""
        with self._push_lock:
            return self._unsettled == 0

    def pushes_of(self, address: str) -> list[dict[str, Any]]:
        with self._push_lock:
            return [dict(p) for p in self.push_log if p["address"] == address.lower()]

    def close(self) -> None:
        """Stops the push threads (pushes not yet sent are lost, as with a deleted subscription)."""
        self.calendar.close()
        pusher = self._pusher
        if pusher is not None:
            self._outbox.put(None)
            pusher.join(timeout=5)
            self._pusher = None

    def _published(self, address: str, history_id: int) -> None:
        """Gmail published a change of a watched mailbox: it becomes a push (or a fault)."""
        endpoint = self.pubsub_endpoint
        if endpoint is None:
            return  # no push subscription on the topic
        message_id = str(10**15 + secrets.randbelow(9 * 10**15))
        sends: list[tuple[int, str]] = []
        with self._push_lock:
            faults = self._faults.setdefault(address, PushFaults())
            if faults.drop > 0:
                faults.drop -= 1
                self._log(address, history_id, message_id, "dropped")
                return
            if faults.reorder > 0:
                faults.reorder -= 1
                faults.held.append((history_id, message_id))
                self._log(address, history_id, message_id, "held")
                return
            sends.append((history_id, message_id))
            if faults.duplicate > 0:
                faults.duplicate -= 1
                sends.append((history_id, message_id))
            sends += reversed(faults.held)  # the held ones come after the later one, newest first
            faults.held = []
        for sent_history, sent_id in sends:
            self._enqueue(endpoint, address, sent_history, sent_id)

    def _log(self, address: str, history_id: int, message_id: str, fate: str, status: int = 0) -> None:
        entry = {"address": address, "historyId": history_id, "messageId": message_id, "fate": fate}
        self.push_log.append({**entry, "status": status} if status else entry)

    def _enqueue(self, endpoint: str, address: str, history_id: int, message_id: str) -> None:
        with self._push_lock:
            self._unsettled += 1
            if self._pusher is None:
                self._pusher = threading.Thread(target=self._push_loop, name="emulator:pubsub", daemon=True)
                self._pusher.start()
        self._outbox.put((endpoint, address, history_id, message_id))

    def _push_loop(self) -> None:
        while (item := self._outbox.get()) is not None:
            endpoint, address, history_id, message_id = item
            status = 0
            try:
                for attempt in range(PUSH_ATTEMPTS):
                    try:
                        status = self.deliver_push(endpoint, address, history_id, message_id)
                    except OSError:  # connection refused or reset: not acknowledged
                        status = 0
                    if 200 <= status < 300:
                        break
                    time.sleep(0.1 * 2**attempt)
            finally:
                with self._push_lock:
                    self._log(
                        address,
                        history_id,
                        message_id,
                        "delivered" if 200 <= status < 300 else "failed",
                        status,
                    )
                    self._unsettled -= 1

    # ------------------------------------------------------------------ controls over HTTP
    def _control(self, request: Request) -> Response:
        """`/_emulator/gmail/{arrive,send_from_client,messages,push_faults,pushes}` for a demo
        script in another process. JSON in and out; mail is raw RFC 5322 text."""
        action = request.path.removeprefix("/_emulator/gmail/")
        data: dict[str, Any] = (
            dict(request.args) if request.method == "GET" else (request.get_json(silent=True) or {})
        )
        address = str(data.get("address") or "").strip().lower()
        if not address or "@" not in address:
            return _json({"error": "address (a mailbox address) is required"}, 400)
        gmail = self.gmail
        if request.method == "GET" and action == "messages":
            return _json({"address": address, "messages": gmail.messages_of(address)})
        if request.method == "GET" and action == "pushes":
            return _json({"address": address, "pushes": self.pushes_of(address)})
        if request.method != "POST":
            return _json({"error": f"{request.method} {request.path} is not an emulator control"}, 404)
        if action in ("arrive", "send_from_client"):
            raw = data.get("raw")
            if not isinstance(raw, str) or not raw.strip():
                return _json({"error": "raw (the message as RFC 5322 text) is required"}, 400)
            if action == "arrive":
                labels = data.get("labels") or ["INBOX", "UNREAD"]
                if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
                    return _json({"error": "labels must be a list of label ids"}, 400)
                stored = gmail.arrive(address, raw.encode(), tuple(labels))
            else:
                stored = gmail.send_from_client(address, raw.encode())
            return _json(
                {
                    "id": stored.id,
                    "threadId": stored.thread_id,
                    "labelIds": sorted(stored.labels),
                    "messageId": stored.message_id,
                }
            )
        if action == "push_faults":
            counts = {k: data.get(k, 0) for k in ("drop", "duplicate", "reorder")}
            if not all(isinstance(v, int) and v >= 0 for v in counts.values()):
                return _json({"error": "drop, duplicate and reorder are counts (integers >= 0)"}, 400)
            self.push_faults(address, **counts)
            return _json({"address": address, **counts})
        return _json({"error": f"no emulator control {action!r}"}, 404)

    def certs(self, request: Request) -> Response:
        self.certs_requests += 1
        if self.certs_status != 200:
            return _json({"error": "unavailable"}, self.certs_status)
        numbers = self._push_key.public_key().public_numbers()

        def b64(n: int) -> str:
            return (
                base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()
            )

        key = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self._push_kid,
            "n": b64(numbers.n),
            "e": b64(numbers.e),
        }
        return _json({"keys": [key]})

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        return self.dispatch(Request(environ))(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        routes = {
            ("GET", AUTH_PATH): self.authorize,
            ("POST", AUTH_PATH + "/decide"): self.decide,
            ("POST", "/token"): self.token,
            ("GET", "/v1/userinfo"): self.userinfo,
            ("GET", "/oauth2/v3/certs"): self.certs,
            ("POST", "/_emulator/revoke"): lambda r: _json(
                {"revoked": self.state.revoke(r.get_json()["email"])}
            ),
            ("POST", "/_emulator/expire"): lambda r: _json(
                {"expired": self.state.expire(r.get_json()["email"])}
            ),
        }
        if request.path.startswith("/gmail/v1/"):
            return self.gmail.dispatch(request)
        if request.method == "POST" and request.path in BATCH_PATHS:
            return self.gmail.dispatch_batch(request)
        if request.path.startswith("/_emulator/gmail/"):
            return self._control(request)
        if request.path.startswith("/calendar/v3/"):
            return self.calendar.dispatch(request)
        if request.path.startswith("/_emulator/gcal/"):
            return calendar_control(self.calendar, request)
        handler: Callable[[Request], Response] | None = routes.get((request.method, request.path))
        if handler is None:
            return _json({"error": {"code": 404, "message": "Not Found", "status": "NOT_FOUND"}}, 404)
        return handler(request)

    def authorize(self, request: Request) -> Response:
        args = request.args
        if args.get("client_id") not in self.state.clients:
            return Response("Error 401: invalid_client. The OAuth client was not found.", status=401)
        if args.get("response_type") != "code" or not args.get("redirect_uri"):
            return Response("Error 400: invalid_request", status=400)
        fields = carried_fields(args, "access_type")
        return consent_page(
            "Google",
            AUTH_PATH + "/decide",
            fields,
            args.get("login_hint") or "user@gmail.test",
            fields["scope"],
        )

    def decide(self, request: Request) -> Response:
        form = request.form
        target = form["redirect_uri"]
        if form.get("decision") != "allow":
            return redirect(target, {"error": "access_denied", "state": form.get("state", "")})
        code = "4/" + secrets.token_urlsafe(32)
        with self.state.lock:
            self.state.codes[code] = {
                "client_id": form["client_id"],
                "redirect_uri": target,
                "challenge": form.get("code_challenge", ""),
                "method": form.get("code_challenge_method") or "plain",
                "email": form.get("email", "user@gmail.test").strip().lower(),
                "scope": form.get("scope", ""),
                "offline": form.get("access_type") == "offline",
                "expires": time.time() + 600,
            }
        return redirect(
            target, {"code": code, "state": form.get("state", ""), "scope": form.get("scope", "")}
        )

    def _issue_access(self, email: str) -> str:
        token = "ya29." + secrets.token_urlsafe(32)
        self.state.access_tokens[token] = (email, time.time() + ACCESS_TTL_S)
        return token

    def token(self, request: Request) -> Response:
        form = request.form
        client_id, secret = client_credentials(request)
        self.state.token_requests.append({"grant_type": form.get("grant_type", ""), "client_id": client_id})
        client = self.state.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            return oauth_error(401, "invalid_client", "Unauthorized")
        grant_type = form.get("grant_type")
        with self.state.lock:
            if grant_type == "authorization_code":
                return self._code_grant(form, client_id)
            if grant_type == "refresh_token":
                grant = self.state.refresh_tokens.get(form.get("refresh_token", ""))
                if grant is None or grant.revoked or grant.client_id != client_id:
                    return oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
                access = self._issue_access(grant.email)
                return _json(
                    {
                        "access_token": access,
                        "expires_in": ACCESS_TTL_S,
                        "scope": grant.scope,
                        "token_type": "Bearer",
                    }
                )
        return oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def _code_grant(self, form: Any, client_id: str) -> Response:
        found = self.state.codes.pop(form.get("code", ""), None)  # single use
        if found is None or found["expires"] < time.time() or found["client_id"] != client_id:
            return oauth_error(400, "invalid_grant", "Malformed auth code.")
        if found["redirect_uri"] != form.get("redirect_uri"):
            return oauth_error(400, "redirect_uri_mismatch", "Bad Request")
        if found["challenge"] and not pkce_matches(
            form.get("code_verifier", ""), found["challenge"], found["method"]
        ):
            return oauth_error(400, "invalid_grant", "Invalid code verifier.")
        body: dict[str, Any] = {
            "access_token": self._issue_access(found["email"]),
            "expires_in": ACCESS_TTL_S,
            "scope": found["scope"],
            "token_type": "Bearer",
        }
        if found["offline"]:
            refresh = "1//" + secrets.token_urlsafe(40)
            self.state.refresh_tokens[refresh] = Grant(found["email"], client_id, found["scope"])
            body["refresh_token"] = refresh
        return _json(body)

    def _owner(self, request: Request) -> str | None:
        return self.state.owner_of(request.headers.get("Authorization"))

    def userinfo(self, request: Request) -> Response:
        email = self._owner(request)
        if email is None:
            return _json({"error": "invalid_token", "error_description": "Invalid Credentials"}, 401)
        return _json({"sub": str(abs(hash(email)) % 10**20), "email": email, "email_verified": True})

"""Runs the emulators on loopback and says how the stack should reach them."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, make_server

from local.emulators.google import PUSH_SERVICE_ACCOUNT, GoogleEmulator
from local.emulators.graph_subscriptions import GraphSubscriptions
from local.emulators.microsoft import MicrosoftEmulator
from local.emulators.tls import make_local_tls


@dataclass
class Emulators:
    google: GoogleEmulator
    microsoft: MicrosoftEmulator
    google_url: str
    microsoft_url: str
    ca_bundle: Path
    graph_subscriptions: GraphSubscriptions | None = None  # Graph change notifications
    _servers: list[BaseWSGIServer] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def parameters(self) -> dict[str, str]:
        """Template parameters that point the service at the emulators."""
        return {
            "GoogleAuthUri": f"{self.google_url}/o/oauth2/v2/auth",
            "GoogleTokenUri": f"{self.google_url}/token",
            "GoogleUserinfoUri": f"{self.google_url}/v1/userinfo",
            "GmailApiBase": self.google_url,
            "GoogleCalendarApiBase": self.google_url,
            "MicrosoftAuthorityHost": self.microsoft_url,
            "GraphApiBase": self.microsoft_url,
            "ProviderCaBundle": str(self.ca_bundle),
            "GooglePushCertsUrl": f"{self.google_url}/oauth2/v3/certs",
            "GmailPushServiceAccount": PUSH_SERVICE_ACCOUNT,
        }

    def oauth_clients(self) -> dict[str, Any]:
        """What the operator puts in the OAuth client secret, for these emulators."""
        return {
            "google": {
                "client_id": self.google.client.client_id,
                "client_secret": self.google.client.client_secret,
            },
            "microsoft": {
                "client_id": self.microsoft.client.client_id,
                "client_secret": self.microsoft.client.client_secret,
                "tenant": "common",
            },
        }

    def stop(self) -> None:
        self.google.close()
        if self.graph_subscriptions is not None:
            self.graph_subscriptions.close()
        for server in self._servers:
            server.shutdown()
        for thread in self._threads:
            thread.join(timeout=5)


def start_emulators(
    state_dir: Path, host: str = "127.0.0.1", google_port: int = 0, microsoft_port: int = 0
) -> Emulators:
    ca, cert, key = make_local_tls(state_dir / "tls")
    google = GoogleEmulator()
    google_server = make_server(host, google_port, google, threaded=True)
    microsoft = MicrosoftEmulator()
    microsoft_server = make_server(
        host, microsoft_port, microsoft, threaded=True, ssl_context=(str(cert), str(key))
    )
    microsoft.base_url = f"https://{host}:{microsoft_server.server_port}"
    # Graph change notifications: /v1.0/subscriptions, fed by the mail emulator's changes
    subscriptions = GraphSubscriptions(
        microsoft.state.owner_of,
        lambda email: microsoft.users.setdefault(email, str(uuid.uuid4())),
        lambda: microsoft.base_url,
        folder_key=microsoft.graph.folder_key,  # folders match by the mail emulator's keys
    )
    microsoft.subscriptions = subscriptions
    graph = getattr(microsoft, "graph", None)
    if graph is not None:
        graph.listeners.append(subscriptions.notify)
    emulators = Emulators(
        google=google,
        microsoft=microsoft,
        google_url=f"http://{host}:{google_server.server_port}",
        microsoft_url=microsoft.base_url,
        ca_bundle=ca,
        graph_subscriptions=subscriptions,
        _servers=[google_server, microsoft_server],
    )
    for name, server in (("google", google_server), ("microsoft", microsoft_server)):
        thread = threading.Thread(target=server.serve_forever, name=f"emulator:{name}", daemon=True)
        thread.start()
        emulators._threads.append(thread)
    return emulators

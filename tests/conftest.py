"""Fixtures: the provider emulators, and the local stack (moto built from template.yaml,
real handlers) served over HTTP and configured to use them."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from hypothesis import settings as hypothesis_settings

from local.__main__ import local_parameters
from local.devissuer import DevIssuer
from local.emulators.servers import Emulators, start_emulators
from local.http import LocalServer
from local.stack import LocalStack
from tests.integration.helpers import wait_for_quiet_queue

# `make test` runs the same generated scenarios every time (the model tests' 1,000 per provider
# among them), so a run passes or fails on the code alone; HYPOTHESIS_PROFILE=explore draws new
# ones on each run, to look for what the fixed set has not met.
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.register_profile("explore", derandomize=False)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    running = start_emulators(tmp_path_factory.mktemp("emulators"))
    yield running
    running.stop()


@pytest.fixture(scope="session")
def server() -> Iterator[LocalServer]:
    running = LocalServer(None, port=0)
    yield running
    running.stop()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, server: LocalServer, emulators: Emulators
) -> Iterator[LocalStack]:
    issuer = DevIssuer(key_dir=tmp_path_factory.mktemp("issuer"))
    # the test mail servers' certificates come from the emulators' local CA
    parameters = {**local_parameters(server.url, emulators), "ImapCaBundle": str(emulators.ca_bundle)}
    with LocalStack(issuer=issuer, run_schedules=False, parameters=parameters) as running:
        running.set_secret("OAuthClientSecret", json.dumps(emulators.oauth_clients()))
        server.api.attach(running)
        server.start()
        yield running


class Api:
    """A small HTTP client of the local API."""

    def __init__(self, base: str, issuer: DevIssuer) -> None:
        self.base = base
        self.issuer = issuer
        self.http = requests.Session()

    def token(self, tenant: str, user: str, role: str = "member", **extra: Any) -> str:
        return self.issuer.mint(tenant, user, role, **extra)

    def call(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, self.base + path, headers=headers, timeout=30, **kwargs)


@pytest.fixture(autouse=True)
def quiet_sync_queue(request: pytest.FixtureRequest) -> None:
    """A test on the shared stack starts once the jobs earlier tests left are done, so its own
    jobs are not queued behind them (the scheduler's fan-out queues work for every account)."""
    if "stack" not in request.fixturenames:
        return
    stack: LocalStack = request.getfixturevalue("stack")
    started = time.monotonic()
    quiet = wait_for_quiet_queue(stack.queues["SyncQueue"])
    waited = time.monotonic() - started
    if waited > 1 or not quiet:
        print(f"[quiet_sync_queue] waited {waited:.1f} s; queue quiet: {quiet}")


@pytest.fixture(scope="session")
def api(stack: LocalStack, server: LocalServer) -> Api:
    return Api(server.url, stack.issuer)


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so tests share the stack without seeing each other."""
    return f"t-{uuid.uuid4().hex[:10]}"

"""Fixtures: the local stack (moto built from template.yaml, real handlers) served over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from local.devissuer import DevIssuer
from local.http import LocalServer
from local.stack import LocalStack


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    issuer = DevIssuer(key_dir=tmp_path_factory.mktemp("issuer"))
    with LocalStack(issuer=issuer, run_schedules=False) as running:
        yield running


@pytest.fixture(scope="session")
def server(stack: LocalStack) -> Iterator[LocalServer]:
    running = LocalServer(stack, port=0).start()
    yield running
    running.stop()


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


@pytest.fixture(scope="session")
def api(server: LocalServer, stack: LocalStack) -> Api:
    return Api(server.url, stack.issuer)


@pytest.fixture
def tenant() -> str:
    """A fresh tenant per test, so tests share the stack without seeing each other."""
    return f"t-{uuid.uuid4().hex[:10]}"

"""Page tokens and bodies without the stack: what the signature binds, and the JSON reader."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from crmsync.accounts.state import StateSigner
from crmsync.api import UnsupportedMediaType, read_json_body
from crmsync.pagetoken import InvalidPageToken, PageTokens

SECRET = b"s" * 32
POSITION = {"gsi1pk": "T#t1#U#u1", "gsi1sk": "2026-01-01T00:00:00#th1", "pk": "T#t1#TH#th1", "sk": "THREAD"}


@pytest.mark.rule("SEC-4")
def test_a_page_token_reads_back_only_for_its_listing_and_scope() -> None:
    tokens = PageTokens(lambda: SECRET)
    scope = ("t1", "u1", "")
    token = tokens.issue("threads", scope, POSITION)
    assert tokens.read("threads", scope, token) == POSITION
    for listing, other in (
        ("threads", ("t1", "u2", "")),
        ("threads", ("t2", "u1", "")),
        ("threads", ("t1", "u1", "acc-1")),
        ("messages", scope),
    ):
        with pytest.raises(InvalidPageToken):
            tokens.read(listing, other, token)
    with pytest.raises(InvalidPageToken):
        PageTokens(b"t" * 32).read("threads", scope, token)  # another secret
    # the scope is not ambiguous: ("t1", "u1x", "") and ("t1u1", "x", "") sign differently
    assert tokens.issue("threads", ("t1", "u1x", ""), POSITION) != tokens.issue(
        "threads", ("t1u1", "x", ""), POSITION
    )


@pytest.mark.rule("SEC-4")
def test_a_page_token_key_is_not_the_state_key() -> None:
    """Both derive from one secret; an OAuth state signed with it is no page token."""
    signer = StateSigner(SECRET)
    state = signer.sign(signer.issue("t1", "u1", "google"))
    with pytest.raises(InvalidPageToken):
        PageTokens(SECRET).read("threads", ("t1", "u1", ""), state)


class Event:
    def __init__(self, body: str | None, content_type: str | None = None, encoded: bool = False) -> None:
        self.headers: dict[str, Any] = {"content-type": content_type} if content_type else {}
        self.body = body
        self.is_base64_encoded = encoded


@pytest.mark.rule("SEC-5")
def test_json_bodies_are_read_or_refused_clearly() -> None:
    assert read_json_body(Event('{"a": 1}', "application/json; charset=utf-8")) == {"a": 1}
    assert read_json_body(Event(base64.b64encode(b'{"a": 1}').decode(), None, encoded=True)) == {"a": 1}
    assert read_json_body(Event(None, "application/json")) is None
    with pytest.raises(UnsupportedMediaType):
        read_json_body(Event("a=1", "application/x-www-form-urlencoded"))
    for bad in (
        Event(base64.b64encode(b"\xff{").decode(), "application/json", encoded=True),
        Event("not base64!", None, encoded=True),
        Event("[" * 50_000, "application/json"),
        Event(json.dumps({"n": 1}).replace("1", "9" * 5000), "application/json"),
        Event("{", "application/json"),
    ):
        with pytest.raises(RequestValidationError):
            read_json_body(bad)

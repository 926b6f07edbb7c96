"""Accounts end to end: the connect flow through the emulators' consent pages, the callback,
plan limits, default, replace, disconnect, re-authorisation, IMAP against Dovecot."""

from __future__ import annotations

import base64
import html
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
import requests

from crmsync.accounts.credentials import AccountPaused, Credentials
from crmsync.accounts.models import Account, TokenSet
from crmsync.accounts.state import StateClaims, StateSigner
from local.browser import ConsentBrowser
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import executions, wait_until
from tests.mailservers import Dovecot, Smtp, start_dovecot, start_smtp

# ---------------------------------------------------------------------------- helpers


class Browser(ConsentBrowser):
    """The user's browser, trusting the emulators' local CA."""

    def __init__(self, emulators: Emulators) -> None:
        super().__init__(str(emulators.ca_bundle))


@pytest.fixture(scope="module")
def browser(emulators: Emulators) -> Browser:
    return Browser(emulators)


def set_plan(api: Api, tenant: str, plan: str) -> None:
    """The CRM backend sets the plan (billing data: a service token, ACC-4)."""
    response = api.call(
        "PUT", "/v1/directory/settings", api.token(tenant, "crm", "service"), json={"plan": plan}
    )
    assert response.status_code == 200, response.text


def confirmed(api: Api, token: str, result: dict[str, str]) -> dict[str, str]:
    """What the CRM's return page does in the user's session: confirm the consent the
    callback holds (ACC-1). Gives the result as the return URL would have said it."""
    if result.get("status") != "confirm_required":
        return result
    answer = api.call(
        "POST", "/v1/accounts/connect/confirm", token, json={"confirmation": result["confirmation"]}
    )
    if answer.status_code != 200:
        error = answer.json()["error"]
        return {
            "status": "error",
            "provider": result["provider"],
            "reason": error["code"],
            "message": error["message"],
        }
    account = answer.json()
    return {
        "status": "connected",
        "account_id": account["account_id"],
        "provider": account["provider"],
        "address": account["address"],
    }


def connect(api: Api, browser: Browser, token: str, provider: str, email: str, **body: Any) -> dict[str, str]:
    started = api.call("POST", "/v1/accounts/connect", token, json={"provider": provider, **body})
    assert started.status_code == 200, started.text
    result, _ = browser.consent(started.json()["authorization_url"], email)
    return confirmed(api, token, result)


def accounts_of(api: Api, token: str) -> list[dict[str, Any]]:
    response = api.call("GET", "/v1/accounts", token)
    assert response.status_code == 200, response.text
    return response.json()["accounts"]  # type: ignore[no-any-return]


def service(stack: LocalStack, logical_id: str, attribute: str) -> Any:
    function = stack.functions[logical_id]
    function.load()
    return getattr(function.module, attribute)


def account_items(stack: LocalStack) -> list[dict[str, Any]]:
    table = boto3.resource("dynamodb").Table(stack.tables["AccountsTable"])
    return table.scan()["Items"]


def status_events(stack: LocalStack, account_id: str) -> list[str]:
    return [
        e["detail"]["status"]
        for e in reversed(stack.events)
        if e["detail-type"] == "AccountStatusChanged" and e["detail"]["account_id"] == account_id
    ]


def last_status_event(stack: LocalStack, account_id: str, status: str) -> None:
    """Wait until the newest AccountStatusChanged of the account says `status`."""
    wait_until(lambda: (status_events(stack, account_id) or [None])[-1] == status, timeout=10)


def mail_address() -> str:
    return f"u{uuid.uuid4().hex[:8]}@gmail.test"


# ---------------------------------------------------------------------------- connect (ACC-2)


@pytest.mark.rule("ACC-2")
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_connect_through_the_consent_page(
    api: Api, stack: LocalStack, browser: Browser, tenant: str, provider: str
) -> None:
    set_plan(api, tenant, "professional")
    user = api.token(tenant, "u1")
    email = mail_address()
    result = connect(
        api, browser, user, provider, email, purpose="both", sharing="shared", labels_or_folders=["CRM"]
    )
    assert result["status"] == "connected", result
    assert result["address"] == email and result["provider"] == provider
    (account,) = accounts_of(api, user)
    assert account["account_id"] == result["account_id"]
    assert (account["status"], account["address"], account["is_default"]) == ("connected", email, True)
    assert account["settings"]["sharing"] == "shared" and account["settings"]["labels_or_folders"] == ["CRM"]
    last_status_event(stack, account["account_id"], "connected")
    assert status_events(stack, account["account_id"]) == ["connected"]


@pytest.mark.rule("ACC-2")
def test_the_connect_url_carries_pkce_and_a_signed_state(api: Api, tenant: str) -> None:
    set_plan(api, tenant, "advanced")
    started = api.call(
        "POST", "/v1/accounts/connect", api.token(tenant, "u1"), json={"provider": "google"}
    ).json()
    query = dict(parse_qsl(urlsplit(started["authorization_url"]).query))
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] == started["state"] and "." in started["state"]
    assert query["access_type"] == "offline" and query["redirect_uri"].endswith("/oauth/google/callback")


@pytest.mark.rule("ACC-2")
def test_denied_consent_returns_a_reason_and_stores_nothing(
    api: Api, stack: LocalStack, browser: Browser, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    before = len(account_items(stack))
    started = api.call("POST", "/v1/accounts/connect", user, json={"provider": "microsoft"}).json()
    result, callback = browser.consent(started["authorization_url"], mail_address(), decision="deny")
    assert result["status"] == "error" and result["reason"] == "consent_denied"
    assert "declined" in result["message"]
    assert accounts_of(api, user) == []
    assert len(account_items(stack)) == before  # the pending connect is gone too
    replay = {"state": started["state"], "error": "access_denied"}
    assert Browser.follow(callback, replay)["reason"] == "invalid_state"  # and cannot be replayed


# ---------------------------------------------------------------------------- state


def _signer(stack: LocalStack) -> StateSigner:
    arn = stack.resolver.refs["StateSigningSecret"]
    key = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    return StateSigner(key.encode())


def _callback_with_state(callback: str, state: str) -> str:
    parts = urlsplit(callback)
    query = dict(parse_qsl(parts.query))
    query["state"] = state
    return parts._replace(
        query="&".join(f"{k}={requests.utils.quote(v, safe='')}" for k, v in query.items())
    ).geturl()


def _decision(emulators: Emulators, authorization_url: str, email: str) -> str:
    """Consent at the Google emulator; return the callback URL without following it."""
    page = requests.get(authorization_url, timeout=10)
    fields = {
        k: html.unescape(v)
        for k, v in re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)
    }
    decided = requests.post(
        f"{emulators.google_url}/o/oauth2/v2/auth/decide",
        data={**fields, "email": email, "decision": "allow"},
        allow_redirects=False,
        timeout=10,
    )
    return decided.headers["Location"]


def _claims(state: str) -> StateClaims:
    body = state.split(".")[0]
    return StateClaims.model_validate_json(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


@pytest.mark.rule("ACC-2")
def test_forged_expired_and_reused_states_are_refused(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "power")
    alice = api.token(tenant, "alice")
    started = api.call("POST", "/v1/accounts/connect", alice, json={"provider": "google"}).json()
    callback = _decision(emulators, started["authorization_url"], mail_address())
    state = started["state"]
    body, _, mac = state.partition(".")
    claims = _claims(state)

    assert (
        Browser.follow(_callback_with_state(callback, body + ".AAAA"))["reason"] == "invalid_state"
    )  # forged MAC
    unsigned = StateSigner(b"x" * 32).sign(claims.model_copy(update={"user_id": "bob"})).split(".")[0]
    assert (
        Browser.follow(_callback_with_state(callback, f"{unsigned}.{mac}"))["reason"] == "invalid_state"
    )  # edited body
    expired = _signer(stack).sign(claims.model_copy(update={"exp": int(time.time()) - 1}))
    assert Browser.follow(_callback_with_state(callback, expired))["reason"] == "expired_state"
    assert accounts_of(api, alice) == []

    first = confirmed(api, alice, Browser.follow(callback))  # none of that used the state up
    assert first["status"] == "connected"
    replay = Browser.follow(callback)
    assert replay["status"] == "error" and replay["reason"] == "invalid_state"
    assert len(accounts_of(api, alice)) == 1


@pytest.mark.rule("ACC-2")
@pytest.mark.rule("SEC-4")
def test_a_state_issued_to_alice_cannot_complete_a_connect_as_bob(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "power")
    alice, bob = api.token(tenant, "alice"), api.token(tenant, "bob")
    started = api.call("POST", "/v1/accounts/connect", alice, json={"provider": "google"}).json()
    callback = _decision(emulators, started["authorization_url"], mail_address())
    # even signed with the service's own key, a state naming bob does not fit alice's connect
    as_bob = _signer(stack).sign(_claims(started["state"]).model_copy(update={"user_id": "bob"}))
    refused = Browser.follow(_callback_with_state(callback, as_bob))
    assert refused["status"] == "error" and refused["reason"] == "invalid_state"
    assert "another user" in refused["message"]
    assert accounts_of(api, bob) == [] and accounts_of(api, alice) == []
    # the attempt spent the state: it cannot be completed afterwards either
    assert Browser.follow(callback)["reason"] == "invalid_state"


# ---------------------------------------------------------------------------- plan (ACC-4)


@pytest.mark.rule("ACC-4")
@pytest.mark.parametrize(
    ("plan", "limit"),
    [("essential", 0), ("advanced", 1), ("professional", 2), ("power", 3), ("enterprise", 5)],
)
def test_plan_limits(api: Api, browser: Browser, tenant: str, plan: str, limit: int) -> None:
    set_plan(api, tenant, plan)
    user = api.token(tenant, "u1")
    for _ in range(limit):
        assert connect(api, browser, user, "google", mail_address())["status"] == "connected"
    refused = api.call("POST", "/v1/accounts/connect", user, json={"provider": "google"})
    assert refused.status_code == 403
    message = refused.json()["error"]["message"]
    assert f"{plan} plan allows {limit} mailbox account" in message
    assert len(accounts_of(api, user)) == limit
    # a calendar-only connection is not a mailbox and is not counted
    calendar = api.call(
        "POST", "/v1/accounts/connect", user, json={"provider": "google", "purpose": "calendar"}
    )
    assert calendar.status_code == 200


@pytest.mark.rule("ACC-4")
def test_the_limit_is_checked_again_at_the_callback(api: Api, browser: Browser, tenant: str) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    first = api.call("POST", "/v1/accounts/connect", user, json={"provider": "google"}).json()
    second = api.call("POST", "/v1/accounts/connect", user, json={"provider": "microsoft"}).json()
    assert confirmed(api, user, browser.consent(first["authorization_url"], mail_address())[0])["status"] == (
        "connected"
    )
    late, _ = browser.consent(second["authorization_url"], mail_address())
    assert late["status"] == "error" and late["reason"] == "plan_limit"
    assert "advanced plan allows 1" in late["message"]
    assert len(accounts_of(api, user)) == 1


# ---------------------------------------------------------------------------- several, default (ACC-5, ACC-6)


@pytest.mark.rule("ACC-6")
def test_exactly_one_default_and_switching_it(
    api: Api, stack: LocalStack, browser: Browser, tenant: str
) -> None:
    set_plan(api, tenant, "power")
    user = api.token(tenant, "u1")
    a = connect(api, browser, user, "google", mail_address())["account_id"]
    b = connect(api, browser, user, "microsoft", mail_address())["account_id"]
    defaults = {x["account_id"]: x["is_default"] for x in accounts_of(api, user)}
    assert defaults == {a: True, b: False}  # the first mailbox became the default
    switched = api.call("POST", f"/v1/accounts/{b}/default", user)
    assert switched.status_code == 200 and switched.json()["is_default"] is True
    assert {x["account_id"]: x["is_default"] for x in accounts_of(api, user)} == {a: False, b: True}
    api.call("POST", f"/v1/accounts/{a}/default", user)
    assert {x["account_id"]: x["is_default"] for x in accounts_of(api, user)} == {a: True, b: False}
    changes = wait_until(
        lambda: (
            [
                (e["detail"]["account_id"], e["detail"]["previous_account_id"])
                for e in reversed(stack.events)
                if e["detail-type"] == "DefaultAccountChanged" and e["detail"]["tenant_id"] == tenant
            ][-3:]
            if len(
                [
                    e
                    for e in stack.events
                    if e["detail-type"] == "DefaultAccountChanged" and e["detail"]["tenant_id"] == tenant
                ]
            )
            >= 3
            else None
        )
    )
    assert changes == [(a, None), (b, a), (a, b)]


@pytest.mark.rule("ACC-5")
def test_a_further_account_with_settings_and_a_back_import(
    api: Api, stack: LocalStack, browser: Browser, tenant: str
) -> None:
    set_plan(api, tenant, "professional")
    user = api.token(tenant, "u1")
    connect(api, browser, user, "google", mail_address())
    result = connect(
        api,
        browser,
        user,
        "google",
        mail_address(),
        import_since="3m",
        labels_or_folders=["Customers"],
        sharing="private",
    )
    account_id = result["account_id"]
    account = api.call("GET", f"/v1/accounts/{account_id}", user).json()
    assert account["settings"] == {
        "sharing": "private",
        "labels_or_folders": ["Customers"],
        "import_since": "3m",
        "scope": "crm_threads",
        "inbound_from_contacts": True,
        "archive_propagation": False,
        "save_events_as": "meeting",
        "activity_types": ["meeting"],
    }
    sfn = boto3.client("stepfunctions")

    def import_execution() -> dict[str, Any] | None:
        for execution in executions(stack.state_machines["ResyncStateMachine"]):
            described = sfn.describe_execution(executionArn=execution["executionArn"])
            if json.loads(described["input"])["account_id"] == account_id:
                return described
        return None

    described = wait_until(import_execution)
    job = json.loads(described["input"])
    assert job["kind"] == "mail_import"
    since = time.mktime(time.strptime(job["since"][:19], "%Y-%m-%dT%H:%M:%S"))
    assert 85 <= (time.time() - since) / 86400 <= 95
    progress = wait_until(lambda: api.call("GET", f"/v1/accounts/{account_id}/sync", user).json()["imports"])
    assert progress[0]["kind"] == "mail_import"
    changed = api.call(
        "PATCH", f"/v1/accounts/{account_id}", user, json={"labels_or_folders": [], "sharing": "shared"}
    )
    assert (
        changed.json()["settings"]["sharing"] == "shared"
        and changed.json()["settings"]["labels_or_folders"] == []
    )


# ---------------------------------------------------------------------------- replace, disconnect (ACC-7, ACC-8)


class RecordingHooks:
    """Stands in for the Gmail/Outlook watch and subscription hooks of the next issues."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.stopped: list[tuple[str, bool]] = []

    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        assert tokens.access_token
        self.started.append(account.account_id)

    def on_disconnected(self, account: Account, tokens: TokenSet | None) -> None:
        self.stopped.append((account.account_id, bool(tokens and tokens.access_token)))


@pytest.fixture
def hooks(stack: LocalStack) -> Iterator[RecordingHooks]:
    recording = RecordingHooks()
    services = [
        stack.services.accounts(),
        stack.services.accounts(),
    ]
    for accounts in services:
        accounts.register_hooks("google", recording)
    yield recording
    for accounts in services:
        accounts.register_hooks("google", None)  # the Gmail bundle's hooks again


@pytest.mark.rule("ACC-7")
def test_replace_moves_sending_to_the_new_account_and_stops_the_old(
    api: Api, stack: LocalStack, browser: Browser, hooks: RecordingHooks, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")  # one slot: replacing must not need a second
    user = api.token(tenant, "u1")
    old = connect(api, browser, user, "google", mail_address())["account_id"]
    started = api.call("POST", f"/v1/accounts/{old}/replace", user, json={"provider": "google"})
    assert started.status_code == 200, started.text
    new_address = mail_address()
    result = confirmed(api, user, browser.consent(started.json()["authorization_url"], new_address)[0])
    assert result["status"] == "connected", result
    new = result["account_id"]
    by_id = {a["account_id"]: a for a in accounts_of(api, user)}
    assert (
        by_id[old]["status"] == "replaced"
        and by_id[old]["replaced_by"] == new
        and by_id[old]["is_default"] is False
    )
    assert (
        by_id[new]["status"] == "connected"
        and by_id[new]["is_default"] is True
        and by_id[new]["replaces"] == old
    )
    # the old account's threads stop: no credentials, no sync, the provider watch removed
    credentials = stack.services.credentials()
    with pytest.raises(AccountPaused):
        credentials.access_token(old)
    assert credentials.access_token(new)
    assert (old, True) in hooks.stopped and new in hooks.started
    last_status_event(stack, old, "replaced")


@pytest.mark.rule("ACC-8")
def test_disconnect_removes_tokens_and_watches_at_once(
    api: Api, stack: LocalStack, browser: Browser, hooks: RecordingHooks, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    account_id = connect(api, browser, user, "google", mail_address())["account_id"]
    assert any(i["pk"] == f"ACC#{account_id}" and i["sk"] == "SECRET" for i in account_items(stack))
    gone = api.call("DELETE", f"/v1/accounts/{account_id}", user)
    assert gone.status_code == 200 and gone.json()["status"] == "disconnected"
    assert not any(i["pk"] == f"ACC#{account_id}" and i["sk"] == "SECRET" for i in account_items(stack))
    assert (account_id, True) in hooks.stopped
    with pytest.raises(AccountPaused):
        stack.services.credentials().access_token(account_id)
    last_status_event(stack, account_id, "disconnected")
    # the slot is free again, and the account (and what it synced) is still listed
    assert api.call("POST", "/v1/accounts/connect", user, json={"provider": "google"}).status_code == 200
    assert [a["status"] for a in accounts_of(api, user)] == ["disconnected"]


class FailingHooks(RecordingHooks):
    def on_connected(self, account: Account, tokens: TokenSet) -> None:
        raise RuntimeError("users.watch answered 500")


@pytest.mark.rule("ACC-2")
def test_a_provider_that_cannot_start_leaves_nothing_behind(
    api: Api, stack: LocalStack, browser: Browser, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    callback_accounts = stack.services.accounts()
    callback_accounts.register_hooks("google", FailingHooks())
    try:
        before = len(account_items(stack))
        result = connect(api, browser, user, "google", mail_address())
    finally:
        callback_accounts.register_hooks("google", None)
    assert result["status"] == "error" and result["reason"] == "provider_start_failed"
    assert "try again" in result["message"]
    assert accounts_of(api, user) == []
    assert len(account_items(stack)) == before  # no account, no secret, no pending connect


# ---------------------------------------------------------------------------- re-authorisation (ACC-9)


@pytest.mark.rule("ACC-9")
@pytest.mark.parametrize("provider", ["google", "microsoft"])
def test_invalid_grant_pauses_the_account_and_reconnecting_resumes(
    api: Api, stack: LocalStack, browser: Browser, emulators: Emulators, tenant: str, provider: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    email = mail_address()
    account_id = connect(api, browser, user, provider, email)["account_id"]
    emulator = emulators.google if provider == "google" else emulators.microsoft
    credentials = stack.services.credentials()
    cursors = boto3.resource("dynamodb").Table(stack.tables["CursorsTable"])
    cursors.put_item(Item={"pk": f"ACC#{account_id}", "sk": "CUR#INBOX", "cursor": "12345"})

    # two hours on, the stored access token has expired: it is refreshed
    layer = stack.services
    later = Credentials(
        layer.account_store(),
        layer.secret_box(),
        layer.oauth_client,
        layer.publisher(),
        clock=lambda: time.time() + 7200,
    )
    first = credentials.access_token(account_id)
    refreshed = later.access_token(account_id)
    assert refreshed != first
    requests_before = len(emulator.state.token_requests)

    # revoked: the account pauses, the CRM is told, and nobody keeps hammering the provider
    emulator.state.revoke(email)
    with pytest.raises(AccountPaused):
        later.access_token(account_id)
    for _ in range(3):
        with pytest.raises(AccountPaused):
            later.access_token(account_id)
    assert len(emulator.state.token_requests) == requests_before + 1
    (account,) = accounts_of(api, user)
    assert account["status"] == "reauth_required" and "refused" in account["status_reason"]
    last_status_event(stack, account_id, "reauth_required")

    # reconnecting the same address brings back the same account, with its cursor
    again = connect(api, browser, user, provider, email)
    assert again["status"] == "connected" and again["account_id"] == account_id
    assert accounts_of(api, user)[0]["status"] == "connected"
    assert cursors.get_item(Key={"pk": f"ACC#{account_id}", "sk": "CUR#INBOX"})["Item"]["cursor"] == "12345"
    assert credentials.access_token(account_id)
    last_status_event(stack, account_id, "connected")
    assert status_events(stack, account_id) == ["connected", "reauth_required", "connected"]


class RacingProvider:
    """The provider as seen by a worker that loses a race: while it refreshes, another worker
    refreshes the same account and stores its token first."""

    def __init__(self, real: Any, other_worker: Credentials, account_id: str) -> None:
        self.real = real
        self.other_worker = other_worker
        self.account_id = account_id
        self.winner: str | None = None

    def refresh(self, tokens: TokenSet) -> TokenSet:
        self.winner = self.other_worker.access_token(self.account_id)
        return self.real.refresh(tokens)


@pytest.mark.rule("ACC-9")
def test_two_workers_refreshing_at_once_do_not_fight(
    api: Api, stack: LocalStack, browser: Browser, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    account_id = connect(api, browser, api.token(tenant, "u1"), "google", mail_address())["account_id"]
    layer = stack.services
    store = layer.account_store()

    def later() -> float:
        return time.time() + 7200

    other = Credentials(
        store,
        layer.secret_box(),
        layer.oauth_client,
        layer.publisher(),
        clock=later,
    )
    racing = RacingProvider(layer.oauth_client("google"), other, account_id)
    loser = Credentials(store, layer.secret_box(), lambda _: racing, layer.publisher(), clock=later)
    token = loser.access_token(account_id)
    assert racing.winner is not None and token == racing.winner  # the loser uses the winner's token
    assert store.get_secret(account_id)[1] == 2  # one refresh stored, not two
    assert accounts_of(api, api.token(tenant, "u1"))[0]["status"] == "connected"


# ---------------------------------------------------------------------------- isolation, admin (ACC-1, ACC-10, SEC-4)


@pytest.mark.rule("ACC-1")
@pytest.mark.rule("SEC-4")
def test_accounts_are_per_user_and_per_tenant(api: Api, browser: Browser, tenant: str) -> None:
    set_plan(api, tenant, "professional")
    alice, bob = api.token(tenant, "alice"), api.token(tenant, "bob")
    mine = connect(api, browser, alice, "google", mail_address())["account_id"]
    assert accounts_of(api, bob) == []
    for method, path, body in [
        ("GET", f"/v1/accounts/{mine}", None),
        ("PATCH", f"/v1/accounts/{mine}", {"sharing": "shared"}),
        ("POST", f"/v1/accounts/{mine}/default", None),
        ("POST", f"/v1/accounts/{mine}/replace", {"provider": "google"}),
        ("DELETE", f"/v1/accounts/{mine}", None),
        ("GET", f"/v1/accounts/{mine}/sync", None),
    ]:
        assert api.call(method, path, bob, json=body).status_code == 404, (method, path)
    other_tenant_admin = api.token(f"{tenant}-other", "alice", "admin")
    assert api.call("GET", f"/v1/accounts/{mine}", other_tenant_admin).status_code == 404
    assert api.call("GET", "/v1/admin/accounts", other_tenant_admin).json()["accounts"] == []
    assert [a["status"] for a in accounts_of(api, alice)] == ["connected"]


@pytest.mark.rule("ACC-10")
def test_admins_list_every_users_accounts_with_plan_usage(api: Api, browser: Browser, tenant: str) -> None:
    set_plan(api, tenant, "professional")
    alice, bob = api.token(tenant, "alice"), api.token(tenant, "bob")
    connect(api, browser, alice, "google", mail_address())
    connect(api, browser, alice, "microsoft", mail_address())
    connect(api, browser, bob, "google", mail_address())
    assert api.call("GET", "/v1/admin/accounts", alice).status_code == 403
    overview = api.call("GET", "/v1/admin/accounts", api.token(tenant, "boss", "admin")).json()
    assert overview["plan"] == "professional" and overview["limit_per_user"] == 2
    assert {u["user_id"]: u["mailbox_accounts"] for u in overview["usage"]} == {"alice": 2, "bob": 1}
    assert len(overview["accounts"]) == 3
    for account in overview["accounts"]:
        assert set(account) >= {"address", "status", "provider", "last_sync_at", "is_default"}
        assert not {"tokens", "access_token", "refresh_token", "password"} & set(account)


# ---------------------------------------------------------------------------- IMAP (ACC-3)


@pytest.fixture
def mail_servers(emulators: Emulators, request: pytest.FixtureRequest) -> Iterator[tuple[Dovecot, Smtp]]:
    """A Dovecot of its own per test: its penalty for failed logins (per client IP) would
    otherwise slow every later test's login. SMTP speaks implicit TLS unless the test asks
    for STARTTLS (indirect parameter)."""
    tls = emulators.ca_bundle.parent
    dovecot = start_dovecot(tls / "server.pem", tls / "server.key")
    smtp = start_smtp(
        tls / "server.pem", tls / "server.key", implicit_tls=getattr(request, "param", "tls") == "tls"
    )
    yield dovecot, smtp
    smtp.stop()
    dovecot.stop()


def _imap_body(
    dovecot: Dovecot, smtp: Smtp, user: str, password: str, security: str = "tls", smtp_security: str = "tls"
) -> dict[str, Any]:
    return {
        "address": user,
        "password": password,
        "server": {
            "imap_host": "127.0.0.1",
            "imap_port": dovecot.tls_port if security == "tls" else dovecot.starttls_port,
            "imap_security": security,
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_security": smtp_security,
            "username": user,
        },
    }


@pytest.mark.rule("ACC-3")
@pytest.mark.parametrize(
    ("security", "mail_servers"), [("tls", "tls"), ("starttls", "starttls")], indirect=["mail_servers"]
)
def test_imap_account_connects_only_when_the_login_works(
    api: Api, stack: LocalStack, mail_servers: tuple[Dovecot, Smtp], tenant: str, security: str
) -> None:
    dovecot, smtp = mail_servers
    set_plan(api, tenant, "professional")
    user = api.token(tenant, "u1")
    address = f"ann-{uuid.uuid4().hex[:6]}@example.test"
    password = f"pw-{uuid.uuid4().hex}"
    dovecot.add_user(address, password)
    smtp.users[address] = password

    created = api.call(
        "POST",
        "/v1/accounts/imap",
        user,
        json=_imap_body(dovecot, smtp, address, password, security, security),
    )
    assert created.status_code == 201, created.text
    account = created.json()
    assert (account["provider"], account["status"], account["is_default"]) == ("imap", "connected", True)
    assert account["imap"]["imap_security"] == security and "password" not in json.dumps(account)

    # a wrong password is a clear 4xx, and nothing is saved (Dovecot penalises the failure,
    # so it comes after the good login)
    other = f"bob-{uuid.uuid4().hex[:6]}@example.test"
    dovecot.add_user(other, "the-right-one")
    wrong = api.call(
        "POST",
        "/v1/accounts/imap",
        user,
        json=_imap_body(dovecot, smtp, other, "not-the-password", security, security),
    )
    assert wrong.status_code == 422
    assert "login failed" in wrong.json()["error"]["message"] and other in wrong.json()["error"]["message"]
    assert [a["address"] for a in accounts_of(api, user)] == [address]
    assert stack.services.credentials().password(account["account_id"]) == password


@pytest.mark.rule("ACC-3")
def test_imap_server_that_cannot_be_reached_over_tls_is_a_clear_error(
    api: Api, mail_servers: tuple[Dovecot, Smtp], tenant: str
) -> None:
    dovecot, smtp = mail_servers
    set_plan(api, tenant, "advanced")
    body = _imap_body(dovecot, smtp, "x@example.test", "pw")
    body["server"]["imap_port"] = dovecot.starttls_port  # plain IMAP port, spoken to as implicit TLS
    response = api.call("POST", "/v1/accounts/imap", api.token(tenant, "u1"), json=body)
    assert (
        response.status_code == 422 and "cannot reach the mail server" in response.json()["error"]["message"]
    )


# ---------------------------------------------------------------------------- secrets (SEC-3)


@pytest.mark.rule("SEC-3")
def test_no_token_or_password_in_tables_logs_or_responses(
    api: Api,
    stack: LocalStack,
    browser: Browser,
    emulators: Emulators,
    mail_servers: tuple[Dovecot, Smtp],
    tenant: str,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_plan(api, tenant, "enterprise")
    user = api.token(tenant, "u1")
    responses: list[str] = []
    for provider in ("google", "microsoft"):
        started = api.call("POST", "/v1/accounts/connect", user, json={"provider": provider})
        responses.append(started.text)
        result, _ = browser.consent(started.json()["authorization_url"], mail_address())
        responses.append(json.dumps(result))
        responses.append(json.dumps(confirmed(api, user, result)))
    dovecot, smtp = mail_servers
    address, password = f"sec-{uuid.uuid4().hex[:6]}@example.test", f"imap-{uuid.uuid4().hex}"
    dovecot.add_user(address, password)
    smtp.users[address] = password
    responses.append(
        api.call("POST", "/v1/accounts/imap", user, json=_imap_body(dovecot, smtp, address, password)).text
    )
    responses.append(api.call("GET", "/v1/accounts", user).text)
    responses.append(api.call("GET", "/v1/admin/accounts", api.token(tenant, "boss", "admin")).text)
    for account in api.call("GET", "/v1/accounts", user).json()["accounts"]:
        if account["provider"] != "imap":
            stack.services.credentials().access_token(account["account_id"])

    secrets = {password}
    for emulator in (emulators.google, emulators.microsoft):
        secrets |= set(emulator.state.access_tokens) | set(emulator.state.refresh_tokens)
        secrets |= {emulator.client.client_secret}
    raw_items = json.dumps(account_items(stack), default=str)
    captured = capfd.readouterr()
    seen = "\n".join([raw_items, captured.out, captured.err, caplog.text, *responses])
    leaked = [s for s in secrets if s in seen]
    assert leaked == [], "secrets found in tables, logs or responses"
    assert '"sealed"' in raw_items  # they are there, encrypted

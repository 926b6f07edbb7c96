"""Issue 9, accounts: disconnect with a dead token (item 5), Gmail 401s (item 5), lost account
updates (item 6), the connect bound to the CRM session that started it (item 7), the plan as
billing data (item 8), no provider text on the CRM's return page (item 13)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest

from crmsync.accounts.credentials import AccountPaused, Credentials
from crmsync.accounts.models import TokenSet
from crmsync.accounts.ports import secret_context
from crmsync.auth import Principal
from crmsync.errors import TransientError
from crmsync.jobs import Job
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.test_accounts import (
    Browser,
    account_items,
    accounts_of,
    connect,
    last_status_event,
    mail_address,
    set_plan,
    status_events,
)
from tests.integration.test_watch_renewal import watching  # noqa: F401  (a fixture)


def _has_secret(stack: LocalStack, account_id: str) -> bool:
    return any(i["pk"] == f"ACC#{account_id}" and i["sk"] == "SECRET" for i in account_items(stack))


def _services(stack: LocalStack) -> Any:
    return stack.services


def _later_credentials(stack: LocalStack, store: Any = None) -> Credentials:
    """The worker's Credentials two hours on: the stored access token has expired."""
    services = _services(stack)
    return Credentials(
        store or services.account_store(),
        services.secret_box(),
        services.oauth_client,
        services.publisher(),
        clock=lambda: time.time() + 7200,
    )


def _expire_stored_token(stack: LocalStack, account_id: str) -> None:
    """The stored access token as the service sees it an hour on: expired, to be refreshed."""
    services = _services(stack)
    store, box = services.account_store(), services.secret_box()
    account = store.get_by_id(account_id)
    sealed, version = store.get_secret(account_id)
    context = secret_context(account)
    tokens = TokenSet.model_validate_json(box.open(sealed, context)).model_copy(update={"expires_at": 0})
    store.put_secret(account_id, box.seal(tokens.model_dump_json().encode(), context), version)


# ---------------------------------------------------------------------------- item 5 (ACC-8, ACC-9)


@pytest.mark.rule("ACC-8")
@pytest.mark.parametrize("dead", ["expired", "revoked"])
@pytest.mark.usefixtures("watching")
def test_disconnecting_a_watched_gmail_account_with_a_dead_token_still_deletes_its_tokens(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str, dead: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = mail_address()
    account_id = connect(api, Browser(emulators), user, "google", address)["account_id"]
    box = emulators.google.gmail.mailbox(address)
    assert box.watch is not None
    if dead == "expired":
        emulators.google.state.expire(address)
    else:
        emulators.google.state.revoke(address)

    gone = api.call("DELETE", f"/v1/accounts/{account_id}", user)
    assert gone.status_code == 200, gone.text
    assert gone.json()["status"] == "disconnected"
    assert not _has_secret(stack, account_id)
    last_status_event(stack, account_id, "disconnected")
    assert status_events(stack, account_id) == ["connected", "disconnected"]
    if dead == "expired":  # the refresh token still works: the watch is stopped at Gmail too
        assert box.watch is None


@pytest.mark.rule("ACC-8")
def test_disconnecting_a_microsoft_account_with_a_revoked_grant_is_no_reauthorisation(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = mail_address()
    account_id = connect(api, Browser(emulators), user, "microsoft", address)["account_id"]
    subscriptions = _services(stack).mail_bundle("microsoft").watcher._store
    assert subscriptions.for_account(account_id)  # Graph subscriptions were made on connect
    emulators.microsoft.state.revoke(address)
    emulators.microsoft.state.expire(address)
    _expire_stored_token(stack, account_id)
    gone = api.call("DELETE", f"/v1/accounts/{account_id}", user)
    assert gone.status_code == 200, gone.text
    assert not _has_secret(stack, account_id)
    last_status_event(stack, account_id, "disconnected")
    # a disconnect is not a re-authorisation: the CRM hears of the disconnect only
    assert status_events(stack, account_id) == ["connected", "disconnected"]
    assert subscriptions.for_account(account_id) == []  # forgotten here; at Graph they lapse


@pytest.mark.rule("ACC-9")
def test_a_gmail_401_after_revocation_pauses_the_account_instead_of_retrying(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = mail_address()
    account_id = connect(api, Browser(emulators), user, "google", address)["account_id"]
    # Google revokes the grant and with it the access tokens it issued: Gmail answers 401 to
    # a token the service still holds as valid, and the refresh answers invalid_grant
    emulators.google.state.revoke(address)
    runner = stack.services.sync_batch().runner
    job = Job(type="mail.sync", tenant_id=tenant, account_id=account_id, payload={"reason": "test"})
    outcome = runner.handle(job.model_dump_json(), f"m-{uuid.uuid4().hex}", account_id)
    assert outcome == "dropped"
    (account,) = accounts_of(api, user)
    assert account["status"] == "reauth_required"
    last_status_event(stack, account_id, "reauth_required")


@pytest.mark.rule("ACC-9")
@pytest.mark.parametrize("grant", ["valid", "revoked"])
def test_a_graph_401_gets_a_new_token_or_pauses_instead_of_retrying_until_expiry(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str, grant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = mail_address()
    account_id = connect(api, Browser(emulators), user, "microsoft", address)["account_id"]
    # the access token stops working long before the expiry the service stored with it
    emulators.microsoft.state.expire(address)
    if grant == "revoked":
        emulators.microsoft.state.revoke(address)
    runner = stack.services.sync_batch().runner
    job = Job(type="mail.sync", tenant_id=tenant, account_id=account_id, payload={"reason": "test"})

    def run() -> str:
        outcome: str = runner.handle(job.model_dump_json(), f"m-{uuid.uuid4().hex}", account_id)
        return outcome

    if grant == "revoked":
        assert run() == "dropped"
        assert accounts_of(api, user)[0]["status"] == "reauth_required"
        last_status_event(stack, account_id, "reauth_required")
        return
    with pytest.raises(TransientError):  # this try is lost; the token is refreshed for the next
        run()
    assert run() == "done"
    assert accounts_of(api, user)[0]["status"] == "connected"


@pytest.mark.rule("ACC-9")
def test_sending_from_a_revoked_gmail_account_asks_for_reauthorisation(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = mail_address()
    account_id = connect(api, Browser(emulators), user, "google", address)["account_id"]
    emulators.google.state.revoke(address)
    message = {"to": [{"address": "carla@client.test"}], "subject": "Renewal", "text": "Hello"}
    sent = api.call("POST", "/v1/messages", user, json=message, headers={"Idempotency-Key": uuid.uuid4().hex})
    assert sent.status_code == 409, sent.text  # not a 500: the user is asked to reconnect
    assert "re-authorisation" in sent.json()["error"]["message"]
    last_status_event(stack, account_id, "reauth_required")


@pytest.mark.rule("ACC-9")
def test_a_gmail_401_with_no_way_to_refresh_is_a_permanent_error_with_its_reason(
    emulators: Emulators,
) -> None:
    from crmsync.errors import PermanentError
    from crmsync.providers.google.gmail import gmail_service

    address = mail_address()
    token = emulators.google.issue_access_token(address)
    emulators.google.gmail.mailbox(address)
    emulators.google.state.revoke(address)  # the grant and its access tokens
    with pytest.raises(PermanentError, match="401"):  # dead-lettered with this reason, not retried
        gmail_service(token, emulators.google_url).users().getProfile(userId="me").execute()


# ---------------------------------------------------------------------------- item 6 (ACC-6, ACC-8, ACC-9)


class Interleaved:
    """The real account store, with another caller's whole call run at one chosen point:
    just after `method` returns (a read) or just before it runs (a write)."""

    def __init__(self, real: Any, method: str, other: Callable[[], object], when: str = "after") -> None:
        self._real, self._method, self._other, self._when = real, method, other, when
        self.ran = False

    def _interleave(self) -> None:
        if not self.ran:
            self.ran = True
            self._other()

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._real, name)
        if name != self._method:
            return found

        def hooked(*args: Any, **kwargs: Any) -> Any:
            if self._when == "before":
                self._interleave()
            result = found(*args, **kwargs)
            if self._when == "after":
                self._interleave()
            return result

        return hooked


@pytest.mark.rule("ACC-8")
@pytest.mark.rule("ACC-9")
def test_a_worker_pausing_an_account_never_brings_back_a_disconnected_one(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    address = mail_address()
    account_id = connect(api, Browser(emulators), user, "google", address)["account_id"]
    emulators.google.state.revoke(address)

    def user_disconnects() -> None:
        assert api.call("DELETE", f"/v1/accounts/{account_id}", user).status_code == 200

    # the worker has read the account and its tokens when the user disconnects
    store = Interleaved(_services(stack).account_store(), "get_secret", user_disconnects)
    with pytest.raises(AccountPaused):
        _later_credentials(stack, store).access_token(account_id)
    assert store.ran
    (account,) = accounts_of(api, user)
    assert account["status"] == "disconnected"
    assert not _has_secret(stack, account_id)
    last_status_event(stack, account_id, "disconnected")
    assert "reauth_required" not in status_events(stack, account_id)


@pytest.mark.rule("ACC-6")
def test_two_default_calls_at_once_leave_exactly_one_default(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "power")
    user = api.token(tenant, "u1")
    browser = Browser(emulators)
    a, b, c = (connect(api, browser, user, "google", mail_address())["account_id"] for _ in range(3))
    principal = Principal(tenant_id=tenant, user_id="u1", role="member")
    accounts = stack.services.accounts()
    real = accounts._store

    def other_call() -> None:
        assert api.call("POST", f"/v1/accounts/{b}/default", user).status_code == 200

    # call 1 (for c) has read the accounts when call 2 (for b) runs whole; then call 1 writes
    accounts._store = Interleaved(real, "set_default", other_call, when="before")
    try:
        accounts.set_default(principal, c)
    finally:
        accounts._store = real
    defaults = [x["account_id"] for x in accounts_of(api, user) if x["is_default"]]
    assert defaults == [c]
    assert a not in defaults


@pytest.mark.rule("ACC-6")
def test_default_calls_racing_in_threads_leave_exactly_one_default(
    api: Api, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "power")
    user = api.token(tenant, "u1")
    browser = Browser(emulators)
    ids = [connect(api, browser, user, "google", mail_address())["account_id"] for _ in range(3)]

    def make_default(barrier: threading.Barrier, answers: list[int], account_id: str) -> None:
        barrier.wait()
        answers.append(api.call("POST", f"/v1/accounts/{account_id}/default", user).status_code)

    for round_ in range(6):
        barrier, answers = threading.Barrier(2), []
        racers = [
            threading.Thread(target=make_default, args=(barrier, answers, ids[(round_ + k) % 3]))
            for k in (1, 2)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert answers == [200, 200]
        assert sum(x["is_default"] for x in accounts_of(api, user)) == 1


# ---------------------------------------------------------------------------- item 7 (ACC-1, ACC-2)


def _consent_without_confirming(api: Api, emulators: Emulators, token: str, email: str) -> dict[str, str]:
    started = api.call("POST", "/v1/accounts/connect", token, json={"provider": "google"})
    assert started.status_code == 200, started.text
    result, _ = Browser(emulators).consent(started.json()["authorization_url"], email)
    return result


@pytest.mark.rule("ACC-1")
@pytest.mark.rule("ACC-2")
def test_a_victim_consenting_on_an_attackers_connect_link_connects_nothing(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    mallory, victim = api.token(tenant, "mallory"), api.token(tenant, "victim")
    before = len(account_items(stack))
    # Mallory starts a connect and sends its authorization URL to the victim, who consents
    landed = _consent_without_confirming(api, emulators, mallory, "victim@gmail.test")
    assert landed.get("status") != "connected"
    assert accounts_of(api, mallory) == []
    # the victim's browser lands on the CRM's return page, whose session is the victim's:
    # its confirm call is refused, and the consent is thrown away
    assert landed["status"] == "confirm_required" and landed["address"] == "victim@gmail.test"
    refused = api.call(
        "POST", "/v1/accounts/connect/confirm", victim, json={"confirmation": landed["confirmation"]}
    )
    assert refused.status_code == 403, refused.text
    assert "another CRM user" in refused.json()["error"]["message"]
    assert accounts_of(api, mallory) == [] and accounts_of(api, victim) == []
    # and nothing can complete it afterwards, not even with the code
    late = api.call(
        "POST", "/v1/accounts/connect/confirm", mallory, json={"confirmation": landed["confirmation"]}
    )
    assert late.status_code == 404
    assert accounts_of(api, mallory) == []
    assert len(account_items(stack)) == before  # no account, no secret, no pending connect


@pytest.mark.rule("ACC-2")
def test_the_user_who_started_the_connect_confirms_it_once(
    api: Api, stack: LocalStack, emulators: Emulators, tenant: str
) -> None:
    set_plan(api, tenant, "advanced")
    user = api.token(tenant, "u1")
    email = mail_address()
    landed = _consent_without_confirming(api, emulators, user, email)
    assert landed["status"] == "confirm_required"
    assert accounts_of(api, user) == []  # nothing is connected before the confirm
    bad = api.call("POST", "/v1/accounts/connect/confirm", user, json={"confirmation": "x" * 43})
    assert bad.status_code == 404
    confirmed = api.call(
        "POST", "/v1/accounts/connect/confirm", user, json={"confirmation": landed["confirmation"]}
    )
    assert confirmed.status_code == 200, confirmed.text
    account = confirmed.json()
    assert (account["address"], account["status"], account["is_default"]) == (email, "connected", True)
    assert [a["account_id"] for a in accounts_of(api, user)] == [account["account_id"]]
    last_status_event(stack, account["account_id"], "connected")
    again = api.call(
        "POST", "/v1/accounts/connect/confirm", user, json={"confirmation": landed["confirmation"]}
    )
    assert again.status_code == 404  # single use


# ---------------------------------------------------------------------------- item 8 (ACC-4)


@pytest.mark.rule("ACC-4")
def test_only_the_crm_backend_changes_the_plan(api: Api, tenant: str) -> None:
    service_token = api.token(tenant, "crm", "service")
    admin = api.token(tenant, "boss", "admin")
    assert (
        api.call("PUT", "/v1/directory/settings", service_token, json={"plan": "advanced"}).status_code == 200
    )
    upgrade = api.call("PUT", "/v1/directory/settings", admin, json={"plan": "enterprise"})
    assert upgrade.status_code == 403, upgrade.text
    assert "plan" in upgrade.json()["error"]["message"] and "service" in upgrade.json()["error"]["message"]
    assert api.call("GET", "/v1/directory/settings", admin).json()["plan"] == "advanced"
    # the other settings are the admin's to change, with the plan sent unchanged or left out
    same = api.call(
        "PUT", "/v1/directory/settings", admin, json={"plan": "advanced", "apply_gap_changes": True}
    )
    assert same.status_code == 200, same.text
    left_out = api.call("PUT", "/v1/directory/settings", admin, json={"automation_sender": "default_account"})
    assert left_out.status_code == 200, left_out.text
    assert api.call("GET", "/v1/directory/settings", admin).json() == {
        "plan": "advanced",
        "automation_sender": "default_account",
        "apply_gap_changes": False,
    }
    assert (
        api.call("PUT", "/v1/directory/settings", service_token, json={"plan": "power"}).json()["plan"]
        == "power"
    )


# ---------------------------------------------------------------------------- item 13 (SEC-5)


@pytest.mark.rule("ACC-2")
@pytest.mark.parametrize(
    ("error", "reason"), [("access_denied", "consent_denied"), ("<b>call+555-0100</b>", "provider_error")]
)
def test_the_return_page_carries_no_provider_text(
    api: Api, stack: LocalStack, tenant: str, error: str, reason: str
) -> None:
    set_plan(api, tenant, "advanced")
    started = api.call("POST", "/v1/accounts/connect", api.token(tenant, "u1"), json={"provider": "google"})
    state = started.json()["state"]
    description = "Your account is locked. Call +1 555 0100 or visit https://evil.example/unlock"
    callback = (
        f"{api.base}/oauth/google/callback?state={quote(state)}"
        f"&error={quote(error)}&error_description={quote(description)}"
    )
    result = Browser.follow(callback)
    assert result["status"] == "error" and result["reason"] == reason
    shown = " ".join(result.values())
    for planted in ("555", "evil.example", "locked", "<b>"):
        assert planted not in shown
    assert result["message"]  # a fixed text of ours

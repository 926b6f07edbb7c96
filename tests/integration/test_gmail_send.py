"""Sending from the CRM through Gmail, end to end: the API, the real Gmail client library, the
emulated mailbox, then the push and the worker meeting the Sent copy."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import uuid
from typing import Any

import pytest
import requests

from crmsync import services
from crmsync.mail.filetype import FileRefused, check
from crmsync.mail.limits import MB, limits_for
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_accounts import Browser, connect, set_plan
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

CONTACT = "carla@client.test"


def _setup(api: Api, emulators: Emulators, tenant: str) -> tuple[str, str, str]:
    """A connected Gmail account (the default), a contact with an open deal; returns the
    address, the account id and the user's token."""
    set_plan(api, tenant, "advanced")
    admin = api.token(tenant, "admin", "admin")
    put = api.call("PUT", "/v1/directory/contacts/c1", admin, json={"name": "Carla", "emails": [CONTACT]})
    assert put.status_code == 200, put.text
    deal = {"name": "Renewal", "status": "open", "contact_ids": ["c1"]}
    assert api.call("PUT", "/v1/directory/deals/d1", admin, json=deal).status_code == 200
    address = f"seller-{uuid.uuid4().hex[:8]}@gmail.test"
    token = api.token(tenant, "u1")
    result = connect(api, Browser(emulators), token, "google", address)
    assert result["status"] == "connected"
    return address, result["account_id"], token


def _sent_copies(emulators: Emulators, address: str) -> list[Any]:
    box = emulators.google.gmail.mailbox(address)
    return [m for m in box.messages.values() if "SENT" in m.labels]


def _push(api: Api, emulators: Emulators, address: str) -> None:
    google = emulators.google
    history = google.gmail.mailbox(address).history_id
    assert (
        google.deliver_push(f"{api.base}/webhooks/gmail", address, history, message_id=uuid.uuid4().hex)
        == 204
    )


def _thread(api: Api, token: str, thread_id: str, count: int) -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        view = api.call("GET", f"/v1/threads/{thread_id}", token).json()
        return view if len(view.get("messages", [])) == count else None

    found: dict[str, Any] = wait_until(ready, timeout=20)
    return found


@pytest.mark.rule("SEND-1")
@pytest.mark.rule("SEND-4")
@pytest.mark.rule("MAIL-2")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("MAIL-3")
def test_a_crm_thread_goes_out_from_the_users_gmail_and_replies_stay_in_it(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant)
    first = api.call(
        "POST",
        "/v1/messages",
        token,
        json={
            "to": [{"address": CONTACT, "name": "Carla"}],
            "subject": "Your renewal",
            "text": "Hello Carla",
        },
    )
    assert first.status_code == 201, first.text
    sent = first.json()
    assert sent["account_id"] == account_id and sent["sender"] == address  # SEND-1: the default account
    assert sent["delivery"] == "sent" and sent["provider_message_id"]
    copies = _sent_copies(emulators, address)
    assert len(copies) == 1  # MAIL-2: one copy in Sent, filed by Gmail
    raw = email.message_from_bytes(copies[0].raw, policy=email.policy.default)
    assert raw["From"] == address and raw["Message-ID"] == sent["rfc822_message_id"]

    # the worker meets the Sent copy: the same message, not a second one (MAIL-7)
    _push(api, emulators, address)
    view = _thread(api, token, sent["thread_id"], 1)
    assert view["thread"]["contact_ids"] == ["c1"] and view["thread"]["deal_id"] == "d1"

    # the contact replies; it joins the thread (MAIL-3)
    reply = mail(CONTACT, [address], "Re: Your renewal")
    reply["In-Reply-To"] = sent["rfc822_message_id"]
    reply["References"] = sent["rfc822_message_id"]
    emulators.google.gmail.arrive(address, reply.as_bytes())
    _push(api, emulators, address)
    view = _thread(api, token, sent["thread_id"], 2)
    inbound = next(m for m in view["messages"] if m["direction"] == "inbound")

    # the CRM answers it: in Gmail's thread, with In-Reply-To and References (SEND-4)
    answer = api.call(
        "POST",
        "/v1/messages",
        token,
        json={
            "to": [{"address": CONTACT}],
            "subject": "Re: Your renewal",
            "text": "Here it is",
            "reply_to_message_id": inbound["crm_message_id"],
        },
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["thread_id"] == sent["thread_id"]
    copies = _sent_copies(emulators, address)
    assert len(copies) == 2 and len({c.thread_id for c in copies}) == 1
    out = email.message_from_bytes(
        next(c for c in copies if c.id == answer.json()["provider_message_id"]).raw,
        policy=email.policy.default,
    )
    assert out["In-Reply-To"] == inbound["message_id"]
    assert out["References"].split() == [sent["rfc822_message_id"], inbound["message_id"]]
    _push(api, emulators, address)
    view = _thread(api, token, sent["thread_id"], 3)
    assert [m["direction"] for m in view["messages"]] == ["outbound", "inbound", "outbound"]
    assert len({m["crm_message_id"] for m in view["messages"]}) == 3
    assert all(m["delivery"] in ("sent", None) for m in view["messages"])


def test_an_idempotency_key_never_sends_twice(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, _, token = _setup(api, emulators, tenant)
    body = {"to": [{"address": CONTACT}], "subject": "Once", "text": "only once"}
    headers = {"Idempotency-Key": "crm-outbox-42"}
    first = api.call("POST", "/v1/messages", token, json=body, headers=headers)
    again = api.call("POST", "/v1/messages", token, json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json()["message_id"] == again.json()["message_id"]
    assert len(_sent_copies(emulators, address)) == 1


@pytest.mark.rule("MAIL-2")
def test_a_send_cut_off_after_gmail_took_it_is_confirmed_on_retry_not_sent_again(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, _, token = _setup(api, emulators, tenant)
    engine = services.current().outbox()._engine
    real_confirm = engine.confirm_sent

    def cut_off(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(engine, "confirm_sent", real_confirm)  # the crash happens once
        raise RuntimeError("the function was stopped right after Gmail took the message")

    monkeypatch.setattr(engine, "confirm_sent", cut_off)
    body = {"to": [{"address": CONTACT}], "subject": "Cut off", "text": "once"}
    headers = {"Idempotency-Key": "crm-outbox-77"}
    first = api.call("POST", "/v1/messages", token, json=body, headers=headers)
    assert first.status_code == 500
    assert len(_sent_copies(emulators, address)) == 1  # Gmail has it; the CRM copy says "sending"
    again = api.call("POST", "/v1/messages", token, json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert again.json()["delivery"] == "sent"
    assert again.json()["provider_message_id"] == _sent_copies(emulators, address)[0].id
    assert len(_sent_copies(emulators, address)) == 1  # found by its Message-ID, not sent twice


@pytest.mark.rule("SEND-6")
def test_header_injection_and_malformed_addresses_are_refused(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, _, token = _setup(api, emulators, tenant)
    refused = {
        "subject with CRLF": {"to": [{"address": CONTACT}], "subject": "Hi\r\nBcc: all@evil.test"},
        "subject with LF": {"to": [{"address": CONTACT}], "subject": "Hi\nX-Evil: 1"},
        "name with CR": {"to": [{"address": CONTACT, "name": "Carla\rBcc: x@evil.test"}], "subject": "Hi"},
        "address with LF": {"to": [{"address": "carla@client.test\nBcc: x@evil.test"}], "subject": "Hi"},
        "two addresses in one": {"to": [{"address": "a@x.test, b@y.test"}], "subject": "Hi"},
        "no domain": {"to": [{"address": "carla@"}], "subject": "Hi"},
        "display form": {"to": [{"address": "Carla <carla@client.test>"}], "subject": "Hi"},
    }
    for what, body in refused.items():
        response = api.call("POST", "/v1/messages", token, json={**body, "text": "x"})
        assert response.status_code == 422, what
        assert response.json()["error"]["code"] == "invalid_request", what
    assert _sent_copies(emulators, address) == []  # nothing reached Gmail
    assert "gmail.users.messages.send" not in emulators.google.gmail.mailbox(address).requests


def _stage(api: Api, token: str, filename: str, data: bytes) -> str:
    staged = api.call("POST", "/v1/attachments", token, json={"filename": filename, "size": len(data)})
    assert staged.status_code == 201, staged.text
    body = staged.json()
    policy = json.loads(base64.b64decode(body["upload_fields"]["policy"]))
    # ATT-1: the signed policy itself bounds the upload to the announced size
    assert ["content-length-range", 1, len(data)] in policy["conditions"]
    upload = requests.post(
        body["upload_url"], data=body["upload_fields"], files={"file": (filename, data)}, timeout=60
    )
    assert upload.status_code in (200, 204), upload.text
    return str(body["attachment_id"])


def _pdf(size: int) -> bytes:
    return b"%PDF-1.7\n" + b"0" * (size - 9)


@pytest.mark.rule("ATT-1")
@pytest.mark.rule("ATT-2")
@pytest.mark.rule("ATT-4")
def test_attachments_are_staged_limited_to_25_mb_in_total_and_judged_by_content(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, _, token = _setup(api, emulators, tenant)
    limit = limits_for("google").total_bytes
    assert limit == 25 * MB
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 1000
    at_limit = [_stage(api, token, "quote.pdf", _pdf(limit - len(png))), _stage(api, token, "logo.png", png)]
    body = {"to": [{"address": CONTACT}], "subject": "Files", "text": "attached"}
    sent = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": at_limit})
    assert sent.status_code == 201, sent.text[:500]
    copy = email.message_from_bytes(_sent_copies(emulators, address)[0].raw, policy=email.policy.default)
    sizes = {p.get_filename(): len(p.get_payload(decode=True)) for p in copy.iter_attachments()}
    assert sizes == {"quote.pdf": limit - len(png), "logo.png": len(png)}

    # one byte more: refused before anything is sent
    over = [_stage(api, token, "quote.pdf", _pdf(limit - len(png) + 1)), _stage(api, token, "logo.png", png)]
    refused = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": over})
    assert refused.status_code == 413, refused.text
    assert str(limit) in refused.json()["error"]["message"]
    assert len(_sent_copies(emulators, address)) == 1
    # a single file over the limit is refused when it is announced
    big = api.call("POST", "/v1/attachments", token, json={"filename": "big.pdf", "size": limit + 1})
    assert big.status_code == 413

    # a renamed executable is refused, whatever its name says
    for name, data in {
        "invoice.pdf": b"MZ\x90\x00" + b"\x00" * 200,
        "notes.txt": b"\x7fELF\x02\x01\x01" + b"\x00" * 200,
        "photo.jpg": b"%PDF-1.4\n...",
    }.items():
        attachment = _stage(api, token, name, data)
        response = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": [attachment]})
        assert response.status_code == 422, name
        assert name in response.json()["error"]["message"]
    assert len(_sent_copies(emulators, address)) == 1
    unknown = api.call("POST", "/v1/messages", token, json={**body, "attachment_ids": ["never-uploaded"]})
    assert unknown.status_code == 422 and "not uploaded" in unknown.json()["error"]["message"]


@pytest.mark.rule("ATT-5")
@pytest.mark.rule("ATT-4")
def test_limits_are_provider_configuration_and_types_come_from_content() -> None:
    assert limits_for("microsoft").per_file_bytes == 3 * MB
    assert "exe" not in (limits_for("microsoft").allowed_types or set())
    changed = limits_for("imap", json.dumps({"imap": {"total_bytes": 1000}}))
    assert changed.total_bytes == 1000 and limits_for("imap").total_bytes == 25 * MB
    assert check("report.pdf", _pdf(100)) == "pdf"
    assert check("notes.txt", "Grüße\n".encode()) == "text"
    with pytest.raises(FileRefused, match="executable"):
        check("setup.exe.txt", b"MZ" + b"\x00" * 64)
    with pytest.raises(FileRefused, match="not accepted"):
        check("page.gif", b"GIF89a" + b"\x00" * 10, limits_for("microsoft").allowed_types)


@pytest.mark.rule("MAIL-9")
def test_archive_and_delete_in_the_crm_reach_gmail_only_when_the_setting_is_on(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant)
    gmail = emulators.google.gmail
    inbound = [mail(CONTACT, [address], f"Question {n}") for n in (1, 2)]
    for message in inbound:
        gmail.arrive(address, message.as_bytes())
    _push(api, emulators, address)
    threads = wait_until(
        lambda: (
            (found := api.call("GET", "/v1/threads", token).json()["threads"]) and len(found) == 2 and found
        ),
        timeout=20,
    )
    by_subject = {t["subject"]: t["crm_thread_id"] for t in threads}
    labels = lambda subject: next(  # noqa: E731
        m.labels for m in gmail.mailbox(address).messages.values() if f"Subject: {subject}".encode() in m.raw
    )

    # setting off (the default): the CRM copy is archived, the mailbox is left alone
    off = api.call("POST", f"/v1/threads/{by_subject['Question 1']}/archive", token)
    assert off.status_code == 200 and off.json()["propagating_to"] == []
    view = api.call("GET", f"/v1/threads/{by_subject['Question 1']}", token).json()
    assert view["messages"][0]["crm_state"] == "archived"

    patched = api.call("PATCH", f"/v1/accounts/{account_id}", token, json={"archive_propagation": True})
    assert patched.status_code == 200, patched.text
    archived = api.call("POST", f"/v1/threads/{by_subject['Question 2']}/archive", token)
    assert archived.json()["propagating_to"] == [account_id]
    wait_until(lambda: "INBOX" not in labels("Question 2"), timeout=20)
    assert "INBOX" in labels("Question 1") and "TRASH" not in labels("Question 2")

    message_id = view["messages"][0]["crm_message_id"]
    deleted = api.call("DELETE", f"/v1/messages/{message_id}", token)
    assert deleted.status_code == 200 and deleted.json()["changed"] == [message_id]
    wait_until(lambda: "TRASH" in labels("Question 1"), timeout=20)
    assert api.call("DELETE", f"/v1/messages/{message_id}", token).json()["changed"] == []  # once
    assert api.call("DELETE", "/v1/messages/nope", token).status_code == 404


@pytest.mark.rule("MAIL-10")
def test_mail_removed_in_gmail_is_marked_in_the_crm_not_destroyed(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, token = _setup(api, emulators, tenant)
    gmail = emulators.google.gmail
    stored = {n: gmail.arrive(address, mail(CONTACT, [address], f"Topic {n}").as_bytes()) for n in (1, 2, 3)}
    _push(api, emulators, address)

    def messages() -> dict[str, dict[str, Any]]:
        found = {}
        for thread in api.call("GET", "/v1/threads", token).json()["threads"]:
            view = api.call("GET", f"/v1/threads/{thread['crm_thread_id']}", token).json()
            found[thread["subject"]] = view["messages"][0]
        return found

    wait_until(lambda: len(messages()) == 3, timeout=20)
    gmail.trash_in_client(address, stored[1].id)  # to the trash in the Gmail client
    gmail.delete_in_client(address, stored[2].id)  # deleted for good
    _push(api, emulators, address)
    found = wait_until(
        lambda: (
            (m := messages())
            and m["Topic 1"]["removed_in_mailbox"]
            and m["Topic 2"]["removed_in_mailbox"]
            and m
        ),
        timeout=20,
    )
    assert found["Topic 3"]["removed_in_mailbox"] is False  # untouched
    assert len(found) == 3  # the CRM copies stay

    def removals() -> list[dict[str, Any]]:
        return [
            e["detail"]
            for e in stack.events
            if e["detail-type"] == "MessageRemovedInMailbox" and e["detail"]["tenant_id"] == tenant
        ]

    events = wait_until(lambda: len(removals()) == 2 and removals(), timeout=10)
    assert sorted(e["how"] for e in events) == ["deleted", "trashed"]
    assert {e["account_id"] for e in events} == {account_id}
    _push(api, emulators, address)  # seen again: marked once, told once
    wait_until(lambda: cursor_of(stack, account_id) == str(gmail.mailbox(address).history_id), timeout=10)
    assert len(removals()) == 2

"""The Microsoft Graph mail emulator over real HTTPS: folders, messages with immutable ids, $value,
per-folder delta (paging, @removed, 410 and syncStateNotFound), $batch (20 at most, a 429 inside,
$value base64), drafts with attachments sent once into sentitems, createReply threading, moves,
throttling and the concurrency count; user folders (top-level and nested, 409 on a duplicate name,
$filter on displayName, childFolders) with messages, delta and change notifications of their own."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from local.emulators.graph import GraphMail
from local.emulators.servers import Emulators

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def _mail(sender: str, to: str, subject: str, reply_to: EmailMessage | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@mail.test>"
    if reply_to is not None:
        message["In-Reply-To"] = reply_to["Message-ID"]
        message["References"] = reply_to["Message-ID"]
    message.set_content("hello")
    return message


@dataclass
class Box:
    address: str
    token: str
    base: str
    verify: str
    graph: GraphMail

    def call(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> requests.Response:
        url = path if path.startswith("https://") else f"{self.base}/v1.0{path}"
        return requests.request(
            method,
            url,
            headers={"Authorization": f"Bearer {self.token}", **(headers or {})},
            verify=self.verify,
            timeout=30,
            **kwargs,
        )


@pytest.fixture
def box(emulators: Emulators) -> Iterator[Box]:
    address = f"box-{uuid.uuid4().hex[:8]}@contoso.test"
    token = emulators.microsoft.issue_access_token(address)
    yield Box(address, token, emulators.microsoft_url, str(emulators.ca_bundle), emulators.microsoft.graph)


def _delta_round(
    box: Box, url: str, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str, int]:
    """Follow nextLinks verbatim until the deltaLink: (items, deltaLink, pages)."""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        answer = box.call("GET", url, headers)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        pages += 1
        items.extend(page["value"])
        assert not ("@odata.nextLink" in page and "@odata.deltaLink" in page)
        if "@odata.deltaLink" in page:
            assert "$deltatoken=" in page["@odata.deltaLink"]
            return items, page["@odata.deltaLink"], pages
        assert "$skiptoken=" in page["@odata.nextLink"]
        url = page["@odata.nextLink"]


def test_folders_messages_and_value(box: Box) -> None:
    folders = box.call("GET", "/me/mailFolders").json()["value"]
    assert {f["displayName"] for f in folders} >= {
        "Inbox",
        "Sent Items",
        "Drafts",
        "Deleted Items",
        "Archive",
    }
    inbox = box.call("GET", "/me/mailFolders/inbox").json()
    assert inbox["id"] == box.call("GET", "/me/mailFolders/Inbox").json()["id"]
    assert box.call("GET", f"/me/mailFolders/{inbox['id']}").json()["displayName"] == "Inbox"

    first = _mail("carla@client.test", box.address, "Hi")
    arrived = box.graph.arrive(box.address, first.as_bytes())
    got = box.call("GET", f"/me/messages/{arrived.immutable_id}", IMMUTABLE).json()
    assert got["id"] == arrived.immutable_id and got["parentFolderId"] == inbox["id"]
    assert got["internetMessageId"] == first["Message-ID"] and got["subject"] == "Hi"
    assert got["from"]["emailAddress"]["address"] == "carla@client.test"
    assert got["toRecipients"][0]["emailAddress"]["address"] == box.address
    assert got["isDraft"] is False and got["hasAttachments"] is False
    assert box.call("GET", f"/me/messages/{arrived.immutable_id}").json()["id"] == arrived.rest_id

    raw = box.call("GET", f"/me/messages/{arrived.rest_id}/$value")
    assert raw.status_code == 200 and raw.headers["Content-Type"].startswith("text/plain")
    assert raw.content == first.as_bytes()

    found = box.call(
        "GET",
        "/me/mailFolders/inbox/messages",
        params={"$filter": f"internetMessageId eq '{first['Message-ID']}'", "$select": "id,subject"},
    ).json()["value"]
    assert [m["id"] for m in found] == [arrived.rest_id] and "from" not in found[0]

    missing = box.call("GET", "/me/messages/AAMkAGnothere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"
    bad = box.call("GET", "/me/nothing")
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BadRequest"
    unauthorized = requests.get(
        f"{box.base}/v1.0/me/messages", headers={"Authorization": "Bearer x"}, verify=box.verify, timeout=10
    )
    assert unauthorized.status_code == 401
    assert unauthorized.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_list_pages_and_back_import_filter(box: Box) -> None:
    old = datetime.now(UTC) - timedelta(days=30)
    for index in range(5):
        box.graph.arrive(
            box.address, _mail("a@client.test", box.address, f"old {index}").as_bytes(), received=old
        )
    for index in range(3):
        box.graph.arrive(box.address, _mail("a@client.test", box.address, f"new {index}").as_bytes())
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    recent = box.call(
        "GET", "/me/mailFolders/inbox/messages", params={"$filter": f"receivedDateTime ge {since}"}
    ).json()
    assert sorted(m["subject"] for m in recent["value"]) == ["new 0", "new 1", "new 2"]
    seen: list[str] = []
    url = f"{box.base}/v1.0/me/mailFolders/inbox/messages?$top=3"
    while url:
        page = box.call("GET", url).json()
        seen.extend(m["id"] for m in page["value"])
        url = page.get("@odata.nextLink", "")
    assert len(seen) == len(set(seen)) == 8


def test_delta_initial_round_then_changes_and_removals(box: Box) -> None:
    graph = box.graph
    kept = [
        graph.arrive(box.address, _mail("a@client.test", box.address, f"m{i}").as_bytes()) for i in range(5)
    ]
    items, delta_link, pages = _delta_round(
        box,
        "/me/mailFolders/inbox/messages/delta?$select=subject,internetMessageId",
        {**IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=2'},
    )
    assert pages == 3
    assert sorted(i["id"] for i in items) == sorted(m.immutable_id for m in kept)
    assert all("subject" in i and "toRecipients" not in i for i in items)

    newcomer = graph.arrive(box.address, _mail("b@client.test", box.address, "new").as_bytes())
    graph.move_in_client(box.address, kept[0].immutable_id, "archive")
    graph.delete_in_client(box.address, kept[1].immutable_id)
    read = box.call("PATCH", f"/me/messages/{kept[2].immutable_id}", json={"isRead": True})
    assert read.status_code == 200 and read.json()["isRead"] is True

    changes, delta_link, _ = _delta_round(box, delta_link, IMMUTABLE)
    by_id = {c["id"]: c for c in changes}
    assert by_id[newcomer.immutable_id]["subject"] == "new"  # the $select of the first round holds
    assert by_id[kept[0].immutable_id]["@removed"] == {"reason": "changed"}  # moved out, still exists
    assert by_id[kept[1].immutable_id]["@removed"] == {"reason": "deleted"}
    assert by_id[kept[2].immutable_id]["subject"] == "m2"
    assert set(by_id) == {
        newcomer.immutable_id,
        kept[0].immutable_id,
        kept[1].immutable_id,
        kept[2].immutable_id,
    }

    nothing, delta_link, _ = _delta_round(box, delta_link, IMMUTABLE)
    assert nothing == []
    archived, _, _ = _delta_round(box, "/me/mailFolders/archive/messages/delta", IMMUTABLE)
    assert [a["id"] for a in archived] == [kept[0].immutable_id]


def test_delta_with_rest_ids_reports_the_old_id_of_a_moved_message(box: Box) -> None:
    message = box.graph.arrive(box.address, _mail("a@client.test", box.address, "x").as_bytes())
    items, delta_link, _ = _delta_round(box, "/me/mailFolders('inbox')/messages/delta")
    assert [i["id"] for i in items] == [message.rest_id]
    old_rest = message.rest_id
    moved = box.call("POST", f"/me/messages/{old_rest}/move", json={"destinationId": "deleteditems"})
    assert moved.status_code == 201 and moved.json()["id"] != old_rest  # default ids change on a move
    assert box.call("GET", f"/me/messages/{old_rest}").status_code == 404
    changes, _, _ = _delta_round(box, delta_link)
    assert changes == [
        {"@odata.type": "#microsoft.graph.message", "id": old_rest, "@removed": {"reason": "changed"}}
    ]


def test_delta_since_a_date_and_expired_tokens(box: Box) -> None:
    graph = box.graph
    graph.arrive(
        box.address,
        _mail("a@client.test", box.address, "old").as_bytes(),
        received=datetime(2020, 1, 1, tzinfo=UTC),
    )
    graph.arrive(box.address, _mail("a@client.test", box.address, "new").as_bytes())
    items, delta_link, _ = _delta_round(
        box, "/me/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge 2024-01-01T00:00:00Z"
    )
    assert [i["subject"] for i in items] == ["new"]

    assert graph.expire_delta(box.address, "inbox", how="410") == 1
    gone = box.call("GET", delta_link)
    assert gone.status_code == 410
    location = gone.headers["Location"]
    assert "/messages/delta" in location and "receivedDateTime" in location
    again, delta_link, _ = _delta_round(box, location)  # the Location starts a full round over
    assert [i["subject"] for i in again] == ["new"]

    graph.expire_delta(box.address, "inbox", how="SyncStateNotFound", status=404)
    missing = box.call("GET", delta_link)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "SyncStateNotFound"
    _, delta_link, _ = _delta_round(box, "/me/mailFolders/inbox/messages/delta")
    graph.expire_delta(box.address, "inbox", how="syncStateNotFound")
    bad = box.call("GET", delta_link)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "syncStateNotFound"


def test_draft_attach_send_lands_once_in_sentitems_with_the_same_id(box: Box) -> None:
    events: list[tuple[str, str, str, str]] = []

    def listener(address: str, folder: str, message_id: str, change: str) -> None:
        events.append((address, folder, message_id, change))

    box.graph.listeners.append(listener)
    try:
        draft = box.call(
            "POST",
            "/me/messages",
            IMMUTABLE,
            json={
                "subject": "Offer",
                "body": {"contentType": "HTML", "content": "<p>Our offer</p>"},
                "toRecipients": [{"emailAddress": {"address": "carla@client.test", "name": "Carla"}}],
                "ccRecipients": [{"emailAddress": {"address": "dan@client.test"}}],
            },
        )
        assert draft.status_code == 201, draft.text
        created = draft.json()
        draft_id = created["id"]
        assert created["isDraft"] is True and created["internetMessageId"].startswith("<")
        attached = box.call(
            "POST",
            f"/me/messages/{draft_id}/attachments",
            json={
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "offer.pdf",
                "contentType": "application/pdf",
                "contentBytes": base64.b64encode(b"%PDF-1.4 offer").decode(),
            },
        )
        assert attached.status_code == 201 and attached.json()["size"] == len(b"%PDF-1.4 offer")
        too_big = box.call(
            "POST",
            f"/me/messages/{draft_id}/attachments",
            json={
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "big.bin",
                "contentBytes": base64.b64encode(b"x" * (3 * 1024 * 1024)).decode(),
            },
        )
        assert too_big.status_code == 413 and "error" in too_big.json()
        patched = box.call("PATCH", f"/me/messages/{draft_id}", IMMUTABLE, json={"subject": "Our offer"})
        assert patched.json()["subject"] == "Our offer"

        sent = box.call("POST", f"/me/messages/{draft_id}/send")
        assert sent.status_code == 202 and sent.content == b""
        after = box.call("GET", f"/me/messages/{draft_id}", IMMUTABLE).json()
        assert after["id"] == draft_id and after["isDraft"] is False and after["hasAttachments"] is True
        assert after["parentFolderId"] == box.call("GET", "/me/mailFolders/sentitems").json()["id"]
        in_sent = box.graph.messages_of(box.address, "sentitems")
        assert [m["id"] for m in in_sent] == [draft_id]
        assert box.graph.messages_of(box.address, "drafts") == []

        mime = email.message_from_bytes(
            box.call("GET", f"/me/messages/{draft_id}/$value").content, policy=email.policy.default
        )
        assert mime["Message-ID"] == created["internetMessageId"]
        assert box.address in str(mime["From"]) and mime["Subject"] == "Our offer"
        assert [p.get_filename() for p in mime.iter_attachments()] == ["offer.pdf"]
        resend = box.call("POST", f"/me/messages/{draft_id}/send")
        assert resend.status_code == 400
    finally:
        box.graph.listeners.remove(listener)
    mine = [(folder, change) for address, folder, mid, change in events if mid == draft_id]
    assert (
        mine[0] == ("drafts", "created")
        and ("sentitems", "created") in mine
        and ("drafts", "deleted") in mine
    )


def test_send_mail_saves_one_copy_unless_told_not_to(box: Box) -> None:
    message = {
        "subject": "Quick note",
        "body": {"contentType": "Text", "content": "hi"},
        "toRecipients": [{"emailAddress": {"address": "carla@client.test"}}],
    }
    assert box.call("POST", "/me/sendMail", json={"message": message}).status_code == 202
    assert (
        box.call("POST", "/me/sendMail", json={"message": message, "saveToSentItems": False}).status_code
        == 202
    )
    assert [m["subject"] for m in box.graph.messages_of(box.address, "sentitems")] == ["Quick note"]
    assert len(box.graph.mailbox(box.address).outbox) == 2


def test_create_reply_threads_and_sets_in_reply_to(box: Box) -> None:
    first = _mail("carla@client.test", box.address, "Question")
    parent = box.graph.arrive(box.address, first.as_bytes())
    reply = box.call(
        "POST", f"/me/messages/{parent.immutable_id}/createReply", IMMUTABLE, json={"comment": "Answer"}
    )
    assert reply.status_code == 201, reply.text
    draft = reply.json()
    assert draft["conversationId"] == parent.conversation_id and draft["isDraft"] is True
    assert draft["toRecipients"][0]["emailAddress"]["address"] == "carla@client.test"
    assert draft["subject"] == "RE: Question"
    assert box.call("POST", f"/me/messages/{draft['id']}/send").status_code == 202
    mime = email.message_from_bytes(
        box.call("GET", f"/me/messages/{draft['id']}/$value").content, policy=email.policy.default
    )
    assert mime["In-Reply-To"] == first["Message-ID"] and first["Message-ID"] in str(mime["References"])
    later = _mail("carla@client.test", box.address, "RE: RE: Question", reply_to=mime)  # type: ignore[arg-type]
    assert box.graph.arrive(box.address, later.as_bytes()).conversation_id == parent.conversation_id


def test_move_keeps_the_immutable_id(box: Box) -> None:
    message = box.graph.arrive(box.address, _mail("a@client.test", box.address, "keep").as_bytes())
    moved = box.call(
        "POST", f"/me/messages/{message.immutable_id}/move", IMMUTABLE, json={"destinationId": "archive"}
    )
    assert moved.status_code == 201 and moved.json()["id"] == message.immutable_id
    assert moved.json()["parentFolderId"] == box.call("GET", "/me/mailFolders/archive").json()["id"]
    assert (
        box.call("GET", f"/me/messages/{message.immutable_id}", IMMUTABLE).json()["id"]
        == message.immutable_id
    )
    assert box.call("DELETE", f"/me/messages/{message.immutable_id}").status_code == 204
    assert box.call("GET", f"/me/messages/{message.immutable_id}").status_code == 404


def test_batch_answers_each_request_with_a_throttled_one_and_value_in_base64(box: Box) -> None:
    raw = _mail("a@client.test", box.address, "batched").as_bytes()
    message = box.graph.arrive(box.address, raw)
    box.graph.throttle(box.address, 1, retry_after=7, kind="messages.get")
    answer = box.call(
        "POST",
        "/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "GET",
                    "url": f"/me/messages/{message.immutable_id}",
                    "headers": IMMUTABLE,
                },
                {"id": "2", "method": "GET", "url": f"/me/messages/{message.immutable_id}/$value"},
                {"id": "3", "method": "GET", "url": "/me/mailFolders/inbox"},
                {
                    "id": "4",
                    "method": "GET",
                    "url": f"me/messages/{message.immutable_id}",
                    "headers": IMMUTABLE,
                },
                {
                    "id": "5",
                    "method": "PATCH",
                    "url": f"/me/messages/{message.immutable_id}",
                    "headers": {"Content-Type": "application/json"},
                    "body": {"isRead": True},
                },
            ]
        },
    )
    assert answer.status_code == 200, answer.text
    responses = {r["id"]: r for r in answer.json()["responses"]}
    assert responses["1"]["status"] == 429 and responses["1"]["headers"]["Retry-After"] == "7"
    assert responses["1"]["body"]["error"]["code"] == "ApplicationThrottled"
    assert responses["2"]["status"] == 200 and base64.b64decode(responses["2"]["body"]) == raw
    assert responses["3"]["body"]["displayName"] == "Inbox"
    assert responses["4"]["status"] == 200 and responses["4"]["body"]["id"] == message.immutable_id
    assert responses["5"]["body"]["isRead"] is True
    assert box.graph.mailbox(box.address).batches[-1] == 5


def test_batch_of_21_is_refused_and_top_level_throttling(box: Box) -> None:
    requests_ = [{"id": str(i), "method": "GET", "url": "/me/mailFolders/inbox"} for i in range(21)]
    refused = box.call("POST", "/$batch", json={"requests": requests_})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "BadRequest"
    assert box.call("POST", "/$batch", json={"requests": requests_[:20]}).status_code == 200

    box.graph.throttle(box.address, 2, retry_after=3, code="TooManyRequests")
    first = box.call("GET", "/me/mailFolders/inbox")
    assert first.status_code == 429 and first.headers["Retry-After"] == "3"
    assert first.json()["error"]["code"] == "TooManyRequests"
    assert box.call("GET", "/me/mailFolders").status_code == 429
    assert box.call("GET", "/me/mailFolders").status_code == 200


def test_concurrent_requests_are_counted(box: Box) -> None:
    box.graph.slow_down(box.address, 0.3)
    try:
        threads = [threading.Thread(target=box.call, args=("GET", "/me/mailFolders/inbox")) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        box.graph.slow_down(box.address, 0)
    assert box.graph.max_concurrency(box.address) == 3

    box.graph.limit_concurrency(box.address, 2)
    box.graph.slow_down(box.address, 0.3)
    answers: list[int] = []
    try:
        threads = [
            threading.Thread(target=lambda: answers.append(box.call("GET", "/me/mailFolders").status_code))
            for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        box.graph.slow_down(box.address, 0)
        box.graph.limit_concurrency(box.address, None)
    assert sorted(answers) == [200, 200, 429]


def test_users_path_dependencies_in_a_batch_and_wrong_methods(box: Box) -> None:
    assert box.call("GET", f"/users/{box.address}/mailFolders/inbox").status_code == 200
    other = box.call("GET", "/users/someone-else@contoso.test/mailFolders/inbox")
    assert other.status_code == 403 and other.json()["error"]["code"] == "ErrorAccessDenied"
    assert box.call("DELETE", "/me/mailFolders/inbox").status_code == 405
    answer = box.call(
        "POST",
        "/$batch",
        json={
            "requests": [
                {"id": "a", "method": "GET", "url": "/me/messages/AAMkAGnothere"},
                {"id": "b", "dependsOn": ["a"], "method": "GET", "url": "/me/mailFolders/inbox"},
                {"id": "c", "method": "GET", "url": "https://graph.microsoft.com/v1.0/me"},
                {"id": "d", "method": "GET", "url": "/me"},
            ]
        },
    ).json()
    statuses = {r["id"]: r["status"] for r in answer["responses"]}
    assert statuses == {"a": 404, "b": 424, "c": 400, "d": 200}
    duplicate = box.call(
        "POST",
        "/$batch",
        json={
            "requests": [
                {"id": "1", "method": "GET", "url": "/me"},
                {"id": "1", "method": "GET", "url": "/me"},
            ]
        },
    )
    assert duplicate.status_code == 400


def test_http_controls_for_another_process(emulators: Emulators, box: Box) -> None:
    control = f"{box.base}/_emulator/graph"
    raw = _mail("a@client.test", box.address, "demo").as_string()
    arrived = requests.post(
        f"{control}/arrive", json={"address": box.address, "raw": raw}, verify=box.verify, timeout=10
    )
    assert arrived.status_code == 200, arrived.text
    moved = requests.post(
        f"{control}/move_in_client",
        json={"address": box.address, "id": arrived.json()["id"], "folder": "archive"},
        verify=box.verify,
        timeout=10,
    )
    assert moved.json()["folder"] == "archive"
    listed = requests.get(
        f"{control}/messages", params={"address": box.address}, verify=box.verify, timeout=10
    )
    assert [m["subject"] for m in listed.json()["messages"]] == ["demo"]
    assert (
        requests.post(
            f"{control}/expire_delta",
            json={"address": box.address, "folder": "inbox", "how": "410"},
            verify=box.verify,
            timeout=10,
        ).status_code
        == 200
    )
    subscriptions = box.call("GET", "/subscriptions")
    assert subscriptions.status_code == 501 or emulators.microsoft.subscriptions is not None


# ---------------------------------------------------------------------------- user folders


def _make_folder(box: Box, name: str, parent: str | None = None) -> dict[str, Any]:
    path = "/me/mailFolders" if parent is None else f"/me/mailFolders/{parent}/childFolders"
    made = box.call("POST", path, json={"displayName": name})
    assert made.status_code == 201, made.text
    folder: dict[str, Any] = made.json()
    return folder


def test_user_folders_top_level_and_nested(box: Box) -> None:
    root = box.call("GET", "/me/mailFolders/msgfolderroot").json()
    inbox = box.call("GET", "/me/mailFolders/inbox").json()
    assert inbox["parentFolderId"] == root["id"] and inbox["childFolderCount"] == 0

    clients = _make_folder(box, "Clients")
    assert clients["id"].startswith("AAMkAGFolder") and clients["id"] != inbox["id"]
    assert {k: v for k, v in clients.items() if k not in ("id", "@odata.context")} == {
        "displayName": "Clients",
        "parentFolderId": root["id"],
        "childFolderCount": 0,
        "unreadItemCount": 0,
        "totalItemCount": 0,
        "sizeInBytes": 0,
        "isHidden": False,
    }
    acme = _make_folder(box, "Acme", clients["id"])
    assert acme["parentFolderId"] == clients["id"] and acme["displayName"] == "Acme"
    assert box.call("GET", f"/me/mailFolders('{acme['id']}')").json()["id"] == acme["id"]
    assert box.call("GET", f"/me/mailFolders/{clients['id']}").json()["childFolderCount"] == 1
    assert box.call("GET", "/me/mailFolders/msgfolderroot").json()["childFolderCount"] == 6
    # the same name under another parent is fine, also under a well-known folder
    under_inbox = _make_folder(box, "acme", "inbox")
    assert under_inbox["parentFolderId"] == inbox["id"]
    assert box.call("GET", "/me/mailFolders/inbox").json()["childFolderCount"] == 1

    for parent, name in ((None, "clients"), (clients["id"], "ACME"), (None, "Inbox"), ("inbox", "Acme")):
        path = "/me/mailFolders" if parent is None else f"/me/mailFolders/{parent}/childFolders"
        twice = box.call("POST", path, json={"displayName": name})
        assert twice.status_code == 409, (parent, name, twice.text)
        assert twice.json()["error"]["code"] == "ErrorFolderExists"
    for body in ({}, {"displayName": ""}, {"displayName": "   "}, {"displayName": 7}):
        nameless = box.call("POST", "/me/mailFolders", json=body)
        assert nameless.status_code == 400 and nameless.json()["error"]["code"] == "ErrorInvalidRequest"

    for missing in (
        box.call("GET", "/me/mailFolders/AAMkAGFolderNotThere"),
        box.call("GET", f"/me/mailFolders/{acme['id'].lower()}"),  # ids are case-sensitive
        box.call("POST", "/me/mailFolders/AAMkAGFolderNotThere/childFolders", json={"displayName": "x"}),
        box.call("GET", "/me/mailFolders/AAMkAGFolderNotThere/childFolders"),
        box.call("GET", "/me/mailFolders/AAMkAGFolderNotThere/messages/delta"),
    ):
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "ErrorItemNotFound"
    assert box.call("DELETE", f"/me/mailFolders/{acme['id']}").status_code == 405

    # the Python controls name folders by id, well-known name or display path
    graph = box.graph
    assert graph.create_folder(box.address, "Beta", parent="Clients") != acme["id"]
    deep = graph.create_folder(box.address, "2024", parent="Clients/Acme")
    paths = {f["path"]: f["id"] for f in graph.folders_of(box.address)}
    assert paths["Clients/Acme/2024"] == deep and paths["Inbox/acme"] == under_inbox["id"]
    assert paths["Clients/Acme"] == acme["id"] and paths["Clients/Beta"]
    with pytest.raises(ValueError):
        graph.create_folder(box.address, "beta", parent=clients["id"])  # FolderExists is a ValueError
    with pytest.raises(KeyError, match="Clients/Acme"):  # says what exists
        graph.create_folder(box.address, "x", parent="Clients/Nope")


def test_listing_folders_pages_filters_and_selects(box: Box) -> None:
    names = ["Clients", "Bob's Clients", "Sales and Marketing", "Projects", "Receipts", "Travel"]
    made = {name: _make_folder(box, name)["id"] for name in names}

    first = box.call("GET", "/me/mailFolders").json()
    assert len(first["value"]) == 10 and "$skip=10" in first["@odata.nextLink"]  # 10 a page by default
    rest = box.call("GET", first["@odata.nextLink"]).json()
    listed = [f["displayName"] for f in first["value"] + rest["value"]]
    assert "@odata.nextLink" not in rest and len(listed) == len(set(listed)) == 11
    assert listed[:5] == ["Inbox", "Sent Items", "Drafts", "Deleted Items", "Archive"]

    def named(query: str, parent: str | None = None) -> list[str]:
        path = "/me/mailFolders" if parent is None else f"/me/mailFolders/{parent}/childFolders"
        answer = box.call("GET", path, params={"$filter": query})
        assert answer.status_code == 200, answer.text
        return [f["id"] for f in answer.json()["value"]]

    assert named("displayName eq 'Bob''s Clients'") == [made["Bob's Clients"]]
    assert named("displayName eq 'bob''s clients'") == [made["Bob's Clients"]]  # Exchange ignores case
    assert named("displayName eq 'Sales and Marketing'") == [made["Sales and Marketing"]]
    assert named("displayName eq 'Inbox'") == [box.call("GET", "/me/mailFolders/inbox").json()["id"]]
    assert named("displayName eq 'Bob'") == []
    assert len(named("displayName ne 'Clients'")) == 10
    wrong = box.call("GET", "/me/mailFolders", params={"$filter": "totalItemCount eq 0"})
    assert wrong.status_code == 400 and wrong.json()["error"]["code"] == "ErrorInvalidUrlQueryFilter"

    selected = box.call("GET", "/me/mailFolders", params={"$top": "2", "$select": "displayName"}).json()
    assert [set(f) for f in selected["value"]] == [{"id", "displayName"}] * 2
    assert "$top=2" in selected["@odata.nextLink"] and "$select=displayName" in selected["@odata.nextLink"]

    for child in ("Acme", "O'Brien & Sons", "Zeta"):
        _make_folder(box, child, made["Clients"])
    children = box.call("GET", f"/me/mailFolders/{made['Clients']}/childFolders").json()
    assert [f["displayName"] for f in children["value"]] == ["Acme", "O'Brien & Sons", "Zeta"]
    assert all(f["parentFolderId"] == made["Clients"] for f in children["value"])
    acme = named("displayName eq 'acme'", made["Clients"])
    assert len(acme) == 1 and named("displayName eq 'O''Brien & Sons'", made["Clients"]) != []
    paged = box.call("GET", f"/me/mailFolders('{made['Clients']}')/childFolders?$top=2").json()
    assert len(paged["value"]) == 2
    last = box.call("GET", paged["@odata.nextLink"]).json()
    assert [f["displayName"] for f in last["value"]] == ["Zeta"] and "@odata.nextLink" not in last
    assert box.call("GET", f"/me/mailFolders/{made['Projects']}/childFolders").json()["value"] == []


def test_messages_in_a_user_folder(box: Box) -> None:
    graph = box.graph
    clients = graph.create_folder(box.address, "Clients")
    acme = graph.create_folder(box.address, "Acme", parent=clients)
    filed = graph.arrive(box.address, _mail("a@acme.test", box.address, "filed").as_bytes(), "Clients/Acme")
    assert filed.folder == acme
    got = box.call("GET", f"/me/messages/{filed.immutable_id}").json()
    assert got["parentFolderId"] == acme
    listed = box.call("GET", f"/me/mailFolders('{acme}')/messages", IMMUTABLE).json()["value"]
    assert [m["id"] for m in listed] == [filed.immutable_id]
    counts = box.call("GET", f"/me/mailFolders/{acme}").json()
    assert counts["totalItemCount"] == 1 and counts["unreadItemCount"] == 1
    assert box.call("GET", "/me/mailFolders/inbox/messages").json()["value"] == []

    other = graph.arrive(box.address, _mail("a@acme.test", box.address, "to file").as_bytes())
    moved = box.call(
        "POST", f"/me/messages/{other.immutable_id}/move", IMMUTABLE, json={"destinationId": acme}
    )
    assert moved.status_code == 201 and moved.json()["parentFolderId"] == acme
    draft = box.call("POST", f"/me/mailFolders/{acme}/messages", IMMUTABLE, json={"subject": "note"})
    assert draft.status_code == 201 and draft.json()["parentFolderId"] == acme
    by_path = [m["subject"] for m in graph.messages_of(box.address, "Clients/Acme")]
    assert sorted(by_path) == ["filed", "note", "to file"]
    assert graph.messages_of(box.address, acme) == graph.messages_of(box.address, "clients/acme")

    graph.move_in_client(box.address, filed.immutable_id, "Clients")
    assert [m["subject"] for m in graph.messages_of(box.address, clients)] == ["filed"]
    with pytest.raises(KeyError, match="Clients/Acme"):
        graph.arrive(box.address, _mail("a@acme.test", box.address, "lost").as_bytes(), "Clients/Nope")
    bad = box.call("POST", f"/me/messages/{other.immutable_id}/move", json={"destinationId": "Clients"})
    assert bad.status_code == 400  # Graph takes an id or a well-known name, not a display name


def test_delta_on_a_user_folder_sees_arrivals_and_moves_out(box: Box) -> None:
    graph = box.graph
    acme = graph.create_folder(box.address, "Acme", parent=graph.create_folder(box.address, "Clients"))
    first = graph.arrive(box.address, _mail("a@acme.test", box.address, "one").as_bytes(), acme)
    graph.arrive(box.address, _mail("a@acme.test", box.address, "elsewhere").as_bytes())
    items, delta_link, _ = _delta_round(box, f"/me/mailFolders('{acme}')/messages/delta", IMMUTABLE)
    assert [i["id"] for i in items] == [first.immutable_id]
    assert f"mailFolders('{acme}')/messages/delta" in delta_link

    second = graph.arrive(box.address, _mail("a@acme.test", box.address, "two").as_bytes(), "Clients/Acme")
    changes, delta_link, _ = _delta_round(box, delta_link, IMMUTABLE)
    assert [(c["id"], c["subject"]) for c in changes] == [(second.immutable_id, "two")]

    graph.move_in_client(box.address, first.immutable_id, "inbox")
    changes, delta_link, _ = _delta_round(box, delta_link, IMMUTABLE)
    assert changes == [
        {
            "@odata.type": "#microsoft.graph.message",
            "id": first.immutable_id,
            "@removed": {"reason": "changed"},
        }
    ]

    assert graph.expire_delta(box.address, "Clients/Acme", how="410") == 3  # each round's deltaLink
    gone = box.call("GET", delta_link)
    assert gone.status_code == 410 and f"mailFolders('{acme}')/messages/delta" in gone.headers["Location"]
    again, _, _ = _delta_round(box, gone.headers["Location"], IMMUTABLE)
    assert [i["id"] for i in again] == [second.immutable_id]


def test_folder_controls_over_http(box: Box) -> None:
    control = f"{box.base}/_emulator/graph"

    def post(action: str, **data: Any) -> requests.Response:
        return requests.post(
            f"{control}/{action}", json={"address": box.address, **data}, verify=box.verify, timeout=10
        )

    made = post("create_folder", displayName="Clients")
    assert made.status_code == 200 and made.json()["path"] == "Clients"
    child = post("create_folder", displayName="Acme", parent="Clients")
    assert child.json()["path"] == "Clients/Acme"
    assert post("create_folder", displayName="acme", parent="Clients").status_code == 409
    assert post("create_folder", displayName="", parent="Clients").status_code == 400
    assert post("create_folder", displayName="x", parent="Nope").status_code == 404
    raw = _mail("a@acme.test", box.address, "filed").as_string()
    arrived = post("arrive", raw=raw, folder="Clients/Acme")
    assert arrived.json()["folder"] == child.json()["id"]
    folders = requests.get(
        f"{control}/folders", params={"address": box.address}, verify=box.verify, timeout=10
    ).json()["folders"]
    assert [f["path"] for f in folders][-2:] == ["Clients", "Clients/Acme"]


class _Webhook:
    """A notification URL on loopback: answers Graph's validation, records what is POSTed."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/notify"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        if "validationToken" in request.args:
            answer = Response(request.args["validationToken"], content_type="text/plain")
        else:
            self.received.extend(json.loads(request.get_data())["value"])
            answer = Response(status=202)
        return answer(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


def test_a_subscription_on_a_user_folder_gets_its_changes_only(emulators: Emulators, box: Box) -> None:
    subs = emulators.graph_subscriptions
    assert subs is not None
    graph = box.graph
    acme = graph.create_folder(box.address, "Acme", parent=graph.create_folder(box.address, "Clients"))
    inbox_id = box.call("GET", "/me/mailFolders/inbox").json()["id"]
    hooks = {name: _Webhook() for name in ("acme", "acme-path", "inbox", "inbox-by-id")}
    expires = (datetime.now(UTC) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def subscribe(resource: str, hook: str) -> requests.Response:
        return box.call(
            "POST",
            "/subscriptions",
            json={
                "changeType": "created",
                "notificationUrl": hooks[hook].url,
                "resource": resource,
                "expirationDateTime": expires,
                "clientState": hook,
            },
        )

    try:
        for resource, hook in (
            (f"/me/mailFolders('{acme}')/messages", "acme"),
            (f"me/mailFolders/{acme}/messages", "acme-path"),
            ("/me/mailFolders('Inbox')/messages", "inbox"),
            (f"/me/mailFolders('{inbox_id}')/messages", "inbox-by-id"),
        ):
            made = subscribe(resource, hook)
            assert made.status_code == 201, made.text
            assert made.json()["resource"] == resource
        # one normalisation: a well-known folder by its name, whichever form; a user folder by its id
        by_state = {s.client_state: s.folder for s in subs.of(box.address)}
        assert by_state == {"acme": acme, "acme-path": acme, "inbox": "inbox", "inbox-by-id": "inbox"}
        for wrong in (
            "/me/mailFolders('Acme')/messages",  # a display name is not an id (Graph: 400)
            f"/me/mailFolders('{acme.lower()}')/messages",  # ids are case-sensitive
            "/me/mailFolders('AAMkAGFolderNotThere')/messages",
        ):
            refused = subscribe(wrong, "acme")
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "ExtensionError"

        filed = graph.arrive(
            box.address, _mail("a@acme.test", box.address, "filed").as_bytes(), "Clients/Acme"
        )
        subs.wait_idle()
        for hook in ("acme", "acme-path"):
            assert [(i["resourceData"]["id"], i["clientState"]) for i in hooks[hook].received] == [
                (filed.immutable_id, hook)
            ]
        assert hooks["inbox"].received == [] and hooks["inbox-by-id"].received == []

        plain = graph.arrive(box.address, _mail("a@client.test", box.address, "inbox").as_bytes())
        subs.wait_idle()
        for hook in ("inbox", "inbox-by-id"):
            assert [i["resourceData"]["id"] for i in hooks[hook].received] == [plain.immutable_id]
        assert len(hooks["acme"].received) == 1
    finally:
        for found in subs.of(box.address):
            subs.expire(found.id)
        for webhook in hooks.values():
            webhook.close()


SIZE = "singleValueExtendedProperties($filter=id eq 'Long 0x0E08')"


def test_expand_gives_each_message_its_size_on_delta_list_and_get(box: Box) -> None:
    """`$expand=singleValueExtendedProperties($filter=id eq 'Long 0x0E08')` (PidTagMessageSizeExtended)
    answers the size of each message as Graph does: the id with its tag normalised, the value a
    string; the delta's next and delta links (and a 410's Location) keep the expansion; an unknown
    navigation property is refused with a 400."""
    graph = box.graph
    small = graph.arrive(box.address, _mail("a@client.test", box.address, "small").as_bytes())
    big = _mail("a@client.test", box.address, "big")
    big.add_attachment(b"x" * 50_000, maintype="application", subtype="octet-stream", filename="x.bin")
    large = graph.arrive(box.address, big.as_bytes())

    def size(message: Any) -> list[dict[str, str]]:
        return [{"id": "Long 0xe08", "value": str(len(graph.raw_of(box.address, message.immutable_id)))}]

    headers = {**IMMUTABLE, "Prefer": 'IdType="ImmutableId", odata.maxpagesize=1'}
    items, delta_link, pages = _delta_round(
        box, f"/me/mailFolders/inbox/messages/delta?$select=id,conversationId&$expand={SIZE}", headers
    )
    assert pages == 2  # the nextLink carried the expansion
    by_id = {i["id"]: i for i in items}
    assert by_id[small.immutable_id]["singleValueExtendedProperties"] == size(small)
    assert by_id[large.immutable_id]["singleValueExtendedProperties"] == size(large)
    assert int(size(large)[0]["value"]) > 50_000 > int(size(small)[0]["value"])
    newcomer = graph.arrive(box.address, _mail("b@client.test", box.address, "new").as_bytes())
    changes, _, _ = _delta_round(box, delta_link, IMMUTABLE)  # so did the deltaLink
    assert [(c["id"], c["singleValueExtendedProperties"]) for c in changes] == [
        (newcomer.immutable_id, size(newcomer))
    ]

    listed = box.call("GET", f"/me/mailFolders/inbox/messages?$select=subject&$expand={SIZE}", IMMUTABLE)
    assert listed.status_code == 200, listed.text
    assert {m["id"]: m["singleValueExtendedProperties"] for m in listed.json()["value"]} == {
        m.immutable_id: size(m) for m in (small, large, newcomer)
    }
    both = "singleValueExtendedProperties($filter=id eq 'Integer 0x0E08' or id eq 'String 0x0037')"
    got = box.call("GET", f"/me/messages/{small.immutable_id}?$expand={both}", IMMUTABLE).json()
    # PidTagMessageSize (PT_LONG) too; a property the message does not have is left out
    assert got["singleValueExtendedProperties"] == [{"id": "Integer 0xe08", "value": size(small)[0]["value"]}]
    plain = box.call("GET", f"/me/messages/{small.immutable_id}", IMMUTABLE).json()
    assert "singleValueExtendedProperties" not in plain
    none = box.call("GET", f"/me/messages/{small.immutable_id}?$expand={both.replace('0x0E08', '0x1234')}")
    assert none.status_code == 200 and "singleValueExtendedProperties" not in none.json()

    for path in (
        "/me/mailFolders/inbox/messages/delta?$expand=sizes",
        "/me/mailFolders/inbox/messages?$expand=sizes",
        f"/me/messages/{small.immutable_id}?$expand=sizes",
        f"/me/messages/{small.immutable_id}?$expand=singleValueExtendedProperties($filter=value eq '1')",
    ):
        refused = box.call("GET", path)
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "BadRequest", path

    graph.expire_delta(box.address, "inbox", how="410")
    gone = box.call("GET", delta_link)
    assert gone.status_code == 410
    again, _, _ = _delta_round(box, gone.headers["Location"], IMMUTABLE)  # the Location keeps it too
    assert {i["id"]: i["singleValueExtendedProperties"] for i in again} == {
        m.immutable_id: size(m) for m in (small, large, newcomer)
    }

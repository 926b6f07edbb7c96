"""The Gmail emulator answers the real google-api-python-client, refuses what the gmail.v1
discovery document does not allow, and fails the way Gmail fails (404 history, 429)."""

from __future__ import annotations

import base64
import uuid
from email.message import EmailMessage
from typing import Any

import pytest
import requests
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest

from local.emulators.servers import Emulators


def _mail(sender: str, to: str, subject: str, reply_to: EmailMessage | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, subject
    message["Message-ID"] = f"<{uuid.uuid4().hex}@mail.test>"
    if reply_to is not None:
        message["In-Reply-To"] = reply_to["Message-ID"]
        message["References"] = reply_to["Message-ID"]
    message.set_content("hello")
    return message


@pytest.fixture
def mailbox(emulators: Emulators) -> tuple[Any, str, str]:
    address = f"box-{uuid.uuid4().hex[:8]}@gmail.test"
    token = emulators.google.issue_access_token(address)
    gmail = build(
        "gmail",
        "v1",
        credentials=Credentials(token=token),
        static_discovery=True,
        client_options={"api_endpoint": emulators.google_url + "/"},
        cache_discovery=False,
    )
    return gmail, address, token


def test_the_real_client_reads_history_messages_and_threads(
    emulators: Emulators, mailbox: tuple[Any, str, str]
) -> None:
    gmail, address, _ = mailbox
    google = emulators.google.gmail
    violations = len(google.validator.violations)
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    first = _mail("carla@client.test", address, "Hi")
    arrived = google.arrive(address, first.as_bytes())
    reply = google.send_from_client(
        address, _mail(address, "carla@client.test", "Re: Hi", reply_to=first).as_bytes()
    )
    assert reply.thread_id == arrived.thread_id  # threaded by In-Reply-To, as Gmail does

    history = (
        gmail.users()
        .history()
        .list(userId="me", startHistoryId=start, historyTypes=["messageAdded"])
        .execute()
    )
    added = [r["messagesAdded"][0]["message"]["id"] for r in history["history"]]
    assert added == [arrived.id, reply.id]
    assert int(history["historyId"]) > int(start)
    raw = gmail.users().messages().get(userId="me", id=arrived.id, format="raw").execute()
    assert base64.urlsafe_b64decode(raw["raw"]) == first.as_bytes()
    listed = gmail.users().messages().list(userId="me", labelIds=["SENT"]).execute()
    assert [m["id"] for m in listed["messages"]] == [reply.id]
    thread = gmail.users().threads().get(userId="me", id=arrived.thread_id, format="minimal").execute()
    assert {m["id"] for m in thread["messages"]} == {arrived.id, reply.id}

    gmail.users().messages().modify(userId="me", id=arrived.id, body={"removeLabelIds": ["INBOX"]}).execute()
    trashed = gmail.users().messages().trash(userId="me", id=reply.id).execute()
    assert "TRASH" in trashed["labelIds"]
    changes = (
        gmail.users().history().list(userId="me", startHistoryId=history["historyId"]).execute()["history"]
    )
    assert [("labelsRemoved" in r, "labelsAdded" in r) for r in changes] == [(True, False), (False, True)]
    sent = (
        gmail.users()
        .messages()
        .send(
            userId="me",
            body={
                "raw": base64.urlsafe_b64encode(
                    _mail(address, "carla@client.test", "Re: Hi", reply_to=first).as_bytes()
                ).decode(),
                "threadId": arrived.thread_id,
            },
        )
        .execute()
    )
    assert sent["threadId"] == arrived.thread_id and sent["labelIds"] == ["SENT"]
    watch = (
        gmail.users()
        .watch(userId="me", body={"topicName": "projects/p/topics/gmail", "labelIds": ["INBOX"]})
        .execute()
    )
    assert int(watch["expiration"]) > 0 and watch["historyId"]
    assert len(google.validator.violations) == violations


def test_requests_the_discovery_document_does_not_allow_are_refused(
    emulators: Emulators, mailbox: tuple[Any, str, str]
) -> None:
    gmail, _, token = mailbox
    google = emulators.google.gmail
    before = len(google.validator.violations)
    with pytest.raises(HttpError) as bad_type:
        gmail.users().history().list(userId="me", startHistoryId="yesterday").execute()
    assert bad_type.value.resp.status == 400
    base = emulators.google_url + "/gmail/v1/users/me"
    headers = {"Authorization": f"Bearer {token}"}
    assert (
        requests.get(f"{base}/messages", params={"colour": "blue"}, headers=headers, timeout=5).status_code
        == 400
    )
    assert (
        requests.get(
            f"{base}/messages", params={"maxResults": "many"}, headers=headers, timeout=5
        ).status_code
        == 400
    )
    assert (
        requests.get(f"{base}/messages/x1", params={"format": "pdf"}, headers=headers, timeout=5).status_code
        == 400
    )
    assert (
        requests.post(
            f"{base}/messages/send", json={"raw": "eA", "urgent": True}, headers=headers, timeout=5
        ).status_code
        == 400
    )
    assert requests.delete(f"{base}/profile", headers=headers, timeout=5).status_code == 400
    assert len(google.validator.violations) == before + 6
    assert requests.get(f"{base}/profile", timeout=5).status_code == 401  # valid shape, no token


def test_expired_history_is_404_and_throttling_is_429_with_retry_after(
    emulators: Emulators, mailbox: tuple[Any, str, str]
) -> None:
    gmail, address, token = mailbox
    google = emulators.google.gmail
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    google.arrive(address, _mail("x@y.test", address, "one").as_bytes())
    google.expire_history(address)
    with pytest.raises(HttpError) as gone:
        gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert gone.value.resp.status == 404
    google.throttle(address, requests=1, retry_after=3)
    response = requests.get(
        emulators.google_url + "/gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert response.status_code == 429 and response.headers["Retry-After"] == "3"
    assert response.json()["error"]["errors"][0]["reason"] == "rateLimitExceeded"
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == address  # one refusal only


def _batch_body(parts: list[str], boundary: str = "b0undary") -> str:
    body = ""
    for index, request_text in enumerate(parts):
        body += (
            f"--{boundary}\r\nContent-Type: application/http\r\nContent-ID: <c + {index}>\r\n\r\n"
            f"{request_text}\r\n"
        )
    return body + f"--{boundary}--\r\n"


def test_batch_calls_are_answered_one_by_one_as_direct_calls_would_be(
    emulators: Emulators, mailbox: tuple[Any, str, str]
) -> None:
    gmail, address, _ = mailbox
    google = emulators.google.gmail
    violations = len(google.validator.violations)
    first, second = (google.arrive(address, _mail("x@y.test", address, s).as_bytes()) for s in ("a", "b"))
    google.throttle(address, requests=1, retry_after=7, method="gmail.users.messages.get", skip=1)
    answers: dict[str, tuple[Any, Any]] = {}
    batch = BatchHttpRequest(
        callback=lambda rid, response, error: answers.__setitem__(rid, (response, error)),
        batch_uri=emulators.google_url + "/batch/gmail/v1",
    )
    messages = gmail.users().messages()
    batch.add(messages.get(userId="me", id=first.id, format="raw"), request_id="first")
    batch.add(messages.get(userId="me", id=second.id, format="raw"), request_id="throttled")
    batch.add(messages.get(userId="me", id=second.id, format="minimal"), request_id="second")
    batch.add(messages.get(userId="me", id="0123456789abcdef"), request_id="gone")
    batch.add(gmail.users().history().list(userId="me", startHistoryId="soon"), request_id="invalid")
    batch.execute()  # the batch itself is 200 whatever its calls answer

    assert (
        base64.urlsafe_b64decode(answers["first"][0]["raw"]) == google.mailbox(address).messages[first.id].raw
    )
    throttled = answers["throttled"][1]
    assert throttled.resp.status == 429 and throttled.resp["retry-after"] == "7"
    assert answers["second"][0]["id"] == second.id and "raw" not in answers["second"][0]
    assert answers["gone"][1].resp.status == 404
    assert answers["invalid"][1].resp.status == 400  # checked against gmail.v1 like a direct call
    assert len(google.validator.violations) == violations + 1
    box = google.mailbox(address)
    assert box.batches == [5] and box.requests.count("gmail.users.messages.get") == 4


def test_a_batch_needs_credentials_per_call_and_at_most_100_calls(
    emulators: Emulators, mailbox: tuple[Any, str, str]
) -> None:
    _, address, token = mailbox
    get = "GET /gmail/v1/users/me/profile HTTP/1.1\r\nAccept: application/json\r\n\r\n"
    url = emulators.google_url + "/batch/gmail/v1"
    headers = {"Content-Type": 'multipart/mixed; boundary="b0undary"'}
    anonymous = requests.post(url, data=_batch_body([get]), headers=headers, timeout=5)
    assert anonymous.status_code == 200 and "HTTP/1.1 401" in anonymous.text
    authorized = {**headers, "Authorization": f"Bearer {token}"}  # the outer credentials apply inside
    hundred = requests.post(url, data=_batch_body([get] * 100), headers=authorized, timeout=5)
    assert hundred.status_code == 200 and hundred.text.count("HTTP/1.1 200 OK") == 100
    assert hundred.text.count(f'"emailAddress": "{address}"') == 100
    too_many = requests.post(url, data=_batch_body([get] * 101), headers=authorized, timeout=5)
    assert too_many.status_code == 400 and "at most 100" in too_many.json()["error"]["message"]
    not_multipart = requests.post(url, data=get, headers={"Authorization": f"Bearer {token}"}, timeout=5)
    assert not_multipart.status_code == 400

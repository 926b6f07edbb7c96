"""The Gmail emulator answers the real google-api-python-client (batch requests too), refuses
what the gmail.v1 discovery document does not allow, fails the way Gmail fails (404 history,
429), and pushes a watched mailbox's changes as a Pub/Sub push subscription would."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from email.message import EmailMessage
from typing import Any

import jwt
import pytest
import requests
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError
from googleapiclient.http import BatchHttpRequest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from local.emulators.google import PUSH_SERVICE_ACCOUNT
from local.emulators.servers import Emulators
from tests.integration.helpers import wait_until


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


@pytest.fixture
def subscriber(emulators: Emulators) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A push endpoint that records what Pub/Sub POSTs to it; the emulator pushes there."""
    received: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        request = Request(environ)
        envelope = json.loads(request.get_data())
        received.append(
            {
                "authorization": request.headers.get("Authorization", ""),
                "messageId": envelope["message"]["messageId"],
                **json.loads(base64.b64decode(envelope["message"]["data"])),
            }
        )
        return Response(status=204)(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_port}/push"
    emulators.google.pubsub_endpoint = endpoint
    try:
        yield endpoint, received
    finally:
        emulators.google.pubsub_endpoint = None
        server.shutdown()
        thread.join(timeout=5)


def test_a_watched_mailbox_pushes_each_change_signed_with_faults_on_demand(
    emulators: Emulators, mailbox: tuple[Any, str, str], subscriber: tuple[str, list[dict[str, Any]]]
) -> None:
    gmail, address, _ = mailbox
    endpoint, received = subscriber
    google = emulators.google
    control = emulators.google_url + "/_emulator/gmail"

    def arrive(subject: str, labels: list[str] | None = None) -> int:
        raw = _mail("carla@client.test", address, subject).as_string()
        answer = requests.post(
            f"{control}/arrive", json={"address": address, "raw": raw, "labels": labels}, timeout=5
        )
        assert answer.status_code == 200, answer.text
        return google.gmail.mailbox(address).history_id

    arrive("before any watch")  # not watched: Pub/Sub hears nothing
    gmail.users().watch(
        userId="me", body={"topicName": "projects/p/topics/gmail", "labelIds": ["INBOX"]}
    ).execute()
    first = arrive("watched")
    wait_until(lambda: google.pushes_settled() and len(received) == 1)
    assert (received[0]["emailAddress"], received[0]["historyId"]) == (address, first)
    jwks = jwt.PyJWKClient(emulators.google_url + "/oauth2/v3/certs")
    token = received[0]["authorization"].removeprefix("Bearer ")
    claims = jwt.decode(
        token, jwks.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience=endpoint
    )
    assert claims["email"] == PUSH_SERVICE_ACCOUNT and claims["email_verified"] is True

    # the watch covers INBOX: the user's own sent mail is no change Pub/Sub hears of
    sent = _mail(address, "carla@client.test", "from the client").as_string()
    assert requests.post(f"{control}/send_from_client", json={"address": address, "raw": sent}, timeout=5).ok

    faults = {"address": address, "drop": 1, "reorder": 2, "duplicate": 1}
    assert requests.post(f"{control}/push_faults", json=faults, timeout=5).ok
    lost, held_1, held_2, later, last = (arrive(f"mail {n}") for n in range(5))
    wait_until(lambda: google.pushes_settled() and len(received) == 6)
    pushed = [(p["historyId"], p["messageId"]) for p in received[1:]]
    # dropped; two held and sent after the next one, newest first; that next one sent twice
    assert [h for h, _ in pushed] == [later, later, held_2, held_1, last]
    assert pushed[0][1] == pushed[1][1] and len({m for _, m in pushed}) == 4
    assert lost not in [h for h, _ in pushed]
    fates = [p["fate"] for p in google.pushes_of(address) if p["historyId"] == lost]
    assert fates == ["dropped"]

    listed = requests.get(f"{control}/messages", params={"address": address}, timeout=5).json()["messages"]
    assert len(listed) == 8 and listed[2]["labelIds"] == ["SENT"] and listed[2]["messageId"]
    gmail.users().stop(userId="me").execute()
    arrive("after stop")
    assert google.pushes_settled() and len(received) == 6  # nothing was queued for it

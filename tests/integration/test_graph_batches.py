"""Outlook mail is fetched in batches bounded by bytes as well as by count (SYNC-1): delta asks
for each message's size (PidTagMessageSizeExtended through `$expand`), and a delta page's
messages go to the engine at most 80 and BATCH_BYTES at a time, the rest of the page waiting in
the page token; small mail still goes 80 to a page in four $batch requests of 20. The same for a
resync's pages. Against the Graph emulator over HTTPS, with the real queue, worker and stores."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pytest

from crmsync import services
from crmsync.providers.microsoft import mail as graph_mail
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_gmail_batch import all_threads
from tests.integration.test_graph_sync import CONTACT, _graph, _setup, _sync
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

BUDGET = 1_200_000  # about two of the heavy messages below


def _heavy(address: str, subject: str) -> bytes:
    message = mail(CONTACT, [address], subject)
    message.add_attachment(
        b"%PDF-1.4 " + b"x" * 400_000, maintype="application", subtype="pdf", filename="scan.pdf"
    )
    return message.as_bytes()  # about 550 KB with the attachment in base64


def _each_once(api: Api, tenant: str, subjects: list[str]) -> bool:
    threads = all_threads(api, tenant)
    return sorted(t["subject"] for t in threads) == sorted(subjects) and all(
        t["message_count"] == 1 for t in threads
    )


def test_sizes_and_weights() -> None:
    item = {"id": "a", "singleValueExtendedProperties": [{"id": "Long 0xe08", "value": "12345"}]}
    assert graph_mail.size_of(item) == 12345
    assert graph_mail.size_of({"id": "b"}) == 0  # no size: it weighs nothing
    assert graph_mail.size_of({"singleValueExtendedProperties": [{"id": "Integer 0xe08", "value": "9"}]}) == 0
    items = [{"id": i, "size": 10} for i in "abc"]
    now, later = graph_mail.by_weight(items, budget=25)
    assert [i["id"] for i in now] == ["a", "b"] and [i["id"] for i in later] == ["c"]
    now, later = graph_mail.by_weight([{"id": "a", "size": 99}, {"id": "b", "size": 1}], budget=25)
    assert [i["id"] for i in now] == ["a"] and [i["id"] for i in later] == ["b"]  # one is never too big
    many = [{"id": str(n), "size": 1} for n in range(100)]
    assert [len(part) for part in graph_mail.by_weight(many)] == [80, 20]


@pytest.mark.rule("SYNC-1")
def test_large_outlook_mail_is_fetched_in_batches_by_weight(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph_mail, "BATCH_BYTES", BUDGET)
    address, account_id, _ = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    box = graph.mailbox(address)
    heavy = [f"Drawings {n}" for n in range(5)]
    for subject in heavy:
        graph.arrive(address, _heavy(address, subject))
    start = cursor_of(stack, account_id)
    before, deltas = len(box.batches), box.requests.count("messages.delta")
    _sync(stack, tenant, account_id)
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=60)
    wait_until(lambda: _each_once(api, tenant, heavy), timeout=30)
    assert box.batches[before:] == [2, 2, 1]  # at about 550 KB each: two, two and one
    assert box.requests.count("messages.delta") == deltas + 2  # the inbox's page read once, and sentitems
    assert graph.max_concurrency(address) <= 4


@pytest.mark.rule("SYNC-1")
def test_small_outlook_mail_still_goes_80_to_a_page(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    address, account_id, _ = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    box = graph.mailbox(address)
    subjects = [f"Question {n}" for n in range(100)]
    for subject in subjects:
        graph.arrive(address, mail(CONTACT, [address], subject).as_bytes())
    start = cursor_of(stack, account_id)
    before, deltas = len(box.batches), box.requests.count("messages.delta")
    _sync(stack, tenant, account_id)
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=60)
    wait_until(lambda: _each_once(api, tenant, subjects), timeout=30)
    # 80 then 20 per delta page, as before: four $batch requests of 20 in flight, then one
    assert box.batches[before:] == [20] * 5
    assert box.requests.count("messages.delta") == deltas + 3  # the inbox in two pages, and sentitems
    assert graph.max_concurrency(address) <= 4


@pytest.mark.rule("SYNC-1")
def test_the_rest_of_a_page_waits_in_the_page_token_and_the_cursor_moves_after_the_last(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Step by step through the source: a delta page's batches, its removals with the last one,
    the cursor each page carries, and a run stopped by its deadline inside a page (its `Resume`
    holds the rest of the page) that a later run finishes before the cursor moves."""
    monkeypatch.setattr(graph_mail, "BATCH_BYTES", BUDGET)
    address, account_id, _ = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    gone = graph.arrive(address, mail(CONTACT, [address], "Old news").as_bytes())
    _sync(stack, tenant, account_id)
    wait_until(lambda: len(all_threads(api, tenant)) == 1, timeout=30)
    heavy = [f"Plans {n}" for n in range(3)]
    for subject in heavy:
        graph.arrive(address, _heavy(address, subject))
    graph.delete_in_client(address, gone.immutable_id)

    layer = services.current()
    source = layer.mail_bundle("microsoft").source
    account = layer.account_store().get_by_id(account_id)
    assert account is not None
    cursor = cursor_of(stack, account_id)
    assert cursor is not None
    first = source.changes(account, cursor, None)
    assert len(first.items) == 2 and first.removed == []
    assert first.next_page is not None and first.next_page.startswith("held:")
    held: dict[str, Any] = json.loads(first.next_page.removeprefix("held:"))
    assert [sorted(i) for i in held["items"]] == [["conversationId", "id", "size"]]
    assert held["items"][0]["size"] > 400_000
    second = source.changes(account, cursor, first.next_page)
    assert len(second.items) == 1
    assert [(r.item_id, r.how) for r in second.removed] == [(gone.immutable_id, "deleted")]  # with the last
    assert second.next_page is not None and not second.next_page.startswith("held:")  # sentitems next
    assert second.cursor == first.cursor
    last = source.changes(account, cursor, second.next_page)
    assert last.items == [] and last.next_page is None
    assert json.loads(last.cursor or "{}").keys() == {"inbox", "sentitems"}
    assert cursor_of(stack, account_id) == cursor  # reading moves nothing

    loop = layer.mailbox_sync()
    stopped = loop.run(account, source, deadline=time.monotonic() - 1)  # out of time after one page
    assert stopped.status == "continued" and stopped.resume is not None
    assert stopped.resume.page_token.startswith("held:")
    assert cursor_of(stack, account_id) == cursor
    done = loop.run(account, source, resume=stopped.resume)
    assert done.status == "synced" and cursor_of(stack, account_id) not in (None, cursor)
    assert stopped.synced + done.synced == 3 and stopped.removed + done.removed == 1
    assert done.pages == 2  # the held rest of the inbox's page, then sentitems
    wait_until(lambda: _each_once(api, tenant, ["Old news", *heavy]), timeout=30)


@pytest.mark.rule("SYNC-1")
@pytest.mark.rule("SYNC-3")
def test_a_resync_fetches_its_pages_in_batches_by_weight(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(graph_mail, "BATCH_BYTES", BUDGET)
    address, account_id, _ = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    box = graph.mailbox(address)
    small = [f"Note {n}" for n in range(3)]
    heavy = [f"Scans {n}" for n in range(5)]
    for subject in small:
        graph.arrive(address, mail(CONTACT, [address], subject).as_bytes())
    for subject in heavy:
        graph.arrive(address, _heavy(address, subject))
    start = cursor_of(stack, account_id)
    graph.expire_delta(address, "inbox", how="410")
    before = len(box.batches)
    _sync(stack, tenant, account_id)  # 410: a resync through the state machine, a page per step
    wait_until(lambda: _each_once(api, tenant, small + heavy), timeout=60)
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=30)  # fresh delta links at the end
    # the newest first: the heavy ones two and two at a time, then the last one with the small ones
    assert box.batches[before:] == [2, 2, 4]
    assert graph.max_concurrency(address) <= 4


@pytest.mark.rule("SYNC-1")
def test_an_account_whose_delta_links_predate_sizes_gets_them_in_one_batch(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graph keeps a delta link's query as it was made: an account connected before delta asked
    for sizes gets none on its pages, so the page's sizes are read in one $batch, and the mail
    still goes in batches by weight."""
    monkeypatch.setattr(graph_mail, "BATCH_BYTES", BUDGET)
    with monkeypatch.context() as before_sizes:  # connected by a version that asked for no sizes
        start_without = graph_mail._delta_start
        before_sizes.setattr(
            graph_mail, "_delta_start", lambda *a: re.sub(r"&\$expand=[^&]*", "", start_without(*a))
        )
        address, account_id, _ = _setup(api, emulators, tenant, notifications=False)
    graph = _graph(emulators)
    box = graph.mailbox(address)
    heavy = [f"Plans {n}" for n in range(5)]
    for subject in heavy:
        graph.arrive(address, _heavy(address, subject))
    start = cursor_of(stack, account_id)
    before = len(box.batches)
    _sync(stack, tenant, account_id)
    wait_until(lambda: cursor_of(stack, account_id) != start, timeout=60)
    wait_until(lambda: _each_once(api, tenant, heavy), timeout=30)
    assert box.batches[before:] == [5, 2, 2, 1]  # the five sizes, then two, two and one

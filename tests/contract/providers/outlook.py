"""Outlook: a mailbox of the Graph emulator with the two subscriptions the connect makes (inbox,
sentitems); Graph POSTs change notifications to the service's webhook. The cursor is a JSON
object folder → deltaLink. Delta links are opaque and not ordered: "forward" is judged by where
in the mailbox's change log each link starts reading (the emulator knows, for each token it
issued). Graph has no reordering fault of its own: a held notification is lost by the emulator
and POSTed by this fixture, with the subscription's clientState, right after the next one (as
Graph's retry of a failed delivery would)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import requests

from local.emulators.faults import Throttle
from local.emulators.graph_subscriptions import GraphSubscriptions, Subscription
from tests.contract.providers import ContractMailbox, Expected, Notice
from tests.integration.helpers import wait_until
from tests.integration.redelivery import queued
from tests.integration.test_graph_sync import _graph, _setup

FOLDERS = ("inbox", "sentitems")  # what an account with no folders chosen syncs (MAIL-8)
FETCH = "messages.value"  # each message's MIME, fetched inside a $batch


def notification(
    subs: GraphSubscriptions, found: Subscription, message_id: str, client_state: str | None
) -> dict[str, Any]:
    """A change notification of `found` as Graph sends it, with a notification id of its own."""
    path = f"Users/{found.creator_id}/Messages/{message_id}"
    return {
        "id": secrets.token_urlsafe(12),
        "subscriptionId": found.id,
        "subscriptionExpirationDateTime": found.expires.isoformat(),
        "clientState": client_state,
        "changeType": "created",
        "resource": path,
        "tenantId": subs.tenant_id,
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": path, "id": message_id},
    }


def idle(subs: GraphSubscriptions) -> bool:
    """No notification waiting or being delivered."""
    try:
        subs.wait_idle(timeout=0)
    except TimeoutError:
        return False
    return True


class Outlook(ContractMailbox):
    name = "outlook"
    EMPTY_ROUND_MOVES_CURSOR = True

    def connect(self) -> tuple[str, str]:
        address, account_id, _ = _setup(self.api, self.emulators, self.tenant)
        self.graph = _graph(self.emulators)
        found = self.emulators.graph_subscriptions
        assert found is not None
        self.subs = found
        assert {s.folder for s in self.subs.of(address)} == set(FOLDERS)
        self._change_of: dict[str, int] = {}  # message id → the fixture's change that made it
        self._made: dict[int, tuple[str, str]] = {}  # change → (folder, message id)
        self._late: list[tuple[int, Notice]] = []  # (emulator deliveries before it, the POST)
        self._reorder = 0  # notifications still to hold for reordering
        self._holding: list[int] = []  # changes whose notification is held
        self._held: set[int] = set()  # every change whose notification was held, not lost
        wait_until(lambda: queued(self.stack, account_id) == 0)  # whatever the connect queued
        return address, account_id

    def close(self) -> None:
        self.subs.resume()

    # ------------------------------------------------------------------ the mailbox
    def _arrive(self, message: EmailMessage) -> str:
        return self._made_in("inbox", self.graph.arrive(self.address, message.as_bytes()).immutable_id)

    def _send_from_client(self, message: EmailMessage) -> str:
        sent = self.graph.send_from_client(self.address, message.as_bytes())
        return self._made_in("sentitems", sent.immutable_id)

    def _made_in(self, folder: str, message_id: str) -> str:
        self._made[self.changes + 1] = (folder, message_id)
        return message_id

    def _changed(self, provider_message_id: str) -> None:
        self._change_of[provider_message_id] = self.changes

    def remove(self, message: Expected, how: Literal["trash", "delete"]) -> None:
        if how == "trash":  # out of the synced folders
            self.graph.move_in_client(self.address, message.provider_message_id, "deleteditems")
        else:
            self.graph.delete_in_client(self.address, message.provider_message_id)
        self.changes += 1

    # ------------------------------------------------------------------ notifications
    def subscription(self, folder: str) -> Subscription:
        return next(s for s in self.subs.of(self.address) if s.folder == folder)

    def _mine(self) -> set[str]:
        return {s.id for s in self.subs.of(self.address)}

    def deliveries(self) -> list[Any]:
        mine = self._mine()
        return [
            d
            for d in list(self.subs.deliveries)
            if d.kind == "notification" and any(i.get("subscriptionId") in mine for i in d.items)
        ]

    def notification_faults(self, duplicate: int = 0, reorder: int = 0, drop: int = 0) -> None:
        assert not (reorder and drop), "held and lost notifications are both lost by the emulator"
        self._reorder += reorder
        self.subs.faults(self.address, duplicate=duplicate, drop=drop + reorder)

    def after_change(self) -> None:
        _, message_id = self._made.get(self.changes, ("", ""))
        lost = any(d["id"] == message_id for d in self.subs.dropped)
        if self._reorder and lost:
            self._reorder -= 1
            self._holding.append(self.changes)
            self._held.add(self.changes)
            return
        if self._holding and not lost:  # the later one went out: the held ones follow, newest first
            self.subs.wait_idle()
            for change in reversed(self._holding):
                self._post(change)
            self._holding = []

    def _post(self, change: int) -> int:
        folder, message_id = self._made[change]
        found = self.subscription(folder)
        body = {"value": [notification(self.subs, found, message_id, found.client_state)]}
        logged = len(self.deliveries())
        status = requests.post(found.notification_url, json=body, timeout=10).status_code
        fate: Literal["delivered", "failed"] = "delivered" if 200 <= status < 300 else "failed"
        self._late.append((logged, Notice(change, body["value"][0]["id"], fate, status)))
        return status

    @contextmanager
    def held(self) -> Iterator[None]:
        self.subs.pause()  # they batch up, and go out in one POST on resume
        try:
            yield
        finally:
            self.subs.resume()

    def notices(self) -> list[Notice]:
        found: list[Notice] = []
        deliveries = self.deliveries()
        for position, delivery in enumerate(deliveries):
            found += [n for at, n in self._late if at == position]
            status = int(delivery.status or 0)
            fate: Literal["delivered", "failed"] = "delivered" if 200 <= status < 300 else "failed"
            for item in delivery.items:
                change = self._change_of.get(item["resourceData"]["id"], 0)
                found.append(Notice(change, str(item["id"]), fate, status))
        found += [n for at, n in self._late if at >= len(deliveries)]
        mine = self._mine()
        for lost in self.subs.dropped:
            change = self._change_of.get(lost["id"], 0)
            if lost["subscriptionId"] in mine and change not in self._held:
                found.append(Notice(change, "", "dropped", 0))
        return found

    def deliver_late(self, notice: Notice) -> int:
        return self._post(notice.change)

    def notifications_settled(self) -> bool:
        return idle(self.subs)

    # ------------------------------------------------------------------ faults
    def expire_cursor(self) -> None:
        self.graph.expire_delta(self.address, "inbox", how="410")
        self.graph.expire_delta(self.address, "sentitems", how="syncStateNotFound")

    def throttle_inside_page(self, retry_after: int) -> None:
        # the page's second $value, inside its $batch, answers 429 ApplicationThrottled
        box = self.graph.mailbox(self.address)
        with self.graph.lock:
            box.throttle = Throttle(1, retry_after, only=FETCH, skip=1, code="ApplicationThrottled")

    def throttle_spent(self) -> bool:
        return self.graph.mailbox(self.address).throttle.requests == 0

    # ------------------------------------------------------------------ the cursor
    def rounds(self, cursor: str) -> dict[str, int]:
        """folder → where in the mailbox's change log the cursor's deltaLink starts reading."""
        found = {}
        for folder, link in json.loads(cursor).items():
            (token,) = parse_qs(urlsplit(link).query)["$deltatoken"]
            issued = self.graph.cursors[token]
            assert issued.kind == "delta" and issued.address == self.address.lower()
            assert issued.folder == folder, (issued.folder, folder)  # each folder's own link
            found[folder] = issued.seq
        return found

    def caught_up(self) -> bool:
        cursor = self.stored_cursor()
        if cursor is None:
            return False
        box = self.graph.mailbox(self.address)
        with self.graph.lock:
            last = {f: max((c.seq for c in box.changes if c.folder == f), default=0) for f in FOLDERS}
        at = self.rounds(cursor)
        return all(at.get(f, -1) >= last[f] for f in FOLDERS)

    def is_forward(self, before: str, after: str) -> bool:
        old, new = self.rounds(before), self.rounds(after)
        return set(new) == set(FOLDERS) and all(new[f] >= old.get(f, -1) for f in FOLDERS)


FIXTURE = Outlook

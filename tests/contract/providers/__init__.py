"""The provider fixtures of the contract suite: one module per provider, each with one
`ContractMailbox` subclass named by `FIXTURE`. The scenarios (test_provider_contract.py) run once
per module found here: adding a provider (IMAP, a calendar) is one new module, nothing else.

A fixture drives its provider's emulator and its mailbox (mail arrives, the user answers in the
client, messages are trashed or deleted), its notifications (duplicated, held for later, lost,
delivered late), its faults (the cursor expires, a request inside a page is throttled), and says
when the service has caught up. What the CRM ends up with is read through the API, the same for
every provider (this base class)."""

from __future__ import annotations

import importlib
import itertools
import pkgutil
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, ClassVar, Literal

from crmsync.jobs import Job
from crmsync.mail.watch import CATCHUP
from crmsync.settings import get_settings
from crmsync.stores.queue import SqsJobQueue
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.contract.crash import CrashPlan
from tests.integration.helpers import wait_until
from tests.integration.redelivery import queued
from tests.integration.test_gmail_batch import all_threads
from tests.integration.test_graph_notify import _due_items
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of

CORRESPONDENT = "carla@client.test"  # a contact of the tenant: her mail starts a CRM thread (MAIL-4)


@dataclass(frozen=True)
class Expected:
    """What the CRM should end up with for one message of the mailbox."""

    message_id: str  # its RFC 5322 Message-ID
    provider_message_id: str  # the provider's id of the mailbox copy


@dataclass(frozen=True)
class Notice:
    """One notification as the service's webhook met it (or did not)."""

    change: int  # which change of the mailbox it tells of: 1 is the first the fixture made
    id: str  # the notification's own id; a duplicate carries the same
    fate: Literal["delivered", "dropped", "failed"]
    status: int  # the webhook's answer; 0 when never delivered


class ContractMailbox(ABC):
    """One connected mailbox of one provider under notification (watched or subscribed), and a
    conversation with the correspondent in it (one CRM thread)."""

    name: ClassVar[str]
    # whether a sync round that finds nothing new still moves the cursor (Graph's delta hands out
    # fresh links each round; Gmail's historyId only moves with the mailbox)
    EMPTY_ROUND_MOVES_CURSOR: ClassVar[bool]

    def __init__(self, stack: LocalStack, api: Api, emulators: Emulators, tenant: str) -> None:
        self.stack, self.api, self.emulators, self.tenant = stack, api, emulators, tenant
        self.chain: list[EmailMessage] = []  # the conversation, oldest first
        self.expected: list[Expected] = []
        self.changes = 0  # the mailbox changes this fixture made
        self.address, self.account_id = self.connect()

    # ------------------------------------------------------------------ the mailbox
    @abstractmethod
    def connect(self) -> tuple[str, str]:
        """Connect the mailbox through the API, watched; (address, account id)."""

    @abstractmethod
    def _arrive(self, message: EmailMessage) -> str:
        """The correspondent's mail arrives; the provider's id of it."""

    @abstractmethod
    def _send_from_client(self, message: EmailMessage) -> str:
        """The user writes in the provider's own client; the provider's id of the copy."""

    @abstractmethod
    def _changed(self, provider_message_id: str) -> None:
        """A change was made (the fixture's count is already up): note how its notification will
        name it."""

    def correspondent_writes(self) -> Expected:
        parent = self.chain[-1] if self.chain else None
        message = mail(CORRESPONDENT, [self.address], "Re: Renewal" if parent else "Renewal", parent)
        return self._record(message, self._arrive)

    def user_answers(self) -> Expected:
        message = mail(self.address, [CORRESPONDENT], "Re: Renewal", self.chain[-1])
        return self._record(message, self._send_from_client)

    def _record(self, message: EmailMessage, how: Any) -> Expected:
        self.chain.append(message)
        provider_id = how(message)
        self.changes += 1
        self._changed(provider_id)
        found = Expected(message_id=str(message["Message-ID"]), provider_message_id=provider_id)
        self.expected.append(found)
        self.after_change()
        return found

    def close(self) -> None:  # noqa: B027 (a hook: nothing to undo unless the fixture says)
        """Undo what the fixture set on the shared emulators."""

    def after_change(self) -> None:  # noqa: B027 (a hook)
        """A hook: what the fixture's notification faults do once a change was notified."""

    @abstractmethod
    def remove(self, message: Expected, how: Literal["trash", "delete"]) -> None:
        """The user moves the message to the trash (out of what syncs), or deletes it for good."""

    # ------------------------------------------------------------------ notifications
    @abstractmethod
    def notification_faults(self, duplicate: int = 0, reorder: int = 0, drop: int = 0) -> None:
        """For the next notifications: send `duplicate` of them twice, hold `reorder` of them and
        send them right after the one that follows (newest first), lose `drop` of them."""

    @abstractmethod
    @contextmanager
    def held(self) -> Iterator[None]:
        """Notifications of the changes made in the block go out together at its end."""

    @abstractmethod
    def notices(self) -> list[Notice]:
        """Every notification of the mailbox so far, in the order they went out (or were lost)."""

    @abstractmethod
    def deliver_late(self, notice: Notice) -> int:
        """The provider retries a lost notification now, after later ones; the webhook's status."""

    @abstractmethod
    def notifications_settled(self) -> bool:
        """No notification waiting or being delivered (held ones aside)."""

    def catch_up(self) -> None:
        """The account's catch-up poll comes due: the job of its due item is queued, as the
        scheduler does (this account's alone: the scheduler would queue every account's)."""
        item = _due_items(self.stack, self.account_id)[CATCHUP]
        job = Job.model_validate(item["job"])
        assert job.type == "mail.sync" and job.account_id == self.account_id
        SqsJobQueue(get_settings().sync_queue_url).send(job, f"catch-up-{uuid.uuid4().hex}")

    # ------------------------------------------------------------------ faults
    @abstractmethod
    def expire_cursor(self) -> None:
        """The provider stops accepting every cursor it handed out so far (Gmail: history 404;
        Graph: 410 Gone / syncStateNotFound)."""

    @abstractmethod
    def throttle_inside_page(self, retry_after: int) -> None:
        """The next page's second message fetch answers 429 with Retry-After, in the middle of the
        page (the rest of the page's requests answer)."""

    @abstractmethod
    def throttle_spent(self) -> bool:
        """The throttled request was made (and refused)."""

    # ------------------------------------------------------------------ the cursor
    def stored_cursor(self) -> str | None:
        return cursor_of(self.stack, self.account_id)

    @abstractmethod
    def caught_up(self) -> bool:
        """The stored cursor reads from after the mailbox's last change."""

    @abstractmethod
    def is_forward(self, before: str, after: str) -> bool:
        """`after` reads from no earlier in the mailbox's changes than `before` (SYNC-1)."""

    def quiet(self) -> bool:
        """Nothing left to do: every notification answered, no job of the account queued or
        running, the cursor past every change."""
        return self.notifications_settled() and queued(self.stack, self.account_id) == 0 and self.caught_up()

    def assert_moved_forward(self, plan: CrashPlan, start: str, since: int = 0) -> None:
        """SYNC-1, judged on the cursor's writes since `plan.advances[since]`: each was a
        conditional advance from the very value it replaced (a chain from `start` to the stored
        cursor), no value came back once replaced, and each is forward of the one before."""
        # an advance is recorded once its write has returned: let the last one be recorded
        wait_until(lambda: self.stored_cursor() == ([start] + [n for _, n in plan.advances[since:]])[-1])
        values = [start]
        for expected, new in plan.advances[since:]:
            assert expected == values[-1], (expected, values[-1])  # conditional on what it replaced
            values.append(new)
        assert self.stored_cursor() == values[-1]  # nothing else wrote it
        assert len(set(values)) == len(values)  # no value ever came back once replaced
        for before, after in itertools.pairwise(values):
            assert self.is_forward(before, after), (before, after)

    # ------------------------------------------------------------------ the CRM, through the API
    def crm_messages(self) -> list[dict[str, Any]]:
        threads = all_threads(self.api, self.tenant)
        assert len(threads) == 1, [t["subject"] for t in threads]  # the whole conversation, one thread
        view = self.api.call(
            "GET", f"/v1/threads/{threads[0]['crm_thread_id']}", self.api.token(self.tenant, "u1")
        ).json()
        assert view["thread"]["message_count"] == len(view["messages"]), view["thread"]
        return list(view["messages"])

    def assert_each_exactly_once(self) -> list[dict[str, Any]]:
        """Every message of the conversation once in its CRM thread, with the provider's id of the
        mailbox copy, and its event published (MAIL-7)."""
        messages = self.crm_messages()
        assert sorted(m["message_id"] for m in messages) == sorted(e.message_id for e in self.expected)
        by_id = {m["message_id"]: m for m in messages}
        assert all(by_id[e.message_id]["provider_message_id"] == e.provider_message_id for e in self.expected)
        unpublished = [m["message_id"] for m in messages if not m["published"]]
        assert unpublished == []  # and each one's event went out
        return messages

    def events(self, detail_type: str) -> list[dict[str, Any]]:
        """The tenant's events of a type, as the CRM received them (the stack's bus tap)."""
        return [
            e
            for e in list(self.stack.events)
            if e["detail-type"] == detail_type and e["detail"].get("tenant_id") == self.tenant
        ]


def names() -> list[str]:
    """The provider fixtures: every module of this package."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def fixture_class(name: str) -> type[ContractMailbox]:
    found: type[ContractMailbox] = importlib.import_module(f"{__name__}.{name}").FIXTURE
    return found

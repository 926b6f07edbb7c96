"""The provider-neutral mail engine over the real stores (moto): which mail syncs, threading,
linking, exactly-once under duplicates, reordering and crashes between writes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmsync import services
from crmsync.accounts.models import Account, AccountSettings
from crmsync.auth import Principal
from crmsync.directory import ContactEntry, DealEntry, LeadEntry, UserEntry
from crmsync.mail.engine import MailSync
from crmsync.mail.models import ProviderMessage
from local.stack import LocalStack
from tests.conftest import Api

OWNER = "owner@corp.test"


def mail(
    sender: str, to: list[str], subject: str, reply_to: EmailMessage | None = None, cc: list[str] = ()
) -> EmailMessage:  # type: ignore[assignment]
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain="mail.test")
    if reply_to is not None:
        message["In-Reply-To"] = reply_to["Message-ID"]
        message["References"] = " ".join(
            filter(None, [str(reply_to.get("References", "")), reply_to["Message-ID"]])
        )
    message.set_content(f"{subject}\n-- \nsent by {sender}")
    return message


def delivered(
    message: EmailMessage, labels: list[str] | None = None, thread: str | None = None
) -> ProviderMessage:
    return ProviderMessage(
        provider_message_id=uuid.uuid4().hex[:16],
        provider_thread_id=thread,
        labels=labels or ["INBOX"],
        raw=message.as_bytes(),
    )


class World:
    """A tenant with a user, a contact with an open deal, a lead, and a colleague."""

    def __init__(self, **account_settings: Any) -> None:
        self.tenant = f"t-{uuid.uuid4().hex[:10]}"
        admin = Principal(tenant_id=self.tenant, user_id="admin", role="admin")
        directory = services.current().directory()
        directory.upsert(admin, "users", "u1", UserEntry(name="Owner", email=OWNER))
        directory.upsert(admin, "users", "u2", UserEntry(name="Colleague", email="colleague@corp.test"))
        directory.upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=["carla@client.test"]))
        directory.upsert(admin, "leads", "l1", LeadEntry(name="Leo", emails=["leo@prospect.test"]))
        directory.upsert(
            admin,
            "deals",
            "d-old",
            DealEntry(name="Old", contact_ids=["c1"], updated_at=datetime(2026, 1, 1, tzinfo=UTC)),
        )
        directory.upsert(
            admin,
            "deals",
            "d-new",
            DealEntry(name="New", contact_ids=["c1"], updated_at=datetime(2026, 6, 1, tzinfo=UTC)),
        )
        directory.upsert(
            admin,
            "deals",
            "d-won",
            DealEntry(
                name="Won", status="won", contact_ids=["c1"], updated_at=datetime(2026, 9, 1, tzinfo=UTC)
            ),
        )
        self.admin = admin
        now = datetime.now(UTC)
        self.account = Account(
            account_id=f"acc-{uuid.uuid4().hex[:8]}",
            tenant_id=self.tenant,
            user_id="u1",
            provider="google",
            purpose="both",
            address=OWNER,
            status="connected",
            settings=AccountSettings(**account_settings),
            connected_at=now,
            updated_at=now,
        )

    def thread(self, engine: MailSync, thread_id: str) -> list[Any]:
        return services.current().mail_sync()._store.thread_messages(self.tenant, thread_id)  # type: ignore[attr-defined]


def synced_events(stack: LocalStack, tenant: str) -> list[dict[str, Any]]:
    return [
        e for e in stack.events if e["detail-type"] == "MessageSynced" and e["detail"]["tenant_id"] == tenant
    ]


@pytest.fixture
def engine(stack: LocalStack) -> MailSync:
    return services.current().mail_sync()


@pytest.mark.rule("MAIL-1")
@pytest.mark.rule("MAIL-3")
@pytest.mark.rule("MAIL-7")
@pytest.mark.rule("LINK-1")
@pytest.mark.rule("LINK-2")
def test_a_crm_thread_syncs_both_ways_once_linked_to_contact_and_open_deal(
    stack: LocalStack, engine: MailSync
) -> None:
    world = World()
    first = mail(OWNER, ["carla@client.test"], "Proposal")
    sent = engine.record_outgoing(world.account, first.as_bytes())
    # the mailbox's Sent copy of the CRM's message is recognised, not duplicated
    copy = engine.ingest(world.account, delivered(first, ["SENT"], thread="gt-1"))
    assert (copy.status, copy.crm_message_id) == ("updated", sent.crm_message_id)
    reply = mail("carla@client.test", [OWNER], "Re: Proposal", reply_to=first)
    answer = mail(OWNER, ["carla@client.test"], "Re: Proposal", reply_to=reply)  # written in the mail client
    second = mail("carla@client.test", [OWNER], "Re: Proposal", reply_to=answer)
    outcomes = [
        engine.ingest(world.account, delivered(reply, thread="gt-1")),
        engine.ingest(world.account, delivered(answer, ["SENT"], thread="gt-1")),
        engine.ingest(world.account, delivered(second)),  # no provider thread id: found by In-Reply-To
    ]
    assert [o.status for o in outcomes] == ["synced"] * 3
    assert {o.crm_thread_id for o in outcomes} == {sent.crm_thread_id}
    messages = world.thread(engine, sent.crm_thread_id)
    assert len(messages) == 4
    assert sorted(m.direction for m in messages) == ["inbound", "inbound", "outbound", "outbound"]
    assert all(
        m.contact_ids == ["c1"] and m.deal_id == "d-new" for m in messages
    )  # newest open deal, not the won one
    events = stack.wait_for_event(
        lambda e: (
            e["detail-type"] == "MessageSynced" and e["detail"]["message_id"] == outcomes[-1].crm_message_id
        )
    )
    assert events["detail"]["deal_id"] == "d-new"
    ids = [e["detail"]["message_id"] for e in synced_events(stack, world.tenant)]
    assert sorted(ids) == sorted(m.crm_message_id for m in messages)  # one event per message


@pytest.mark.rule("LINK-2")
def test_a_user_with_manual_deal_linking_gets_contacts_linked_but_no_deal(
    stack: LocalStack, engine: MailSync
) -> None:
    world = World()
    services.current().directory().upsert(
        world.admin, "users", "u1", UserEntry(name="Owner", email=OWNER, deal_linking="manual")
    )
    first = mail(OWNER, ["carla@client.test"], "Proposal")
    sent = engine.record_outgoing(world.account, first.as_bytes())
    reply = engine.ingest(
        world.account, delivered(mail("carla@client.test", [OWNER], "Re: Proposal", reply_to=first))
    )
    assert reply.status == "synced"
    messages = world.thread(engine, sent.crm_thread_id)
    assert [(m.contact_ids, m.deal_id) for m in messages] == [(["c1"], None), (["c1"], None)]


@pytest.mark.rule("MAIL-4")
def test_inbound_from_a_contact_starts_a_thread_only_when_the_setting_is_on(
    stack: LocalStack, engine: MailSync
) -> None:
    on, off = World(), World(inbound_from_contacts=False)
    assert (
        engine.ingest(on.account, delivered(mail("carla@client.test", [OWNER], "Hello"))).status == "synced"
    )
    skipped = engine.ingest(off.account, delivered(mail("carla@client.test", [OWNER], "Hello")))
    assert skipped.status == "skipped" and skipped.reason.startswith("not_a_crm_thread")
    stranger = engine.ingest(on.account, delivered(mail("someone@else.test", [OWNER], "Buy now")))
    assert stranger.status == "skipped" and stranger.reason.startswith("not_a_crm_thread")
    event = stack.wait_for_event(
        lambda e: e["detail-type"] == "MessageSkipped" and e["detail"]["tenant_id"] == off.tenant
    )
    assert event["detail"]["reason"] == "not_a_crm_thread"


@pytest.mark.rule("MAIL-5")
def test_mail_with_colleagues_is_not_synced(engine: MailSync) -> None:
    world = World(scope="all")
    from_colleague = engine.ingest(world.account, delivered(mail("colleague@corp.test", [OWNER], "Salaries")))
    assert from_colleague.status == "skipped" and from_colleague.reason.startswith("internal_mail")
    to_colleagues = engine.ingest(
        world.account, delivered(mail(OWNER, ["colleague@corp.test"], "Lunch"), ["SENT"])
    )
    assert to_colleagues.status == "skipped" and to_colleagues.reason.startswith("internal_mail")
    mixed = engine.ingest(
        world.account, delivered(mail(OWNER, ["colleague@corp.test", "carla@client.test"], "Offer"), ["SENT"])
    )
    assert mixed.status == "synced"  # not every recipient is a colleague


@pytest.mark.rule("MAIL-8")
@pytest.mark.rule("MAIL-1")
def test_label_filter_and_scope_all(engine: MailSync) -> None:
    world = World(scope="all", labels_or_folders=["CRM"])
    outside = engine.ingest(
        world.account, delivered(mail("someone@else.test", [OWNER], "Newsletter"), ["INBOX"])
    )
    assert outside.status == "skipped" and outside.reason.startswith("label_not_selected")
    inside_message = mail("someone@else.test", [OWNER], "Question")
    inside = engine.ingest(world.account, delivered(inside_message, ["INBOX", "crm"]))
    assert inside.status == "synced"  # scope all: any sender, linked by participants (none here)
    answer = engine.ingest(
        world.account,
        delivered(mail(OWNER, ["someone@else.test"], "Re: Question", reply_to=inside_message), ["SENT"]),
    )
    assert answer.status == "synced"  # sent mail of a synced thread always syncs
    lead = engine.ingest(world.account, delivered(mail("leo@prospect.test", [OWNER], "Hi"), ["CRM"]))
    record = services.current().mail_sync()._store.get_message(world.tenant, "u1", lead.crm_message_id)  # type: ignore[attr-defined]
    assert record.lead_ids == ["l1"] and record.contact_ids == []


@pytest.mark.rule("SEC-5")
def test_malformed_mime_is_a_recorded_skip_and_blocks_nothing(stack: LocalStack, engine: MailSync) -> None:
    world = World()
    huge = b"X-Junk: " + b"a" * (300 * 1024) + b"\r\n\r\nbody"
    outcome = engine.ingest(world.account, ProviderMessage(provider_message_id="bad-1", raw=huge))
    assert outcome.status == "skipped" and outcome.reason.startswith("malformed_mime")
    assert (
        engine.ingest(world.account, delivered(mail("carla@client.test", [OWNER], "Still fine"))).status
        == "synced"
    )


# ---------------------------------------------------------------------------- convergence under faults


class Crash(Exception):
    pass


class Faulty:
    """Wraps the real stores and bus; the n-th write raises, as a worker killed mid-job would."""

    WRITES = {"put", "record_message", "attach_copy", "mark_published", "record_skip", "mark_skip_told"}
    WRITES |= {"publish"}

    def __init__(self, inner: Any, budget: list[int]) -> None:
        self._inner = inner
        self._budget = budget

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name not in self.WRITES:
            return target

        def write(*args: Any, **kwargs: Any) -> Any:
            self._budget[0] -= 1
            if self._budget[0] == 0:
                raise Crash(name)
            return target(*args, **kwargs)

        return write


@pytest.mark.rule("SYNC-2")
@pytest.mark.rule("MAIL-7")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_converges_under_duplicates_reordering_and_crashes(stack: LocalStack, data: st.DataObject) -> None:
    world = World()
    real = services.current().mail_sync()
    first = mail(OWNER, ["carla@client.test"], "Deal")
    real.record_outgoing(world.account, first.as_bytes())
    chain = [first]
    for i in range(3):
        sender = "carla@client.test" if i % 2 == 0 else OWNER
        to = [OWNER] if sender != OWNER else ["carla@client.test"]
        chain.append(mail(sender, to, "Re: Deal", reply_to=chain[-1]))
    copies = [delivered(m, ["SENT"] if m["From"] == OWNER else ["INBOX"], thread="gt-9") for m in chain]
    # deliveries: every copy at least once, some twice, in any order
    deliveries = copies + data.draw(st.lists(st.sampled_from(copies), max_size=4))
    deliveries = data.draw(st.permutations(deliveries))
    crash_at = data.draw(st.integers(min_value=0, max_value=12))  # 0: no crash
    budget = [crash_at]
    faulty = MailSync(
        Faulty(real._store, budget),
        Faulty(real._raw, budget),
        real._directory,
        Faulty(real._publisher, budget),
    )
    pending = list(deliveries)
    attempts = 0
    while pending and attempts < 60:  # SQS redelivers what failed, until it goes through
        attempts += 1
        message = pending.pop(0)
        try:
            faulty.ingest(world.account, message)
        except Crash:
            pending.append(message)
    assert not pending
    messages = real._store.thread_messages(
        world.tenant,
        real._store.find_message_id(world.tenant, world.account.user_id, first["Message-ID"]).crm_thread_id,
    )  # type: ignore[attr-defined]
    assert sorted(m.message_id for m in messages) == sorted(
        m["Message-ID"] for m in chain
    )  # each exactly once
    assert all(m.published for m in messages)  # and each reached the CRM


def _with_files(message: EmailMessage, files: dict[str, bytes]) -> EmailMessage:
    for name, data in files.items():
        message.add_attachment(data, maintype="application", subtype="octet-stream", filename=name)
    return message


@pytest.mark.rule("ATT-2")
def test_inbound_gmail_mail_over_25_mb_syncs_without_the_files_that_break_the_limit(
    stack: LocalStack, engine: MailSync
) -> None:
    world = World()
    big, small = b"%PDF-1.7\n" + b"1" * (20 * 1024 * 1024), b"%PDF-1.7\n" + b"2" * (6 * 1024 * 1024)
    message = _with_files(
        mail("carla@client.test", [OWNER], "Drawings"), {"plans.pdf": big, "notes.pdf": small}
    )
    outcome = engine.ingest(world.account, delivered(message))
    assert outcome.status == "synced", outcome.reason
    [record] = world.thread(engine, outcome.crm_thread_id or "")
    assert [a.filename for a in record.attachments] == ["notes.pdf"]
    assert len(record.attachments_left_out) == 1 and record.attachments_left_out[0].startswith("plans.pdf")
    event = stack.wait_for_event(
        lambda e: e["detail-type"] == "MessageSynced" and e["detail"]["message_id"] == record.crm_message_id
    )
    assert event["detail"]["attachments_left_out"] == record.attachments_left_out
    under = _with_files(mail("carla@client.test", [OWNER], "Small"), {"a.pdf": small, "b.pdf": small})
    kept = engine.ingest(world.account, delivered(under))
    [record] = world.thread(engine, kept.crm_thread_id or "")
    assert len(record.attachments) == 2 and record.attachments_left_out == []


@pytest.mark.rule("ATT-3")
@pytest.mark.rule("ATT-4")
def test_inbound_microsoft_mail_breaking_the_limits_is_skipped_with_the_reason(
    stack: LocalStack, engine: MailSync
) -> None:
    world = World()
    outlook = world.account.model_copy(update={"provider": "microsoft"})
    cases = {
        "big.pdf": b"%PDF-1.7\n" + b"0" * (3 * 1024 * 1024),  # one byte over 3 MB
        "tool.pdf": b"MZ" + b"\x00" * 100,  # an executable, named as a PDF
        "song.mp3": b"ID3" + b"\x00" * 100,  # a type Microsoft accounts do not take
    }
    for name, data in cases.items():
        outcome = engine.ingest(
            outlook, delivered(_with_files(mail("carla@client.test", [OWNER], name), {name: data}))
        )
        assert outcome.status == "skipped" and outcome.reason
        assert outcome.reason.startswith("attachment_limit") and name in outcome.reason, outcome.reason
    fits = b"%PDF-1.7\n" + b"0" * (3 * 1024 * 1024 - 9)  # exactly 3 MB
    outcome = engine.ingest(
        outlook, delivered(_with_files(mail("carla@client.test", [OWNER], "ok"), {"ok.pdf": fits}))
    )
    assert outcome.status == "synced"


@pytest.mark.rule("MAIL-6")
def test_mail_from_or_to_a_blocked_address_or_domain_is_not_synced(
    stack: LocalStack, engine: MailSync, api: Api
) -> None:
    world = World()
    token = api.token(world.tenant, "u1")
    refused = api.call("PUT", "/v1/blocklist", token, json={"entries": ["not an address"]})
    assert refused.status_code == 422
    saved = api.call(
        "PUT", "/v1/blocklist", token, json={"entries": ["Spam@Junk.test", "@noise.test", "@noise.test"]}
    )
    assert saved.status_code == 200 and saved.json() == {"entries": ["spam@junk.test", "@noise.test"]}
    assert api.call("GET", "/v1/blocklist", token).json() == saved.json()
    assert api.call("GET", "/v1/blocklist", api.token(world.tenant, "u2")).json() == {
        "entries": []
    }  # per user
    cases = [
        mail("spam@junk.test", [OWNER], "From a blocked address"),
        mail("anyone@noise.test", [OWNER], "From a blocked domain"),
        mail(OWNER, ["carla@client.test", "ceo@noise.test"], "To a blocked domain, in Cc or To"),
    ]
    for message in cases:
        outcome = engine.ingest(world.account, delivered(message))
        assert outcome.status == "skipped" and (outcome.reason or "").startswith("blocked"), message[
            "Subject"
        ]
    allowed = engine.ingest(world.account, delivered(mail("carla@client.test", [OWNER], "Fine")))
    assert allowed.status == "synced"

"""The attachment limits are linear in the message (ATT-2, ATT-3): the engine parses a message
once and decodes each part once, however many parts it has (a 46 MB message of 1,200 parts
once took 40 s: the limits parsed it again and decoded every part again for each part left out)."""

from __future__ import annotations

import email
import email.message
import uuid
from collections import Counter
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from crmsync.accounts.models import Account, AccountSettings
from crmsync.auth import Principal
from crmsync.directory import ContactEntry, Directory
from crmsync.mail.engine import MailSync
from crmsync.mail.limits import AttachmentLimits, limits_for
from crmsync.mail.models import ProviderMessage
from crmsync.stores import memory

OWNER = "owner@corp.test"
CONTACT = "carla@client.test"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
PARTS = 600


def _account(provider: str) -> Account:
    return Account(
        account_id=f"acc-{uuid.uuid4().hex[:8]}",
        tenant_id="t-limits",
        user_id="u1",
        provider=provider,
        purpose="both",
        address=OWNER,
        status="connected",
        settings=AccountSettings(),
        connected_at=NOW,
        updated_at=NOW,
    )


def _engine(limits: AttachmentLimits) -> tuple[MailSync, memory.MemoryMailStore]:
    directory = Directory(memory.MemoryDirectoryStore(), memory.MemoryEventPublisher())
    admin = Principal(tenant_id="t-limits", user_id="admin", role="admin")
    directory.upsert(admin, "contacts", "c1", ContactEntry(name="Carla", emails=[CONTACT]))
    store = memory.MemoryMailStore()
    engine = MailSync(
        store, memory.MemoryRawStore(), directory, memory.MemoryEventPublisher(), limits=lambda _: limits
    )
    return engine, store


def _many_parts(names: list[str]) -> bytes:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = CONTACT, OWNER, "Scans"
    message["Message-ID"] = f"<{uuid.uuid4().hex}@client.test>"
    message.set_content("The scans, one file each.")
    for n, name in enumerate(names):
        data = (b"%05d " % n) * (100 + n)  # sizes differ: the largest are left out first
        message.add_attachment(data, maintype="text", subtype="plain", filename=name)
    return message.as_bytes()


class Decodes:
    """Counts, per part, the decodings of its payload, and the parses of raw messages."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.per_part: Counter[int] = Counter()
        self.parses = 0
        get_payload = email.message.Message.get_payload
        message_from_bytes = email.message_from_bytes

        def counting_get_payload(part: Any, i: Any = None, decode: bool = False) -> Any:
            if decode:
                self.per_part[id(part)] += 1
            return get_payload(part, i, decode)  # type: ignore[call-overload]

        def counting_parse(*args: Any, **kwargs: Any) -> Any:
            self.parses += 1
            return message_from_bytes(*args, **kwargs)

        monkeypatch.setattr(email.message.Message, "get_payload", counting_get_payload)
        monkeypatch.setattr(email, "message_from_bytes", counting_parse)


@pytest.mark.rule("ATT-2")
def test_a_gmail_message_of_many_parts_is_parsed_once_and_each_part_decoded_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = _many_parts([f"scan-{n}.txt" for n in range(PARTS)])
    sizes = [len((b"%05d " % n) * (100 + n)) for n in range(PARTS)]
    total = sum(sizes) // 2  # half of it fits: the largest files are left out until the rest does
    engine, store = _engine(AttachmentLimits(provider_label="Gmail", total_bytes=total))
    decodes = Decodes(monkeypatch)
    outcome = engine.ingest(_account("google"), ProviderMessage(provider_message_id="p-1", raw=raw))
    assert outcome.status == "synced"
    assert decodes.parses == 1
    assert len(decodes.per_part) >= PARTS  # every attachment (and the body) ...
    assert max(decodes.per_part.values()) == 1  # ... decoded once
    record = store.get_message("t-limits", "u1", outcome.crm_message_id or "")
    assert record is not None
    kept = sorted(range(PARTS), key=lambda n: sizes[n])
    while sum(sizes[n] for n in kept) > total:
        kept.pop()
    assert len(record.attachments_left_out) == PARTS - len(kept)
    assert record.attachments_left_out[0].startswith(f"scan-{PARTS - 1}.txt: {sizes[-1]} bytes")
    assert [a.filename for a in record.attachments] == [f"scan-{n}.txt" for n in sorted(kept)][:200]


@pytest.mark.rule("ATT-3")
def test_a_microsoft_message_of_many_parts_is_checked_with_one_decode_per_part(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    names = [f"scan-{n}.txt" for n in range(PARTS - 1)] + ["setup.exe"]
    engine, _ = _engine(limits_for("microsoft"))
    decodes = Decodes(monkeypatch)
    outcome = engine.ingest(
        _account("microsoft"), ProviderMessage(provider_message_id="p-2", raw=_many_parts(names))
    )
    assert outcome.status == "skipped" and "setup.exe" in (outcome.reason or "")
    assert (outcome.reason or "").startswith("attachment_limit:")
    assert decodes.parses == 1
    assert len(decodes.per_part) >= PARTS and max(decodes.per_part.values()) == 1

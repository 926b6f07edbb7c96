"""Which mail syncs (MAIL-1, MAIL-3, MAIL-4, MAIL-5, MAIL-8), as a pure function of facts the
engine looked up. Kept free of I/O so every branch is tested directly."""

from __future__ import annotations

from pydantic import BaseModel

from crmsync.accounts.models import AccountSettings
from crmsync.mail.models import Direction


class Facts(BaseModel):
    direction: Direction
    thread_known: bool
    sender_is_other_user: bool
    recipients_all_users: bool
    sender_is_contact: bool
    in_selected_labels: bool


class Decision(BaseModel):
    sync: bool
    reason: str | None = None


def decide(settings: AccountSettings, facts: Facts) -> Decision:
    # MAIL-5: mail with a colleague as the counterparty may be confidential
    if facts.direction == "inbound" and facts.sender_is_other_user:
        return Decision(sync=False, reason="internal_mail: the sender is a user of this tenant")
    if facts.direction == "outbound" and facts.recipients_all_users:
        return Decision(sync=False, reason="internal_mail: every recipient is a user of this tenant")
    # MAIL-3 (and MAIL-8's exception): a thread that syncs keeps syncing, both ways, any label
    if facts.thread_known:
        return Decision(sync=True)
    # MAIL-8: only the chosen labels or folders
    if not facts.in_selected_labels:
        return Decision(sync=False, reason="label_not_selected: not in the labels or folders chosen for sync")
    # MAIL-1
    if settings.scope == "all":
        return Decision(sync=True)
    # MAIL-4
    if facts.direction == "inbound" and settings.inbound_from_contacts and facts.sender_is_contact:
        return Decision(sync=True)
    return Decision(sync=False, reason="not_a_crm_thread: neither started from the CRM nor by a contact")

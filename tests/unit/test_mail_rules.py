"""Which mail syncs: `crmsync.mail.rules.decide`, one row per rule (and per branch of it)."""

from __future__ import annotations

from typing import Any

import pytest

from crmsync.accounts.models import AccountSettings
from crmsync.mail.rules import Decision, Facts, decide

# a message of a new thread from someone the CRM does not know, in the synced labels
PLAIN: dict[str, Any] = {
    "direction": "inbound",
    "thread_known": False,
    "sender_is_other_user": False,
    "recipients_all_users": False,
    "sender_is_contact": False,
    "in_selected_labels": True,
}
NOT_CRM = "not_a_crm_thread"


def row(
    rule: str, settings: dict[str, Any], facts: dict[str, Any], sync: bool, reason: str | None, why: str
) -> Any:
    return pytest.param(
        settings, {**PLAIN, **facts}, sync, reason, id=f"{rule}: {why}", marks=pytest.mark.rule(rule)
    )


ROWS = [
    row("MAIL-1", {}, {}, False, NOT_CRM, "crm_threads: unknown mail from a stranger is skipped"),
    row(
        "MAIL-1",
        {},
        {"direction": "outbound"},
        False,
        NOT_CRM,
        "crm_threads: mail client mail of no CRM thread",
    ),
    row("MAIL-1", {"scope": "all"}, {}, True, None, "all: inbound mail from anyone syncs"),
    row("MAIL-1", {"scope": "all"}, {"direction": "outbound"}, True, None, "all: outbound mail syncs"),
    row("MAIL-3", {}, {"thread_known": True}, True, None, "a reply received in a synced thread"),
    row(
        "MAIL-3",
        {},
        {"thread_known": True, "direction": "outbound"},
        True,
        None,
        "a reply from the mail client",
    ),
    row(
        "MAIL-3",
        {"inbound_from_contacts": False},
        {"thread_known": True},
        True,
        None,
        "a synced thread keeps syncing with contact threads off",
    ),
    row("MAIL-4", {}, {"sender_is_contact": True}, True, None, "inbound mail from a contact starts a thread"),
    row(
        "MAIL-4",
        {"inbound_from_contacts": False},
        {"sender_is_contact": True},
        False,
        NOT_CRM,
        "with the setting off, mail from a contact does not start one",
    ),
    row(
        "MAIL-4",
        {},
        {"direction": "outbound", "sender_is_contact": True},
        False,
        NOT_CRM,
        "only inbound mail from a contact starts a thread",
    ),
    row("MAIL-5", {}, {"sender_is_other_user": True}, False, "internal_mail", "inbound from a colleague"),
    row(
        "MAIL-5",
        {"scope": "all"},
        {"sender_is_other_user": True, "thread_known": True, "sender_is_contact": True},
        False,
        "internal_mail",
        "inbound from a colleague, even in a synced thread with scope all",
    ),
    row(
        "MAIL-5",
        {"scope": "all"},
        {"direction": "outbound", "recipients_all_users": True, "thread_known": True},
        False,
        "internal_mail",
        "outbound to colleagues only",
    ),
    row(
        "MAIL-5",
        {},
        {"direction": "outbound", "sender_is_other_user": True, "thread_known": True},
        True,
        None,
        "outbound with a non-user recipient is not internal",
    ),
    row(
        "MAIL-5",
        {},
        {"recipients_all_users": True, "sender_is_contact": True},
        True,
        None,
        "inbound from a contact to colleagues is not internal",
    ),
    row(
        "MAIL-8",
        {"labels_or_folders": ["Clients"]},
        {"in_selected_labels": False, "sender_is_contact": True},
        False,
        "label_not_selected",
        "outside the chosen labels",
    ),
    row(
        "MAIL-8",
        {"scope": "all", "labels_or_folders": ["Clients"]},
        {"in_selected_labels": False},
        False,
        "label_not_selected",
        "outside the chosen labels with scope all",
    ),
    row(
        "MAIL-8",
        {"labels_or_folders": ["Clients"]},
        {"in_selected_labels": False, "thread_known": True, "direction": "outbound"},
        True,
        None,
        "sent mail of a synced thread syncs from any label",
    ),
]


@pytest.mark.parametrize(("settings", "facts", "sync", "reason"), ROWS)
def test_decide(settings: dict[str, Any], facts: dict[str, Any], sync: bool, reason: str | None) -> None:
    decision = decide(AccountSettings(**settings), Facts(**facts))
    assert decision.sync is sync
    if reason is None:
        assert decision == Decision(sync=True)
    else:
        assert decision.reason is not None and decision.reason.split(":", 1)[0] == reason
        assert decision.reason.split(":", 1)[1].strip()  # and says why in words


def test_every_rule_the_function_implements_has_a_row() -> None:
    import inspect
    import re

    from crmsync.mail import rules

    implemented = set(re.findall(r"MAIL-\d+", inspect.getsource(rules)))
    covered = {mark.args[0] for param in ROWS for mark in param.marks}
    assert implemented == covered == {"MAIL-1", "MAIL-3", "MAIL-4", "MAIL-5", "MAIL-8"}

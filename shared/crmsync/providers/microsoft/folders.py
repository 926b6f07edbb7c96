"""Which folders of a Microsoft mailbox sync (MAIL-8). Kept apart from graph.py so that the
webhook and the subscriptions import it without `requests`."""

from __future__ import annotations

from crmsync.accounts.models import Account

SENT_ITEMS = "sentitems"
DEFAULT_FOLDERS = ("inbox",)
# mailFolder's well-known names (resources/mailfolder.md); anything else is a display path
WELL_KNOWN_FOLDERS = frozenset(
    {
        "archive",
        "clutter",
        "conflicts",
        "conversationhistory",
        "deleteditems",
        "drafts",
        "inbox",
        "junkemail",
        "localfailures",
        "msgfolderroot",
        "outbox",
        "recoverableitemsdeletions",
        "scheduled",
        "searchfolders",
        "sentitems",
        "serverfailures",
        "syncissues",
    }
)


def synced_folders(account: Account) -> tuple[str, ...]:
    """MAIL-8: the folders the settings name, Inbox when none is named, and Sent Items always
    (sent mail of synced threads always syncs). Well-known names in lower case; each once."""
    named = [f.strip().strip("/") for f in account.settings.labels_or_folders if f.strip().strip("/")]
    folders: dict[str, str] = {}
    for name in [*(named or DEFAULT_FOLDERS), SENT_ITEMS]:
        folder = name.lower() if name.lower() in WELL_KNOWN_FOLDERS else name
        folders.setdefault(folder.lower(), folder)
    return tuple(folders.values())

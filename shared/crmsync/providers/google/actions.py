"""What the CRM does to a Gmail mailbox: send (SEND-1, SEND-4), archive and trash (MAIL-9).

Sending posts the base64url raw RFC 5322 message to `users.messages.send` with the thread id
of the message replied to; Gmail files it with SENT itself (MAIL-2). Archiving removes the
INBOX label; deleting moves to trash (`messages.trash`), never the permanent delete."""

from __future__ import annotations

import base64
from typing import Any

from crmsync.accounts.models import Account
from crmsync.errors import PermanentError
from crmsync.providers.google.client import status_of
from crmsync.providers.google.gmail import GmailClients, _raise_transient


def _call(request: Any, what: str) -> Any:
    from googleapiclient.errors import HttpError

    try:
        return request.execute()
    except HttpError as error:
        status = status_of(error)
        _raise_transient(error, what)  # throttling and 5xx, with Retry-After, as the sync path does
        reason = getattr(error, "reason", "") or str(status)
        raise PermanentError(f"gmail answered {status} to {what}: {reason}") from error


class GmailActions(GmailClients):
    def send(
        self, account: Account, raw: bytes, reply_to: tuple[str, str | None] | None
    ) -> tuple[str, str | None]:
        body: dict[str, Any] = {"raw": base64.urlsafe_b64encode(raw).decode()}
        if reply_to is not None and reply_to[1]:
            body["threadId"] = reply_to[1]  # SEND-4: Gmail's thread, with In-Reply-To in the MIME
        sent = _call(self._gmail(account).users().messages().send(userId="me", body=body), "messages.send")
        return str(sent["id"]), sent.get("threadId")

    def find_sent(self, account: Account, rfc822_message_id: str) -> tuple[str, str | None] | None:
        """The mailbox's copy of a message we sent, searched by its Message-ID: a retried send
        that finds it confirms it instead of sending it a second time."""
        listed = _call(
            self._gmail(account)
            .users()
            .messages()
            .list(userId="me", q=f"rfc822msgid:{rfc822_message_id}", includeSpamTrash=True),
            "messages.list",
        )
        found = listed.get("messages") or []
        return (str(found[0]["id"]), found[0].get("threadId")) if found else None

    def archive(self, account: Account, provider_message_id: str) -> bool:
        """Removes INBOX; False when the message is no longer in the mailbox."""
        request = (
            self._gmail(account)
            .users()
            .messages()
            .modify(userId="me", id=provider_message_id, body={"removeLabelIds": ["INBOX"]})
        )
        return self._gone_is_false(request, "messages.modify")

    def trash(self, account: Account, provider_message_id: str) -> bool:
        request = self._gmail(account).users().messages().trash(userId="me", id=provider_message_id)
        return self._gone_is_false(request, "messages.trash")

    @staticmethod
    def _gone_is_false(request: Any, what: str) -> bool:
        from googleapiclient.errors import HttpError

        try:
            _call(request, what)
        except PermanentError as error:
            if isinstance(error.__cause__, HttpError) and status_of(error.__cause__) == 404:
                return False
            raise
        return True

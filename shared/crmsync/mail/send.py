"""Sending from the CRM through the user's own mailbox (SEND-1, SEND-4, SEND-6, ATT-1/2/4/5).

Order of work, so that nothing is lost and nothing is sent twice by us:
1. everything is checked first: the account, the parent, every staged file's size and type
   (a refused message sends nothing);
2. the message is recorded with a Message-ID of ours (state `sending`), so that the Sent copy
   the worker will meet is recognised as this message (MAIL-2, MAIL-7) and replies join the
   thread (MAIL-3);
3. the provider sends it; its ids are mapped to ours, the record becomes `sent` and the CRM
   gets MessageSynced. A provider refusal marks it `failed` and says why.
An `Idempotency-Key` makes the Message-ID a function of the key: a retried request finds the
recorded message and, if it was sent, returns it without sending again.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel, Field

from crmsync.accounts.models import Account
from crmsync.auth import Principal
from crmsync.errors import (
    BadRequest,
    Conflict,
    NotFound,
    Paused,
    PermanentError,
    ProviderRefused,
    ProviderUnavailable,
    TooLarge,
    TransientError,
    Unprocessable,
)
from crmsync.ids import check_id
from crmsync.mail.compose import SendRequest, StagedFile, StageRequest, build_message, new_message_id
from crmsync.mail.engine import MailSync
from crmsync.mail.filetype import FileRefused, check
from crmsync.mail.limits import AttachmentLimits
from crmsync.mail.models import MessageRecord

UPLOAD_EXPIRES_S = 900


class MailSender(Protocol):
    """A provider's send: returns the provider's message id and thread id."""

    def send(
        self, account: Account, raw: bytes, reply_to: tuple[str, str | None] | None
    ) -> tuple[str, str | None]:
        """`reply_to`: the parent's provider message id and thread id, when it is in this mailbox."""
        ...

    def find_sent(self, account: Account, rfc822_message_id: str) -> tuple[str, str | None] | None: ...


class Staging(Protocol):
    def prefix(self, tenant_id: str, user_id: str, attachment_id: str) -> str: ...

    def presign(self, key: str, max_bytes: int, expires_s: int) -> dict[str, Any]: ...

    def find(self, prefix: str) -> tuple[str, int] | None: ...

    def read(self, key: str) -> bytes: ...


class AccountReader(Protocol):
    def list_for_user(self, tenant_id: str, user_id: str) -> list[Account]: ...

    def get(self, tenant_id: str, user_id: str, account_id: str) -> Account | None: ...


class MessageReader(Protocol):
    def get_message(self, tenant_id: str, user_id: str, crm_message_id: str) -> MessageRecord | None: ...


class StagedUpload(BaseModel):
    attachment_id: str
    account_id: str
    max_bytes: int = Field(description="The upload is refused by S3 above this size")
    upload_url: str = Field(description="POST the file here as multipart/form-data ...")
    upload_fields: dict[str, str] = Field(description="... with these form fields first, the file last")
    expires_at: datetime = Field(description="Upload before this; an unsent file is deleted within a day")


class SentMessage(BaseModel):
    message_id: str = Field(description="The CRM message id")
    thread_id: str
    account_id: str
    sender: str = Field(description="The From address: the account's (SEND-1)")
    rfc822_message_id: str
    provider_message_id: str | None
    provider_thread_id: str | None
    delivery: str


class Outbox:
    def __init__(
        self,
        accounts: AccountReader,
        messages: MessageReader,
        engine: MailSync,
        staging: Staging,
        senders: Mapping[str, MailSender],
        limits: Callable[[str], AttachmentLimits],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._accounts = accounts
        self._messages = messages
        self._engine = engine
        self._staging = staging
        self._senders = senders
        self._limits = limits
        self._now = now

    # ------------------------------------------------------------------ the account (SEND-1, ACC-6)
    def _account(self, principal: Principal, account_id: str | None) -> Account:
        if account_id:
            account = self._accounts.get(principal.tenant_id, principal.user_id, account_id)
            if account is None:
                raise NotFound(f"no account {account_id!r} among your accounts")
        else:
            mine = self._accounts.list_for_user(principal.tenant_id, principal.user_id)
            account = next((a for a in mine if a.is_default and a.is_mailbox), None)
            if account is None:
                raise Conflict("you have no default mailbox account: connect one or name account_id")
        if not account.is_mailbox:
            raise Unprocessable(f"account {account.account_id} is connected for calendar only")
        if not account.can_sync:
            raise Conflict(f"account {account.account_id} is {account.status}; it cannot send now")
        return account

    # ------------------------------------------------------------------ staging (ATT-1)
    def stage(self, principal: Principal, request: StageRequest) -> StagedUpload:
        account = self._account(principal, request.account_id)
        limits = self._limits(account.provider)
        if request.size > limits.upload_max_bytes:
            raise TooLarge(
                f"{request.filename} is {request.size} bytes; {limits.provider_label} accounts take at most "
                f"{limits.upload_max_bytes} bytes"
            )
        attachment_id = secrets.token_urlsafe(16)
        key = self._staging.prefix(principal.tenant_id, principal.user_id, attachment_id) + request.filename
        post = self._staging.presign(key, request.size, UPLOAD_EXPIRES_S)
        return StagedUpload(
            attachment_id=attachment_id,
            account_id=account.account_id,
            max_bytes=request.size,
            upload_url=post["url"],
            upload_fields={k: str(v) for k, v in post["fields"].items()},
            expires_at=self._now() + timedelta(seconds=UPLOAD_EXPIRES_S),
        )

    def _files(self, principal: Principal, account: Account, ids: list[str]) -> list[StagedFile]:
        """ATT-2/ATT-3/ATT-4: every limit is checked before anything is sent."""
        limits = self._limits(account.provider)
        found: list[tuple[str, str, int]] = []
        for attachment_id in dict.fromkeys(ids):
            check_id(attachment_id, "attachment id")
            prefix = self._staging.prefix(principal.tenant_id, principal.user_id, attachment_id)
            staged = self._staging.find(prefix)
            if staged is None:
                raise Unprocessable(f"attachment {attachment_id} was not uploaded, or has expired")
            key, size = staged
            found.append((attachment_id, key, size))
        for _, key, size in found:
            if limits.per_file_bytes is not None and size > limits.per_file_bytes:
                raise TooLarge(
                    f"{key.rsplit('/', 1)[-1]} is {size} bytes; {limits.provider_label} takes at most "
                    f"{limits.per_file_bytes} bytes per file"
                )
        total = sum(size for _, _, size in found)
        if total > limits.send_max_total:
            raise TooLarge(
                f"the attachments come to {total} bytes; {limits.provider_label} accounts send at most "
                f"{limits.send_max_total} bytes of attachments per message"
            )
        files = []
        for attachment_id, key, _ in found:
            filename = key.rsplit("/", 1)[-1]
            data = self._staging.read(key)
            try:
                check(filename, data, limits.allowed_types)
            except FileRefused as refused:
                raise Unprocessable(str(refused)) from refused
            files.append(StagedFile(attachment_id=attachment_id, filename=filename, data=data))
        return files

    # ------------------------------------------------------------------ sending
    def send(
        self, principal: Principal, request: SendRequest, idempotency_key: str | None = None
    ) -> SentMessage:
        account = self._account(principal, request.account_id)
        sender = self._senders.get(account.provider)
        if sender is None:
            raise Unprocessable(f"sending through {account.provider} accounts is not available in this build")
        parent = None
        if request.reply_to_message_id:
            parent = self._messages.get_message(
                principal.tenant_id, principal.user_id, request.reply_to_message_id
            )
            if parent is None:
                raise NotFound(f"no message {request.reply_to_message_id!r} in your mail to reply to")
        files = self._files(principal, account, request.attachment_ids)
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 200:
                raise BadRequest("Idempotency-Key must be 1-200 characters")
            seed = f"{principal.tenant_id}|{principal.user_id}|{idempotency_key}"
            token = hashlib.sha256(seed.encode()).hexdigest()[:32]
        else:
            token = secrets.token_hex(16)
        message_id = new_message_id(account.address, token)
        try:
            raw = build_message(
                account.address,
                None,
                request,
                message_id,
                parent.message_id if parent else None,
                parent.references if parent else [],
                files,
                self._now(),
            )
        except ValueError as error:  # the standard library's own header-injection guard
            raise Unprocessable(f"the message cannot be built: {error}") from error
        files.clear()  # the files are in `raw` now: one copy of them is held from here on, not two
        earlier = self._engine.outgoing(account, message_id)  # a retried request finds its record
        if earlier is not None and earlier.delivery == "sent":
            return _sent(earlier, account)  # sent already: not again
        if earlier is not None and earlier.delivery == "sending":
            # the last attempt stopped after the provider may have taken it: look before resending
            try:
                copy = sender.find_sent(account, message_id)
            except TransientError as error:
                raise ProviderUnavailable(f"{account.provider} is not answering now ({error})") from error
            if copy is not None:
                return _sent(self._engine.confirm_sent(account, earlier, copy[0], copy[1]), account)
        record = earlier or self._engine.record_outgoing(
            account, raw, parent.message_id if parent else None, publish=False
        )
        reply_to = None
        if parent is not None and parent.account_id == account.account_id and parent.provider_message_id:
            reply_to = (
                parent.provider_message_id,
                parent.provider_thread_id,
            )  # SEND-4: the provider's thread
        try:
            provider_id, provider_thread = sender.send(account, raw, reply_to)
        except TransientError as error:
            raise ProviderUnavailable(
                f"{account.provider} is not taking mail now ({error}); retry with the same Idempotency-Key"
            ) from error
        except Paused as error:
            raise Conflict(f"account {account.account_id} needs re-authorisation: {error}") from error
        except PermanentError as error:
            self._engine.fail_sent(record, str(error))
            raise ProviderRefused(f"{account.provider} refused the message: {error}") from error
        confirmed = self._engine.confirm_sent(account, record, provider_id, provider_thread)
        return _sent(confirmed, account)


def _sent(record: MessageRecord, account: Account) -> SentMessage:
    return SentMessage(
        message_id=record.crm_message_id,
        thread_id=record.crm_thread_id,
        account_id=account.account_id,
        sender=account.address,
        rfc822_message_id=record.message_id or "",
        provider_message_id=record.provider_message_id,
        provider_thread_id=record.provider_thread_id,
        delivery=record.delivery or "sent",
    )

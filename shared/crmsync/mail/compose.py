"""What the CRM asks to send, checked (SEND-6), and the RFC 5322 message built from it.

Nothing the caller writes reaches a header unchecked: addresses must be plain addresses,
display names and the subject may not hold CR, LF or NUL, and the standard library's
email.policy.SMTP refuses any header value with a line break as a second guard."""

from __future__ import annotations

import email.policy
import email.utils
import mimetypes
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from crmsync.ids import is_address, normalize_address

_NO_BREAKS = r"^[^\r\n\x00]*$"
Name = Annotated[str, StringConstraints(max_length=200, pattern=_NO_BREAKS)]
Subject = Annotated[str, StringConstraints(max_length=998, pattern=_NO_BREAKS)]
Id = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")]


class Recipient(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: Annotated[str, StringConstraints(min_length=3, max_length=254)]
    name: Name | None = None

    @field_validator("address")
    @classmethod
    def _plain_address(cls, value: str) -> str:
        if not is_address(value):
            raise ValueError(f"{value!r} is not a plain email address (name@example.com)")
        return normalize_address(value)

    def header(self) -> str:
        return email.utils.formataddr((self.name or "", self.address))


class SendRequest(BaseModel):
    """POST /v1/messages: one email from the user's own mailbox (SEND-1)."""

    model_config = ConfigDict(extra="forbid")

    account_id: Id | None = Field(default=None, description="The account to send from; empty: the default")
    to: list[Recipient] = Field(min_length=1, max_length=100)
    cc: list[Recipient] = Field(default_factory=list, max_length=100)
    bcc: list[Recipient] = Field(default_factory=list, max_length=100)
    subject: Subject = ""
    text: Annotated[str, StringConstraints(max_length=2_000_000)] | None = None
    html: Annotated[str, StringConstraints(max_length=2_000_000)] | None = None
    reply_to_message_id: Id | None = Field(
        default=None, description="A CRM message id: the reply stays in its thread (SEND-4)"
    )
    attachment_ids: list[Id] = Field(
        default_factory=list, max_length=50, description="Ids from POST /v1/attachments (ATT-1)"
    )

    @model_validator(mode="after")
    def _has_body(self) -> SendRequest:
        if self.text is None and self.html is None:
            raise ValueError("give a text or an html body (or both)")
        return self


class StageRequest(BaseModel):
    """POST /v1/attachments: announce a file before uploading it."""

    model_config = ConfigDict(extra="forbid")

    filename: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\r\n\x00/\\]+$")]
    size: int = Field(ge=1, description="Bytes; the upload may not be larger")
    account_id: Id | None = Field(
        default=None, description="The account it will be sent from; empty: default"
    )


class StagedFile(BaseModel):
    attachment_id: str
    filename: str
    data: bytes = Field(repr=False)


def build_message(
    sender: str,
    sender_name: str | None,
    request: SendRequest,
    message_id: str,
    parent_message_id: str | None,
    parent_references: list[str],
    files: list[StagedFile],
    now: datetime | None = None,
) -> bytes:
    message = EmailMessage(policy=email.policy.SMTP)
    message["From"] = email.utils.formataddr((sender_name or "", sender))
    message["To"] = ", ".join(r.header() for r in request.to)
    if request.cc:
        message["Cc"] = ", ".join(r.header() for r in request.cc)
    if request.bcc:  # Gmail and Graph take Bcc from the message and strip it before delivery
        message["Bcc"] = ", ".join(r.header() for r in request.bcc)
    message["Subject"] = request.subject
    message["Date"] = email.utils.format_datetime(now or datetime.now(UTC))
    message["Message-ID"] = message_id
    if parent_message_id:  # SEND-4
        message["In-Reply-To"] = parent_message_id
        chain = [r for r in parent_references if r != parent_message_id][-20:]
        message["References"] = " ".join([*chain, parent_message_id])
    message["MIME-Version"] = "1.0"
    if request.text is not None:
        message.set_content(request.text)
    if request.html is not None:
        if request.text is None:
            message.set_content(request.html, subtype="html")
        else:
            message.add_alternative(request.html, subtype="html")
    for file in files:
        kind = mimetypes.guess_type(file.filename)[0] or "application/octet-stream"
        maintype, subtype = kind.split("/", 1)
        message.add_attachment(file.data, maintype=maintype, subtype=subtype, filename=file.filename)
    return message.as_bytes()


def new_message_id(sender: str, token: str) -> str:
    """A Message-ID in the sender's domain; `token` is unique (random, or the idempotency key's hash)."""
    domain = sender.rsplit("@", 1)[-1]
    return f"<{token}@{domain}>"

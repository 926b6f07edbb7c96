"""Reading stored mail in the emulators as the real services do: they take any message, however
hostile, and describe what they can. A message the standard parser cannot read whole (a
thousand nested multiparts exhaust its recursion) is read for its headers alone."""

from __future__ import annotations

import email
import email.policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser


def read_mime(raw: bytes) -> tuple[EmailMessage, bool]:
    """The message, and whether its body could be read too (False: headers only)."""
    try:
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        if isinstance(parsed, EmailMessage):
            list(parsed.walk())  # the walk recurses as deep as the parts nest
            return parsed, True
    except (RecursionError, ValueError, LookupError, TypeError):
        pass
    headers = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
    assert isinstance(headers, EmailMessage)
    return headers, False

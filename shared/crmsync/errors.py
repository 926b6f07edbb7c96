"""Errors the layer raises; the API maps each to an HTTP status with a readable message."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServiceError):
    status = 400
    code = "bad_request"


class Unauthorized(ServiceError):
    status = 401
    code = "unauthorized"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Unprocessable(ServiceError):
    status = 422
    code = "invalid_request"


class TooLarge(ServiceError):
    status = 413
    code = "too_large"


class ProviderRefused(ServiceError):
    """The mail provider refused the request; its reason is in the message."""

    status = 502
    code = "provider_refused"


class ProviderUnavailable(ServiceError):
    """The mail provider is throttling or failing; the same request may be retried later."""

    status = 503
    code = "provider_unavailable"


class TransientError(Exception):
    """A failure worth retrying later (throttling, 5xx, a lost race). `retry_after` is the
    provider's Retry-After in seconds, when it gave one (SYNC-4)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def retry_after_seconds(value: str | None) -> float | None:
    """An HTTP Retry-After given in seconds (what Gmail and Graph send); None when absent or unreadable."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class PermanentError(Exception):
    """A failure that retrying cannot fix; the work goes to the dead-letter queue with this reason."""


class Paused(PermanentError):
    """Work for an account that may not sync now (reauth required, replaced, disconnected):
    dropped, not retried and not dead-lettered."""

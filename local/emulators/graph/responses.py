"""Graph's answers on the wire: JSON bodies, its error shape, and its 429 refusals."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.faults import Throttle

APPLICATION_THROTTLED = "ApplicationThrottled"  # Outlook's MailboxConcurrency refusal


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json", headers=headers)


def graph_error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """Graph's error shape: {"error": {"code", "message", "innerError"}}."""
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": secrets.token_hex(16),
        "client-request-id": secrets.token_hex(16),
    }
    return json_response({"error": {"code": code, "message": message, "innerError": inner}}, status, headers)


def not_found() -> Response:
    return graph_error(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def method_not_allowed() -> Response:
    return graph_error(
        405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target."
    )


def unauthenticated(request: Request) -> Response:
    if not request.headers.get("Authorization"):
        return graph_error(401, "InvalidAuthenticationToken", "Access token is empty.")
    return graph_error(401, "InvalidAuthenticationToken", "Access token has expired or is not yet valid.")


def throttled(throttle: Throttle) -> Response:
    """A 429 with Retry-After, as `throttle.code` says: TooManyRequests (the throttling doc's
    sample), else a Graph error of that code (ApplicationThrottled unless set)."""
    headers = {"Retry-After": str(throttle.retry_after)}
    if throttle.code == "TooManyRequests":
        body = {
            "error": {
                "code": "TooManyRequests",
                "innerError": {
                    "code": "429",
                    "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                    "message": "Please retry after",
                    "request-id": secrets.token_hex(16),
                    "status": "429",
                },
                "message": "Please retry again later.",
            }
        }
        return json_response(body, 429, headers)
    code = throttle.code or APPLICATION_THROTTLED
    return graph_error(429, code, "Application is over its MailboxConcurrency limit.", headers)


def read_body(request: Request) -> dict[str, Any] | Response:
    """A request's JSON object body ({} when empty), or the 400 Graph answers."""
    data = request.get_data()
    if not data:
        return {}
    try:
        parsed = json.loads(data)
    except ValueError:
        return graph_error(400, "RequestBodyRead", "Invalid JSON in the request body.")
    if not isinstance(parsed, dict):
        return graph_error(400, "RequestBodyRead", "The request body must be a JSON object.")
    return parsed

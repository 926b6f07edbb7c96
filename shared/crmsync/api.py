"""What every HTTP handler shares: the resolver, the caller's principal, errors as JSON."""

from __future__ import annotations

import base64
import binascii
import html
import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.middlewares.openapi_validation import (
    OpenAPIRequestValidationMiddleware,
)
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)

from crmsync.auth import Principal, principal_from_claims
from crmsync.errors import ServiceError
from crmsync.settings import get_settings

logger = Logger()


def error_response(status: int, code: str, message: str, details: Any = None) -> Response[Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        error["details"] = details
    return Response(status_code=status, content_type=content_types.APPLICATION_JSON, body={"error": error})


def _field(loc: Any) -> str:
    return ".".join(str(part) for part in loc) or "request"


def _problem(error: Any) -> dict[str, Any]:
    kind = error.get("type")
    loc = tuple(error.get("loc", ()))
    if kind == "json_invalid":  # the location is a character offset, not a field
        offset = loc[1] if len(loc) > 1 else "?"
        return {"field": "body", "problem": f"malformed JSON (at character {offset})", "type": kind}
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    return {"field": _field(loc), "problem": message, "type": kind}


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


def _body_problem(problem: str) -> RequestValidationError:
    return RequestValidationError([{"type": "body_invalid", "loc": ("body",), "msg": problem, "input": {}}])


def read_json_body(event: Any) -> Any:
    """The request's JSON body (None when there is none), or a clear error: 415 for another
    media type (form or multipart bodies are not read as fields), 422 for bytes that are not
    UTF-8 JSON. A missing Content-Type is read as JSON."""
    content_type = str(event.headers.get("content-type") or "").strip()
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type and media_type != content_types.APPLICATION_JSON:
        raise UnsupportedMediaType(
            f"the body must be {content_types.APPLICATION_JSON} (Content-Type was {content_type[:100]!r})"
        )
    body: str | None = event.body
    if not body:
        return None
    try:
        raw = base64.b64decode(body, validate=True) if event.is_base64_encoded else body.encode()
        text = raw.decode("utf-8")
    except (binascii.Error, ValueError) as error:  # UnicodeError is a ValueError
        raise _body_problem("the body is not UTF-8 text") from error
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error", "input": {}}]
        ) from error
    except (ValueError, RecursionError) as error:  # numbers of more digits than int() takes; deep nesting
        raise _body_problem("the JSON is too deeply nested or has too long a number") from error


class _JsonBodies(OpenAPIRequestValidationMiddleware):
    """Powertools' request validation, with bodies read by `read_json_body`."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]

    def _get_body(self, app: Any) -> Any:
        return read_json_body(app.current_event)


def build_api() -> APIGatewayHttpResolver:
    """A resolver that validates input with pydantic and answers every error as JSON."""
    app = APIGatewayHttpResolver(enable_validation=True)
    # the resolver made its validation middleware when validation was enabled: bodies are read
    # our way (415 for what is not JSON, 4xx for bytes that are not JSON; never a 500)
    app._request_validation_middleware = _JsonBodies()

    @app.exception_handler(RequestUnsupportedContentType)  # type: ignore[untyped-decorator]
    def _unsupported(_: RequestUnsupportedContentType) -> Response[Any]:
        return error_response(
            415, UnsupportedMediaType.code, f"the body must be {content_types.APPLICATION_JSON}"
        )

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def _invalid(error: RequestValidationError) -> Response[Any]:
        problems = [_problem(e) for e in error.errors()]
        message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems) or "invalid request"
        return error_response(422, "invalid_request", message, problems)

    @app.exception_handler(ServiceError)  # type: ignore[untyped-decorator]
    def _service(error: ServiceError) -> Response[Any]:
        return error_response(error.status, error.code, error.message)

    @app.not_found
    def _not_found(_: Exception) -> Response[Any]:
        return error_response(
            404, "not_found", f"no route for {app.current_event.http_method} {app.current_event.path}"
        )

    @app.exception_handler(Exception)  # type: ignore[untyped-decorator]
    def _unexpected(error: Exception) -> Response[Any]:
        logger.exception("unhandled error", extra={"error_type": type(error).__name__})
        request_id = app.current_event.request_context.request_id
        return error_response(500, "internal", f"internal error (request {request_id})")

    return app


def public_base_url(app: APIGatewayHttpResolver) -> str:
    """Where this API is reached from outside: configured, or the request's own domain."""
    return public_base_url_of(app.current_event.raw_event)


def public_base_url_of(event: dict[str, Any]) -> str:
    configured = get_settings().public_api_base
    if configured:
        return configured.rstrip("/")
    return f"https://{event.get('requestContext', {}).get('domainName', '')}"


def connect_result_page(outcome: Any) -> str:
    """A bare page for when no CRM return URL is configured. It shows only our own texts
    (the outcome's message is ours, never the provider's)."""
    title = {"connected": "Connected", "confirm_required": "Almost connected"}.get(
        outcome.status, "Not connected"
    )
    detail = outcome.address if outcome.status == "connected" else outcome.message
    if outcome.status == "confirm_required":  # the CRM user who started it confirms (ACC-1)
        detail = (
            f"To finish connecting {outcome.address}, confirm in the CRM, signed in as the user who"
            f" started this connect, with the code {outcome.confirmation}"
        )
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(str(detail or ''))}</p>"
    )


def current_principal(app: APIGatewayHttpResolver) -> Principal:
    """The caller, from the claims API Gateway's JWT authorizer verified."""
    settings = get_settings()
    claims = app.current_event.request_context.authorizer.jwt_claim
    return principal_from_claims(claims, settings.jwt_tenant_claim, settings.jwt_role_claim)

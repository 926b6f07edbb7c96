"""GET /oauth/{google|microsoft}/callback: the provider sends the user's browser back here.
The signed, single-use state is the only credential; the result goes back to the CRM."""

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services
from crmsync.api import build_api, connect_result_page
from crmsync.settings import get_settings

if TYPE_CHECKING:  # the accounts service (OAuth and IMAP clients) is imported on the first call
    from crmsync.accounts.service import ConnectOutcome

logger = Logger()
app = build_api()


def _finish(outcome: "ConnectOutcome") -> Response[str]:
    logger.info("connect finished", extra={"status": outcome.status, "reason": outcome.reason})
    headers = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}
    return_url = get_settings().connect_return_url
    if return_url:
        separator = "&" if "?" in return_url else "?"
        location = f"{return_url}{separator}{outcome.query()}"
        return Response(status_code=302, headers={**headers, "Location": location}, body="")
    return Response(
        status_code=200, headers=headers, content_type="text/html", body=connect_result_page(outcome)
    )


def _params() -> dict[str, str]:
    return {k: v for k, v in (app.current_event.query_string_parameters or {}).items() if isinstance(v, str)}


@app.get("/oauth/google/callback", include_in_schema=False)
def google_callback() -> Response[str]:
    return _finish(services.current().accounts().complete_connect("google", _params()))


@app.get("/oauth/microsoft/callback", include_in_schema=False)
def microsoft_callback() -> Response[str]:
    return _finish(services.current().accounts().complete_connect("microsoft", _params()))


@app.post("/oauth/microsoft/callback", include_in_schema=False)
def microsoft_form_post() -> Response[str]:
    """response_mode=form_post: the result comes as a form body."""
    body = app.current_event.decoded_body or ""
    return _finish(
        services.current()
        .accounts()
        .complete_connect("microsoft", dict(parse_qsl(body, keep_blank_values=True)))
    )


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

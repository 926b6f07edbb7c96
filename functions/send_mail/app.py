"""Sending from the CRM and acting on synced mail: send one email (with staged attachments),
stage an attachment, archive a thread, delete a message (MAIL-9)."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services
from crmsync.api import build_api, current_principal
from crmsync.mail.actions import ActionResult
from crmsync.mail.compose import SendRequest, StageRequest
from crmsync.mail.send import SentMessage, StagedUpload

logger = Logger()
app = build_api()
TAGS = ["mail"]


@app.post(
    "/v1/messages",
    summary="Send one email from your mailbox (or reply in its thread)",
    tags=TAGS,
    responses={201: {"description": "Sent; the CRM copy and its ids"}},
)
def send_message(
    request: Annotated[SendRequest, Body()],
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", description="Retry with the same key: never sent twice"),
    ] = None,
) -> Response[SentMessage]:
    sent = services.current().outbox().send(current_principal(app), request, idempotency_key)
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=sent)


@app.post(
    "/v1/attachments",
    summary="Stage a file for an email: returns a presigned upload limited to its size",
    tags=TAGS,
    responses={201: {"description": "Upload the file with the returned form"}},
)
def stage_attachment(request: Annotated[StageRequest, Body()]) -> Response[StagedUpload]:
    staged = services.current().outbox().stage(current_principal(app), request)
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON, body=staged)


@app.post(
    "/v1/threads/<thread_id>/archive", summary="Archive a thread (in the mailbox too: MAIL-9)", tags=TAGS
)
def archive_thread(thread_id: Annotated[str, Path()]) -> ActionResult:
    return services.current().mail_actions().archive_thread(current_principal(app), thread_id)


@app.delete("/v1/messages/<message_id>", summary="Delete a message (mailbox: to trash, MAIL-9)", tags=TAGS)
def delete_message(message_id: Annotated[str, Path()]) -> ActionResult:
    return services.current().mail_actions().delete_message(current_principal(app), message_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

"""The user's own synced mail: threads newest first, and one thread with its messages."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services
from crmsync.api import build_api, current_principal
from crmsync.mail.read import ThreadPage, ThreadView

logger = Logger()
app = build_api()
TAGS = ["mail"]


@app.get("/v1/threads", summary="Your synced threads, newest first", tags=TAGS)
def list_threads(
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    next: Annotated[str | None, Query(max_length=2048, description="The `next` of the previous page")] = None,
    account_id: Annotated[
        str | None, Query(max_length=128, description="Only this account's threads")
    ] = None,
) -> ThreadPage:
    return services.current().mailbox().threads(current_principal(app), limit, next, account_id)


@app.get("/v1/threads/<thread_id>", summary="One of your threads with its messages", tags=TAGS)
def get_thread(thread_id: Annotated[str, Path()]) -> ThreadView:
    return services.current().mailbox().thread(current_principal(app), thread_id)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

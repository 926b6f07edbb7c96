"""Consumes the sync queue. FIFO order per account; a failed job holds back only its own
account's later jobs, which come back after the provider's Retry-After or a backoff."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger

from crmsync import services

if TYPE_CHECKING:  # the handler's first call imports what the jobs need (cold start)
    from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
    from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    batch = services.current().sync_batch()
    response = batch.process(event, context)
    for message_id, outcome in batch.outcomes:
        logger.info("job handled", extra={"message_id": message_id, "outcome": outcome})
    return response

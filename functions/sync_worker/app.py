"""Consumes the sync queue. FIFO order per account; a failed job holds back only its own
account's later jobs, which come back after the provider's Retry-After or a backoff."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services

logger = Logger()
batch = services.current().sync_batch()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    response = batch.process(event, context)
    for message_id, outcome in batch.outcomes:
        logger.info("job handled", extra={"message_id": message_id, "outcome": outcome})
    return response

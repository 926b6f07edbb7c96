"""Consumes the sync queue. FIFO order per account; a failed job holds back only its own
account's later jobs (partial batch response)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services

logger = Logger()
processor = SqsFifoPartialProcessor(skip_group_on_error=True)
runner = services.job_runner()


def record_handler(record: SQSRecord) -> str:
    outcome = runner.handle(record.body, record.message_id, record.attributes.message_group_id or "")
    logger.info("job handled", extra={"message_id": record.message_id, "outcome": outcome})
    return outcome


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> PartialItemFailureResponse:
    return process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )

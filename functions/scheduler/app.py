"""Runs on a schedule: enqueues the work that has come due."""

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    enqueued = services.current().scheduler().run(int(time.time()))
    logger.info("scheduled work enqueued", extra={"enqueued": enqueued})
    return {"enqueued": enqueued}

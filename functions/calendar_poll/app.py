"""Runs on a schedule: queues a `calendar.sync` for every calendar connection whose poll has come
due, read from the calendar polls' own lane of the due index (never a scan of connections)."""

import time
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    enqueued = services.current().calendar_poll().run(int(time.time()))
    logger.info("calendar polls enqueued", extra={"enqueued": enqueued})
    return {"enqueued": enqueued}

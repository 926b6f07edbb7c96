"""POST /webhooks/google-calendar: Google Calendar's push notifications. The channel's token is
checked against its record (401 missing, 403 wrong), an unknown channel is acknowledged and
dropped, a change queues the account's `calendar.sync`; see providers/google/calendar_push.py."""

import json
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        outcome = services.current().calendar_push().accept(event.get("headers"))
    except Exception:  # not queued: a 5xx asks Google to deliver it again
        logger.exception("calendar push not queued")
        return _answer(503, "retry")
    # by channel id and account only: the channel token never reaches a log
    where = {"channel_id": outcome.channel_id, "account_id": outcome.account_id, "reason": outcome.reason}
    if outcome.result in ("refused", "bad", "dropped"):
        logger.warning(f"calendar push {outcome.result}", extra=where)
    else:
        logger.info(f"calendar push {outcome.result}", extra=where)
    if outcome.status >= 400:
        return _answer(outcome.status, outcome.reason)
    return {"statusCode": outcome.status}


def _answer(status: int, message: str) -> dict[str, Any]:
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": message}),
    }

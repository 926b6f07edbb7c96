"""POST /webhooks/graph and /webhooks/graph/lifecycle: Microsoft Graph's change and lifecycle
notifications (SEC-2). The validation handshake is answered from the query string before
anything heavy is imported; notifications are checked item by item, queued, answered 202."""

import base64
from functools import cache
from typing import Any

from crmsync.providers.microsoft.notify import validation_response, validation_token


@cache
def _logger() -> Any:
    from aws_lambda_powertools import Logger

    return Logger()


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    token = validation_token(event)
    if token is not None:
        return validation_response(token)  # Graph waits at most 10 s, a cold start included
    return _notifications(event)


def _notifications(event: dict[str, Any]) -> dict[str, Any]:
    from crmsync import services
    from crmsync.providers.microsoft.notify import BadNotification, TooManyNotifications

    logger = _logger()
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    try:
        outcome = services.current().graph_notifications().accept(body)
    except BadNotification as error:
        logger.warning("graph notification refused", extra={"reason": str(error)})
        return {
            "statusCode": 413 if isinstance(error, TooManyNotifications) else 400,
            "headers": {"content-type": "application/json"},
            "body": '{"message":"not a Graph notification: ' + str(error).replace('"', "'") + '"}',
        }
    except Exception:  # not persisted: a 5xx asks Graph to deliver it again
        logger.exception("graph notification not queued")
        return {
            "statusCode": 503,
            "headers": {"content-type": "application/json"},
            "body": '{"message":"retry"}',
        }
    for dropped in outcome.dropped:
        logger.warning("graph notification item dropped", extra=dropped)
    logger.info(
        "graph notification",
        extra={"path": event.get("rawPath"), "accepted": outcome.accepted, "jobs": outcome.jobs},
    )
    return {"statusCode": 202}

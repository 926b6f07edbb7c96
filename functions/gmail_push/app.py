"""POST /webhooks/gmail: Gmail's Pub/Sub push. Verified by its OIDC token (SEC-1), queued for
the account's worker, acknowledged at once."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services
from crmsync.api import public_base_url_of
from crmsync.providers.google.client import headers_get
from crmsync.providers.google.push import PushRefused

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    push = services.current().gmail_push(f"{public_base_url_of(event)}/webhooks/gmail")
    try:
        outcome = push.accept(headers_get(event.get("headers"), "authorization"), event.get("body") or "")
    except PushRefused as error:
        logger.warning("gmail push refused", extra={"reason": str(error)})
        return {
            "statusCode": 401,
            "headers": {"content-type": "application/json"},
            "body": '{"message":"Unauthorized"}',
        }
    logger.info(
        "gmail push",
        extra={"status": outcome.status, "reason": outcome.reason, "accounts": outcome.account_ids},
    )
    return {"statusCode": 204}

"""GET /health: public liveness probe."""

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync.api import build_api
from crmsync.health import status

app = build_api()


@app.get("/health", summary="Liveness probe", tags=["health"])
def get_health() -> dict[str, str]:
    return status()


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

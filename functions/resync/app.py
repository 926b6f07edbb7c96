"""The steps of the resync state machine: {"step": begin|page|finish|fail, "job": {...}}."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services

logger = Logger()


@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = event.get("step")
    job = event.get("job")
    if not isinstance(step, str) or not isinstance(job, dict):
        raise ValueError("a resync step needs {'step': str, 'job': object}")
    logger.append_keys(account_id=job.get("account_id"), step=step)
    return services.current().resync().step(step, job)

"""The activities API: the CRM backend keeps its activities current here (CAL-1); each change
goes to its owner's calendar through the sync queue. GET shows where an activity stands with the
calendar, and the conflicts kept (CAL-14)."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services
from crmsync.api import build_api, current_principal
from crmsync.calendar.activities import ActivityPut, ActivityView

logger = Logger()
app = build_api()

ActivityId = Annotated[str, Path(description="The CRM's id of the activity.", max_length=128)]
TAGS = ["calendar"]


@app.put("/v1/activities/<activity_id>", summary="Create or replace an activity", tags=TAGS)
def put_activity(activity_id: ActivityId, body: Annotated[ActivityPut, Body()]) -> ActivityView:
    return services.current().activities().put(current_principal(app), activity_id, body)


@app.get("/v1/activities/<activity_id>", summary="An activity, its sync state and conflicts", tags=TAGS)
def get_activity(activity_id: ActivityId) -> ActivityView:
    return services.current().activities().get(current_principal(app), activity_id)


@app.delete("/v1/activities/<activity_id>", summary="The CRM deleted it (idempotent)", tags=TAGS)
def delete_activity(activity_id: ActivityId) -> Response[None]:
    services.current().activities().delete(current_principal(app), activity_id)
    return Response(status_code=204)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

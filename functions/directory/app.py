"""The directory API: the CRM backend keeps the tenant's users, contacts, leads, deals and
settings current here; any user of the tenant may look up who owns an address."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from crmsync import services
from crmsync.api import build_api, current_principal
from crmsync.directory import (
    Blocklist,
    ContactEntry,
    DealEntry,
    DirectoryRecord,
    LeadEntry,
    LookupResult,
    TenantSettings,
    UserEntry,
)
from crmsync.events import DirectoryKind

logger = Logger()
app = build_api()

EntryId = Annotated[str, Path(description="The CRM's id of the entry.")]
TAGS = ["directory"]


@app.put("/v1/directory/users/<entry_id>", summary="Create or replace a user", tags=TAGS)
def put_user(entry_id: EntryId, body: Annotated[UserEntry, Body()]) -> DirectoryRecord:
    return services.current().directory().upsert(current_principal(app), "users", entry_id, body)


@app.put("/v1/directory/contacts/<entry_id>", summary="Create or replace a contact", tags=TAGS)
def put_contact(entry_id: EntryId, body: Annotated[ContactEntry, Body()]) -> DirectoryRecord:
    return services.current().directory().upsert(current_principal(app), "contacts", entry_id, body)


@app.put("/v1/directory/leads/<entry_id>", summary="Create or replace a lead", tags=TAGS)
def put_lead(entry_id: EntryId, body: Annotated[LeadEntry, Body()]) -> DirectoryRecord:
    return services.current().directory().upsert(current_principal(app), "leads", entry_id, body)


@app.put("/v1/directory/deals/<entry_id>", summary="Create or replace a deal", tags=TAGS)
def put_deal(entry_id: EntryId, body: Annotated[DealEntry, Body()]) -> DirectoryRecord:
    return services.current().directory().upsert(current_principal(app), "deals", entry_id, body)


@app.get("/v1/directory/<kind>/<entry_id>", summary="Read an entry", tags=TAGS)
def get_entry(kind: Annotated[DirectoryKind, Path()], entry_id: EntryId) -> DirectoryRecord:
    return services.current().directory().get(current_principal(app), kind, entry_id)


@app.delete("/v1/directory/<kind>/<entry_id>", summary="Remove an entry (idempotent)", tags=TAGS)
def delete_entry(kind: Annotated[DirectoryKind, Path()], entry_id: EntryId) -> Response[None]:
    services.current().directory().delete(current_principal(app), kind, entry_id)
    return Response(status_code=204)


@app.get("/v1/directory/lookup", summary="Who owns an address (case-insensitive)", tags=TAGS)
def lookup(address: Annotated[str, Query(max_length=254)]) -> LookupResult:
    return services.current().directory().lookup(current_principal(app).tenant_id, address)


@app.get("/v1/directory/settings", summary="The tenant's settings", tags=TAGS)
def get_settings() -> TenantSettings:
    return services.current().directory().settings(current_principal(app).tenant_id)


@app.put("/v1/directory/settings", summary="Replace the tenant's settings", tags=TAGS)
def put_settings(body: Annotated[TenantSettings, Body()]) -> TenantSettings:
    return services.current().directory().put_settings(current_principal(app), body)


@app.get("/v1/blocklist", summary="Your blocked addresses and domains", tags=["mail"])
def get_blocklist() -> Blocklist:
    principal = current_principal(app)
    return services.current().directory().blocklist(principal.tenant_id, principal.user_id)


@app.put(
    "/v1/blocklist",
    summary="Replace your blocked addresses (name@example.com) and domains (@example.com)",
    tags=["mail"],
)
def put_blocklist(body: Annotated[Blocklist, Body()]) -> Blocklist:
    return services.current().directory().set_blocklist(current_principal(app), body)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

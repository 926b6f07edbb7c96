"""The accounts API: a user connects, lists, configures, replaces and disconnects their own
mailbox accounts and calendars; an admin lists the tenant's."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel

from crmsync import services
from crmsync.accounts.models import (
    Account,
    AccountSettingsPatch,
    AdminAccounts,
    ConfirmConnect,
    ConnectRequest,
    ConnectStarted,
    ImapConnectRequest,
)
from crmsync.api import build_api, current_principal, public_base_url
from crmsync.calendar.connection import CalendarSyncView, calendar_sync_view
from crmsync.errors import NotFound
from crmsync.resync import ResyncProgress
from crmsync.sync.health import ConnectionHealthView

logger = Logger()
app = build_api()

AccountId = Annotated[str, Path(description="The account's id.")]
TAGS = ["accounts"]


class AccountList(BaseModel):
    accounts: list[Account]


class SyncProgress(BaseModel):
    account_id: str
    imports: list[ResyncProgress]


@app.post("/v1/accounts/connect", summary="Start connecting a Google or Microsoft account", tags=TAGS)
def connect(body: Annotated[ConnectRequest, Body()]) -> ConnectStarted:
    return services.current().accounts().start_connect(current_principal(app), body, public_base_url(app))


@app.post(
    "/v1/accounts/connect/confirm",
    summary="Finish a Google or Microsoft connect (from the CRM's return page, in your session)",
    tags=TAGS,
)
def confirm_connect(body: Annotated[ConfirmConnect, Body()]) -> Account:
    return services.current().accounts().confirm_connect(current_principal(app), body)


@app.post("/v1/accounts/imap", summary="Connect an IMAP/SMTP account (the login is tried first)", tags=TAGS)
def connect_imap(body: Annotated[ImapConnectRequest, Body()]) -> Response[Account]:
    account = services.current().accounts().connect_imap(current_principal(app), body)
    return Response(status_code=201, body=account, content_type="application/json")


@app.get("/v1/accounts", summary="Your accounts", tags=TAGS)
def list_accounts() -> AccountList:
    return AccountList(accounts=services.current().accounts().list(current_principal(app)))


@app.get("/v1/accounts/<account_id>", summary="One of your accounts", tags=TAGS)
def get_account(account_id: AccountId) -> Account:
    return services.current().accounts().get(current_principal(app), account_id)


@app.patch("/v1/accounts/<account_id>", summary="Change an account's settings", tags=TAGS)
def patch_account(account_id: AccountId, body: Annotated[AccountSettingsPatch, Body()]) -> Account:
    return services.current().accounts().update_settings(current_principal(app), account_id, body)


@app.post("/v1/accounts/<account_id>/default", summary="Make this the default sender", tags=TAGS)
def make_default(account_id: AccountId) -> Account:
    return services.current().accounts().set_default(current_principal(app), account_id)


@app.post(
    "/v1/accounts/<account_id>/replace", summary="Connect another account in this one's place", tags=TAGS
)
def replace(account_id: AccountId, body: Annotated[ConnectRequest, Body()]) -> ConnectStarted:
    return (
        services.current()
        .accounts()
        .start_replace(current_principal(app), account_id, body, public_base_url(app))
    )


@app.delete("/v1/accounts/<account_id>", summary="Disconnect: stop syncing now, delete the tokens", tags=TAGS)
def disconnect(account_id: AccountId) -> Account:
    return services.current().accounts().disconnect(current_principal(app), account_id)


@app.get("/v1/accounts/<account_id>/sync", summary="Progress of the account's imports", tags=TAGS)
def sync_progress(account_id: AccountId) -> SyncProgress:
    account = services.current().accounts().get(current_principal(app), account_id)
    return SyncProgress(
        account_id=account.account_id, imports=services.current().resync().progress_of(account.account_id)
    )


@app.post(
    "/v1/calendars/<account_id>/stop",
    summary="Stop a calendar's sync: nothing changes on either side until you connect it again",
    tags=["calendars"],
)
def stop_calendar(account_id: AccountId) -> CalendarSyncView:
    account = services.current().accounts().stop_calendar(current_principal(app), account_id)
    return calendar_sync_view(account, services.current().resync().progress(account_id, "calendar_resync"))


@app.get(
    "/v1/calendars/<account_id>/sync",
    summary="A calendar's sync: syncing or stopped, and the progress of the resync that resumes it",
    tags=["calendars"],
)
def calendar_sync(account_id: AccountId) -> CalendarSyncView:
    account = services.current().accounts().get(current_principal(app), account_id)
    if "calendar" not in account.purposes:
        raise NotFound(f"account {account_id} is not connected for calendar")
    layer = services.current()
    return calendar_sync_view(
        account,
        layer.resync().progress(account_id, "calendar_resync"),
        layer.connection_health().of_account(account),
    )


@app.get(
    "/v1/accounts/<account_id>/health",
    summary="How the account's syncs are doing: last success, lag, cursor age, token, failed items",
    tags=TAGS,
)
def health(account_id: AccountId) -> ConnectionHealthView:
    return services.current().connection_health().of(current_principal(app), account_id)


@app.get(
    "/v1/admin/accounts",
    summary="Every user's accounts in the tenant, with plan usage (admins)",
    tags=["admin"],
)
def admin_accounts() -> AdminAccounts:
    return services.current().accounts().admin_overview(current_principal(app))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)

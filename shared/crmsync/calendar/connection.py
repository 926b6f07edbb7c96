"""What the API tells of a calendar connection's sync (GET /v1/calendars/{id}/sync): whether it is
syncing or stopped (CAL-9), its original connection date (CAL-6), and the resync that resumes it
(CAL-10) or that rebuilt it after a lost cursor, with its progress, and its health (SYNC-9)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from crmsync.accounts.models import Account
from crmsync.resync import ResyncProgress
from crmsync.sync.health import ConnectionHealthView

CalendarSyncState = Literal["syncing", "stopped", "reauth_required", "disconnected", "replaced"]


class CalendarSyncView(BaseModel):
    account_id: str
    provider: str
    address: str
    state: CalendarSyncState = Field(
        description="stopped: POST /v1/calendars/{id}/stop; connect again to resume"
    )
    original_connection_date: datetime = Field(description="CAL-6: only what was created since syncs")
    stopped_at: datetime | None = Field(default=None, description="when sync was last stopped")
    resumed_at: datetime | None = Field(default=None, description="when it was resumed since")
    resync: ResyncProgress | None = Field(
        default=None, description="the latest resync from the original connection date, and how far it came"
    )
    health: ConnectionHealthView | None = Field(
        default=None, description="SYNC-9: last success, lag, cursor age, token state, failed items"
    )


def calendar_sync_view(
    account: Account, resync: ResyncProgress | None, health: ConnectionHealthView | None = None
) -> CalendarSyncView:
    retired: dict[str, CalendarSyncState] = {
        "disconnected": "disconnected",
        "replaced": "replaced",
        "reauth_required": "reauth_required",
    }
    state = retired.get(account.status) or ("stopped" if account.calendar_stopped else "syncing")
    return CalendarSyncView(
        account_id=account.account_id,
        provider=account.provider,
        address=account.address,
        state=state,
        original_connection_date=account.connected_at,
        stopped_at=account.calendar_stopped_at,
        resumed_at=account.calendar_resumed_at,
        resync=resync,
        health=health,
    )

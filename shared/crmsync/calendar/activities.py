"""The CRM's activities, kept current with us by the CRM backend (`PUT`/`DELETE`/`GET
/v1/activities/{id}`), and the `calendar.push` job that takes a changed activity to its owner's
calendar (CAL-1, CAL-2). A PUT that repeats what we told the CRM (the same `updated_at`, or the
same fields) changes nothing on either side (CAL-15)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel, ConfigDict, Field

from crmsync.auth import Principal
from crmsync.calendar.models import Activity, Conflict, SyncedFields, SyncState
from crmsync.calendar.ports import ActivityStore
from crmsync.errors import Forbidden, NotFound, PermanentError
from crmsync.jobs import Job
from crmsync.jobtypes import JobType
from crmsync.sync.core import ItemFailure
from crmsync.sync.health import PUSH

if TYPE_CHECKING:
    from crmsync.accounts.models import Account
    from crmsync.calendar.engine import CalendarSync
    from crmsync.sync.health import HealthLog


class ActivityPut(SyncedFields):
    """An activity as the CRM has it (its id is in the path)."""

    model_config = ConfigDict(extra="forbid")

    owner_user_id: str = Field(
        min_length=1, max_length=128, description="The user whose calendar it syncs with."
    )
    type: str = Field(min_length=1, max_length=64, description="The activity type (CAL-5 picks which sync).")
    created_at: datetime = Field(description="When the CRM created it (CAL-6 compares it).")
    updated_at: datetime = Field(description="When the CRM last changed it; an older PUT changes nothing.")


class ActivityView(BaseModel):
    activity: Activity
    sync: SyncState | None = Field(
        default=None, description="Where it stands with the calendar, if it synced."
    )
    conflicts: list[Conflict] = Field(
        default_factory=list, description="CAL-14: versions that lost, oldest first."
    )


class JobQueue(Protocol):
    def send(self, job: Job, dedup_id: str) -> None: ...


class Activities:
    def __init__(self, store: ActivityStore, queue: JobQueue) -> None:
        self._store = store
        self._queue = queue

    def put(self, principal: Principal, activity_id: str, body: ActivityPut) -> ActivityView:
        principal.require_directory_writer()
        stored = self._store.get_activity(principal.tenant_id, activity_id)
        origin = stored.origin_event_id if stored is not None else None  # ours, kept through the CRM's PUTs
        activity = Activity(
            id=activity_id,
            tenant_id=principal.tenant_id,
            trashed=False,
            origin_event_id=origin,
            **body.model_dump(),
        )
        if self._store.put_activity(activity):
            self._push(activity)
            return self._view(activity)
        return self.get(principal, activity_id)  # an as new or newer one stands: as it is now

    def delete(self, principal: Principal, activity_id: str) -> None:
        """The CRM deleted it: it goes to the trash here, and its event leaves the calendar."""
        principal.require_directory_writer()
        found = self._store.get_activity(principal.tenant_id, activity_id)
        if found is None or found.trashed:
            return
        # a deletion wins over the stored version, whatever the clocks say
        at = max(datetime.now(UTC), found.updated_at + timedelta(microseconds=1))
        trashed = found.model_copy(update={"trashed": True, "updated_at": at, "written_by_sync": False})
        if self._store.put_activity(trashed):
            self._push(trashed)

    def get(self, principal: Principal, activity_id: str) -> ActivityView:
        found = self._store.get_activity(principal.tenant_id, activity_id)
        if found is None:
            raise NotFound(f"no activity {activity_id}")
        if not principal.can_write_directory and found.owner_user_id != principal.user_id:
            raise Forbidden("an activity is readable by its owner and the CRM backend")
        return self._view(found)

    def _view(self, activity: Activity) -> ActivityView:
        return ActivityView(
            activity=activity,
            sync=self._store.get_state(activity.tenant_id, activity.id),
            conflicts=self._store.conflicts(activity.tenant_id, activity.id),
        )

    def _push(self, activity: Activity) -> None:
        job = Job(
            type=JobType.CALENDAR_PUSH,
            tenant_id=activity.tenant_id,
            account_id=f"activity-{activity.id}",  # the queue group: one activity's changes in order
            payload={"activity_id": activity.id},
        )
        version = hashlib.sha256(f"{activity.id}|{activity.updated_at.isoformat()}".encode()).hexdigest()
        self._queue.send(job, f"push-{version[:40]}")


class CalendarAccounts(Protocol):
    def list_for_user(self, tenant_id: str, user_id: str) -> list[Account]: ...


class CalendarPushJob:
    """The worker's `calendar.push`: the activity as it is now, planned against its owner's
    calendar connection (none connected, or not syncing: nothing to do)."""

    def __init__(
        self,
        store: ActivityStore,
        accounts: CalendarAccounts,
        engine: CalendarSync,
        health: HealthLog | None = None,
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._engine = engine
        self._health = health  # SYNC-9: each push, under the connection's "calendar_push"

    def __call__(self, job: Job, message_id: str) -> None:
        activity_id = str(job.payload.get("activity_id") or "")
        if not activity_id:
            raise PermanentError("a calendar.push job names no activity")
        activity = self._store.get_activity(job.tenant_id, activity_id)
        if activity is None:
            return
        calendars = [
            a
            for a in self._accounts.list_for_user(job.tenant_id, activity.owner_user_id)
            if "calendar" in a.purposes and a.can_sync
        ]
        for account in calendars[:1]:  # one calendar connection per user syncs (CAL-2, CAL-3)
            self._push(account, activity)

    def _push(self, account: Account, activity: Activity) -> None:
        try:
            outcome = self._engine.push(account, activity)
        except Exception as error:
            if self._health is not None:
                why = ItemFailure(item_id=activity.id, reason=f"{type(error).__name__}: {error}")
                self._health.failed(account.account_id, PUSH, error, [why])
            raise
        if self._health is not None:
            skipped = outcome.status == "skipped"
            failed = [ItemFailure(item_id=activity.id, reason=outcome.reason)] if skipped else []
            self._health.ran(account.account_id, PUSH, True, failed)

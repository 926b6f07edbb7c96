"""The ActivityStore contract (crmsync.calendar.ports), run against the DynamoDB store on the
local stack's moto and against its in-memory twin, so that the engine's fast tests and AWS
cannot disagree."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest

from crmsync.calendar.models import Activity, Conflict, Side, SyncedFields, SyncState
from crmsync.calendar.ports import ActivityStore
from crmsync.stores.memory_activities import MemoryActivityStore
from local.stack import LocalStack

KINDS = ["dynamodb", "memory"]
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
LONG_EVENT_ID = "evt" + "x" * 1500  # past id_key's bound: keyed by its digest


@pytest.fixture(params=KINDS)
def store(request: pytest.FixtureRequest) -> ActivityStore:
    if request.param == "memory":
        return MemoryActivityStore()
    from crmsync.stores.activities import DynamoActivityStore

    stack: LocalStack = request.getfixturevalue("stack")
    return DynamoActivityStore(stack.tables["ActivitiesTable"])


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class Calendar:
    """A tenant with one user's calendar connection of its own, so runs on the shared stack do
    not meet."""

    def __init__(self) -> None:
        self.tenant = _id("t")
        self.account = _id("acc")

    def activity(
        self, activity_id: str | None = None, updated_at: datetime = NOW, **changes: Any
    ) -> Activity:
        values: dict[str, Any] = {
            "id": activity_id or _id("act"),
            "tenant_id": self.tenant,
            "owner_user_id": "u1",
            "type": "meeting",
            "subject": "Kick-off",
            "start": NOW + timedelta(days=1),
            "end": NOW + timedelta(days=1, hours=1),
            "time_zone": "Europe/Berlin",
            "created_at": NOW - timedelta(days=1),
            "updated_at": updated_at,
        }
        return Activity(**{**values, **changes})

    def state(self, activity_id: str | None = None, event_id: str | None = None, **changes: Any) -> SyncState:
        values: dict[str, Any] = {
            "tenant_id": self.tenant,
            "activity_id": activity_id or _id("act"),
            "provider_event_id": event_id or _id("evt"),
            "calendar_id": "owner@corp.test",
            "series_key": _id("series"),
            "crm_version": NOW,
            "provider_etag": '"1"',
            "fingerprint": "f1",
            "last_synced_at": NOW,
        }
        return SyncState(**{**values, **changes})

    def conflict(self, activity_id: str, decided_at: datetime, winner: Side = "crm") -> Conflict:
        crm = SyncedFields(subject="CRM title", start=NOW, end=NOW + timedelta(hours=1))
        provider = SyncedFields(subject="Calendar title", start=NOW, end=NOW + timedelta(hours=1))
        return Conflict(
            activity_id=activity_id,
            provider_event_id=_id("evt"),
            crm_version=crm,
            provider_version=provider,
            differing=["subject"],
            winner=winner,
            crm_changed_at=decided_at - timedelta(minutes=2),
            provider_changed_at=decided_at - timedelta(minutes=1),
            decided_at=decided_at,
        )


# ---- activities
def test_an_activity_is_stored_and_read_back(store: ActivityStore) -> None:
    cal = Calendar()
    timed = cal.activity(location="Room 1")
    all_day = cal.activity(all_day=True, start=date(2026, 11, 3), end=date(2026, 11, 4), time_zone=None)
    assert store.put_activity(timed) and store.put_activity(all_day)
    assert store.get_activity(cal.tenant, timed.id) == timed
    assert store.get_activity(cal.tenant, all_day.id) == all_day
    assert store.get_activity(cal.tenant, "nope") is None
    assert store.get_activity(_id("other-tenant"), timed.id) is None


def test_activities_read_together_answer_as_one_by_one(store: ActivityStore) -> None:
    cal = Calendar()
    made = [cal.activity(subject=f"Item {n}") for n in range(130)]  # past BatchGetItem's 100 keys
    for activity in made:
        assert store.put_activity(activity)
    ids = [a.id for a in made]
    found = store.get_activities(cal.tenant, [*ids, "nope", ids[0]])  # unknown and repeated ids too
    assert found == {a.id: a for a in made}
    assert store.get_activities(_id("other-tenant"), ids[:3]) == {}


def test_put_activity_keeps_the_newest_by_updated_at(store: ActivityStore) -> None:
    cal = Calendar()
    first = cal.activity(subject="v1")
    assert store.put_activity(first)
    newer = first.model_copy(update={"subject": "v2", "updated_at": NOW + timedelta(minutes=1)})
    assert store.put_activity(newer)
    older = first.model_copy(update={"subject": "stale", "updated_at": NOW + timedelta(seconds=30)})
    assert store.put_activity(older) is False
    assert store.get_activity(cal.tenant, first.id) == newer


@pytest.mark.rule("CAL-15")
def test_a_put_as_new_as_the_stored_one_is_a_no_op(store: ActivityStore) -> None:
    cal = Calendar()
    activity = cal.activity(subject="v1")
    assert store.put_activity(activity)
    assert store.put_activity(activity) is False
    # the same instant written with another offset is as new, whatever else it says
    same_instant = activity.model_copy(
        update={"subject": "other", "updated_at": NOW.astimezone(timezone(timedelta(hours=2)))}
    )
    assert store.put_activity(same_instant) is False
    assert store.get_activity(cal.tenant, activity.id) == activity


def test_a_changed_model_does_not_change_what_is_stored(store: ActivityStore) -> None:
    cal = Calendar()
    activity = cal.activity()
    store.put_activity(activity)
    activity.subject = "changed after the write"
    stored = store.get_activity(cal.tenant, activity.id)
    assert stored is not None and stored.subject == "Kick-off"


# ---- state rows and event maps
@pytest.mark.rule("CAL-15")
def test_a_new_state_row_is_written_once(store: ActivityStore) -> None:
    cal = Calendar()
    state = cal.state()
    assert store.put_state(cal.account, state, None)
    assert store.get_state(cal.tenant, state.activity_id) == state
    assert store.state_of_event(cal.account, state.provider_event_id) == state
    # a second creator (a retried job, a concurrent one) finds the row there
    assert store.put_state(cal.account, state.model_copy(update={"fingerprint": "f2"}), None) is False
    assert store.get_state(cal.tenant, state.activity_id) == state
    assert store.count_states(cal.account) == 1


@pytest.mark.rule("CAL-15")
def test_put_state_is_conditional_on_the_row_the_writer_read(store: ActivityStore) -> None:
    cal = Calendar()
    first = cal.state()
    assert store.put_state(cal.account, first, None)
    second = first.model_copy(update={"fingerprint": "f2", "provider_etag": '"2"'})
    assert store.put_state(cal.account, second, first)
    # a writer that read `first` lost: nothing of its write lands
    loser = first.model_copy(update={"fingerprint": "f3", "provider_event_id": _id("evt")})
    assert store.put_state(cal.account, loser, first) is False
    assert store.get_state(cal.tenant, first.activity_id) == second
    assert store.state_of_event(cal.account, first.provider_event_id) == second
    assert store.state_of_event(cal.account, loser.provider_event_id) is None
    # an expected row where none is stored is stale as well
    assert store.put_state(cal.account, cal.state(), cal.state()) is False
    assert store.count_states(cal.account) == 1


def test_the_event_map_carries_the_current_row(store: ActivityStore) -> None:
    cal = Calendar()
    first = cal.state()
    store.put_state(cal.account, first, None)
    second = first.model_copy(update={"fingerprint": "f2", "trashed_by_sync": "made_private"})
    assert store.put_state(cal.account, second, first)
    assert store.state_of_event(cal.account, first.provider_event_id) == second
    assert store.states_of_events(cal.account, [first.provider_event_id]) == {first.provider_event_id: second}


def test_the_event_map_follows_the_state_row(store: ActivityStore) -> None:
    cal = Calendar()
    first = cal.state()
    store.put_state(cal.account, first, None)
    moved = first.model_copy(update={"provider_event_id": _id("evt"), "fingerprint": "f2"})
    assert store.put_state(cal.account, moved, first)
    assert store.state_of_event(cal.account, first.provider_event_id) is None
    assert store.state_of_event(cal.account, moved.provider_event_id) == moved
    assert store.count_states(cal.account) == 1


def test_a_row_that_changes_connection_takes_its_map_and_its_count(store: ActivityStore) -> None:
    cal = Calendar()
    other_account = _id("acc")
    first = cal.state()
    store.put_state(cal.account, first, None)
    moved = first.model_copy(update={"calendar_id": "new-owner@corp.test", "fingerprint": "f2"})
    assert store.put_state(other_account, moved, first)
    assert store.state_of_event(cal.account, first.provider_event_id) is None
    assert store.state_of_event(other_account, first.provider_event_id) == moved
    assert (store.count_states(cal.account), store.count_states(other_account)) == (0, 1)


@pytest.mark.rule("CAL-15")
def test_an_event_is_mapped_to_one_activity_only(store: ActivityStore) -> None:
    """One transaction: a write refused on the map writes no row either, and the reverse, so a
    crash or a lost race never leaves a map without its row."""
    cal = Calendar()
    mine = cal.state()
    assert store.put_state(cal.account, mine, None)
    theirs = cal.state(event_id=mine.provider_event_id)
    assert store.put_state(cal.account, theirs, None) is False
    assert store.get_state(cal.tenant, theirs.activity_id) is None
    assert store.state_of_event(cal.account, mine.provider_event_id) == mine
    assert store.count_states(cal.account) == 1


def test_state_lookups_by_event_are_per_connection(store: ActivityStore) -> None:
    cal = Calendar()
    state = cal.state()
    store.put_state(cal.account, state, None)
    assert store.state_of_event(_id("acc"), state.provider_event_id) is None
    assert store.states_of_events(_id("acc"), [state.provider_event_id]) == {}
    assert store.state_of_event(cal.account, "never-seen") is None


def test_long_provider_event_ids_are_found(store: ActivityStore) -> None:
    cal = Calendar()
    state = cal.state(event_id=LONG_EVENT_ID)
    other = cal.state(event_id=LONG_EVENT_ID + "y")  # the same first 400 bytes
    assert store.put_state(cal.account, state, None) and store.put_state(cal.account, other, None)
    assert store.state_of_event(cal.account, LONG_EVENT_ID) == state
    assert store.states_of_events(cal.account, [LONG_EVENT_ID, LONG_EVENT_ID + "y", LONG_EVENT_ID + "z"]) == {
        LONG_EVENT_ID: state,
        LONG_EVENT_ID + "y": other,
    }


def test_states_of_events_answers_the_mapped_ones_past_a_batch(store: ActivityStore) -> None:
    cal = Calendar()
    states = [cal.state() for _ in range(130)]  # more than one BatchGetItem of 100 keys
    for state in states:
        assert store.put_state(cal.account, state, None)
    asked = [s.provider_event_id for s in states] + ["unknown-1", states[0].provider_event_id]
    assert store.states_of_events(cal.account, asked) == {s.provider_event_id: s for s in states}
    assert store.states_of_events(cal.account, []) == {}


@pytest.mark.rule("CAL-16")
def test_count_states_counts_the_connections_rows(store: ActivityStore) -> None:
    cal = Calendar()
    other = Calendar()
    assert store.count_states(cal.account) == 0
    rows = [cal.state() for _ in range(3)]
    for row in rows:
        store.put_state(cal.account, row, None)
    store.put_state(other.account, other.state(), None)
    # rewrites, refused writes and moves of the event do not count twice
    store.put_state(cal.account, rows[0].model_copy(update={"fingerprint": "f2"}), rows[0])
    store.put_state(cal.account, rows[1], None)
    store.put_state(cal.account, rows[2].model_copy(update={"provider_event_id": _id("evt")}), rows[2])
    assert store.count_states(cal.account) == 3
    assert store.count_states(other.account) == 1


# ---- conflicts
@pytest.mark.rule("CAL-14")
def test_conflicts_are_kept_and_listed_oldest_first(store: ActivityStore) -> None:
    cal = Calendar()
    activity_id = _id("act")
    later = cal.conflict(activity_id, NOW + timedelta(hours=1), winner="provider")
    earliest = cal.conflict(activity_id, NOW)
    # a later instant written with an offset that sorts first as text
    middle = cal.conflict(
        activity_id, (NOW + timedelta(minutes=30)).astimezone(timezone(timedelta(hours=-5)))
    )
    for conflict in (later, earliest, middle):
        store.add_conflict(cal.tenant, conflict)
    assert store.conflicts(cal.tenant, activity_id) == [earliest, middle, later]
    assert store.conflicts(cal.tenant, _id("act")) == []
    assert store.conflicts(_id("other-tenant"), activity_id) == []


@pytest.mark.rule("CAL-14")
def test_a_conflict_added_twice_is_kept_once(store: ActivityStore) -> None:
    cal = Calendar()
    activity_id = _id("act")
    conflict = cal.conflict(activity_id, NOW)
    store.add_conflict(cal.tenant, conflict)
    store.add_conflict(cal.tenant, conflict)  # a retried job
    assert store.conflicts(cal.tenant, activity_id) == [conflict]


def test_conflicts_and_state_share_the_activity_without_meeting(store: ActivityStore) -> None:
    cal = Calendar()
    activity = cal.activity()
    state = cal.state(activity_id=activity.id)
    conflict = cal.conflict(activity.id, NOW)
    store.put_activity(activity)
    store.put_state(cal.account, state, None)
    store.add_conflict(cal.tenant, conflict)
    assert store.get_activity(cal.tenant, activity.id) == activity
    assert store.get_state(cal.tenant, activity.id) == state
    assert store.conflicts(cal.tenant, activity.id) == [conflict]


@pytest.mark.rule("CAL-9")
def test_activities_held_while_stopped_are_kept_once_in_order_until_released(store: ActivityStore) -> None:
    cal = Calendar()
    other = Calendar()
    store.hold(cal.account, "a-2")
    store.hold(cal.account, "a-1")
    store.hold(cal.account, "a-2")  # changed again while stopped: still held once, in its place
    store.hold(other.account, "a-9")
    assert store.held(cal.account) == ["a-2", "a-1"]
    store.release(cal.account, "a-2")
    store.release(cal.account, "a-3")  # never held: nothing to do
    assert store.held(cal.account) == ["a-1"]
    assert store.held(other.account) == ["a-9"]


@pytest.mark.rule("CAL-13")
def test_an_attendee_is_claimed_for_one_activity_until_told_then_for_none(store: ActivityStore) -> None:
    cal, other = Calendar(), Calendar()
    assert store.claim_attendee(cal.tenant, "New@Client.test", "a-1") is True
    assert store.claim_attendee(cal.tenant, "new@client.test", "a-2") is False  # another activity
    assert store.claim_attendee(cal.tenant, "new@client.test", "a-1") is True  # its redelivery
    store.attendee_told(cal.tenant, "new@client.test")
    assert store.claim_attendee(cal.tenant, "new@client.test", "a-1") is False  # told: never again
    assert store.claim_attendee(other.tenant, "new@client.test", "a-9") is True  # another tenant's own


def test_a_writer_on_another_instance_that_read_the_row_before_a_change_loses(
    request: pytest.FixtureRequest,
) -> None:
    """Two workers (two Lambda instances, each with its own store): one read the row, the other
    changed it since; the first one's write, conditional on what it read, does not land, and
    its next read sees the change and then writes."""
    from crmsync.stores.activities import DynamoActivityStore

    stack: LocalStack = request.getfixturevalue("stack")
    mine, theirs = (DynamoActivityStore(stack.tables["ActivitiesTable"]) for _ in range(2))
    cal = Calendar()
    first = cal.state()
    assert mine.put_state(cal.account, first, None)
    read = mine.states_of_events(cal.account, [first.provider_event_id])[first.provider_event_id]
    theirs_read = theirs.get_state(cal.tenant, first.activity_id)
    assert read == first and theirs_read == first
    changed = first.model_copy(update={"fingerprint": "f2"})
    assert theirs.put_state(cal.account, changed, theirs_read)
    assert mine.put_state(cal.account, first.model_copy(update={"fingerprint": "f3"}), read) is False
    again = mine.get_state(cal.tenant, first.activity_id)
    assert again == changed
    assert mine.put_state(cal.account, first.model_copy(update={"fingerprint": "f4"}), again)
    assert theirs.get_state(cal.tenant, first.activity_id) == first.model_copy(update={"fingerprint": "f4"})

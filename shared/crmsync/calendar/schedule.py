"""A calendar connection's due items (SYNC-2, SYNC-7), in the cursors table (see schedule.py):

- `pk=ACC#{account} sk=DUE#calpoll`: the poll, a `calendar.sync` job due `poll_after_s` after
  the connection last synced. It lives in its own lane of the due index (`calpoll`), which the
  calendar_poll function alone fans out (functions/calendar_poll); the generic scheduler never
  reads it. Each sync moves it a full period on, so a calendar whose pushes arrive is not
  polled on top of them, and one whose pushes are lost (or that has no push channel, when no
  webhook URL is configured) is synced anyway.
- `pk=ACC#{account} sk=DUE#calwatch`: the push channel's renewal, a `calendar.watch` job due a
  day before the channel expires (half-way, for a short-lived one), in the generic lane the
  scheduler fans out, like the Gmail watch renewal. Only kept while there is a channel.

Disconnecting removes both; a job that finishes after that cannot bring them back (the store
only moves items that still exist)."""

from __future__ import annotations

import time
from collections.abc import Callable

from crmsync.jobtypes import JobType
from crmsync.schedule import ConnectionSchedule, DueItems, Periodic, Renewal

POLL = "DUE#calpoll"
RENEWAL = "DUE#calwatch"
LANE = "calpoll"  # the calendar polls' own lane of the due index (calendar_poll reads it)
RENEW_BEFORE_S = 86_400  # a channel is replaced a day before it expires
RENEW_RETRY_S = 3_600  # a renewal that failed for good is tried again an hour later


def renewal_due(now: int, expires_at: int, before_s: int = RENEW_BEFORE_S) -> int:
    """When to replace a channel expiring at `expires_at`: `before_s` ahead of it; half-way
    there for a channel that lives less than twice that; at once if it has lapsed."""
    left = expires_at - now
    return now + max(0, left - before_s, left // 2)


class CalendarPolls(ConnectionSchedule):
    def __init__(self, items: DueItems, poll_after_s: int, clock: Callable[[], float] = time.time) -> None:
        if poll_after_s <= 0:
            raise ValueError("the calendar poll period must be positive seconds")
        super().__init__(
            items,
            Periodic(POLL, JobType.CALENDAR_SYNC, "poll", lane=LANE),
            poll_after_s,
            Renewal(RENEWAL, JobType.CALENDAR_WATCH, renewal_due, RENEW_RETRY_S),
            clock,
        )

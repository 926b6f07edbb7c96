"""The kinds of job the sync queue carries, in one place (the worker registers a handler for
each; producers name them from here). Plain strings on the wire: `JobType.MAIL_SYNC == "mail.sync"`.
This module imports nothing, so the webhooks can use it without loading the layer."""

from __future__ import annotations

from enum import StrEnum


class JobType(StrEnum):
    MAIL_SYNC = "mail.sync"  # an account's incremental mail sync from its cursor (or a `resume`)
    CALENDAR_SYNC = "calendar.sync"  # a calendar connection's incremental sync from its cursor
    CALENDAR_PUSH = "calendar.push"  # an activity the CRM changed, to its owner's calendar
    CALENDAR_WATCH = "calendar.watch"  # replace the calendar's push channel before it expires (SYNC-7)
    MAIL_WATCH = "mail.watch"  # renew the provider watch / subscriptions, then catch up (SYNC-7)
    MAIL_PROPAGATE = "mail.propagate"  # archive or delete in the mailbox what the CRM did (MAIL-9)
    RESYNC_START = "resync.start"  # start a resync or back-import execution (SYNC-3, SYNC-6, ACC-5)
    GRAPH_REAUTHORIZE = "graph.reauthorize"  # Graph lifecycle: reauthorizationRequired
    GRAPH_RESUBSCRIBE = "graph.resubscribe"  # Graph lifecycle: subscriptionRemoved

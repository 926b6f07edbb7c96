"""The worker's own limits agree with the template's."""

from __future__ import annotations

import time

import pytest

from crmsync import worker
from local.cfn import load_template
from local.stack import TEMPLATE


@pytest.mark.rule("SYNC-8")
def test_the_worker_dead_letters_on_the_receive_the_queue_would_redrive() -> None:
    queue = load_template(TEMPLATE)["Resources"]["SyncQueue"]["Properties"]
    assert queue["RedrivePolicy"]["maxReceiveCount"] == worker.MAX_RECEIVES


def test_a_record_share_is_even_over_the_records_left_and_keeps_a_reserve() -> None:
    class Context:
        def get_remaining_time_in_millis(self) -> int:
            return 100_000

    batch = worker.SyncBatch.__new__(worker.SyncBatch)
    batch._context = Context()
    now = time.monotonic()
    share = batch._share(9)
    assert share is not None and 9.5 < share - now < 10.1  # (100 s - 10 s kept back) / 9
    assert (batch._share(1) or 0) - now > 89

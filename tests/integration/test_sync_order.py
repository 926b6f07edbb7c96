"""SYNC-5: one account is worked by one worker at a time, in order. Jobs are grouped by
account on the FIFO queue; within a batch, a job that fails holds back its own account's
later jobs (reported as failures, so SQS redelivers them after it, in order) and nothing else."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from crmsync.jobs import Job
from crmsync.worker import MAX_DELAY_S, MIN_DELAY_S, backoff
from local.emulators.servers import Emulators
from local.stack import LocalStack
from tests.conftest import Api
from tests.integration.helpers import wait_until
from tests.integration.test_gmail_push import _connected
from tests.integration.test_mail_engine import mail
from tests.integration.test_mailbox_sync import cursor_of


def _record(job: Job, group: str) -> dict[str, Any]:
    message_id = str(uuid.uuid4())
    return {
        "messageId": message_id,
        "receiptHandle": message_id,
        "body": job.model_dump_json(),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "0",
            "SenderId": "local",
            "ApproximateFirstReceiveTimestamp": "0",
            "MessageGroupId": group,
            "MessageDeduplicationId": message_id,
            "SequenceNumber": "1",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:sync.fifo",
        "awsRegion": "us-east-1",
    }


@pytest.mark.rule("SYNC-5")
def test_a_failed_job_holds_back_only_its_own_accounts_later_jobs(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    gmail = emulators.google.gmail
    other = f"{tenant}-b"  # one mailbox in each tenant (the plan allows one per user)
    (a_address, a_id), (b_address, b_id) = (
        _connected(api, emulators, tenant),
        _connected(api, emulators, other),
    )
    for address in (a_address, b_address):
        gmail.arrive(address, mail("someone@else.test", [address], "hello").as_bytes())
    gmail.throttle(a_address, 1, retry_after=1)  # A's first call is refused with 429
    jobs = [
        (Job(type="mail.sync", tenant_id=t, account_id=i), i)
        for t, i in ((tenant, a_id), (tenant, a_id), (other, b_id))
    ]
    records = [_record(job, group) for job, group in jobs]
    a_before = len(gmail.mailbox(a_address).requests)
    result = stack.functions["SyncWorkerFunction"].invoke({"Records": records})
    failed = [item["itemIdentifier"] for item in result["batchItemFailures"]]
    assert failed == [records[0]["messageId"], records[1]["messageId"]]  # A's first and, after it, A's second
    assert gmail.mailbox(a_address).requests[a_before:] == [
        "gmail.users.history.list"
    ]  # A's second never ran
    assert cursor_of(stack, b_id) == str(gmail.mailbox(b_address).history_id)  # B went on
    assert cursor_of(stack, a_id) != str(gmail.mailbox(a_address).history_id)  # A's cursor did not move

    # redelivered in order, A's jobs now run one after the other
    retried = stack.functions["SyncWorkerFunction"].invoke({"Records": records[:2]})
    assert retried["batchItemFailures"] == []
    assert cursor_of(stack, a_id) == str(gmail.mailbox(a_address).history_id)


@pytest.mark.rule("SYNC-4")
def test_a_throttled_job_comes_back_after_retry_after_not_the_queue_timeout(
    stack: LocalStack, emulators: Emulators, api: Api, tenant: str
) -> None:
    gmail, google = emulators.google.gmail, emulators.google
    address, account_id = _connected(api, emulators, tenant)
    start = cursor_of(stack, account_id)
    gmail.arrive(address, mail("someone@else.test", [address], "hello").as_bytes())
    gmail.throttle(address, 1, retry_after=1)
    box = gmail.mailbox(address)
    assert google.deliver_push(f"{api.base}/webhooks/gmail", address, box.history_id) == 204
    # nothing ends the 12-minute visibility timeout by hand: the worker asked SQS for 1 second
    wait_until(lambda: cursor_of(stack, account_id) == str(box.history_id), timeout=30)
    assert box.requests.count("gmail.users.history.list") == 2 and start != cursor_of(stack, account_id)


@pytest.mark.rule("SYNC-4")
def test_backoff_takes_retry_after_or_doubles_with_each_receive() -> None:
    assert backoff(1, 7.2) == 7 and backoff(4, 0.1) == MIN_DELAY_S
    assert [backoff(n, None) for n in (1, 2, 3)] == [15, 30, 60]
    assert backoff(12, None) == MAX_DELAY_S and backoff(1, 86400) == MAX_DELAY_S

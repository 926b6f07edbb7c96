"""The sync queue and its dead-letter queue (SQS FIFO)."""

from __future__ import annotations

from crmsync.jobs import Job
from crmsync.stores.aws import client


class SqsJobQueue:
    def __init__(self, queue_url: str) -> None:
        self._url = queue_url
        self._sqs = client("sqs")

    def send(self, job: Job, dedup_id: str) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=job.model_dump_json(),
            MessageGroupId=job.account_id,
            MessageDeduplicationId=dedup_id[:128],
        )


class SqsDeadLetters:
    def __init__(self, queue_url: str) -> None:
        self._url = queue_url
        self._sqs = client("sqs")

    def send(self, body: str, group_id: str, dedup_id: str, reason: str) -> None:
        self._sqs.send_message(
            QueueUrl=self._url,
            MessageBody=body,
            MessageGroupId=group_id[:128],
            MessageDeduplicationId=dedup_id[:128],
            MessageAttributes={"reason": {"DataType": "String", "StringValue": reason[:1000]}},
        )


class SqsVisibility:
    """When failed messages of the sync queue become visible again."""

    def __init__(self, queue_url: str) -> None:
        self._url = queue_url
        self._sqs = client("sqs")

    def delay(self, receipt_handles: list[str], seconds: int) -> None:
        for start in range(0, len(receipt_handles), 10):
            chunk = receipt_handles[start : start + 10]
            self._sqs.change_message_visibility_batch(
                QueueUrl=self._url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": seconds}
                    for i, handle in enumerate(chunk)
                ],
            )

"""The sync worker's batch: FIFO order per account, and when to try a failed account again.

Powertools' SqsFifoPartialProcessor runs the records in order; a failed record holds back
its own account's later records in the batch (they are reported failed too) and nothing
else (SYNC-5). Every record reported failed is then made visible again after a delay of our
choosing rather than the queue's visibility timeout: the provider's Retry-After when it gave
one, otherwise an exponential backoff on the receive count (SYNC-4). The whole group gets the
same delay, since SQS holds a FIFO group back while any of its messages is in flight.

One slow mailbox cannot hold back the others in a batch, nor run the invocation past its
timeout (which would fail every record of the batch): each record gets a share of the time
left, split evenly over the records not yet run, as the job's deadline. A sync past its
deadline stops between two pages and queues the rest as a job of its own (sync/core.py)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from aws_lambda_powertools.utilities.batch import SqsFifoPartialProcessor, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from crmsync.errors import TransientError
from crmsync.jobs import JobRunner, set_deadline

MIN_DELAY_S = 1
MAX_DELAY_S = 900  # past this, SQS's own redrive (maxReceiveCount) decides
BASE_BACKOFF_S = 15
# Time kept back at the end of an invocation (reporting the batch, setting delays): a fifth
# of what is left, at most this.
RESERVE_S = 10.0
MIN_SHARE_S = 1.0
# The sync queue's maxReceiveCount (template.yaml): a job failing on its last receive is
# dead-lettered by the worker itself, with the error as its reason, not redriven bare by SQS.
MAX_RECEIVES = 5


class Visibility(Protocol):
    def delay(self, receipt_handles: list[str], seconds: int) -> None: ...


def _reason(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:1000]


def backoff(receive_count: int, retry_after: float | None) -> int:
    """Seconds until a failed job is tried again."""
    exponential = BASE_BACKOFF_S * 2 ** max(0, receive_count - 1)
    wanted = retry_after if retry_after is not None else exponential
    return int(min(MAX_DELAY_S, max(MIN_DELAY_S, round(wanted))))


class SyncBatch:
    def __init__(self, runner: JobRunner, visibility: Visibility) -> None:
        self._runner = runner
        self._visibility = visibility
        self._processor = SqsFifoPartialProcessor(skip_group_on_error=True)
        # a batch that failed whole is reported item by item too, so that its delays are set
        self._processor.raise_on_entire_batch_failure = False
        self._retry_after: dict[str, float] = {}
        self.outcomes: list[tuple[str, str]] = []
        self._context: Any = None
        self._left = 0
        self._errors: dict[str, str] = {}

    @property
    def runner(self) -> JobRunner:
        return self._runner

    def _record(self, record: SQSRecord) -> str:
        group = record.attributes.message_group_id or ""
        self._left -= 1
        set_deadline(self._share(self._left + 1))
        try:
            outcome = self._runner.handle(record.body, record.message_id, group)
        except TransientError as error:
            if error.retry_after is not None:
                self._retry_after[group] = max(self._retry_after.get(group, 0.0), error.retry_after)
            self._errors[record.message_id] = _reason(error)
            raise
        except Exception as error:
            self._errors[record.message_id] = _reason(error)
            raise
        finally:
            set_deadline(None)
        self.outcomes.append((record.message_id, outcome))
        return outcome

    def _share(self, records: int) -> float | None:
        """This record's deadline: an even share of the time left over the records to run."""
        remaining_ms = getattr(self._context, "get_remaining_time_in_millis", None)
        if remaining_ms is None:
            return None
        remaining = float(remaining_ms()) / 1000
        usable = remaining - min(RESERVE_S, remaining / 5)
        return time.monotonic() + max(MIN_SHARE_S, usable / max(1, records))

    def process(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        self._retry_after.clear()
        self.outcomes = []
        self._context = context
        self._left = len(event.get("Records", []))
        self._errors = {}
        response = process_partial_response(
            event=event, record_handler=self._record, processor=self._processor, context=context
        )
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        by_delay: dict[int, list[str]] = {}
        for raw in event.get("Records", []):
            if raw["messageId"] not in failed:
                continue
            attributes = raw.get("attributes", {})
            group = attributes.get("MessageGroupId", "")
            count = int(attributes.get("ApproximateReceiveCount", "1") or 1)
            reason = self._errors.get(raw["messageId"])
            if reason is not None and count >= MAX_RECEIVES:
                # its last receive: to the dead-letter queue with why, and off the source queue
                self._runner.dead_letter(
                    raw["body"], raw["messageId"], group, f"after {count} tries: {reason}"
                )
                self.outcomes.append((raw["messageId"], "dead-lettered"))
                failed.discard(raw["messageId"])
                continue
            delay = backoff(count, self._retry_after.get(group))
            by_delay.setdefault(delay, []).append(raw["receiptHandle"])
        for delay, handles in by_delay.items():
            self._visibility.delay(handles, delay)
        response["batchItemFailures"] = [
            item for item in response.get("batchItemFailures", []) if item["itemIdentifier"] in failed
        ]
        return response

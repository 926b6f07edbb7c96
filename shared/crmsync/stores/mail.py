"""MailStore on DynamoDB and RawStore on S3.

THREADS_TABLE items (see docs/architecture/data.md, "Threads and messages"):
- provider message map: pk=ACC#{account}            sk=PMSG#{provider message id}
- provider thread map:  pk=ACC#{account}            sk=PTHR#{provider thread id}
- skipped message:      pk=ACC#{account}            sk=SKIP#{provider message id}
- Message-ID index:     pk=T#{tenant}#MID#{id key}  sk=U#{user}  (one entry per user: each user who
                        has the message has their own copy; an entry from before per-user entries
                        has sk=MID and is still read)
- thread:               pk=T#{tenant}#THR#{thread}  sk=THREAD    (version for optimistic locking)
MESSAGES_TABLE items:
- message:              pk=T#{tenant}#U#{user}      sk=MSG#{crm id}
                        gsi1pk=THR#{thread}         gsi1sk={date}#{crm id}   (a thread's messages in order)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from crmsync.accounts.models import Account
from crmsync.errors import TransientError
from crmsync.ids import MAX_ID_KEY_BYTES as MAX_ID_KEY_BYTES  # re-exported: the key bound
from crmsync.ids import id_key
from crmsync.mail.models import (
    MessageRecord,
    MessageRef,
    ProviderMessage,
    ThreadRecord,
    delivery_changes,
)
from crmsync.pagetoken import InvalidPageToken
from crmsync.stores.aws import client, dynamodb
from crmsync.stores.dynamo import batch_get, is_condition_failure, plain

TRANSACT_ITEMS = 100  # TransactWriteItems: at most 100 actions per call


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment else ""


def _ref_item(ref: MessageRef) -> dict[str, Any]:
    return {"crm_message_id": ref.crm_message_id, "crm_thread_id": ref.crm_thread_id, "user_id": ref.user_id}


def _ref(item: dict[str, Any] | None) -> MessageRef | None:
    return MessageRef.model_validate(item) if item else None


def _mid_pk(tenant_id: str, message_id: str) -> str:
    return f"T#{tenant_id}#MID#{id_key(message_id)}"


# Fields that change after a message is created live as attributes of their own beside the
# message's JSON, so that each change is one atomic UpdateItem with no read before it.
_MUTABLE = (
    "published",
    "delivery",
    "delivery_error",
    "provider_message_id",
    "provider_thread_id",
    "removed_in_mailbox",
    "crm_state",
)


def _message(item: dict[str, Any]) -> MessageRecord:
    record = MessageRecord.model_validate_json(str(item["message"]))
    changes = {name: item[name] for name in _MUTABLE if name in item}
    return record.model_copy(update=changes) if changes else record


class DynamoMailStore:
    def __init__(self, threads_table: str, messages_table: str) -> None:
        self._threads_name = threads_table
        self._messages_name = messages_table
        self._threads = dynamodb().Table(threads_table)
        self._messages = dynamodb().Table(messages_table)

    def _get(self, key: dict[str, str]) -> dict[str, Any] | None:
        item = self._threads.get_item(Key=key, ConsistentRead=True).get("Item")
        return plain(item) if item else None

    def find_provider_message(self, account_id: str, provider_message_id: str) -> MessageRef | None:
        item = self._get({"pk": f"ACC#{account_id}", "sk": f"PMSG#{id_key(provider_message_id)}"})
        if item is None:
            return None
        return MessageRef.model_validate(item)

    def find_message_id(self, tenant_id: str, user_id: str, message_id: str) -> MessageRef | None:
        """This user's copy of the message with this Message-ID. One Query reads every user's
        entry of the id (a handful at most), entries from before per-user keys included."""
        items = self._threads.query(
            KeyConditionExpression=Key("pk").eq(_mid_pk(tenant_id, message_id)), ConsistentRead=True
        )["Items"]
        mine = [plain(i) for i in items if i.get("user_id") == user_id]
        return MessageRef.model_validate(mine[0]) if mine else None

    def find_provider_thread(self, account_id: str, provider_thread_id: str) -> str | None:
        item = self._get({"pk": f"ACC#{account_id}", "sk": f"PTHR#{id_key(provider_thread_id)}"})
        return str(item["crm_thread_id"]) if item else None

    def get_thread(self, tenant_id: str, crm_thread_id: str) -> ThreadRecord | None:
        item = self._get({"pk": f"T#{tenant_id}#THR#{crm_thread_id}", "sk": "THREAD"})
        return ThreadRecord.model_validate_json(item["thread"]) if item else None

    # ---- batched reads: one BatchGetItem per 100 keys, as consistent as the single reads
    @staticmethod
    def _batch_get(table: str, keys: Iterable[dict[str, str]]) -> list[dict[str, Any]]:
        return batch_get(table, keys, consistent=True)

    def find_provider_messages(
        self, account_id: str, provider_message_ids: Sequence[str]
    ) -> dict[str, MessageRef]:
        """`find_provider_message` for many: the ids that are mapped, with their message."""
        by_key = {f"PMSG#{id_key(i)}": i for i in provider_message_ids}
        items = self._batch_get(self._threads_name, [{"pk": f"ACC#{account_id}", "sk": k} for k in by_key])
        return {by_key[i["sk"]]: MessageRef.model_validate(i) for i in items}

    def find_provider_threads(self, account_id: str, provider_thread_ids: Sequence[str]) -> dict[str, str]:
        """`find_provider_thread` for many: the provider threads that are mapped, with the CRM's."""
        by_key = {f"PTHR#{id_key(i)}": i for i in provider_thread_ids}
        items = self._batch_get(self._threads_name, [{"pk": f"ACC#{account_id}", "sk": k} for k in by_key])
        return {by_key[i["sk"]]: str(i["crm_thread_id"]) for i in items}

    def find_message_ids(
        self, tenant_id: str, user_id: str, message_ids: Sequence[str]
    ) -> dict[str, MessageRef]:
        """`find_message_id` for many: this user's entry of each id (an entry from before
        per-user keys, sk=MID, first, as the Query finds it)."""
        by_pk = {_mid_pk(tenant_id, m): m for m in message_ids}
        keys = [{"pk": pk, "sk": sk} for pk in by_pk for sk in ("MID", f"U#{user_id}")]
        found: dict[str, MessageRef] = {}
        for item in sorted(self._batch_get(self._threads_name, keys), key=lambda i: str(i["sk"])):
            if item.get("user_id") == user_id:
                found.setdefault(by_pk[item["pk"]], MessageRef.model_validate(item))
        return found

    def get_threads(self, tenant_id: str, crm_thread_ids: Sequence[str]) -> dict[str, ThreadRecord]:
        """`get_thread` for many: the threads that exist, by id."""
        keys = [{"pk": f"T#{tenant_id}#THR#{t}", "sk": "THREAD"} for t in crm_thread_ids]
        threads = [
            ThreadRecord.model_validate_json(i["thread"]) for i in self._batch_get(self._threads_name, keys)
        ]
        return {t.crm_thread_id: t for t in threads}

    def get_messages(
        self, tenant_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], MessageRecord]:
        """`get_message` for many (user id, CRM message id): the messages that exist, so keyed."""
        wanted = [{"pk": f"T#{tenant_id}#U#{user}", "sk": f"MSG#{crm_id}"} for user, crm_id in keys]
        records = [_message(i) for i in self._batch_get(self._messages_name, wanted)]
        return {(r.user_id, r.crm_message_id): r for r in records}

    def record_message(self, record: MessageRecord, thread: ThreadRecord, previous_version: int) -> bool:
        """Creates the message with its maps and thread in one transaction. False when the
        provider copy is mapped already (a duplicate got there first)."""
        message_pk = f"T#{record.tenant_id}#U#{record.user_id}"
        ref = MessageRef(
            crm_message_id=record.crm_message_id, crm_thread_id=record.crm_thread_id, user_id=record.user_id
        )
        actions: list[dict[str, Any]] = []
        if record.provider_message_id:
            actions.append(self._put_map(record.account_id, record, ref, message_pk))
        if record.provider_thread_id:
            item = {
                "pk": f"ACC#{record.account_id}",
                "sk": f"PTHR#{id_key(record.provider_thread_id)}",
                "crm_thread_id": record.crm_thread_id,
            }
            actions.append({"Put": {"TableName": self._threads_name, "Item": item}})
        if record.message_id:
            item = {
                "pk": _mid_pk(record.tenant_id, record.message_id),
                "sk": f"U#{record.user_id}",
                **_ref_item(ref),
            }
            actions.append(
                {
                    "Put": {
                        "TableName": self._threads_name,
                        "Item": item,
                        "ConditionExpression": "attribute_not_exists(pk)",
                    }
                }
            )
        thread_put: dict[str, Any] = {
            "TableName": self._threads_name,
            "Item": {
                "pk": f"T#{record.tenant_id}#THR#{thread.crm_thread_id}",
                "sk": "THREAD",
                "thread": thread.model_dump_json(),
                "version": thread.version,
                # a user's threads, newest first (LINK-4)
                "gsi1pk": f"T#{record.tenant_id}#U#{thread.user_id}",
                "gsi1sk": f"{_iso(thread.last_message_at)}#{thread.crm_thread_id}",
                "account_ids": thread.account_ids,
            },
        }
        if previous_version:
            thread_put["ConditionExpression"] = "version = :v"
            thread_put["ExpressionAttributeValues"] = {":v": previous_version}
        else:
            thread_put["ConditionExpression"] = "attribute_not_exists(pk)"
        actions.append({"Put": thread_put})
        message_item = {
            "pk": message_pk,
            "sk": f"MSG#{record.crm_message_id}",
            "gsi1pk": f"THR#{record.crm_thread_id}",
            "gsi1sk": f"{record.date.isoformat() if record.date else ''}#{record.crm_message_id}",
            "message": record.model_dump_json(),
            "published": False,
        }
        actions.append(
            {
                "Put": {
                    "TableName": self._messages_name,
                    "Item": message_item,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        )
        try:
            self._threads.meta.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except ClientError as error:
            if not is_condition_failure(error):
                raise
            reasons = error.response.get("CancellationReasons") or []
            if record.provider_message_id and reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                return False  # the provider copy is mapped already: a duplicate finished first
            raise TransientError("the thread changed meanwhile; the job is retried") from error
        return True

    def _put_map(
        self, account_id: str, record: MessageRecord, ref: MessageRef, message_pk: str
    ) -> dict[str, Any]:
        item = {
            "pk": f"ACC#{account_id}",
            "sk": f"PMSG#{id_key(record.provider_message_id or '')}",
            "message_pk": message_pk,
            **_ref_item(ref),
        }
        return {
            "Put": {
                "TableName": self._threads_name,
                "Item": item,
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }

    def attach_copy(self, account: Account, message: ProviderMessage, ref: MessageRef) -> None:
        item = {
            "pk": f"ACC#{account.account_id}",
            "sk": f"PMSG#{id_key(message.provider_message_id)}",
            "message_pk": f"T#{account.tenant_id}#U#{ref.user_id}",
            **_ref_item(ref),
        }
        self._threads.put_item(Item=item)
        if message.provider_thread_id:
            self._threads.put_item(
                Item={
                    "pk": f"ACC#{account.account_id}",
                    "sk": f"PTHR#{id_key(message.provider_thread_id)}",
                    "crm_thread_id": ref.crm_thread_id,
                }
            )

    def get_message(self, tenant_id: str, user_id: str, crm_message_id: str) -> MessageRecord | None:
        item = self._messages.get_item(
            Key={"pk": f"T#{tenant_id}#U#{user_id}", "sk": f"MSG#{crm_message_id}"}, ConsistentRead=True
        ).get("Item")
        if not item:
            return None
        return _message(plain(item))

    def mark_published(self, *records: MessageRecord) -> None:
        """Marks the messages published: one UpdateItem for one, one TransactWriteItems of
        updates per 100 for more. Each update requires its message (a missing one fails its
        transaction whole)."""
        self._update_many(records, published=True)

    def _update_many(self, records: Sequence[MessageRecord], **changes: Any) -> None:
        unique = list({(r.user_id, r.crm_message_id): r for r in records}.values())
        if len(unique) == 1:
            self._update(unique[0], **changes)
            return
        names = {f"#{k}": k for k in changes}
        values = {f":{k}": v for k, v in changes.items()}
        for start in range(0, len(unique), TRANSACT_ITEMS):
            actions = [
                {
                    "Update": {
                        "TableName": self._messages_name,
                        "Key": {"pk": f"T#{r.tenant_id}#U#{r.user_id}", "sk": f"MSG#{r.crm_message_id}"},
                        "UpdateExpression": "SET " + ", ".join(f"#{k} = :{k}" for k in changes),
                        "ConditionExpression": "attribute_exists(pk)",
                        "ExpressionAttributeNames": names,
                        "ExpressionAttributeValues": values,
                    }
                }
                for r in unique[start : start + TRANSACT_ITEMS]
            ]
            self._messages.meta.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]

    def _update(self, record: MessageRecord, **changes: Any) -> MessageRecord:
        names = {f"#{k}": k for k in changes}
        values = {f":{k}": v for k, v in changes.items()}
        self._messages.update_item(
            Key={"pk": f"T#{record.tenant_id}#U#{record.user_id}", "sk": f"MSG#{record.crm_message_id}"},
            UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in changes),
            ConditionExpression="attribute_exists(pk)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
        return record.model_copy(update=changes)

    def set_delivery(
        self,
        record: MessageRecord,
        delivery: str,
        error: str | None,
        provider_message_id: str | None = None,
        provider_thread_id: str | None = None,
    ) -> MessageRecord:
        changes = delivery_changes(delivery, error, provider_message_id, provider_thread_id)
        return self._update(record, **changes)

    def set_crm_state(self, record: MessageRecord, state: str) -> MessageRecord:
        return self._update(record, crm_state=state)

    def mark_removed(self, record: MessageRecord, removed: bool, *more: MessageRecord) -> MessageRecord:
        """Marks `record`, and any `more`, removed in the mailbox or not (batched as
        `mark_published`); `record` as marked."""
        self._update_many([record, *more], removed_in_mailbox=removed)
        return record.model_copy(update={"removed_in_mailbox": removed})

    def record_skip(self, account_id: str, provider_message_id: str, reason: str) -> bool:
        """Records the skip; True unless the CRM was told of it already (`mark_skip_told`): a
        skip recorded by a worker that died before its event is told on redelivery. A record
        from before `told` existed counts as told."""
        try:
            self._threads.put_item(
                Item={
                    "pk": f"ACC#{account_id}",
                    "sk": f"SKIP#{id_key(provider_message_id)}",
                    "reason": reason[:2000],
                    "told": False,
                },
                ConditionExpression="attribute_not_exists(pk) OR told = :no",
                ExpressionAttributeValues={":no": False},
            )
        except ClientError as error:
            if is_condition_failure(error):
                return False
            raise
        return True

    def mark_skip_told(self, account_id: str, *provider_message_ids: str) -> None:
        """The CRM was told of these skips: one UpdateItem for one, TransactWriteItems of
        updates per 100 for more."""
        keys = list({k: None for k in (f"SKIP#{id_key(i)}" for i in provider_message_ids)})
        if len(keys) == 1:
            self._threads.update_item(
                Key={"pk": f"ACC#{account_id}", "sk": keys[0]},
                UpdateExpression="SET told = :yes",
                ExpressionAttributeValues={":yes": True},
            )
            return
        for start in range(0, len(keys), TRANSACT_ITEMS):
            actions = [
                {
                    "Update": {
                        "TableName": self._threads_name,
                        "Key": {"pk": f"ACC#{account_id}", "sk": sk},
                        "UpdateExpression": "SET told = :yes",
                        "ExpressionAttributeValues": {":yes": True},
                    }
                }
                for sk in keys[start : start + TRANSACT_ITEMS]
            ]
            self._threads.meta.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]

    def thread_messages(self, tenant_id: str, crm_thread_id: str) -> list[MessageRecord]:
        """Every message of the thread: a Query returns at most 1 MB, so its pages are followed."""
        kwargs: dict[str, Any] = {
            "IndexName": "gsi1",
            "KeyConditionExpression": Key("gsi1pk").eq(f"THR#{crm_thread_id}"),
        }
        records = []
        while True:
            page = self._messages.query(**kwargs)
            for item in page["Items"]:
                record = _message(plain(item))
                if record.tenant_id == tenant_id:
                    records.append(record)
            if not page.get("LastEvaluatedKey"):
                return records
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def unpublished(self, tenant_id: str, user_id: str, account_id: str) -> list[MessageRecord]:
        """The account's messages not marked published: a Query of the user's messages with a
        filter, paged (read after a resync, which reads the whole mailbox anyway)."""
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("pk").eq(f"T#{tenant_id}#U#{user_id}")
            & Key("sk").begins_with("MSG#"),
            "FilterExpression": Attr("published").ne(True),
            "ConsistentRead": True,
        }
        records = []
        while True:
            page = self._messages.query(**kwargs)
            records += [r for item in page["Items"] if (r := _message(plain(item))).account_id == account_id]
            if not page.get("LastEvaluatedKey"):
                return records
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_threads(
        self, tenant_id: str, user_id: str, limit: int, after: dict[str, Any] | None, account_id: str | None
    ) -> tuple[list[ThreadRecord], dict[str, Any] | None]:
        """A user's threads, newest first, from `after` (the position the previous page ended
        at); with where this page ends, if more may follow. The caller signs positions into
        page tokens: a position outside the user's partition is refused here all the same."""
        partition = f"T#{tenant_id}#U#{user_id}"
        kwargs: dict[str, Any] = {
            "IndexName": "gsi1",
            "KeyConditionExpression": Key("gsi1pk").eq(partition),
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if account_id:
            kwargs["FilterExpression"] = Attr("account_ids").contains(account_id)
        if after is not None:
            if after.get("gsi1pk") != partition:
                raise InvalidPageToken("next: not a page token this API gave you for this listing")
            kwargs["ExclusiveStartKey"] = after
        threads: list[ThreadRecord] = []
        last: dict[str, Any] | None = None
        while True:
            kwargs["Limit"] = limit - len(threads)  # never read past what this page returns
            page = self._threads.query(**kwargs)
            threads += [ThreadRecord.model_validate_json(str(i["thread"])) for i in page["Items"]]
            last = page.get("LastEvaluatedKey")
            if last is None or len(threads) >= limit:
                break
            kwargs["ExclusiveStartKey"] = last
        return threads, plain(last) if last else None


class S3RawStore:
    def __init__(self, bucket: str) -> None:
        self._bucket = bucket
        self._s3 = client("s3")

    def put(self, key: str, data: bytes) -> None:
        self._s3.put_object(Bucket=self._bucket, Key=key, Body=data, ContentType="message/rfc822")

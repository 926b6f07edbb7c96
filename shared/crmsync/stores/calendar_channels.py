"""Google Calendar push channels, in the cursors table (CURSORS_TABLE).

Two items per channel (see docs/architecture/providers.md, "Google Calendar channels"):
- by id:      pk=GCALCH#{channel id}  sk=CHANNEL   what a push is checked against (the webhook)
- current:    pk=ACC#{account}        sk=GCALCH    the connection's one current channel

Both hold the record (account, resource id, expiry, the token's SHA-256; never the token).
A renewal writes the new channel and forgets the old one in one transaction, conditional on the
old one still being current, so the old channel's pushes are unknown from that moment on and a
renewal racing a disconnect cannot bring a channel back (ACC-8). `expires_at` (the table's TTL
attribute) is a day after the channel's own expiry, so a lapsed channel leaves nothing behind.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from crmsync.providers.google.calendar_push import ChannelRecord
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import is_condition_failure, plain, transact

TTL_GRACE_S = 86_400
CURRENT = "GCALCH"


def _by_id(channel_id: str) -> dict[str, str]:
    return {"pk": f"GCALCH#{channel_id}", "sk": "CHANNEL"}


def _current(account_id: str) -> dict[str, str]:
    return {"pk": f"ACC#{account_id}", "sk": CURRENT}


class DynamoCalendarChannelStore:
    def __init__(self, table_name: str) -> None:
        self._name = table_name
        self._table = dynamodb().Table(table_name)

    def _read(self, key: dict[str, str]) -> ChannelRecord | None:
        # consistent: Google's first push may follow the channel's creation by milliseconds
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        return ChannelRecord.model_validate(plain(item)["record"]) if item else None

    def get(self, channel_id: str) -> ChannelRecord | None:
        return self._read(_by_id(channel_id))

    def current(self, account_id: str) -> ChannelRecord | None:
        return self._read(_current(account_id))

    def replace(self, old: ChannelRecord | None, new: ChannelRecord) -> bool:
        """`new` becomes the account's current channel and `old` (the current one as read, None
        for none) is forgotten, together; False if the current channel is no longer `old`."""
        body = new.model_dump(mode="json")
        ttl = new.expires_at + TTL_GRACE_S
        current: dict[str, Any] = {
            "TableName": self._name,
            "Item": {**_current(new.account_id), "record": body, "expires_at": ttl},
        }
        if old is None:
            current["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            current["ConditionExpression"] = "#r.channel_id = :old"
            current["ExpressionAttributeNames"] = {"#r": "record"}
            current["ExpressionAttributeValues"] = {":old": old.channel_id}
        actions: list[dict[str, Any]] = [
            {"Put": current},
            {
                "Put": {
                    "TableName": self._name,
                    "Item": {**_by_id(new.channel_id), "record": body, "expires_at": ttl},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            },
        ]
        if old is not None:
            actions.append({"Delete": {"TableName": self._name, "Key": _by_id(old.channel_id)}})
        return transact(self._table, actions)

    def forget(self, record: ChannelRecord) -> None:
        """The channel's items go; the account's current item only if it is still this channel."""
        self._table.delete_item(Key=_by_id(record.channel_id))
        try:
            self._table.delete_item(
                Key=_current(record.account_id),
                ConditionExpression="#r.channel_id = :id",
                ExpressionAttributeNames={"#r": "record"},
                ExpressionAttributeValues={":id": record.channel_id},
            )
        except ClientError as error:
            if not is_condition_failure(error):
                raise

"""DirectoryStore on DynamoDB (table DIRECTORY_TABLE, keys pk/sk).

Items (see docs/architecture/data.md, "Directory"):
- entry:    pk=T#{tenant}              sk=E#{kind}#{id}
- address:  pk=T#{tenant}#A#{address}  sk={kind}#{id}     one per address of an entry
- deal:     pk=T#{tenant}#D#{contact}  sk={deal id}        one per contact of a deal
- settings: pk=T#{tenant}              sk=SETTINGS
- blocklist: pk=T#{tenant}             sk=BLOCK#{user}     a user's blocked addresses and domains
An entry and its index items change in one transaction, guarded by the entry's version.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from boto3.dynamodb.conditions import Key

from crmsync.directory import Blocklist, ConcurrentUpdate, DirectoryRecord, TenantSettings
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import batch_get, plain, transact


def _tenant_pk(tenant_id: str) -> str:
    return f"T#{tenant_id}"


def _entry_key(tenant_id: str, kind: str, entry_id: str) -> dict[str, str]:
    return {"pk": _tenant_pk(tenant_id), "sk": f"E#{kind}#{entry_id}"}


def _address_key(tenant_id: str, address: str, kind: str, entry_id: str) -> dict[str, str]:
    return {"pk": f"T#{tenant_id}#A#{address}", "sk": f"{kind}#{entry_id}"}


def _deal_key(tenant_id: str, contact_id: str, deal_id: str) -> dict[str, str]:
    return {"pk": f"T#{tenant_id}#D#{contact_id}", "sk": deal_id}


def _record(item: dict[str, Any]) -> DirectoryRecord:
    return DirectoryRecord(
        kind=item["kind"],
        id=item["id"],
        data=item["data"],
        addresses=list(item.get("addresses", [])),
        version=item["version"],
        updated_at=datetime.fromisoformat(item["updated_at"]),
    )


class DynamoDirectoryStore:
    def __init__(self, table_name: str) -> None:
        self._name = table_name
        self._table = dynamodb().Table(table_name)

    def get(self, tenant_id: str, kind: str, entry_id: str) -> DirectoryRecord | None:
        item = self._table.get_item(Key=_entry_key(tenant_id, kind, entry_id), ConsistentRead=True).get(
            "Item"
        )
        return _record(plain(item)) if item else None

    def get_many(self, tenant_id: str, keys: Sequence[tuple[str, str]]) -> list[DirectoryRecord]:
        items = batch_get(self._name, [_entry_key(tenant_id, kind, i) for kind, i in keys])
        return [_record(item) for item in items]

    def put(
        self, tenant_id: str, record: DirectoryRecord, previous: DirectoryRecord | None, links: Sequence[str]
    ) -> None:
        item = {
            **_entry_key(tenant_id, record.kind, record.id),
            "kind": record.kind,
            "id": record.id,
            "data": record.data,
            "addresses": record.addresses,
            "version": record.version,
            "updated_at": record.updated_at.isoformat(),
        }
        entry_put: dict[str, Any] = {"TableName": self._name, "Item": item}
        if previous is None:
            entry_put["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            entry_put["ConditionExpression"] = "version = :v"
            entry_put["ExpressionAttributeValues"] = {":v": previous.version}
        actions: list[dict[str, Any]] = [{"Put": entry_put}]
        old_addresses = set(previous.addresses) if previous else set()
        new_addresses = set(record.addresses)
        for address in sorted(old_addresses - new_addresses):
            key = _address_key(tenant_id, address, record.kind, record.id)
            actions.append({"Delete": {"TableName": self._name, "Key": key}})
        for address in sorted(new_addresses - old_addresses):
            key = _address_key(tenant_id, address, record.kind, record.id)
            actions.append(
                {"Put": {"TableName": self._name, "Item": {**key, "kind": record.kind, "id": record.id}}}
            )
        old_links = set(previous.data.get("contact_ids", [])) if previous else set()
        for contact in sorted(old_links - set(links)):
            actions.append(
                {"Delete": {"TableName": self._name, "Key": _deal_key(tenant_id, contact, record.id)}}
            )
        for contact in sorted(set(links) - old_links):
            actions.append(
                {"Put": {"TableName": self._name, "Item": _deal_key(tenant_id, contact, record.id)}}
            )
        self._transact(actions)

    def delete(self, tenant_id: str, record: DirectoryRecord, links: Sequence[str]) -> None:
        actions: list[dict[str, Any]] = [
            {
                "Delete": {
                    "TableName": self._name,
                    "Key": _entry_key(tenant_id, record.kind, record.id),
                    "ConditionExpression": "version = :v",
                    "ExpressionAttributeValues": {":v": record.version},
                }
            }
        ]
        for address in record.addresses:
            key = _address_key(tenant_id, address, record.kind, record.id)
            actions.append({"Delete": {"TableName": self._name, "Key": key}})
        for contact in links:
            actions.append(
                {"Delete": {"TableName": self._name, "Key": _deal_key(tenant_id, contact, record.id)}}
            )
        self._transact(actions)

    def _transact(self, actions: list[dict[str, Any]]) -> None:
        if not transact(self._table, actions):
            raise ConcurrentUpdate

    def owners_of(self, tenant_id: str, address: str) -> list[tuple[str, str]]:
        owners: list[tuple[str, str]] = []
        kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(f"T#{tenant_id}#A#{address}")}
        while True:
            page = self._table.query(**kwargs)
            owners.extend((str(i["kind"]), str(i["id"])) for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                return owners
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def deals_of(self, tenant_id: str, owner_keys: Sequence[tuple[str, str]]) -> list[str]:
        deals: list[str] = []
        for _, contact_id in owner_keys:
            page = self._table.query(KeyConditionExpression=Key("pk").eq(f"T#{tenant_id}#D#{contact_id}"))
            deals.extend(str(i["sk"]) for i in page["Items"])
        return deals

    def get_settings(self, tenant_id: str) -> TenantSettings | None:
        item = self._table.get_item(Key={"pk": _tenant_pk(tenant_id), "sk": "SETTINGS"}).get("Item")
        return TenantSettings.model_validate(plain(item["settings"])) if item else None

    def put_settings(self, tenant_id: str, settings: TenantSettings) -> None:
        self._table.put_item(
            Item={"pk": _tenant_pk(tenant_id), "sk": "SETTINGS", "settings": settings.model_dump(mode="json")}
        )

    def get_blocklist(self, tenant_id: str, user_id: str) -> Blocklist | None:
        item = self._table.get_item(Key={"pk": _tenant_pk(tenant_id), "sk": f"BLOCK#{user_id}"}).get("Item")
        return Blocklist(entries=[str(e) for e in plain(item)["entries"]]) if item else None

    def put_blocklist(self, tenant_id: str, user_id: str, blocklist: Blocklist) -> None:
        self._table.put_item(
            Item={"pk": _tenant_pk(tenant_id), "sk": f"BLOCK#{user_id}", "entries": blocklist.entries}
        )

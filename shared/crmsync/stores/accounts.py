"""AccountStore on DynamoDB (table ACCOUNTS_TABLE).

Items (see docs/architecture/data.md, "Accounts"):
- account:  pk=T#{tenant}#U#{user}  sk=ACC#{id}
            gsi1pk=ACC#{id}; gsi2pk=T#{tenant}, gsi2sk=U#{user}#ACC#{id}; gsi3pk=ADDR#{provider}#{address}
            version: every write is conditional on the version it read (optimistic locking)
- defaults: pk=T#{tenant}#U#{user}  sk=DEFAULT      a counter every change of the user's default moves
                                                   (ACC-6: of two concurrent changes, one fails and retries)
- secret:   pk=ACC#{id}              sk=SECRET       sealed tokens/password, version for optimistic locking
- pending:  pk=STATE#{state id}      sk=STATE        an OAuth connect in flight, TTL expires_at
- consent:  pk=CONFIRM#{sha256(code)} sk=CONFIRM    sealed tokens waiting for the user's confirmation, TTL
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from boto3.dynamodb.conditions import Key
from botocore.exceptions import ClientError

from crmsync.accounts.models import Account, PendingConfirmation, PendingConnect
from crmsync.accounts.ports import ConcurrentAccountUpdate, ConcurrentSecretUpdate
from crmsync.stores.aws import dynamodb
from crmsync.stores.dynamo import is_condition_failure, plain


def _key(account: Account) -> dict[str, str]:
    return {"pk": f"T#{account.tenant_id}#U#{account.user_id}", "sk": f"ACC#{account.account_id}"}


def _item(account: Account, version: int) -> dict[str, Any]:
    return {
        **_key(account),
        "gsi1pk": f"ACC#{account.account_id}",
        "gsi2pk": f"T#{account.tenant_id}",
        "gsi2sk": f"U#{account.user_id}#ACC#{account.account_id}",
        "gsi3pk": f"ADDR#{account.provider}#{account.address}",
        "account": account.model_dump(mode="json"),
        "version": version,
    }


def _account(item: Mapping[str, Any]) -> Account:
    found = plain(item)
    account = Account.model_validate(found["account"])
    account._version = int(found.get("version", 0))  # items written before versions: 0
    return account


def _versioned_put(name: str, account: Account) -> dict[str, Any]:
    """A Put of the account that holds only if nobody wrote it since it was read."""
    condition = "attribute_exists(pk) AND " + (
        "version = :v" if account.version else "attribute_not_exists(version)"
    )
    put: dict[str, Any] = {
        "TableName": name,
        "Item": _item(account, account.version + 1),
        "ConditionExpression": condition,
    }
    if account.version:
        put["ExpressionAttributeValues"] = {":v": account.version}
    return {"Put": put}


def _is_lost_race(error: ClientError) -> bool:
    if is_condition_failure(error):
        return True
    reasons = error.response.get("CancellationReasons") or []
    return any(r.get("Code") == "TransactionConflict" for r in reasons)


class DynamoAccountStore:
    def __init__(self, table_name: str) -> None:
        self._name = table_name
        self._table = dynamodb().Table(table_name)
        # account id → its item's key: an account's key never changes, so a worker that meets the
        # same account job after job finds it with one consistent GetItem, not a query first
        self._keys: dict[str, dict[str, str]] = {}

    def _query_all(self, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        while True:
            page = self._table.query(**kwargs)
            items.extend(plain(i) for i in page["Items"])
            if "LastEvaluatedKey" not in page:
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def list_for_user(self, tenant_id: str, user_id: str) -> list[Account]:
        items = self._query_all(
            KeyConditionExpression=Key("pk").eq(f"T#{tenant_id}#U#{user_id}") & Key("sk").begins_with("ACC#"),
            ConsistentRead=True,
        )
        return sorted((_account(i) for i in items), key=lambda a: a.connected_at)

    def list_for_tenant(self, tenant_id: str) -> list[Account]:
        items = self._query_all(IndexName="gsi2", KeyConditionExpression=Key("gsi2pk").eq(f"T#{tenant_id}"))
        return [_account(i) for i in items]

    def get(self, tenant_id: str, user_id: str, account_id: str) -> Account | None:
        item = self._table.get_item(
            Key={"pk": f"T#{tenant_id}#U#{user_id}", "sk": f"ACC#{account_id}"}, ConsistentRead=True
        ).get("Item")
        return _account(item) if item else None

    def get_by_id(self, account_id: str) -> Account | None:
        key = self._keys.get(account_id)
        if key is None:
            keys = self._table.query(
                IndexName="gsi1", KeyConditionExpression=Key("gsi1pk").eq(f"ACC#{account_id}")
            )["Items"]
            if not keys:
                return None
            key = {"pk": str(keys[0]["pk"]), "sk": str(keys[0]["sk"])}
        item = self._table.get_item(Key=key, ConsistentRead=True).get("Item")
        if not item:
            self._keys.pop(account_id, None)
            return None
        if len(self._keys) >= 10_000:
            self._keys.clear()
        self._keys[account_id] = key
        return _account(item)

    def find_by_address(self, provider: str, address: str) -> list[tuple[str, str]]:
        """(tenant, account id) of the accounts that sync this provider mailbox."""
        keys = self._query_all(
            IndexName="gsi3", KeyConditionExpression=Key("gsi3pk").eq(f"ADDR#{provider}#{address}")
        )
        found = []
        for key in keys:
            item = self._table.get_item(Key={"pk": key["pk"], "sk": key["sk"]}, ConsistentRead=True).get(
                "Item"
            )
            if item:
                account = _account(item)
                if account.can_sync:
                    found.append((account.tenant_id, account.account_id))
        return found

    def create(self, account: Account, sealed: Mapping[str, str] | None) -> None:
        actions: list[dict[str, Any]] = [
            {
                "Put": {
                    "TableName": self._name,
                    "Item": _item(account, 1),
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        if sealed is not None:
            secret = {"pk": f"ACC#{account.account_id}", "sk": "SECRET", "sealed": dict(sealed), "version": 1}
            actions.append({"Put": {"TableName": self._name, "Item": secret}})
        self._table.meta.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        account._version = 1

    def save(self, account: Account) -> None:
        """Writes the account if it is still the version that was read; otherwise raises
        ConcurrentAccountUpdate (read it again, and decide again)."""
        put = {k: v for k, v in _versioned_put(self._name, account)["Put"].items() if k != "TableName"}
        try:
            self._table.put_item(**put)
        except ClientError as error:
            if _is_lost_race(error):
                raise ConcurrentAccountUpdate(account.account_id) from error
            raise
        account._version += 1

    def delete(self, account: Account) -> None:
        self._table.delete_item(Key=_key(account))
        self.delete_secret(account.account_id)

    def default_marker(self, tenant_id: str, user_id: str) -> int:
        """How many times the user's default has changed; read before the accounts."""
        item = self._table.get_item(
            Key={"pk": f"T#{tenant_id}#U#{user_id}", "sk": "DEFAULT"}, ConsistentRead=True
        ).get("Item")
        return int(plain(item)["changes"]) if item else 0

    def set_default(self, account: Account, previous: Account | None, marker: int) -> None:
        """One transaction: the account becomes the default, the previous one stops being it,
        each only at the version that was read, and the user's default marker moves on from
        `marker`. A concurrent change of either account or of the default raises
        ConcurrentAccountUpdate."""
        chosen = account.model_copy(update={"is_default": True})
        actions: list[dict[str, Any]] = [_versioned_put(self._name, chosen)]
        before = None
        if previous is not None and previous.account_id != account.account_id:
            before = previous.model_copy(update={"is_default": False})
            actions.append(_versioned_put(self._name, before))
        guard: dict[str, Any] = {
            "TableName": self._name,
            "Item": {
                "pk": f"T#{account.tenant_id}#U#{account.user_id}",
                "sk": "DEFAULT",
                "changes": marker + 1,
            },
        }
        if marker:
            guard["ConditionExpression"] = "changes = :m"
            guard["ExpressionAttributeValues"] = {":m": marker}
        else:
            guard["ConditionExpression"] = "attribute_not_exists(pk)"
        actions.append({"Put": guard})
        try:
            self._table.meta.client.transact_write_items(TransactItems=actions)  # type: ignore[arg-type]
        except ClientError as error:
            if _is_lost_race(error):
                raise ConcurrentAccountUpdate(account.account_id) from error
            raise
        account.is_default = True
        account._version += 1
        if previous is not None and before is not None:
            previous.is_default = False
            previous._version += 1

    def get_secret(self, account_id: str) -> tuple[dict[str, str], int] | None:
        item = self._table.get_item(Key={"pk": f"ACC#{account_id}", "sk": "SECRET"}, ConsistentRead=True).get(
            "Item"
        )
        if not item:
            return None
        found = plain(item)
        return dict(found["sealed"]), int(found["version"])

    def put_secret(self, account_id: str, sealed: Mapping[str, str], expected_version: int | None) -> int:
        version = (expected_version or 0) + 1
        item: dict[str, Any] = {
            "pk": f"ACC#{account_id}",
            "sk": "SECRET",
            "sealed": dict(sealed),
            "version": version,
        }
        try:
            if expected_version is None:
                self._table.put_item(Item=item, ConditionExpression="attribute_not_exists(pk)")
            else:
                self._table.put_item(
                    Item=item,
                    ConditionExpression="version = :v",
                    ExpressionAttributeValues={":v": expected_version},
                )
        except ClientError as error:
            if is_condition_failure(error):
                raise ConcurrentSecretUpdate from error
            raise
        return version

    def delete_secret(self, account_id: str) -> None:
        self._table.delete_item(Key={"pk": f"ACC#{account_id}", "sk": "SECRET"})

    def put_pending(self, pending: PendingConnect) -> None:
        self._table.put_item(
            Item={
                "pk": f"STATE#{pending.state_id}",
                "sk": "STATE",
                "pending": pending.model_dump_json(),  # a string: msal's flow may hold floats
                "expires_at": pending.expires_at,
            }
        )

    def _take(self, key: dict[str, str], attribute: str) -> str | None:
        """Delete an item and return one of its attributes: of two callers, only one gets it."""
        try:
            response = self._table.delete_item(
                Key=key, ConditionExpression="attribute_exists(pk)", ReturnValues="ALL_OLD"
            )
        except ClientError as error:
            if is_condition_failure(error):
                return None
            raise
        return str(response["Attributes"][attribute])

    def take_pending(self, state_id: str) -> PendingConnect | None:
        """Delete and return: of two callbacks with one state, only one gets it."""
        found = self._take({"pk": f"STATE#{state_id}", "sk": "STATE"}, "pending")
        return PendingConnect.model_validate_json(found) if found is not None else None

    def put_confirmation(self, confirmation: PendingConfirmation) -> None:
        self._table.put_item(
            Item={
                "pk": f"CONFIRM#{confirmation.confirmation_id}",
                "sk": "CONFIRM",
                "confirmation": confirmation.model_dump_json(),
                "expires_at": confirmation.expires_at,
            },
            ConditionExpression="attribute_not_exists(pk)",
        )

    def take_confirmation(self, confirmation_id: str) -> PendingConfirmation | None:
        """Delete and return: a confirmation is used once, by whoever comes first."""
        found = self._take({"pk": f"CONFIRM#{confirmation_id}", "sk": "CONFIRM"}, "confirmation")
        return PendingConfirmation.model_validate_json(found) if found is not None else None

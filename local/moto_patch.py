"""moto's TransactWriteItems without a whole-table copy per transaction, for the local stack
(and so the tests) and the benchmarks, which fill tables through the real engine: with moto's
own copy, every transaction costs as much as all the tables' items together."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def moto_transactions_without_table_copies() -> Iterator[None]:
    """moto backs up a table with copy.deepcopy for every item of a TransactWriteItems that
    touches it, to roll back on failure: O(table) per transaction, quadratic over a run that
    fills the tables (N=1000 took over 6 minutes and 12 GB before this). Here the backup holds
    only the items the transaction touches, put back if it fails: the same all-or-nothing
    answer, at a cost that does not grow with the table. The request counts are unaffected."""
    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    class NoTableCopies:
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

        def __getattr__(self, name: str) -> Any:
            return getattr(copy, name)

    original = models.DynamoDBBackend.transact_write_items

    def transact_write_items(backend: Any, transact_items: list[dict[str, Any]]) -> None:
        saved: list[tuple[Any, Any, Any, Any]] = []  # (table, hash, range or None, item before)
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = backend.tables.get(op.get("TableName"))
            key = op.get("Key") or op.get("Item") or {}
            if table is None or table.hash_key_attr not in key:
                continue
            hash_value = DynamoType(key[table.hash_key_attr])
            range_value = DynamoType(key[table.range_key_attr]) if table.range_key_attr else None
            partition = table.items.get(hash_value)
            if range_value is None:  # a table without a sort key: the partition is the item
                before = partition
            else:  # a partition may exist and be empty: it is a dict of sort key -> item
                before = partition.get(range_value) if partition is not None else None
            saved.append((table, hash_value, range_value, copy.deepcopy(before)))
        try:
            original(backend, transact_items)
        except Exception:
            for table, hash_value, range_value, before in reversed(saved):
                if range_value is None:
                    table.items.pop(hash_value, None)
                    if before is not None:
                        table.items[hash_value] = before
                else:
                    table.items[hash_value].pop(range_value, None)
                    if before is not None:
                        table.items[hash_value][range_value] = before
            raise

    real_copy = getattr(models, "copy")  # noqa: B009
    setattr(models, "copy", NoTableCopies())  # noqa: B010 (moto's module, not exported)
    setattr(models.DynamoDBBackend, "transact_write_items", transact_write_items)  # noqa: B010
    try:
        yield
    finally:
        setattr(models.DynamoDBBackend, "transact_write_items", original)  # noqa: B010
        setattr(models, "copy", real_copy)  # noqa: B010


@contextmanager
def moto_event_paths_parsed_once() -> Iterator[None]:
    """moto shapes each event for each rule target by parsing the same JSONPath expressions
    again (eight per event, through a PLY parser: about 7 ms of CPU per event); here each
    expression is parsed once and its parsed form reused. The same answers, parsed once."""
    import functools

    import jsonpath_ng.ext

    ext: Any = jsonpath_ng.ext  # untyped attribute access: the module does not re-export `parse`
    original = ext.parse
    ext.parse = functools.lru_cache(maxsize=256)(original)
    try:
        yield
    finally:
        ext.parse = original

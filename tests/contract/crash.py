"""The worker dies between two of its writes (a Lambda timeout, out of memory, a lost container),
for every provider: the crash plumbing the contract scenarios share.

`crashing(stack)` wraps every store the worker's mail sync writes through: it starts at the layer's
sync loop and `mail.sync` job, walks their attributes (and their parts' attributes: the engine,
the schedule the job reports to), and wraps each store it meets (an object of `crmsync.stores`) in
`CrashingWrites`, in place; everything is put back afterwards. No private attribute name is
written here: a rewritten engine that keeps its stores in other attributes, or in parts of its
own, is wrapped all the same.

`CrashingWrites` knows the stores' READS; every other public method is a write. A batched write
someone adds later (`record_many`, a publisher batch) is therefore a crash point without anyone
listing it. `CrashPlan` counts the writes of a round and raises `Crash` at the n-th, before it
lands or just after it did."""

from __future__ import annotations

import inspect
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from local.stack import LocalStack

# What the stores answer without changing anything. Anything else they do is a write.
READS = frozenset(
    {
        # the mail store (stores/mail.py): maps, the Message-ID index, threads, messages, skips
        "find_provider_message",
        "find_provider_messages",
        "find_message_id",
        "find_message_ids",
        "find_provider_thread",
        "find_provider_threads",
        "get_thread",
        "get_threads",
        "get_message",
        "get_messages",
        "thread_messages",
        "list_threads",
        # the cursor, progress and due stores (stores/cursors.py)
        "get",
        "get_progress",
        "due",
        # the account store (stores/accounts.py)
        "get_by_id",
        "list_for_user",
        "list_for_tenant",
        "find_by_address",
        "get_secret",
    }
)

# Parts of the layer the walk does not enter: the directory is read-only to the sync and shared
# with the API (its store writes are the API's); a provider's adapters only read (sync/core.py).
NOT_WORKER_PARTS = ("crmsync.directory", "crmsync.providers", "crmsync.settings")


class Crash(Exception):
    """The worker dies here."""


class CrashPlan:
    """Counts the worker's writes since `arm`; the `at`-th one raises once, before it lands or
    after. Records each cursor move (an `advance` that took) as (expected, new)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at = 0
        self.after = False
        self.writes = 0
        self.names: list[str] = []  # the writes since `arm`, in order
        self.crashes = 0
        self.advances: list[tuple[str | None, str]] = []
        self.wrapped: list[str] = []  # "Holder.attribute: StoreClass", what `crashing` wrapped
        self.stores: list[Any] = []  # the stores wrapped

    def arm(self, at: int = 0, after: bool = False) -> None:
        """Count from zero; crash at write `at` (0: only count)."""
        with self.lock:
            self.at, self.after, self.writes, self.names = at, after, 0, []

    def _hit(self, after: bool) -> bool:
        if self.at and self.writes == self.at and self.after == after:
            self.at = 0  # once
            self.crashes += 1
            return True
        return False

    def write(self, name: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self.lock:
            self.writes += 1
            self.names.append(name)
            if self._hit(after=False):
                raise Crash(f"before {name} (write {self.writes})")
        result = target(*args, **kwargs)
        with self.lock:
            if name == "advance" and result:
                bound = inspect.signature(target).bind(*args, **kwargs).arguments
                self.advances.append((bound.get("expected"), str(bound["new"])))
            if self._hit(after=True):
                raise Crash(f"after {name} (write {self.writes})")
        return result


class CrashingWrites:
    """A real store (DynamoDB, S3, EventBridge) whose reads pass through and whose every other
    public method is a counted write, a crash point."""

    def __init__(self, inner: Any, plan: CrashPlan) -> None:
        self._inner = inner
        self._plan = plan

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if name.startswith("_") or name in READS or not callable(target):
            return target
        return lambda *args, **kwargs: self._plan.write(name, target, args, kwargs)


def _is_store(value: object) -> bool:
    return type(value).__module__.startswith("crmsync.stores.")


def _is_part(value: object) -> bool:
    module = type(value).__module__
    return module.startswith("crmsync.") and not _is_store(value) and not module.startswith(NOT_WORKER_PARTS)


def _wrap(roots: list[Any], plan: CrashPlan) -> list[tuple[Any, str, Any]]:
    """Wraps every store found on the roots and on their parts; returns what to put back."""
    undo: list[tuple[Any, str, Any]] = []
    seen: set[int] = set()
    waiting = list(roots)
    while waiting:
        holder = waiting.pop()
        if id(holder) in seen or not hasattr(holder, "__dict__"):
            continue
        seen.add(id(holder))
        for name, value in list(vars(holder).items()):
            if isinstance(value, CrashingWrites):
                continue
            if _is_store(value):
                setattr(holder, name, CrashingWrites(value, plan))
                undo.append((holder, name, value))
                plan.wrapped.append(f"{type(holder).__name__}.{name}: {type(value).__name__}")
                plan.stores.append(value)
            elif inspect.ismethod(value) and _is_part(value.__self__):
                waiting.append(value.__self__)  # e.g. the schedule's `synced` the job reports to
            elif _is_part(value):
                waiting.append(value)
    return undo


@contextmanager
def crashing(stack: LocalStack) -> Iterator[CrashPlan]:
    """The worker's mail sync (the same services object the stack's worker uses) with its stores
    wrapped for the length of the block; only counting until armed."""
    services, plan = stack.services, CrashPlan()
    undo = _wrap([services.mailbox_sync(), services.mail_sync_job()], plan)
    try:
        yield plan
    finally:
        for holder, name, value in reversed(undo):
            setattr(holder, name, value)

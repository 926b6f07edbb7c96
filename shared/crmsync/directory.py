"""The directory: the service's copy of the tenant's users, contacts, leads, deals and settings.

The CRM backend keeps it current through the API; the sync rules ask it who owns an address
(LINK-1, LINK-2, MAIL-4, MAIL-5, CAL-13) and what the tenant's plan and settings are
(ACC-4, SEND-3, CAL-11). Addresses compare case-insensitively.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from crmsync.auth import Principal
from crmsync.errors import Conflict, Forbidden, NotFound, Unprocessable
from crmsync.events import (
    DirectoryEntryDeleted,
    DirectoryEntryUpserted,
    DirectoryKind,
    EventPublisher,
    TenantSettingsChanged,
)
from crmsync.ids import check_id, is_address, normalize_address

Plan = Literal["essential", "advanced", "professional", "power", "enterprise"]
# ACC-4: mailbox accounts a user may connect, by plan.
PLAN_MAILBOX_LIMITS: dict[str, int] = {
    "essential": 0,
    "advanced": 1,
    "professional": 2,
    "power": 3,
    "enterprise": 5,
}


def _address(value: str) -> str:
    if not is_address(value):
        raise ValueError("not a valid e-mail address")
    return normalize_address(value)


def _entity_id(value: str) -> str:
    check_id(value)
    return value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))  # the same address twice is one address


Address = Annotated[str, AfterValidator(_address)]
Addresses = Annotated[list[Address], AfterValidator(_unique)]
EntityId = Annotated[str, AfterValidator(_entity_id)]
Name = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class UserEntry(_Strict):
    """A user of the tenant (someone who logs into the CRM). The id is the JWT's `sub`."""

    name: Name
    email: Address = Field(description="The user's login address.")
    alternative_addresses: Addresses = Field(
        default_factory=list, max_length=10, description="Verified extra sender addresses (LINK-9)."
    )
    role: Literal["admin", "member"] = "member"
    deal_linking: Literal["automatic", "manual"] = Field(
        default="automatic",
        description="LINK-2: `automatic` links synced mail to the open deal; `manual`: only the user does.",
    )


class ContactEntry(_Strict):
    """A person in the CRM who is not a user."""

    name: Name
    emails: Addresses = Field(default_factory=list, max_length=20)
    owner_user_id: EntityId | None = None


class LeadEntry(_Strict):
    name: Name
    emails: Addresses = Field(default_factory=list, max_length=20)
    owner_user_id: EntityId | None = None


class DealEntry(_Strict):
    name: Name
    status: Literal["open", "won", "lost"] = "open"
    contact_ids: list[EntityId] = Field(default_factory=list, max_length=40)
    owner_user_id: EntityId | None = None
    updated_at: datetime | None = Field(
        default=None, description="When the deal last changed in the CRM; the newest open deal wins (LINK-2)."
    )


class TenantSettings(_Strict):
    plan: Plan = "essential"
    automation_sender: Literal["tenant_provider", "default_account"] = "tenant_provider"
    apply_gap_changes: bool = False

    @property
    def mailbox_limit(self) -> int:
        return PLAN_MAILBOX_LIMITS[self.plan]


Entry = UserEntry | ContactEntry | LeadEntry | DealEntry
ENTRY_MODELS: dict[str, type[_Strict]] = {
    "users": UserEntry,
    "contacts": ContactEntry,
    "leads": LeadEntry,
    "deals": DealEntry,
}


class DirectoryRecord(BaseModel):
    """An entry as stored and returned by the API."""

    kind: DirectoryKind
    id: str
    data: dict[str, Any]
    addresses: list[str]
    version: int
    updated_at: datetime


BlockEntry = Annotated[
    str,
    StringConstraints(
        min_length=3,
        max_length=254,
        strip_whitespace=True,
        to_lower=True,
        pattern=r"^([^\s@<>()\[\],;:\"\\]{1,64})?@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$",
    ),
]


class Blocklist(_Strict):
    """A user's blocked addresses (`name@example.com`) and domains (`@example.com`) (LINK-5, MAIL-6)."""

    entries: list[BlockEntry] = Field(default_factory=list, max_length=1000)

    def match(self, addresses: Sequence[str]) -> str | None:
        """The first entry that blocks one of `addresses`, or None."""
        blocked = set(self.entries)
        for address in addresses:
            lowered = address.lower()
            for candidate in (lowered, "@" + lowered.rsplit("@", 1)[-1]):
                if candidate in blocked:
                    return candidate
        return None


class LookupResult(BaseModel):
    """Who owns an address in a tenant."""

    address: str
    users: list[DirectoryRecord] = Field(default_factory=list)
    contacts: list[DirectoryRecord] = Field(default_factory=list)
    leads: list[DirectoryRecord] = Field(default_factory=list)
    deals: list[DirectoryRecord] = Field(default_factory=list)

    @property
    def is_tenant_user(self) -> bool:
        return bool(self.users)


class DirectoryStore(Protocol):
    """Port: persistence of the directory (see stores/directory.py)."""

    def get(self, tenant_id: str, kind: str, entry_id: str) -> DirectoryRecord | None: ...

    def get_many(self, tenant_id: str, keys: Sequence[tuple[str, str]]) -> list[DirectoryRecord]: ...

    def put(
        self, tenant_id: str, record: DirectoryRecord, previous: DirectoryRecord | None, links: Sequence[str]
    ) -> None: ...

    def delete(self, tenant_id: str, record: DirectoryRecord, links: Sequence[str]) -> None: ...

    def owners_of(self, tenant_id: str, address: str) -> list[tuple[str, str]]: ...

    def deals_of(self, tenant_id: str, owner_keys: Sequence[tuple[str, str]]) -> list[str]: ...

    def get_settings(self, tenant_id: str) -> TenantSettings | None: ...

    def get_blocklist(self, tenant_id: str, user_id: str) -> Blocklist | None: ...

    def put_blocklist(self, tenant_id: str, user_id: str, blocklist: Blocklist) -> None: ...

    def put_settings(self, tenant_id: str, settings: TenantSettings) -> None: ...


class ConcurrentUpdate(Exception):
    """The stored entry changed between read and write."""


def _addresses_of(kind: str, entry: _Strict) -> list[str]:
    if isinstance(entry, UserEntry):
        found: Iterable[str] = [entry.email, *entry.alternative_addresses]
    elif isinstance(entry, ContactEntry | LeadEntry):
        found = entry.emails
    else:
        found = []
    return sorted(set(found))


def _links_of(entry: _Strict) -> list[str]:
    """Contacts a deal belongs to: the deal is found through them."""
    return sorted(set(entry.contact_ids)) if isinstance(entry, DealEntry) else []


LOOKUP_TTL_S = 60  # how long `lookup_many` keeps an answer (as the engine keeps a blocklist)
_LOOKUPS_KEPT = 10_000


class Directory:
    """The directory's rules, over a store and an event publisher."""

    def __init__(
        self,
        store: DirectoryStore,
        publisher: EventPublisher,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._clock = clock
        self._lookups: dict[tuple[str, str], tuple[float, LookupResult]] = {}  # (tenant, address)
        self._lookups_lock = threading.Lock()

    def _forget_lookups(self, tenant_id: str) -> None:
        """An entry of the tenant changed through this instance: its lookups are read afresh."""
        with self._lookups_lock:
            for key in [k for k in self._lookups if k[0] == tenant_id]:
                del self._lookups[key]

    # ---- entries
    def get(self, principal: Principal, kind: DirectoryKind, entry_id: str) -> DirectoryRecord:
        check_id(entry_id)
        record = self._store.get(principal.tenant_id, kind, entry_id)
        if record is None:
            raise NotFound(f"no {kind[:-1]} with id {entry_id!r} in the directory")
        return record

    def upsert(
        self, principal: Principal, kind: DirectoryKind, entry_id: str, entry: _Strict
    ) -> DirectoryRecord:
        principal.require_directory_writer()
        check_id(entry_id)
        if not isinstance(entry, ENTRY_MODELS[kind]):
            raise Unprocessable(f"body is not a {kind[:-1]} entry")
        data = entry.model_dump(mode="json")
        for _ in range(3):
            previous = self._store.get(principal.tenant_id, kind, entry_id)
            if previous is not None and previous.data == data:
                return previous  # an unchanged PUT writes nothing and tells nobody
            record = DirectoryRecord(
                kind=kind,
                id=entry_id,
                data=data,
                addresses=_addresses_of(kind, entry),
                version=(previous.version if previous else 0) + 1,
                updated_at=datetime.now(UTC),
            )
            try:
                self._store.put(principal.tenant_id, record, previous, _links_of(entry))
            except ConcurrentUpdate:
                continue
            self._forget_lookups(principal.tenant_id)
            self._publisher.publish(
                [
                    DirectoryEntryUpserted(
                        tenant_id=principal.tenant_id,
                        kind=kind,
                        id=entry_id,
                        addresses=record.addresses,
                        version=record.version,
                    )
                ]
            )
            return record
        raise Conflict(f"{kind[:-1]} {entry_id!r} is being changed concurrently; retry the request")

    def delete(self, principal: Principal, kind: DirectoryKind, entry_id: str) -> bool:
        """Remove an entry. Deleting what is not there is not an error (DELETE is idempotent)."""
        principal.require_directory_writer()
        check_id(entry_id)
        record = self._store.get(principal.tenant_id, kind, entry_id)
        if record is None:
            return False
        links = record.data.get("contact_ids", []) if kind == "deals" else []
        self._store.delete(principal.tenant_id, record, links)
        self._forget_lookups(principal.tenant_id)
        self._publisher.publish(
            [DirectoryEntryDeleted(tenant_id=principal.tenant_id, kind=kind, id=entry_id)]
        )
        return True

    # ---- lookups used by the sync rules
    def lookup(self, tenant_id: str, address: str) -> LookupResult:
        """Which users, contacts, leads and deals own ``address`` (case-insensitive)."""
        if not is_address(address):
            raise Unprocessable("address: not a valid e-mail address")
        normalized = normalize_address(address)
        owners = self._store.owners_of(tenant_id, normalized)
        contact_keys = [(k, i) for k, i in owners if k == "contacts"]
        deal_ids = self._store.deals_of(tenant_id, contact_keys) if contact_keys else []
        keys = list(dict.fromkeys([*owners, *(("deals", d) for d in deal_ids)]))
        records = self._store.get_many(tenant_id, keys)
        result = LookupResult(address=normalized)
        for record in sorted(records, key=lambda r: (r.kind, r.id)):
            getattr(result, record.kind).append(record)
        return result

    def lookup_many(self, tenant_id: str, addresses: Sequence[str]) -> dict[str, LookupResult]:
        """`lookup` for many addresses, keyed by the address as given. What this instance
        looked up less than LOOKUP_TTL_S ago is answered from memory (a change made through
        another instance applies to lookups from then on; one made through this one at once);
        the rest is read together: the owners of each address, the deals of all their contacts
        at once, then every entry in one batch."""
        normalized: dict[str, str] = {}
        for address in addresses:
            if not is_address(address):
                raise Unprocessable("address: not a valid e-mail address")
            normalized[address] = normalize_address(address)
        now = self._clock()
        with self._lookups_lock:
            cached = {
                a: found[1]
                for a in dict.fromkeys(normalized.values())
                if (found := self._lookups.get((tenant_id, a))) is not None and found[0] > now
            }
        wanted = [a for a in dict.fromkeys(normalized.values()) if a not in cached]
        if wanted:
            owners = {a: self._store.owners_of(tenant_id, a) for a in wanted}
            contact_keys = list(
                dict.fromkeys(o for found in owners.values() for o in found if o[0] == "contacts")
            )
            deals_by_contact = {key: self._store.deals_of(tenant_id, [key]) for key in contact_keys}
            keys_of = {
                a: list(
                    dict.fromkeys(
                        [
                            *found,
                            *(
                                ("deals", d)
                                for o in found
                                if o in deals_by_contact
                                for d in deals_by_contact[o]
                            ),
                        ]
                    )
                )
                for a, found in owners.items()
            }
            records = {
                (r.kind, r.id): r
                for r in self._store.get_many(
                    tenant_id, list(dict.fromkeys(k for ks in keys_of.values() for k in ks))
                )
            }
            with self._lookups_lock:
                if len(self._lookups) > _LOOKUPS_KEPT:
                    self._lookups.clear()
                for address, keys in keys_of.items():
                    result = LookupResult(address=address)
                    for record in sorted(
                        (records[k] for k in keys if k in records), key=lambda r: (r.kind, r.id)
                    ):
                        getattr(result, record.kind).append(record)
                    cached[address] = result
                    self._lookups[(tenant_id, address)] = (now + LOOKUP_TTL_S, result)
        return {given: cached[address] for given, address in normalized.items()}

    def blocklist(self, tenant_id: str, user_id: str) -> Blocklist:
        return self._store.get_blocklist(tenant_id, user_id) or Blocklist()

    def set_blocklist(self, principal: Principal, blocklist: Blocklist) -> Blocklist:
        """A user's own blocklist, replaced whole (duplicates collapse)."""
        cleaned = Blocklist(entries=list(dict.fromkeys(blocklist.entries)))
        self._store.put_blocklist(principal.tenant_id, principal.user_id, cleaned)
        return cleaned

    def deal_linking(self, tenant_id: str, user_id: str) -> str:
        """LINK-2: the user's deal linking setting (`automatic` for a user the CRM never described)."""
        record = self._store.get(tenant_id, "users", user_id)
        return str(record.data.get("deal_linking", "automatic")) if record else "automatic"

    def settings(self, tenant_id: str) -> TenantSettings:
        """The tenant's settings; a tenant the CRM never configured has the defaults."""
        return self._store.get_settings(tenant_id) or TenantSettings()

    def put_settings(self, principal: Principal, settings: TenantSettings) -> TenantSettings:
        """Replace the settings. The plan is billing data (ACC-4): only the CRM backend (role
        `service`) changes it. An admin may send it unchanged, or leave it out (it is kept)."""
        principal.require_directory_writer()
        stored = self._store.get_settings(principal.tenant_id)
        current = stored or TenantSettings()
        if "plan" not in settings.model_fields_set:
            settings = settings.model_copy(update={"plan": current.plan})
        if settings.plan != current.plan and principal.role != "service":
            raise Forbidden(
                f"the plan is billing data: only the CRM backend (a service token) may change it;"
                f" it stays {current.plan}. Send the other settings with the plan unchanged or left out"
            )
        if stored == settings:
            return settings
        self._store.put_settings(principal.tenant_id, settings)
        self._publisher.publish(
            [TenantSettingsChanged(tenant_id=principal.tenant_id, **settings.model_dump())]
        )
        return settings

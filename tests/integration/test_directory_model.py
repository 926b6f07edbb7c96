"""Property: whatever sequence of writes the CRM makes, a lookup answers exactly what a plain
in-memory model of the directory answers (the address index never drifts from the entries)."""

from __future__ import annotations

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmsync import services
from crmsync.auth import Principal
from crmsync.directory import ContactEntry, LeadEntry
from local.stack import LocalStack

ADDRESSES = ["a@x.io", "B@x.io", "c@y.org", "d@y.org"]
IDS = ["e1", "e2", "e3"]

operation = st.one_of(
    st.tuples(
        st.just("put"),
        st.sampled_from(["contacts", "leads"]),
        st.sampled_from(IDS),
        st.lists(st.sampled_from(ADDRESSES), max_size=3),
    ),
    st.tuples(st.just("delete"), st.sampled_from(["contacts", "leads"]), st.sampled_from(IDS), st.just([])),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(operation, min_size=1, max_size=12))
def test_lookups_match_a_model_after_any_sequence_of_writes(stack: LocalStack, operations: list) -> None:
    directory = services.current().directory()
    admin = Principal(tenant_id=f"prop-{uuid.uuid4().hex[:10]}", user_id="u1", role="admin")
    model: dict[tuple[str, str], list[str]] = {}  # order kept: the CRM's first address is its primary
    versions: dict[tuple[str, str], int] = {}
    for action, kind, entry_id, addresses in operations:
        key = (kind, entry_id)
        if action == "put":
            entry = (ContactEntry if kind == "contacts" else LeadEntry)(name=entry_id, emails=addresses)
            record = directory.upsert(admin, kind, entry_id, entry)
            wanted = list(dict.fromkeys(a.lower() for a in addresses))
            if model.get(key) != wanted or key not in model:
                versions[key] = versions.get(key, 0) + 1 if key in model else 1
            model[key] = wanted
            assert record.version == versions[key]
        else:
            directory.delete(admin, kind, entry_id)
            model.pop(key, None)
            versions.pop(key, None)
    for address in ADDRESSES:
        found = directory.lookup(admin.tenant_id, address.upper())
        got = {("contacts", r.id) for r in found.contacts} | {("leads", r.id) for r in found.leads}
        assert got == {k for k, addrs in model.items() if address.lower() in addrs}, address

"""The event contract and the OpenAPI document in docs/ are what the code defines."""

from __future__ import annotations

import json
import uuid

from crmsync.events import EVENT_TYPES
from local.stack import LocalStack
from scripts.generate_docs import (
    EVENTS_DIR,
    EVENTS_MD,
    OPENAPI,
    dumps,
    event_schemas,
    events_markdown,
    openapi,
)
from tests.conftest import Api


def test_event_schemas_in_docs_are_current() -> None:
    generated = event_schemas()
    on_disk = {p.stem: p.read_text() for p in EVENTS_DIR.glob("*.json")}
    assert set(on_disk) == set(generated), "run `make schemas`"
    for name, schema in generated.items():
        assert on_disk[name] == dumps(schema), f"docs/events/{name}.json is stale: run `make schemas`"


def test_every_event_type_is_documented() -> None:
    text = EVENTS_MD.read_text()
    assert text == events_markdown(event_schemas()), "docs/events.md is stale: run `make schemas`"
    for model in EVENT_TYPES:
        assert f"## `{model.detail_type()}`" in text, model.detail_type()


def test_openapi_document_is_current(stack: LocalStack) -> None:
    assert OPENAPI.read_text() == dumps(openapi(stack)), "docs/openapi.json is stale: run `make schemas`"


def test_published_events_validate_against_their_models(api: Api, stack: LocalStack) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    admin = api.token(tenant, "u1", "admin")
    api.call("PUT", "/v1/directory/contacts/c1", admin, json={"name": "C", "emails": ["c@x.io"]})
    api.call("DELETE", "/v1/directory/contacts/c1", admin)
    api.call("PUT", "/v1/directory/settings", api.token(tenant, "crm", "service"), json={"plan": "advanced"})
    models = {m.detail_type(): m for m in EVENT_TYPES}
    for detail_type in ("DirectoryEntryUpserted", "DirectoryEntryDeleted", "TenantSettingsChanged"):
        event = stack.wait_for_event(
            lambda e, d=detail_type: e["detail-type"] == d and e["detail"]["tenant_id"] == tenant
        )
        assert event["source"] == "crmsync"
        models[detail_type].model_validate_json(json.dumps(event["detail"]))

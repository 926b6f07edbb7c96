"""Generates what docs/ holds that code defines: the events' JSON Schemas and the OpenAPI
document. `make schemas` writes them; tests/integration/test_contract.py checks them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = ROOT / "docs" / "events"
OPENAPI = ROOT / "docs" / "openapi.json"


def dumps(document: Any) -> str:
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def event_schemas() -> dict[str, dict[str, Any]]:
    sys.path.insert(0, str(ROOT / "shared"))
    from crmsync.events import EVENT_TYPES

    schemas = {}
    for model in EVENT_TYPES:
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://crmsync.dev/events/{model.detail_type()}.json"
        schema["description"] = (model.__doc__ or "").strip()
        schema["x-detail-type"] = model.detail_type()
        schema["x-schema-version"] = model.schema_version
        schemas[model.detail_type()] = schema
    return schemas


def openapi(stack: Any) -> dict[str, Any]:
    """Merges the OpenAPI schema of every function that serves HTTP routes in the template."""
    from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

    from crmsync import __version__

    merge = OpenAPIMerge(
        title="crmsync API",
        version=__version__,
        description=(
            "Two-way mailbox and calendar sync for CRMs. Every /v1 route needs a JWT of the CRM's issuer "
            "(claims: sub = user id, tenant_id, role = admin|member|service). Errors are "
            '{"error": {"code", "message", "details"}}.'
        ),
        security_schemes={"crmJwt": HTTPBearer(bearerFormat="JWT")},
        security=[{"crmJwt": []}],
        on_conflict="error",
    )
    served = {route.function.logical_id for route in stack.routes}
    for logical_id in sorted(served):
        runtime = stack.functions[logical_id]
        runtime.load()
        merge.add_schema(runtime.module.app.get_openapi_schema())
    # the merged document still holds pydantic models (security schemes): make it plain JSON
    document: dict[str, Any] = json.loads(merge.get_openapi_json_schema())
    return document


def main() -> int:
    from local.stack import LocalStack

    EVENTS_DIR.mkdir(parents=True, exist_ok=True)
    for name, schema in event_schemas().items():
        (EVENTS_DIR / f"{name}.json").write_text(dumps(schema), encoding="utf-8")
    with LocalStack(run_schedules=False) as stack:
        OPENAPI.write_text(dumps(openapi(stack)), encoding="utf-8")
    print(f"wrote {len(event_schemas())} event schemas to {EVENTS_DIR} and {OPENAPI}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Checks requests against a Google discovery document (as shipped in google-api-python-client):
the method must exist for the HTTP verb and path, every query parameter must be declared with
the right type or enum value, required ones present, and a JSON body must fit the request
schema (no unknown fields, the right JSON types). A request that does not fit is an error,
loudly: the emulator answers 400 and records the violation for the tests to see."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def discovery_document(name: str) -> dict[str, Any]:
    import googleapiclient

    path = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / f"{name}.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


@dataclass
class Method:
    id: str
    http_method: str
    pattern: re.Pattern[str]
    spec: dict[str, Any]


class Violation(Exception):
    """The request does not fit the discovery document."""


def _walk(resources: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for resource in resources.values():
        found.extend(resource.get("methods", {}).values())
        found.extend(_walk(resource.get("resources", {})))
    return found


def _path_regex(service_path: str, path: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\+?[^}]+\})", service_path + path)
    regex = ""
    for part in parts:
        if part.startswith("{+"):
            regex += f"(?P<{part[2:-1]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile("^/" + regex + "$")


class DiscoveryValidator:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.schemas: dict[str, Any] = document.get("schemas", {})
        service_path = document.get("servicePath", "")
        self.methods = [
            Method(spec["id"], spec["httpMethod"], _path_regex(service_path, spec["path"]), spec)
            for spec in _walk(document.get("resources", {}))
        ]
        self.violations: list[str] = []

    def match(
        self, http_method: str, path: str, query: dict[str, list[str]], body: bytes | None
    ) -> tuple[Method, dict[str, str]]:
        try:
            return self._match(http_method, path, query, body)
        except Violation as violation:
            self.violations.append(f"{http_method} {path}: {violation}")
            raise

    def _match(
        self, http_method: str, path: str, query: dict[str, list[str]], body: bytes | None
    ) -> tuple[Method, dict[str, str]]:
        for method in self.methods:
            found = method.pattern.match(path)
            if found and method.http_method == http_method:
                self._check_parameters(method, query, found.groupdict())
                self._check_body(method, body)
                return method, found.groupdict()
        raise Violation(f"no method of {self.document.get('id')} is {http_method} {path}")

    def _check_parameters(
        self, method: Method, query: dict[str, list[str]], path_values: dict[str, str]
    ) -> None:
        declared = {**self.document.get("parameters", {}), **method.spec.get("parameters", {})}
        for name, values in query.items():
            spec = declared.get(name)
            if spec is None or spec.get("location") != "query":
                raise Violation(f"{method.id} has no query parameter {name!r}")
            if len(values) > 1 and not spec.get("repeated"):
                raise Violation(f"{method.id}: {name} is not repeated")
            for value in values:
                self._check_value(method.id, name, spec, value)
        for name, spec in method.spec.get("parameters", {}).items():
            if spec.get("required") and name not in query and name not in path_values:
                raise Violation(f"{method.id}: {name} is required")

    @staticmethod
    def _check_value(method_id: str, name: str, spec: dict[str, Any], value: str) -> None:
        kind = spec.get("type")
        if kind in ("integer",) or spec.get("format") in ("uint64", "int64", "uint32", "int32"):
            if not re.fullmatch(r"-?\d+", value):
                raise Violation(f"{method_id}: {name} must be an integer, not {value!r}")
        elif kind == "boolean" and value not in ("true", "false"):
            raise Violation(f"{method_id}: {name} must be true or false")
        if "enum" in spec and value not in spec["enum"]:
            raise Violation(f"{method_id}: {name} must be one of {spec['enum']}, not {value!r}")

    def _check_body(self, method: Method, body: bytes | None) -> None:
        request = method.spec.get("request")
        if request is None:
            return
        if method.spec.get("supportsMediaUpload") and body and not body.lstrip().startswith(b"{"):
            return  # a media upload, not a JSON body
        try:
            data = json.loads(body or b"{}")
        except ValueError as error:
            raise Violation(f"{method.id}: the body is not JSON") from error
        self._check_schema(method.id, request["$ref"], data, "body")

    def _check_schema(self, method_id: str, ref: str, data: Any, where: str) -> None:
        schema = self.schemas[ref]
        if not isinstance(data, dict):
            raise Violation(f"{method_id}: {where} must be an object ({ref})")
        properties = schema.get("properties", {})
        for key, value in data.items():
            if key not in properties:
                raise Violation(f"{method_id}: {where}.{key} is not a field of {ref}")
            self._check_type(method_id, properties[key], value, f"{where}.{key}")

    def _check_type(self, method_id: str, spec: dict[str, Any], value: Any, where: str) -> None:
        if "$ref" in spec:
            self._check_schema(method_id, spec["$ref"], value, where)
            return
        kind = spec.get("type")
        expected = {"string": str, "boolean": bool, "object": dict, "array": list, "number": (int, float)}
        if kind == "integer" and not isinstance(value, int):
            raise Violation(f"{method_id}: {where} must be an integer")
        if kind in expected and not isinstance(value, expected[kind]):  # type: ignore[arg-type]
            raise Violation(f"{method_id}: {where} must be of type {kind}")
        if kind == "array":
            for index, item in enumerate(value):
                self._check_type(method_id, spec.get("items", {}), item, f"{where}[{index}]")

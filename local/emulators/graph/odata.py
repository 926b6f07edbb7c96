"""The OData query reader: `$select`, `$filter`, `$top`/`$skip`, and the `Prefer` headers
(`IdType="ImmutableId"`, `odata.maxpagesize`) that shape a Graph answer."""

from __future__ import annotations

import re
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.graph.model import Message, parse_iso
from local.emulators.graph.responses import graph_error

DEFAULT_PAGE_SIZE = 10
IMMUTABLE_PREFER = re.compile(r'idtype\s*=\s*"?immutableid"?', re.IGNORECASE)
MAX_PAGE_PREFER = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.IGNORECASE)
FILTER_CLAUSE = re.compile(
    r"^\s*(?P<field>\w+)\s+(?P<op>eq|ne|ge|gt|le|lt)\s+(?P<value>'(?:[^']|'')*'|\S+)\s*$", re.IGNORECASE
)

Clause = tuple[str, str, str]  # (field, lowercased; op; value, unquoted)


def wants_immutable(request: Request) -> bool:
    """Whether the client asked for immutable ids (`Prefer: IdType="ImmutableId"`)."""
    return any(IMMUTABLE_PREFER.search(v) for v in request.headers.getlist("Prefer"))


def max_page_size(request: Request) -> int | None:
    """`Prefer: odata.maxpagesize=N`, if given."""
    for value in request.headers.getlist("Prefer"):
        found = MAX_PAGE_PREFER.search(value)
        if found:
            return max(1, int(found.group(1)))
    return None


def select_of(request: Request) -> list[str] | None:
    """`$select` as a list of fields; None: every field."""
    return [s.strip() for s in request.args.get("$select", "").split(",") if s.strip()] or None


def project(full: dict[str, Any], select: list[str] | None, keep: tuple[str, ...] = ()) -> dict[str, Any]:
    """A resource cut down to `$select` (any casing), its id and the `keep` keys."""
    if not select:
        return full
    wanted = {s.lower() for s in select} | {"id"}
    return {k: v for k, v in full.items() if k.lower() in wanted or k in keep}


def parse_filter(text: str) -> list[Clause] | Response:
    """`$filter` as clauses joined by `and`; a 400 for anything else."""
    clauses: list[Clause] = []
    # `and` outside quotes only: an even number of quotes follows it ('' escapes count two)
    for part in re.split(r"\s+and\s+(?=(?:[^']*'[^']*')*[^']*$)", text.strip(), flags=re.IGNORECASE):
        found = FILTER_CLAUSE.match(part)
        if found is None:
            return graph_error(400, "BadRequest", f"Invalid filter clause: {part!r}")
        value = found.group("value")
        if value.startswith("'"):
            value = value[1:-1].replace("''", "'")
        clauses.append((found.group("field").lower(), found.group("op").lower(), value))
    return clauses


def select_and_filter(request: Request) -> tuple[list[str] | None, list[Clause]] | Response:
    """A list request's `$select` (None: every field) and parsed `$filter` clauses."""
    select = select_of(request)
    if not request.args.get("$filter"):
        return select, []
    parsed = parse_filter(request.args["$filter"])
    return parsed if isinstance(parsed, Response) else (select, parsed)


def top_and_skip(request: Request) -> tuple[int, int] | Response:
    """The page asked for: `$top` (else `odata.maxpagesize`, else 10) and `$skip`."""
    try:
        top = int(request.args.get("$top", "0")) or max_page_size(request) or DEFAULT_PAGE_SIZE
        skip = int(request.args.get("$skip", "0"))
    except ValueError:
        return graph_error(400, "BadRequest", "$top and $skip are integers.")
    return top, skip


def next_query(request: Request, top: int, skip: int) -> dict[str, str]:
    """The query of the nextLink after the page [skip, skip + top)."""
    query = {k: v for k, v in request.args.items() if k not in ("$skip", "$top")}
    query.update({"$top": str(top), "$skip": str(skip + top)})
    return query


def matches(message: Message, clauses: list[Clause]) -> bool | Response:
    """Whether a message matches every clause; a 400 for a field or operator not emulated."""
    for name, op, value in clauses:
        if name == "receiveddatetime":
            try:
                moment = parse_iso(value)
            except ValueError:
                return graph_error(400, "BadRequest", f"Invalid DateTimeOffset {value!r}.")
            ops = {
                "ge": message.received >= moment,
                "gt": message.received > moment,
                "le": message.received <= moment,
                "lt": message.received < moment,
                "eq": message.received == moment,
                "ne": message.received != moment,
            }
            if not ops[op]:
                return False
            continue
        fields: dict[str, str] = {
            "internetmessageid": message.internet_message_id,
            "conversationid": message.conversation_id,
            "subject": message.subject,
            "isdraft": str(message.is_draft).lower(),
            "isread": str(message.is_read).lower(),
        }
        if name not in fields or op not in ("eq", "ne"):
            return graph_error(400, "ErrorInvalidUrlQueryFilter", f"The filter on {name} is not supported.")
        equal = fields[name] == value
        if equal != (op == "eq"):
            return False
    return True

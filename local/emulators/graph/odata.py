"""The OData query reader: `$select`, `$filter`, `$top`/`$skip`, `$expand` (a message's
single-value extended properties), and the `Prefer` headers (`IdType="ImmutableId"`,
`odata.maxpagesize`) that shape a Graph answer."""

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

EXTENDED_ID = re.compile(r"^\s*(?P<type>[A-Za-z]+)\s+0x(?P<tag>[0-9A-Fa-f]{1,4})\s*$")
EXTENDED_TYPES = {
    t.lower(): t
    for t in (
        "Binary",
        "Boolean",
        "Currency",
        "DateTime",
        "Double",
        "Float",
        "Integer",
        "Long",
        "Short",
        "String",
    )
}
NOT_EMULATED_EXPANSIONS = ("attachments", "extensions", "multivalueextendedproperties", "mentions")
ID_EQ = re.compile(r"^\s*id\s+eq\s+'(?P<id>(?:[^']|'')*)'\s*$", re.IGNORECASE)

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


def extended_id(given: str) -> str:
    """An extended property's id as Graph answers it: the type's canonical casing and the tag in
    lower-case hex without leading zeros ("Long 0x0E08" is "Long 0xe08"); a named property's id
    (GUID and name) as it was given."""
    found = EXTENDED_ID.match(given)
    if found is None or found.group("type").lower() not in EXTENDED_TYPES:
        return given.strip()
    return f"{EXTENDED_TYPES[found.group('type').lower()]} 0x{int(found.group('tag'), 16):x}"


def _top_level(text: str, separator: str) -> list[str]:
    """`text` split on `separator` outside parentheses and quotes."""
    parts, depth, quoted, start = [], 0, False, 0
    for n, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == separator:
            parts.append(text[start:n])
            start = n + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def _expand_refused(name: str) -> Response:
    return graph_error(
        400,
        "BadRequest",
        f"Parsing OData Select and Expand failed: Could not find a property named '{name}' on type "
        "'microsoft.graph.message'.",
    )


def expand_of(request: Request) -> list[str] | Response | None:
    """A message request's `$expand`: the ids of the single-value extended properties asked for
    (`singleValueExtendedProperties($filter=id eq '…' or id eq '…')`, ids as Graph answers them),
    None when nothing is expanded, a 400 for anything else (as Graph refuses a navigation property
    the message type does not have). Expanding without a $filter asks for the properties set on the
    message by clients, which the emulator keeps none of: []."""
    text = request.args.get("$expand", "")
    if not text.strip():
        return None
    wanted: list[str] = []
    for part in _top_level(text, ","):
        name, _, rest = part.partition("(")
        name = name.strip()
        if name.lower() in NOT_EMULATED_EXPANSIONS:  # Graph has them; the sync asks for none
            return graph_error(400, "BadRequest", f"$expand={name} is not emulated.")
        if name.lower() != "singlevalueextendedproperties":
            return _expand_refused(name)
        if not rest:
            continue
        if not rest.endswith(")"):
            return graph_error(400, "BadRequest", f"Syntax error in $expand: {part!r}.")
        options = [o for o in _top_level(rest[:-1], ";") if o]
        for option in options:
            key, _, value = option.partition("=")
            if key.strip().lower() != "$filter":
                return graph_error(
                    400, "BadRequest", f"The query option {key.strip()!r} is not supported here."
                )
            for clause in re.split(
                r"\s+or\s+(?=(?:[^']*'[^']*')*[^']*$)", value.strip(), flags=re.IGNORECASE
            ):
                found = ID_EQ.match(clause)
                if found is None:
                    return graph_error(
                        400, "BadRequest", f"Invalid filter clause on extended properties: {clause!r}"
                    )
                wanted.append(extended_id(found.group("id").replace("''", "'")))
    return wanted

"""Delta per folder (`/me/mailFolders/{id}/messages/delta`).

The first round pages what the folder holds by `@odata.nextLink` (`$skiptoken`) and ends on
`@odata.deltaLink` (`$deltatoken`); a deltaLink then answers what changed since (read from the
mailbox's change log), with `{"id", "@removed": {"reason"}}` for messages deleted ("deleted") or
moved out of the folder ("changed"). A token stands for a `Cursor` in `MailStore.cursors`; an
expired one answers 410 Gone with a Location, or a 40x `syncStateNotFound`."""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.graph.model import Change, Cursor, Mailbox, Message, iso, parse_iso
from local.emulators.graph.odata import (
    DEFAULT_PAGE_SIZE,
    expand_of,
    max_page_size,
    select_of,
    wants_immutable,
)
from local.emulators.graph.resources import message_resource
from local.emulators.graph.responses import graph_error, json_response, not_found
from local.emulators.graph.store import MailStore


class Delta(MailStore):
    # ------------------------------------------------------------------ delta
    def _delta(self, request: Request, box: Mailbox, folder: str) -> Response:
        args = request.args
        immutable = wants_immutable(request)
        with self.lock:
            key = box.folder_key(folder)
            if key is None:
                return not_found()
            folder_id = box.folder_id(key)
            if args.get("$skiptoken"):
                cursor = self.cursors.get(args["$skiptoken"])
                if cursor is None or cursor.kind != "skip" or cursor.address != box.address:
                    return self._sync_state_not_found(400, "syncStateNotFound")
                self.cursors.pop(args["$skiptoken"], None)
                return self._delta_page(request, box, cursor, immutable, folder_id)
            token = args.get("$deltatoken")
            if token:
                cursor = self.cursors.get(token)
                if cursor is None or cursor.kind != "delta" or cursor.address != box.address:
                    return self._sync_state_not_found(400, "syncStateNotFound")
                if cursor.expired is not None:
                    return self._expired(cursor, folder_id)
                return self._delta_changes(request, box, cursor, immutable, folder_id)
            # the first round: what the folder holds now
            select = select_of(request)
            expand = expand_of(request)  # kept in the tokens, like $select: later links carry it
            if isinstance(expand, Response):
                return expand
            received_after = None
            if args.get("$filter"):
                found = re.fullmatch(
                    r"\s*receivedDateTime\s+(ge|gt)\s+(\S+)\s*", args["$filter"], flags=re.IGNORECASE
                )
                if found is None:
                    return graph_error(
                        400,
                        "ErrorInvalidUrlQueryFilter",
                        "Delta on messages supports only $filter=receivedDateTime ge|gt {value}.",
                    )
                try:
                    received_after = (found.group(1).lower(), parse_iso(found.group(2)))
                except ValueError:
                    return graph_error(400, "BadRequest", f"Invalid DateTimeOffset {found.group(2)!r}.")
            change_type = args.get("changeType")
            if change_type not in (None, "created", "updated", "deleted"):
                return graph_error(400, "BadRequest", "changeType is created, updated or deleted.")
            top = int(args["$top"]) if args.get("$top", "").isdigit() else None
            page_size = max_page_size(request) or top
            inside = sorted(
                (m for m in box.messages.values() if m.folder == key and self._after(m, received_after)),
                key=lambda m: m.received,
                reverse=True,
            )
            cursor = Cursor(
                box.address, key, "skip", select, received_after, change_type, page_size, expand=expand
            )
            cursor.pending = (
                []
                if change_type in ("updated", "deleted")
                else [("item", m.immutable_id, "") for m in inside]
            )
            cursor.end_seq = box.seq
            return self._delta_page(request, box, cursor, immutable, folder_id)

    @staticmethod
    def _after(message: Message, received_after: tuple[str, datetime] | None) -> bool:
        if received_after is None:
            return True
        op, moment = received_after
        return message.received >= moment if op == "ge" else message.received > moment

    def _delta_changes(
        self, request: Request, box: Mailbox, cursor: Cursor, immutable: bool, folder_id: str
    ) -> Response:
        last: dict[str, Change] = {}
        created: set[str] = set()
        for change in box.changes:
            if change.seq <= cursor.seq or change.folder != cursor.folder:
                continue
            last.pop(change.immutable_id, None)  # keep them in the order of their last change
            last[change.immutable_id] = change
            if change.kind == "created":
                created.add(change.immutable_id)
        pending: list[tuple[str, str, str]] = []
        for immutable_id, change in last.items():
            message = box.messages.get(immutable_id)
            if change.kind == "removed" or message is None or message.folder != cursor.folder:
                if cursor.change_type in (None, "deleted"):
                    removed_id = immutable_id if immutable else change.rest_id
                    pending.append(("removed", removed_id, change.reason or "deleted"))
                continue
            kind = "created" if immutable_id in created else "updated"
            if cursor.change_type in (None, kind) and self._after(message, cursor.received_after):
                pending.append(("item", immutable_id, ""))
        follow = Cursor(
            box.address,
            cursor.folder,
            "skip",
            cursor.select,
            cursor.received_after,
            cursor.change_type,
            max_page_size(request) or cursor.page_size,
            pending=pending,
            end_seq=box.seq,
            expand=cursor.expand,
        )
        return self._delta_page(request, box, follow, immutable, folder_id)

    def _delta_page(
        self, request: Request, box: Mailbox, cursor: Cursor, immutable: bool, folder_id: str
    ) -> Response:
        size = max_page_size(request) or cursor.page_size or DEFAULT_PAGE_SIZE
        page, rest = cursor.pending[:size], cursor.pending[size:]
        value: list[dict[str, Any]] = []
        for kind, the_id, reason in page:
            if kind == "removed":
                value.append(
                    {"@odata.type": "#microsoft.graph.message", "id": the_id, "@removed": {"reason": reason}}
                )
                continue
            message = box.messages.get(the_id)
            if message is None or message.folder != cursor.folder:
                continue  # gone since the round began: the next round reports it removed
            value.append(
                {
                    "@odata.type": "#microsoft.graph.message",
                    **message_resource(box, message, immutable, cursor.select, cursor.expand),
                }
            )
        result: dict[str, Any] = {
            "@odata.context": self._url("$metadata#Collection(message)"),
            "value": value,
        }
        path = f"me/mailFolders('{folder_id}')/messages/delta"
        if rest:
            token = secrets.token_urlsafe(24)
            cursor.pending = rest
            self.cursors[token] = cursor
            result["@odata.nextLink"] = self._url(path, {"$skiptoken": token})
        else:
            token = secrets.token_urlsafe(24)
            self.cursors[token] = Cursor(
                box.address,
                cursor.folder,
                "delta",
                cursor.select,
                cursor.received_after,
                cursor.change_type,
                cursor.page_size,
                seq=cursor.end_seq,
                expand=cursor.expand,
            )
            result["@odata.deltaLink"] = self._url(path, {"$deltatoken": token})
        return json_response(result)

    def _expired(self, cursor: Cursor, folder_id: str) -> Response:
        how = cursor.expired or "410"
        if how == "410":
            query: dict[str, str] = {"$deltatoken": ""}  # delta-query-overview: an empty $deltaToken
            if cursor.select:
                query["$select"] = ",".join(cursor.select)
            if cursor.received_after:
                op, moment = cursor.received_after
                query["$filter"] = f"receivedDateTime {op} {iso(moment)}"
            if cursor.expand is not None:
                ids = " or ".join(f"id eq '{i}'" for i in cursor.expand)
                query["$expand"] = (
                    f"singleValueExtendedProperties($filter={ids})"
                    if ids
                    else "singleValueExtendedProperties"
                )
            location = self._url(f"me/mailFolders('{folder_id}')/messages/delta", query)
            return graph_error(
                cursor.expired_status or 410,
                "resyncRequired",
                "Resync required. Replace any local cached copies with a full sync.",
                {"Location": location},
            )
        return self._sync_state_not_found(cursor.expired_status or 400, how)

    @staticmethod
    def _sync_state_not_found(status: int, code: str) -> Response:
        generation = secrets.randbelow(500)
        return graph_error(
            status,
            code,
            f"The sync state generation is not found; generation={generation};[highest={generation + 3}].",
        )

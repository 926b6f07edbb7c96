"""Mail folders: list (`/me/mailFolders`, `.../childFolders`), get, and create."""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from local.emulators.graph.model import ROOT, FolderExists, Mailbox
from local.emulators.graph.odata import next_query, select_and_filter, select_of, top_and_skip
from local.emulators.graph.resources import folder_resource
from local.emulators.graph.responses import graph_error, json_response, not_found, read_body
from local.emulators.graph.store import MailStore


class Folders(MailStore):
    # ------------------------------------------------------------------ folders
    def _folders_list(self, request: Request, box: Mailbox, folder: str) -> Response:
        """user-list-mailfolders (the root's children) and mailfolder-list-childfolders: 10 a page
        unless $top says otherwise, $skip in the nextLink; $select; $filter on displayName."""
        asked = select_and_filter(request)
        if isinstance(asked, Response):
            return asked
        select, clauses = asked
        unsupported = [name for name, op, _ in clauses if name != "displayname" or op not in ("eq", "ne")]
        if unsupported:
            return graph_error(
                400, "ErrorInvalidUrlQueryFilter", f"The filter on {unsupported[0]} is not supported."
            )
        paged = top_and_skip(request)
        if isinstance(paged, Response):
            return paged
        top, skip = paged
        with self.lock:
            key = box.folder_key(folder)
            if key is None:
                return not_found()
            found = [
                k
                for k in box.children(key)
                # Exchange matches folder names case-insensitively
                if all(
                    (box.display_name(k).casefold() == value.casefold()) == (op == "eq")
                    for _, op, value in clauses
                )
            ]
            value = [folder_resource(box, k, select) for k in found[skip : skip + top]]
        collection = "mailFolders" if key == ROOT else f"mailFolders('{folder}')/childFolders"
        result: dict[str, Any] = {
            "@odata.context": self._url(f"$metadata#users('me')/{collection}"),
            "value": value,
        }
        path = f"me/{collection}"
        if skip + top < len(found):
            query = next_query(request, top, skip)
            result["@odata.nextLink"] = self._url(path, query)
        return json_response(result)

    def _folders_get(self, request: Request, box: Mailbox, folder: str) -> Response:
        select = select_of(request)
        with self.lock:
            key = box.folder_key(folder)
            if key is None:
                return not_found()
            return json_response(folder_resource(box, key, select))

    def _folder_create(self, request: Request, box: Mailbox, parent: str) -> Response:
        """user-post-mailfolders (under the root) and mailfolder-post-childfolders: 201 and the
        folder; 409 ErrorFolderExists for a sibling of the same name."""
        body = read_body(request)
        if isinstance(body, Response):
            return body
        name = body.get("displayName")
        if not isinstance(name, str) or not name.strip():
            return graph_error(400, "ErrorInvalidRequest", "The displayName of the folder is required.")
        if body.get("isHidden") is True:
            return graph_error(400, "ErrorInvalidRequest", "Hidden folders are not emulated.")
        with self.lock:
            key = box.folder_key(parent)
            if key is None:
                return not_found()
            try:
                made = self._make_folder(box, key, name)
            except FolderExists as exists:
                return graph_error(409, "ErrorFolderExists", str(exists))
            view = folder_resource(box, made.id)
        context = self._url("$metadata#users('me')/mailFolders/$entity")
        return json_response({"@odata.context": context, **view}, 201)

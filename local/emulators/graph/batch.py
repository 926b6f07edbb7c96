"""`POST /v1.0/$batch`: up to 20 requests, each dispatched through the emulator's route as if it
came alone (with the outer request's credentials; throttled one by one, while the batch counts as
one request in flight), `dependsOn` answered 424 when what it depends on failed, and bodies that
are not JSON (`$value`) answered base64-encoded."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlsplit

from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from local.emulators.graph.model import Mailbox
from local.emulators.graph.responses import graph_error, json_response, read_body
from local.emulators.graph.store import MailStore

MAX_BATCH_REQUESTS = 20  # concepts/json-batching.md: "limited to 20 individual requests"


class Batch(MailStore):
    def _in_batch(self) -> bool:
        """Whether the request being served is one inside a $batch."""
        return bool(getattr(self._local, "in_batch", False))

    def _batch(self, request: Request, box: Mailbox) -> Response:
        body = read_body(request)
        if isinstance(body, Response):
            return body
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return graph_error(400, "BadRequest", "Invalid batch payload format.")
        if len(requests) > MAX_BATCH_REQUESTS:
            return graph_error(400, "BadRequest", "Number of requests inside batch exceeds the limit.")
        ids = [str(r.get("id", "")).lower() if isinstance(r, dict) else "" for r in requests]
        if "" in ids or len(set(ids)) != len(ids):
            return graph_error(
                400, "BadRequest", "Batch request ids must be given and unique (case-insensitive)."
            )
        with self.lock:
            box.batches.append(len(requests))
        statuses: dict[str, int] = {}
        responses: list[dict[str, Any]] = []
        for inner in requests:
            the_id = str(inner["id"])
            depends = [str(d).lower() for d in inner.get("dependsOn") or []]
            if any(statuses.get(d, 424) >= 400 for d in depends):
                answer = graph_error(424, "FailedDependency", "A request this one depends on failed.")
            else:
                built = self._inner_request(inner, request.headers.get("Authorization"))
                answer = built if isinstance(built, Response) else self._inner(built)
            statuses[the_id.lower()] = answer.status_code
            responses.append(self._batch_answer(the_id, answer))
        return json_response({"responses": responses})

    def _inner(self, request: Request) -> Response:
        self._local.in_batch = True
        try:
            return self._route(request)
        finally:
            self._local.in_batch = False

    @staticmethod
    def _inner_request(inner: dict[str, Any], authorization: str | None) -> Request | Response:
        method = str(inner.get("method") or "").upper()
        url = str(inner.get("url") or "")
        if not method or not url:
            return graph_error(400, "BadRequest", "A batch request needs a method and a url.")
        if urlsplit(url).scheme:
            return graph_error(
                400, "BadRequest", "The url of a batch request is relative (like /me/messages)."
            )
        target = urlsplit("/v1.0/" + url.lstrip("/"))
        headers = {str(k): str(v) for k, v in (inner.get("headers") or {}).items()}
        headers.pop("Authorization", None)
        if authorization:
            headers["Authorization"] = authorization  # the outer request's credentials apply
        data: bytes | None = None
        if "body" in inner and inner["body"] is not None:
            content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
            if content_type is None:
                return graph_error(
                    400, "BadRequest", "A batch request with a body needs a Content-Type header."
                )
            given = inner["body"]
            if isinstance(given, (dict, list)):
                data = json.dumps(given).encode()
            else:  # json-batching.md: otherwise a base64 value (an image, MIME...)
                text = str(given)
                try:
                    data = base64.b64decode(
                        text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None
                    )
                except ValueError:
                    return graph_error(400, "BadRequest", "A body that is not JSON must be base64.")
        return EnvironBuilder(
            path=target.path,
            query_string=target.query,
            method=method,
            headers=list(headers.items()),
            data=data,
        ).get_request()

    @staticmethod
    def _batch_answer(the_id: str, answer: Response) -> dict[str, Any]:
        headers = {"Cache-Control": "no-cache"}
        for name in ("Content-Type", "Retry-After", "Location"):
            if name in answer.headers:
                headers[name] = answer.headers[name]
        result: dict[str, Any] = {"id": the_id, "status": answer.status_code, "headers": headers}
        data = answer.get_data()
        if data:
            if answer.mimetype == "application/json":
                result["body"] = json.loads(data)
            else:  # not JSON ($value): base64, as Graph answers it (and the SDKs decode)
                result["body"] = base64.b64encode(data).decode()
        return result

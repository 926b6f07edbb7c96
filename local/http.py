"""The HTTP API on localhost: each request becomes an API Gateway HTTP API (payload 2.0) event
for the real handler, behind the JWT check the authorizer makes. Routes come from the
template. /_local/* are routes of the local stack only (never deployed)."""

from __future__ import annotations

import base64
import html
import json
import threading
import time
import traceback
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Request, Response

from local.devissuer import AuthError
from local.stack import ACCOUNT, LocalStack, Route

_TEXTUAL = ("application/json", "text/", "application/x-www-form-urlencoded", "application/xml", "+json")


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, default=str), status=status, headers=headers, content_type="application/json"
    )


def _claims_for_event(claims: dict[str, Any]) -> dict[str, str]:
    """API Gateway hands claims to the function as strings; arrays as '[a b]'."""
    shaped: dict[str, str] = {}
    for key, value in claims.items():
        if isinstance(value, list):
            shaped[key] = "[" + " ".join(str(v) for v in value) + "]"
        else:
            shaped[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return shaped


class LocalHttpApi:
    def __init__(self, stack: LocalStack | None) -> None:
        self._stack = stack

    @property
    def stack(self) -> LocalStack:
        if self._stack is None:
            raise RuntimeError("the local stack is not attached yet")
        return self._stack

    def attach(self, stack: LocalStack) -> None:
        self._stack = stack

    # ------------------------------------------------------------------ WSGI
    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        response = self.dispatch(request)
        return response(environ, start_response)

    def dispatch(self, request: Request) -> Response:
        if request.path.startswith("/_local/"):
            return self._local_route(request)
        cors = self._cors()
        origin = request.headers.get("Origin")
        if request.method == "OPTIONS" and cors and request.headers.get("Access-Control-Request-Method"):
            return self._preflight(cors, origin)
        route, path_parameters = self._match(request.method, request.path)
        if route is None:
            response = _json(404, {"message": "Not Found"})
        else:
            response = self._invoke(route, path_parameters, request)
        if cors and origin and self._origin_allowed(cors, origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        return response

    def _match(self, method: str, path: str) -> tuple[Route | None, dict[str, str]]:
        candidates = []
        for route in self.stack.routes:
            if route.method not in (method, "ANY"):
                continue
            match = route.pattern.match(path)
            if match:
                candidates.append((route.literal_segments, route.method == method, route, match.groupdict()))
        if not candidates:
            return None, {}
        candidates.sort(key=lambda c: (c[0], c[1]), reverse=True)  # the most specific route wins
        return candidates[0][2], candidates[0][3]

    def _invoke(self, route: Route, path_parameters: dict[str, str], request: Request) -> Response:
        claims: dict[str, Any] | None = None
        if route.authorizer is not None:
            audiences = route.authorizer.get("audience", [])
            try:
                claims = self.stack.issuer.verify(
                    request.headers.get("Authorization"), route.authorizer["issuer"], list(audiences)
                )
            except AuthError:
                return _json(
                    401, {"message": "Unauthorized"}, {"www-authenticate": 'Bearer error="invalid_token"'}
                )
        event = self.event(route, path_parameters, request, claims)
        try:
            result = route.function.invoke(event)
        except Exception as error:
            self.stack.say(f"  ! {route.function.logical_id} raised {type(error).__name__}: {error}")
            self.stack.say(traceback.format_exc())
            return _json(500, {"message": "Internal Server Error"})
        return self._response(result)

    def event(
        self, route: Route, path_parameters: dict[str, str], request: Request, claims: dict[str, Any] | None
    ) -> dict[str, Any]:
        raw_body = request.get_data()
        content_type = request.headers.get("Content-Type", "")
        textual = not raw_body or any(marker in content_type for marker in _TEXTUAL)
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            lowered = key.lower()
            headers[lowered] = f"{headers[lowered]},{value}" if lowered in headers else value
        query: dict[str, str] = {}
        for key, value in parse_qsl(request.query_string.decode(), keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        now = time.time()
        context: dict[str, Any] = {
            "accountId": ACCOUNT,
            "apiId": "local",
            "domainName": request.host,
            "domainPrefix": request.host.split(".")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "sourceIp": request.remote_addr or "127.0.0.1",
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": route.route_key,
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        }
        if claims is not None:
            context["authorizer"] = {"jwt": {"claims": _claims_for_event(claims), "scopes": None}}
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": request.path,
            "rawQueryString": request.query_string.decode(),
            "headers": headers,
            "requestContext": context,
            "isBase64Encoded": not textual,
        }
        if request.cookies:
            event["cookies"] = [f"{k}={v}" for k, v in request.cookies.items()]
        if query:
            event["queryStringParameters"] = query
        if path_parameters:
            event["pathParameters"] = path_parameters
        if raw_body:
            event["body"] = (
                raw_body.decode("utf-8", "replace") if textual else base64.b64encode(raw_body).decode()
            )
        return event

    @staticmethod
    def _response(result: Any) -> Response:
        if not isinstance(result, dict) or "statusCode" not in result:
            # Payload 2.0: anything else is a 200 with the value as JSON.
            body = result if isinstance(result, str) else json.dumps(result, default=str)
            return Response(body, status=200, content_type="application/json")
        body = result.get("body") or ""
        data = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
        response = Response(data, status=int(result["statusCode"]))
        for key, value in (result.get("headers") or {}).items():
            response.headers[key] = str(value)
        for key, values in (result.get("multiValueHeaders") or {}).items():
            for value in values:
                response.headers.add(key, str(value))
        for cookie in result.get("cookies") or []:
            response.headers.add("Set-Cookie", cookie)
        return response

    # ------------------------------------------------------------------ CORS
    def _cors(self) -> dict[str, Any] | None:
        for api in self.stack.http_apis.values():
            if api.get("CorsConfiguration"):
                return dict(api["CorsConfiguration"])
        return None

    @staticmethod
    def _origin_allowed(cors: dict[str, Any], origin: str) -> bool:
        allowed = cors.get("AllowOrigins", [])
        return "*" in allowed or origin in allowed

    def _preflight(self, cors: dict[str, Any], origin: str | None) -> Response:
        response = Response(status=204)
        if origin and self._origin_allowed(cors, origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = ",".join(cors.get("AllowMethods", []))
            response.headers["Access-Control-Allow-Headers"] = ",".join(cors.get("AllowHeaders", []))
            response.headers["Access-Control-Max-Age"] = str(cors.get("MaxAge", 0))
        return response

    # ------------------------------------------------------------------ /_local
    def _local_route(self, request: Request) -> Response:
        path = request.path
        issuer_path = "/_local/issuer"
        if path == "/_local/events" and request.method == "GET":
            events = list(self.stack.events)
            detail_type = request.args.get("detail-type")
            if detail_type:
                events = [e for e in events if e.get("detail-type") == detail_type]
            limit = request.args.get("limit", type=int) or len(events)
            return _json(200, {"events": events[:limit]})
        if path == f"{issuer_path}/.well-known/openid-configuration":
            return _json(200, self.stack.issuer.openid_configuration())
        if path == f"{issuer_path}/jwks.json":
            return _json(200, self.stack.issuer.jwks())
        if path == "/_local/connected":  # the CRM's return URL, stood in for locally
            return Response(connected_page(request.args), content_type="text/html; charset=utf-8")
        if path == "/_local/routes":
            return _json(
                200,
                {
                    "routes": [
                        {"route": r.route_key, "function": r.function.logical_id} for r in self.stack.routes
                    ]
                },
            )
        if path.startswith("/_local/schedules/") and request.method == "POST":
            name = path.rsplit("/", 1)[1]
            for source in self.stack.schedules:
                if name in (source.name, source.function.logical_id):
                    return _json(200, {"fired": source.name, "result": self.stack.fire_schedule(source)})
            return _json(404, {"message": f"no schedule {name}"})
        return _json(404, {"message": "Not Found"})


def connected_page(args: Any) -> str:
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in args.items())
    status = args.get("status")
    title = {"connected": "Account connected", "confirm_required": "Confirm the connect"}.get(
        status, "Account not connected"
    )
    confirm = ""
    if status == "confirm_required":  # the CRM's page would call this itself, in the user's session
        code = html.escape(args.get("confirmation", ""))
        confirm = (
            "<p>A CRM page confirms here with the user's own session; from a shell:</p><pre>"
            'curl -s -X POST localhost:3000/v1/accounts/connect/confirm -H "Authorization: Bearer $TOKEN"'
            f" -H 'content-type: application/json' -d '{{\"confirmation\": \"{code}\"}}'</pre>"
        )
    return (
        f"<!doctype html><meta charset=utf-8><title>{title}</title><h1>{title}</h1>"
        f"<p>(the CRM's return page, stood in for by the local stack)</p><table>{rows}</table>{confirm}"
        '<p><a href="/_local/events">events</a></p>'
    )


class LocalServer:
    """The HTTP API served from a thread; port 0 picks a free one. The stack may be attached
    after the port is known (the stack's configuration names its own URL)."""

    def __init__(self, stack: LocalStack | None, host: str = "127.0.0.1", port: int = 3000) -> None:
        self.api = LocalHttpApi(stack)
        self.server: BaseWSGIServer = make_server(host, port, self.api, threaded=True)
        self.port = self.server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="http", daemon=True)

    def start(self) -> LocalServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self.server.shutdown()
            self._thread.join(timeout=5)
        self.server.server_close()

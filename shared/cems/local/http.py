"""An HTTP server that stands in for API Gateway HTTP APIs: routes and payload format 2.0.

Routes come from the template's `HttpApi` events. Matching follows API Gateway's rules: the most
specific route wins (literal segments before `{param}`, `{proxy+}` last), a route for the method
before `ANY`, and `$default` (an HttpApi event without a path) catches the rest. The stack adds its
own routes under `/demo` and `/_local/` for people working locally.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cems.local.cfn import ACCOUNT_ID, Template
from cems.local.functions import LocalFunction
from cems.local.jwt_authorizer import UNAUTHORIZED, JwtAuthorizer

log = logging.getLogger("cems.local")

_TEXT_TYPES = re.compile(r"^(text/|application/(json|javascript|xml|x-www-form-urlencoded)|.*\+(json|xml))")


@dataclass(frozen=True)
class Route:
    method: str  # an HTTP method, or ANY
    path: str  # /v1/{kind}, /{proxy+}, or $default
    function: LocalFunction
    # The route's Auth.Authorizer: a JWT authorizer's name is enforced (cems.local.jwt_authorizer);
    # AWS_IAM is not checked locally (the local stack has no IAM), NONE or None is public.
    authorizer: str | None = None

    @property
    def route_key(self) -> str:
        return "$default" if self.path == "$default" else f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method):
            return None
        if self.path == "$default":
            return {}
        pattern = ""
        for segment in self.path.strip("/").split("/"):
            greedy = re.fullmatch(r"\{(\w+)\+\}", segment)
            param = re.fullmatch(r"\{(\w+)\}", segment)
            if greedy:
                pattern += rf"/(?P<{greedy.group(1)}>.+)"
            elif param:
                pattern += rf"/(?P<{param.group(1)}>[^/]+)"
            else:
                pattern += "/" + re.escape(segment)
        found = re.fullmatch(pattern or "/", path)
        return None if found is None else found.groupdict()

    def specificity(self) -> tuple[int, ...]:
        """Sort key: API Gateway prefers literal segments, then parameters, then greedy; ANY last."""
        if self.path == "$default":
            return (9, 0, 0, 0)
        segments = self.path.strip("/").split("/")
        greedy = any(s.endswith("+}") for s in segments)
        params = sum(s.startswith("{") for s in segments)
        return (1 if greedy else 0, params, -len(segments), 1 if self.method == "ANY" else 0)


def http_api_routes(template: Template, functions: dict[str, LocalFunction]) -> list[Route]:
    routes = []
    for function in functions.values():
        for event in function.spec.events.values():
            if event.get("Type") != "HttpApi":
                continue
            props = event.get("Properties", {})
            path = props.get("Path", "$default")
            method = str(props.get("Method", "ANY")).upper()
            authorizer = (props.get("Auth") or {}).get("Authorizer")
            routes.append(
                Route(
                    method="ANY" if method in ("ANY", "X-AMAZON-APIGATEWAY-ANY-METHOD") else method,
                    path=path,
                    function=function,
                    authorizer=None if authorizer in (None, "NONE") else str(authorizer),
                )
            )
    return sorted(routes, key=Route.specificity)


@dataclass
class LocalRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    source_ip: str


@dataclass
class LocalResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)

    @classmethod
    def json(cls, status: int, value: Any) -> LocalResponse:
        return cls(
            status,
            json.dumps(value, ensure_ascii=False, indent=2, default=str).encode("utf-8"),
            {"Content-Type": "application/json; charset=utf-8"},
        )


LocalHandler = Callable[[LocalRequest, dict[str, str]], LocalResponse]


@dataclass(frozen=True)
class LocalRoute:
    """A route the local stack serves itself (the demo shop, /_local/ views), never deployed."""

    method: str
    pattern: str  # a regular expression over the path
    handler: LocalHandler


def http_api_event(request: LocalRequest, route: Route, path_parameters: dict[str, str]) -> dict[str, Any]:
    """The payload format 2.0 event API Gateway would give the function for this request."""
    now = datetime.now(UTC)
    content_type = request.headers.get("content-type", "")
    is_text = not request.body or bool(_TEXT_TYPES.match(content_type))
    if is_text:
        try:
            body: str | None = request.body.decode("utf-8")
        except UnicodeDecodeError:
            is_text = False
    if not is_text:
        body = base64.b64encode(request.body).decode("ascii")
    cookies = [c.strip() for c in request.headers.get("cookie", "").split(";") if c.strip()]
    query = dict(parse_qsl(request.query, keep_blank_values=True))
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": request.path,
        "rawQueryString": request.query,
        "headers": {k: v for k, v in request.headers.items() if k != "cookie"},
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": "local",
            "domainName": request.headers.get("host", "127.0.0.1"),
            "domainPrefix": request.headers.get("host", "127").split(".")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": request.headers.get("user-agent", ""),
            },
            "requestId": uuid.uuid4().hex,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now.timestamp() * 1000),
        },
        "body": body if request.body else None,
        "isBase64Encoded": not is_text,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_parameters:
        event["pathParameters"] = path_parameters
    return event


def response_from_lambda(result: Any) -> LocalResponse:
    """API Gateway's reading of a payload 2.0 answer: a dict with statusCode, or any JSON value."""
    if not isinstance(result, dict) or "statusCode" not in result:
        return LocalResponse(200, json.dumps(result).encode(), {"Content-Type": "application/json"})
    raw = result.get("body") or ""
    body = base64.b64decode(raw) if result.get("isBase64Encoded") else str(raw).encode("utf-8")
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    for name, values in (result.get("multiValueHeaders") or {}).items():
        headers[name] = ", ".join(str(v) for v in values)
    return LocalResponse(int(result["statusCode"]), body, headers, list(result.get("cookies") or []))


class ApiGateway:
    def __init__(
        self,
        routes: list[Route],
        local_routes: list[LocalRoute],
        jwt_authorizers: Mapping[str, JwtAuthorizer] | None = None,
    ) -> None:
        self.routes = routes
        self.local_routes = local_routes
        self.jwt_authorizers = dict(jwt_authorizers or {})

    def handle(self, request: LocalRequest) -> LocalResponse:
        for local in self.local_routes:
            found = re.fullmatch(local.pattern, request.path)
            if found and local.method in ("ANY", request.method):
                return local.handler(request, found.groupdict())
        for route in self.routes:
            parameters = route.match(request.method, request.path)
            if parameters is not None:
                return self._invoke(route, request, parameters)
        # API Gateway's own answer when no route matches.
        return LocalResponse.json(404, {"message": "Not Found"})

    def _invoke(self, route: Route, request: LocalRequest, parameters: dict[str, str]) -> LocalResponse:
        started = time.perf_counter()
        event = http_api_event(request, route, parameters)
        if route.authorizer not in (None, "AWS_IAM"):
            # Fails closed: a route naming an authorizer the gateway was not given is refused.
            authorizer = self.jwt_authorizers.get(route.authorizer or "")
            claims = None if authorizer is None else authorizer.claims(request.headers.get("authorization"))
            if claims is None:  # API Gateway's answer: the function never runs
                return LocalResponse.json(401, UNAUTHORIZED)
            event["requestContext"]["authorizer"] = {"jwt": {"claims": claims, "scopes": None}}
        try:
            result = route.function.invoke(event)
        except Exception:
            log.exception("function %s failed", route.function.name)
            # What API Gateway answers when the integration fails.
            return LocalResponse.json(500, {"message": "Internal Server Error"})
        response = response_from_lambda(result)
        log.debug(
            "%s %s -> %s %d (%.1f ms)",
            request.method,
            request.path,
            route.function.name,
            response.status,
            (time.perf_counter() - started) * 1000,
        )
        return response


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, every keep-alive
    # response would wait for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    server: LocalHttpServer

    def _serve(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        request = LocalRequest(
            method=self.command,
            path=url.path or "/",
            query=url.query,
            headers=headers,
            body=body,
            source_ip=self.client_address[0],
        )
        response = self.server.gateway.handle(request)
        self.send_response(response.status)
        for name, value in response.headers.items():
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        for cookie in response.cookies:
            self.send_header("Set-Cookie", cookie)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True
    # Many browser and test connections at once.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], gateway: ApiGateway) -> None:
        super().__init__(address, _Handler)
        self.gateway = gateway

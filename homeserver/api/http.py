"""Cross-cutting HTTP concerns: CORS, body limits, access logs, input PostgreSQL cannot
hold, reading JSON bodies, the count of requests in flight for a clean stop."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import parse_qsl

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from homeserver import metrics
from homeserver.api.errors import Handler, MatrixError, bad_json, error_response
from homeserver.logs import REQUEST_ID
from homeserver.services.core.stored_json import MAX_DEPTH, ensure_storable

access_log = logging.getLogger("homeserver.access")
http_log = logging.getLogger("homeserver.http")

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "X-Requested-With, Content-Type, Authorization",
}

USER_KEY = web.RequestKey("user_id", str)
FEDERATION_PREFIX = "/_matrix/federation/"
NUL = "\x00"


_request_ids = itertools.count(1)


def route_pattern(request: web.Request) -> str:
    """The route's pattern (`/_matrix/client/v3/rooms/{room_id}/send/...`), never the
    concrete path: one time series per endpoint, not per room or user."""
    resource = request.match_info.route.resource
    if resource is None or request.match_info.http_exception is not None:
        return "unmatched"
    return resource.canonical


# A part of the API (by path) and the middleware that guards it.
Guard = tuple[
    Callable[[str], bool], Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
]


class InFlight:
    """The one middleware, and the count of the requests being handled, so that a
    stopping process can wait for them.

    aiohttp's own shutdown stops reading from every connection at once, which would
    cut off a request whose body is still arriving: the server stops listening, waits
    here, and only then shuts its connections.

    The same middleware, in this order: behind a load balancer (`x_forwarded`), takes
    the client's address from X-Forwarded-For; sets the request id (`GET-42`, as
    Synapse's) that every record logged while handling it carries in JSON logs;
    answers a CORS preflight; checks every request before its handler (no U+0000 in
    the path or query, the body within `max_size`, then the guard of the part of the
    API the path is in: federation or admin authentication); turns errors into Matrix
    answers (`errors.error_response`); adds the CORS headers; logs one line. One
    middleware for all: each middleware is a coroutine frame kept as long as its
    request, and long-polls are held by the thousand."""

    def __init__(self, max_size: int, guards: Sequence[Guard], x_forwarded: bool = False) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_size = max_size
        self._guards = tuple(guards)
        self._x_forwarded = x_forwarded

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.count += 1
        self._idle.clear()
        if self._x_forwarded:
            request = _forwarded(request)
        request_id = REQUEST_ID.set(f"{request.method}-{next(_request_ids)}")
        start = time.perf_counter()
        status = 500
        try:
            response: web.StreamResponse
            if request.method == "OPTIONS":
                response = web.Response(status=204)
            else:
                try:
                    response = await self._gate(request, handler)
                except Exception as exc:
                    response = error_response(request, exc)
            response.headers.update(CORS_HEADERS)
            status = response.status
            return response
        finally:
            try:
                _log_request(request, status, time.perf_counter() - start)
                REQUEST_ID.reset(request_id)
            finally:
                self.count -= 1
                if self.count == 0:
                    self._idle.set()

    def _gate(self, request: web.Request, handler: Handler) -> Awaitable[web.StreamResponse]:
        """The checks, then the handler's answer to await (through the path's guard):
        a plain function, so no frame of its own is kept while the request runs."""
        _check_nul(request)
        _check_body_size(request, self._max_size)
        path = request.path
        for applies, guard in self._guards:
            if applies(path):
                return guard(request, handler)
        return handler(request)

    async def wait_idle(self) -> None:
        """Wait until no request is being handled."""
        await self._idle.wait()


IN_FLIGHT = web.AppKey("in_flight", InFlight)


def _log_request(request: web.Request, status: int, elapsed: float) -> None:
    access_log.info(
        "%s %s %d %.1fms %s %s",
        request.method,
        request.path,
        status,
        elapsed * 1000,
        request.get(USER_KEY, "-"),
        request.remote or "-",
    )
    labels = (route_pattern(request), request.method, str(status))
    metrics.HTTP_REQUESTS.labels(*labels).inc()
    metrics.HTTP_DURATION.labels(*labels).observe(elapsed)


def _forwarded(request: web.Request) -> web.Request:
    """Behind a load balancer, the client is the last address in X-Forwarded-For, the
    one the balancer added: earlier ones the client may have written itself."""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        address = forwarded.rsplit(",", 1)[-1].strip()
        if address:
            return request.clone(remote=address)
    return request


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs each request it cannot parse (a request line or header over its
    limit, bad syntax) at ERROR with a full traceback, before any handler or login: so
    anyone could fill the log. Such a refusal is the client's doing: one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, BadHttpMessage):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        remote = args[0] if args else "-"
        http_log.info("refused a malformed request from %s: %.200r", remote, exc.message)
        return False


_MALFORMED_REQUEST_FILTER = _MalformedRequestFilter()
_AIOHTTP_HANDLE_ERROR = RequestHandler.handle_error


def _unparsable_request_error(status: int, exc: BaseException | None) -> MatrixError:
    """The Matrix error for a request aiohttp could not parse (or serve at all)."""
    if isinstance(exc, LineTooLong):
        # Its first argument is what was being read: the request target starts with "/".
        line = exc.args[0] if exc.args else b""
        if isinstance(line, bytes | bytearray | str) and line[:1] in (b"/", "/"):
            return MatrixError(414, "M_TOO_LARGE", "The request target is too long")
        return MatrixError(431, "M_TOO_LARGE", "A request header is too long")
    if isinstance(exc, BadHttpMethod):
        return MatrixError(400, "M_UNRECOGNIZED", "Unrecognized request method")
    if status < 500:
        return MatrixError(status, "M_UNKNOWN", "Malformed HTTP request")
    return MatrixError(status, "M_UNKNOWN", "Internal server error")


def _json_handle_error(
    self: RequestHandler,
    request: BaseRequest,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> web.StreamResponse:
    """aiohttp's own error answer (logged by it, through the filter above), in the
    Matrix error format: clients parse every error body as JSON."""
    _AIOHTTP_HANDLE_ERROR(self, request, status, exc, message)
    response = _unparsable_request_error(status, exc).response()
    response.force_close()
    return response


def refuse_unparsable_requests_in_json() -> None:
    """Answer the requests aiohttp cannot parse (a bad request line or method, a line or
    header over its limit, a broken chunked body) with a Matrix JSON error rather than
    its plain text, and log each refusal briefly. aiohttp builds that answer in its
    connection handler, below any middleware, so this replaces its `handle_error` for
    the process (idempotent)."""
    logging.getLogger("aiohttp.server").addFilter(_MALFORMED_REQUEST_FILTER)
    RequestHandler.handle_error = _json_handle_error  # type: ignore[method-assign]


# Handlers that stream their request body and enforce their own size limit (media
# uploads, whose limit is `media.max_upload_size`, not `max_request_size`).
_OWN_BODY_LIMIT: set[Handler] = set()


def own_body_limit(handler: Handler) -> Handler:
    """Exempt a handler from the global body limit: it must bound what it reads."""
    _OWN_BODY_LIMIT.add(handler)
    return handler


def _check_body_size(request: web.Request, max_size: int) -> None:
    length = request.content_length
    if (
        length is not None
        and length > max_size
        and request.match_info.handler not in _OWN_BODY_LIMIT
    ):
        raise MatrixError(413, "M_TOO_LARGE", "Request body too large")


def _check_nul(request: web.Request) -> None:
    """Refuse U+0000 in the path or the query of every request, before any handler.

    PostgreSQL cannot store the NUL character in any text, so an id, a type or a token
    holding one could only fail deep down as a server error."""
    if (
        NUL in request.path
        or any(NUL in value for value in request.match_info.values())
        or _QUERY_NUL in _raw_query(request)
        or NUL in request.raw_path
    ):
        raise MatrixError(
            400, "M_INVALID_PARAM", "Path and query parameters must not contain U+0000"
        )


# How U+0000 is spelled in a query as sent (the HTTP parser refuses a raw one).
_QUERY_NUL = "%00"


def _raw_query(request: web.Request) -> str:
    return request.raw_path.partition("?")[2]


def query_of(request: web.Request) -> dict[str, str]:
    """The query's parameters, the first value of each (as `request.query.get`), read
    from the raw query: `request.query` is parsed once and kept on the request (0.8
    KiB), which long-polls held by the thousand would carry."""
    params: dict[str, str] = {}
    for key, value in parse_qsl(_raw_query(request), keep_blank_values=True):
        params.setdefault(key, value)
    return params


BODY_KEY = web.RequestKey("json_body", object)


def release_body(request: web.Request) -> None:
    """Forget the request's body, raw and parsed, once the handler has what it needs:
    a long-poll held for minutes should not keep it (aiohttp keeps the bytes read)."""
    request.pop(BODY_KEY, None)
    request._read_bytes = None


async def parse_json_body(request: web.Request, *, event_content: bool = False) -> Any:
    """The request body parsed (None when empty), or 400 M_NOT_JSON / M_BAD_JSON.

    The one edge check of bodies, for the client and the federation API alike: a body
    holding U+0000 or nested deeper than MAX_DEPTH is refused, as neither fits in
    PostgreSQL or our encoders. NUL may still appear in event content: a client's
    (`event_content`) and that of the events inside a federation body, as on other
    servers, since events are stored as JSON text and the room writer keeps it out of
    the columns it fills from content. Parsed once per request (federation
    authentication reads the body before the handler does)."""
    if BODY_KEY in request:
        return request[BODY_KEY]
    raw = await request.read()
    if not raw:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit"):
            raise bad_json(f"Request body is nested more than {MAX_DEPTH} levels deep") from None
        raise MatrixError(400, "M_NOT_JSON", "Request body is not valid JSON") from None
    # A cheap look at the text rules out most bodies before walking the parsed one: JSON
    # can only spell U+0000 as an escape, and cannot nest deeper than it has brackets.
    may_nest_too_deep = raw.count(b"{") + raw.count(b"[") > MAX_DEPTH
    if may_nest_too_deep or (not event_content and b"\\u0000" in raw):
        federation = request.path.startswith(FEDERATION_PREFIX)
        ensure_storable(body, "Request body", allow_nul=event_content, nul_in_events=federation)
    request[BODY_KEY] = body
    return body


async def read_json_object(request: web.Request, *, event_content: bool = False) -> dict[str, Any]:
    """The request body as a JSON object, or the spec's M_NOT_JSON / M_BAD_JSON (see
    parse_json_body)."""
    body = await parse_json_body(request, event_content=event_content)
    if body is None:
        raise MatrixError(400, "M_NOT_JSON", "Request body is empty; expected a JSON object")
    if not isinstance(body, dict):
        raise MatrixError(400, "M_BAD_JSON", "Request body must be a JSON object")
    return body

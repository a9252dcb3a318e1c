"""The Matrix error format, and the middleware that turns every failure into it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from federation.canonical_json import CanonicalJsonError
from homeserver.services.core.errors import ServiceError, database_unavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# While the database is away (a restart, a failover): when a client may try again.
UNAVAILABLE_RETRY_AFTER_S = 1


class MatrixError(Exception):
    """An error a client or peer server sees as {"errcode": ..., "error": ...}."""

    def __init__(self, status: int, errcode: str, error: str, **extra: Any) -> None:
        super().__init__(f"{errcode}: {error}")
        self.status = status
        self.errcode = errcode
        self.error = error
        self.extra = extra

    def response(self) -> web.Response:
        body = {"errcode": self.errcode, "error": self.error, **self.extra}
        headers = None
        if self.status == 429 and "retry_after_ms" in self.extra:
            headers = {"Retry-After": str(max(1, int(self.extra["retry_after_ms"]) // 1000))}
        elif self.status == 503:
            headers = {"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)}
        return json_response(body, status=self.status, headers=headers)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def not_found(what: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", what)


def forbidden(why: str) -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", why)


def bad_json(why: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", why)


def invalid_param(why: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", why)


def _from_http_exception(exc: web.HTTPException) -> web.StreamResponse:
    if exc.status == 404:
        return MatrixError(404, "M_UNRECOGNIZED", "Unrecognized request").response()
    if exc.status == 405:
        return MatrixError(405, "M_UNRECOGNIZED", "Method not allowed for this endpoint").response()
    if exc.status == 413:
        return MatrixError(413, "M_TOO_LARGE", "Request body too large").response()
    if exc.status < 400:
        return exc
    return MatrixError(exc.status, "M_UNKNOWN", exc.reason).response()


def error_response(request: web.Request, exc: Exception) -> web.StreamResponse:
    """The Matrix answer to an error raised while handling `request`."""
    if isinstance(exc, MatrixError):
        return exc.response()
    if isinstance(exc, ServiceError):
        return MatrixError(exc.status, exc.errcode, exc.message, **exc.extra).response()
    if isinstance(exc, web.HTTPException):
        return _from_http_exception(exc)
    if isinstance(exc, CanonicalJsonError):
        # Content a client gave for an event (sent, state, createRoom) that cannot be
        # signed: a float, an integer past 2**53, and so on. The client's mistake.
        return bad_json(f"Content is not valid canonical JSON: {exc}").response()
    if database_unavailable(exc):
        # Logged once per outage by the pool, not once per request.
        return MatrixError(503, "M_UNKNOWN", "The database is unavailable").response()
    log.error("unhandled error serving %s %s", request.method, request.path, exc_info=exc)
    return MatrixError(500, "M_UNKNOWN", "Internal server error").response()

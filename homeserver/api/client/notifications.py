"""`GET /notifications`: the events that notified the user, newest first."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.routes import add_client_route

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


def _limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIMIT
    try:
        limit = int(value)
    except ValueError:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must be an integer") from None
    if limit < 0:
        raise MatrixError(400, "M_INVALID_PARAM", "limit must not be negative")
    return min(limit, MAX_LIMIT)


async def get_notifications(request: web.Request) -> web.Response:
    requester = await require_user(request)
    query = request.query
    body = await homeserver(request).notifications.list(
        requester.user_id, query.get("from"), _limit(query.get("limit")), query.get("only")
    )
    return json_response(body)


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/notifications", get_notifications)

"""Device keys: `/keys/upload`, `/keys/query`, `/keys/claim` and `/keys/changes`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def post_upload(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    result = await homeserver(request).e2ee_keys.upload(
        requester.user_id, requester.device_id, body
    )
    return json_response(result)


async def post_query(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    return json_response(await homeserver(request).e2ee_keys.query(requester.user_id, body))


async def post_claim(request: web.Request) -> web.Response:
    await require_user(request)
    body = await read_json_object(request)
    return json_response(await homeserver(request).e2ee_keys.claim(body))


async def get_changes(request: web.Request) -> web.Response:
    requester = await require_user(request)
    from_token = request.query.get("from")
    to_token = request.query.get("to")
    if from_token is None or to_token is None:
        raise MatrixError(400, "M_MISSING_PARAM", "from and to are required")
    result = await homeserver(request).e2ee_keys.changes(requester.user_id, from_token, to_token)
    return json_response(result)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/keys/upload", post_upload)
    add_client_route(app, "POST", "/keys/query", post_query)
    add_client_route(app, "POST", "/keys/claim", post_claim)
    add_client_route(app, "GET", "/keys/changes", get_changes)

"""`/presence/{userId}/status`: read and set presence."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def get_status(request: web.Request) -> web.Response:
    requester = await require_user(request)
    content = await homeserver(request).presence.get_status(requester, request.match_info["userId"])
    return json_response(content)


async def set_status(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await homeserver(request).presence.put_status(requester, request.match_info["userId"], body)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/presence/{userId}/status", get_status)
    add_client_route(app, "PUT", "/presence/{userId}/status", set_status)

"""`/user/{userId}/account_data/{type}` and its per-room twin: private client config."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def get_account_data(request: web.Request) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    content = await homeserver(request).account_data.get_account_data(
        requester, info["userId"], info.get("roomId"), info["type"]
    )
    return json_response(content)


async def set_account_data(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    info = request.match_info
    await homeserver(request).account_data.set_account_data(
        requester, info["userId"], info.get("roomId"), info["type"], body
    )
    return json_response({})


def register(app: web.Application) -> None:
    for path in (
        "/user/{userId}/account_data/{type}",
        "/user/{userId}/rooms/{roomId}/account_data/{type}",
    ):
        add_client_route(app, "GET", path, get_account_data)
        add_client_route(app, "PUT", path, set_account_data)

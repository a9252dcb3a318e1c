"""`POST /logout` (this device) and `POST /logout/all` (every device)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.routes import add_client_route


async def post_logout(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await homeserver(request).devices.delete_devices(requester.user_id, [requester.device_id])
    return json_response({})


async def post_logout_all(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await homeserver(request).devices.delete_all_devices(requester.user_id)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/logout", post_logout)
    add_client_route(app, "POST", "/logout/all", post_logout_all)

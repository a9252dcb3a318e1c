"""`PUT /rooms/{roomId}/typing/{userId}`: typing notifications."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def set_typing(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    hs = homeserver(request)
    info = request.match_info
    await hs.typing.user_typing(requester, info["roomId"], info["userId"], body)
    if body.get("typing") is True:
        await hs.presence.user_active(requester.user_id)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "PUT", "/rooms/{roomId}/typing/{userId}", set_typing)

"""`/user/{userId}/rooms/{roomId}/tags`: a user's labels for a room (favourite, ...)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def get_tags(request: web.Request) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    tags = await homeserver(request).account_data.get_tags(
        requester, info["userId"], info["roomId"]
    )
    return json_response({"tags": tags})


async def put_tag(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    info = request.match_info
    await homeserver(request).account_data.set_tag(
        requester, info["userId"], info["roomId"], info["tag"], body
    )
    return json_response({})


async def delete_tag(request: web.Request) -> web.Response:
    requester = await require_user(request)
    info = request.match_info
    await homeserver(request).account_data.remove_tag(
        requester, info["userId"], info["roomId"], info["tag"]
    )
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/user/{userId}/rooms/{roomId}/tags", get_tags)
    add_client_route(app, "PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}", put_tag)
    add_client_route(app, "DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}", delete_tag)

"""`POST /user/{userId}/openid/request_token`: a token a third party can check with
our federation API to learn who the user is."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def request_token(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await read_json_object(request)  # the spec's body is an empty object
    body = await homeserver(request).openid.request_token(requester, request.match_info["user_id"])
    return json_response(body)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/user/{user_id}/openid/request_token", request_token)

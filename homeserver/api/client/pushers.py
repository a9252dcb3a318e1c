"""`/pushers` and `/pushers/set`: the push gateways of the user's devices."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def get_pushers(request: web.Request) -> web.Response:
    requester = await require_user(request)
    pushers = await homeserver(request).pushers.list(requester.user_id)
    return json_response({"pushers": pushers})


async def set_pusher(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    await homeserver(request).pushers.set(requester, body)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/pushers", get_pushers)
    add_client_route(app, "POST", "/pushers/set", set_pusher)

"""Other servers asking for our users' devices and keys: `GET /user/devices/{userId}`,
`POST /user/keys/query` and `POST /user/keys/claim` (the middleware has authenticated
the origin). Only our own users are answered for."""

from __future__ import annotations

from aiohttp import web

from federation.identifiers import server_name_of
from homeserver.api.context import homeserver
from homeserver.api.errors import forbidden, json_response
from homeserver.api.http import read_json_object
from homeserver.services.remote.device_lists import valid_id


async def user_devices(request: web.Request) -> web.Response:
    hs = homeserver(request)
    user_id = request.match_info["user_id"]
    if not valid_id(user_id) or server_name_of(user_id, "@") != hs.server_name:
        raise forbidden(f"{hs.server_name} answers only for its own users")
    return json_response(await hs.remote_device_lists.user_devices(user_id))


async def keys_query(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return json_response(await homeserver(request).served_keys.serve_query(body))


async def keys_claim(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    return json_response(await homeserver(request).served_keys.serve_claim(body))


def register(app: web.Application) -> None:
    app.router.add_get("/_matrix/federation/v1/user/devices/{user_id}", user_devices)
    app.router.add_post("/_matrix/federation/v1/user/keys/query", keys_query)
    app.router.add_post("/_matrix/federation/v1/user/keys/claim", keys_claim)

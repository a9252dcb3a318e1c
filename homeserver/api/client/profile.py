"""`/profile/{userId}` and its fields: public reads, owner-only writes."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def get_profile(request: web.Request) -> web.Response:
    hs = homeserver(request)
    user_id = request.match_info["userId"]
    # A bridged user not created yet may be, once its application service is asked.
    await hs.appservices_sender.ensure_user(user_id)
    return json_response(await hs.profile.get_profile(user_id, ask_remote=True))


async def get_profile_field(request: web.Request) -> web.Response:
    hs = homeserver(request)
    user_id, key = request.match_info["userId"], request.match_info["keyName"]
    await hs.appservices_sender.ensure_user(user_id)
    return json_response(await hs.profile.get_profile_field(user_id, key, ask_remote=True))


async def set_profile_field(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    user_id, key = request.match_info["userId"], request.match_info["keyName"]
    await homeserver(request).profile.set_profile_field(requester, user_id, key, body)
    return json_response({})


async def delete_profile_field(request: web.Request) -> web.Response:
    requester = await require_user(request)
    user_id, key = request.match_info["userId"], request.match_info["keyName"]
    await homeserver(request).profile.set_profile_field(requester, user_id, key, None)
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/profile/{userId}", get_profile)
    add_client_route(app, "GET", "/profile/{userId}/{keyName}", get_profile_field)
    add_client_route(app, "PUT", "/profile/{userId}/{keyName}", set_profile_field)
    add_client_route(app, "DELETE", "/profile/{userId}/{keyName}", delete_profile_field)

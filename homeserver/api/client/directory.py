"""Room aliases (`/directory/room/...`, `/rooms/{roomId}/aliases`) and a room's
visibility in the published room list (`/directory/list/room/...`)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.core.errors import ServiceError


async def create_alias(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    room_id = body.get("room_id")
    if not isinstance(room_id, str) or not room_id.startswith("!"):
        raise MatrixError(400, "M_BAD_JSON", "room_id must be a room id")
    hs = homeserver(request)
    alias = request.match_info["room_alias"]
    if hs.appservices_registry.services:
        hs.appservices_registry.check_alias_allowed(
            alias, hs.appservices_registry.by_id.get(requester.appservice_id or "")
        )
    await hs.directory_rooms.create_alias(requester, alias, room_id)
    return json_response({})


async def get_alias(request: web.Request) -> web.Response:
    hs = homeserver(request)
    alias = request.match_info["room_alias"]
    try:
        room_id, servers = await hs.directory_rooms.resolve_alias(alias)
    except ServiceError as exc:
        # An alias in an application service's namespace may exist once it is asked.
        if exc.errcode != "M_NOT_FOUND" or not await hs.appservices_sender.query_alias(alias):
            raise
        room_id, servers = await hs.directory_rooms.resolve_alias(alias)
    return json_response({"room_id": room_id, "servers": servers})


async def delete_alias(request: web.Request) -> web.Response:
    requester = await require_user(request)
    await homeserver(request).directory_rooms.delete_alias(
        requester, request.match_info["room_alias"]
    )
    return json_response({})


async def room_aliases(request: web.Request) -> web.Response:
    requester = await require_user(request)
    found = await homeserver(request).directory_rooms.local_aliases(
        requester, request.match_info["room_id"]
    )
    return json_response({"aliases": found})


async def get_visibility(request: web.Request) -> web.Response:
    visibility = await homeserver(request).directory_rooms.visibility(request.match_info["room_id"])
    return json_response({"visibility": visibility})


async def set_visibility(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    visibility = body.get("visibility", "public")
    if visibility not in ("public", "private"):
        raise MatrixError(400, "M_INVALID_PARAM", "visibility must be 'public' or 'private'")
    await homeserver(request).directory_rooms.set_visibility(
        requester, request.match_info["room_id"], visibility
    )
    return json_response({})


def register(app: web.Application) -> None:
    add_client_route(app, "PUT", "/directory/room/{room_alias}", create_alias)
    add_client_route(app, "GET", "/directory/room/{room_alias}", get_alias)
    add_client_route(app, "DELETE", "/directory/room/{room_alias}", delete_alias)
    add_client_route(app, "GET", "/rooms/{room_id}/aliases", room_aliases)
    add_client_route(app, "GET", "/directory/list/room/{room_id}", get_visibility)
    add_client_route(app, "PUT", "/directory/list/room/{room_id}", set_visibility)

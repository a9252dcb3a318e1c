"""The room directory and space hierarchy other servers browse: `/publicRooms` (GET with
a query, POST with a filter) and `/hierarchy/{roomId}`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.client.public_rooms import parse_public_rooms_body
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.federation.auth import require_server
from homeserver.api.http import read_json_object
from homeserver.services.directory.rooms import PublicRoomsRequest
from homeserver.services.timeline.pagination import parse_bool, parse_limit

V1 = "/_matrix/federation/v1"


def _directory_open(request: web.Request) -> None:
    """Synapse's answer when the directory is not served over federation."""
    if not homeserver(request).config.allow_public_rooms_over_federation:
        raise MatrixError(403, "M_FORBIDDEN", "This server does not share its room directory")


async def get_public_rooms(request: web.Request) -> web.Response:
    await require_server(request)
    _directory_open(request)
    query = request.query
    limit = query.get("limit")
    parsed = PublicRoomsRequest(
        limit=None if limit is None else parse_limit(limit, default=0, maximum=10**6),
        since=query.get("since"),
        include_all_networks=parse_bool(query.get("include_all_networks"), "include_all_networks"),
        third_party_instance_id=query.get("third_party_instance_id"),
    )
    return json_response(await homeserver(request).directory_rooms.public_rooms(parsed))


async def post_public_rooms(request: web.Request) -> web.Response:
    await require_server(request)
    _directory_open(request)
    parsed = parse_public_rooms_body(await read_json_object(request), None)
    return json_response(await homeserver(request).directory_rooms.public_rooms(parsed))


async def get_hierarchy(request: web.Request) -> web.Response:
    origin = await require_server(request)
    suggested_only = parse_bool(request.query.get("suggested_only"), "suggested_only")
    hierarchy = homeserver(request).hierarchy
    answer = await hierarchy.federation_hierarchy(
        origin, request.match_info["room_id"], suggested_only
    )
    return json_response(answer)


def register(app: web.Application) -> None:
    app.router.add_get(f"{V1}/hierarchy/{{room_id}}", get_hierarchy)
    app.router.add_get(f"{V1}/publicRooms", get_public_rooms)
    app.router.add_post(f"{V1}/publicRooms", post_public_rooms)

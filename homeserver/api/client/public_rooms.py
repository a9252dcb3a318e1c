"""The published room list: `GET` (no login needed) and `POST` (with a filter)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route
from homeserver.services.directory.rooms import PublicRoomsRequest
from homeserver.services.timeline.pagination import parse_limit


async def get_public_rooms(request: web.Request) -> web.Response:
    query = request.query
    limit = query.get("limit")
    server = query.get("server")
    hs = homeserver(request)
    if server is not None and server != hs.server_name:
        # Asking another server costs us a request: only our users may make us do it.
        await require_user(request)
    parsed = PublicRoomsRequest(
        limit=None if limit is None else parse_limit(limit, default=0, maximum=10**6),
        since=query.get("since"),
        server=server,
    )
    return json_response(await homeserver(request).directory_rooms.public_rooms(parsed))


def _bad(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def _optional(body: dict[str, Any], name: str, kind: type) -> Any:
    """The value, None when absent; JSON has no subclasses, so `type` is exact (and a
    boolean is no integer)."""
    value = body.get(name)
    if value is not None and type(value) is not kind:
        raise _bad(f"{name} must be a {kind.__name__}")
    return value


def parse_public_rooms_body(body: dict[str, Any], server: str | None) -> PublicRoomsRequest:
    """The POST body, shared by the client API and the federation API."""
    room_filter = _optional(body, "filter", dict) or {}
    search_term = _optional(room_filter, "generic_search_term", str)
    room_types = _optional(room_filter, "room_types", list)
    if room_types is not None and not all(t is None or isinstance(t, str) for t in room_types):
        raise _bad("filter.room_types must list strings or null")
    return PublicRoomsRequest(
        limit=_optional(body, "limit", int),
        since=_optional(body, "since", str),
        server=server,
        search_term=search_term,
        room_types=None if room_types is None else tuple(room_types),
        include_all_networks=bool(_optional(body, "include_all_networks", bool)),
        third_party_instance_id=_optional(body, "third_party_instance_id", str),
    )


async def post_public_rooms(request: web.Request) -> web.Response:
    await require_user(request)
    body = await read_json_object(request)
    parsed = parse_public_rooms_body(body, request.query.get("server"))
    return json_response(await homeserver(request).directory_rooms.public_rooms(parsed))


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/publicRooms", get_public_rooms)
    add_client_route(app, "POST", "/publicRooms", post_public_rooms)

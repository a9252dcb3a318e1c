"""Relations and threads (client API v1)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.routes import add_client_route


async def get_relations(request: web.Request) -> web.Response:
    requester = await require_user(request)
    query = request.query
    body = await homeserver(request).relations.relations(
        requester,
        request.match_info["room_id"],
        request.match_info["event_id"],
        rel_type=request.match_info.get("rel_type"),
        event_type=request.match_info.get("event_type"),
        from_token=query.get("from"),
        to_token=query.get("to"),
        direction=query.get("dir"),
        limit=query.get("limit"),
        recurse=query.get("recurse"),
    )
    return json_response(body)


async def get_threads(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await homeserver(request).relations.threads(
        requester,
        request.match_info["room_id"],
        include=request.query.get("include"),
        from_token=request.query.get("from"),
        limit=request.query.get("limit"),
    )
    return json_response(body)


def register(app: web.Application) -> None:
    base = "/rooms/{room_id}/relations/{event_id}"
    for path in (base, base + "/{rel_type}", base + "/{rel_type}/{event_type}"):
        add_client_route(app, "GET", path, get_relations, versions=("v1",))
    add_client_route(app, "GET", "/rooms/{room_id}/threads", get_threads, versions=("v1",))

"""`GET /v1/rooms/{roomId}/hierarchy`: the rooms of a space, depth first; and
`GET /v1/room_summary/{roomIdOrAlias}`: one room, before joining it (MSC3266)."""

from __future__ import annotations

import re

from aiohttp import web

from homeserver.api.auth import access_token, require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import MatrixError, json_response
from homeserver.api.routes import CLIENT_PREFIX, add_client_route
from homeserver.services.directory.hierarchy import HierarchyRequest
from homeserver.services.timeline.pagination import parse_bool

_INT = re.compile(r"-?[0-9]{1,9}")


def _int_param(value: str | None, name: str) -> int | None:
    """An integer query parameter; its range is the service's to judge."""
    if value is None:
        return None
    if not _INT.fullmatch(value):
        raise MatrixError(400, "M_INVALID_PARAM", f"{name} must be an integer")
    return int(value)


async def get_hierarchy(request: web.Request) -> web.Response:
    requester = await require_user(request)
    query = request.query
    parsed = HierarchyRequest(
        room_id=request.match_info["room_id"],
        suggested_only=parse_bool(query.get("suggested_only"), "suggested_only"),
        max_depth=_int_param(query.get("max_depth"), "max_depth"),
        limit=_int_param(query.get("limit"), "limit"),
        from_token=query.get("from"),
    )
    return json_response(await homeserver(request).hierarchy.hierarchy(requester, parsed))


# Synapse's MSC3266 paths, which clients (Element, nheko) still call.
SUMMARY_UNSTABLE = f"{CLIENT_PREFIX}/unstable/im.nheko.summary"


async def get_summary(request: web.Request) -> web.Response:
    """Authentication is optional: without it only open rooms are summarised."""
    user_id = (await require_user(request)).user_id if access_token(request) else None
    summary = await homeserver(request).summary.summary(
        user_id, request.match_info["room"], request.query.getall("via", [])
    )
    return json_response(summary)


def register(app: web.Application) -> None:
    add_client_route(app, "GET", "/rooms/{room_id}/hierarchy", get_hierarchy, versions=("v1",))
    add_client_route(app, "GET", "/room_summary/{room}", get_summary, versions=("v1",))
    app.router.add_get(SUMMARY_UNSTABLE + "/rooms/{room}/summary", get_summary)
    app.router.add_get(SUMMARY_UNSTABLE + "/summary/{room}", get_summary)

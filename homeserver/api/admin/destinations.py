"""Federation destinations in the admin API, at Synapse's paths (Ketesa's federation page)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.admin.access import query_ascending, query_choice, query_int
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.services.admin.destinations import ORDER_BY

PREFIX = "/_synapse/admin/v1/federation/destinations"


async def list_destinations(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_destinations.list(
            request.query.get("destination"),
            order_by=query_choice(request, "order_by", ORDER_BY, "destination"),
            ascending=query_ascending(request),
            offset=query_int(request, "from", 0),
            limit=query_int(request, "limit", 100),
        )
    )


async def get_destination(request: web.Request) -> web.Response:
    found = await homeserver(request).admin_destinations.get(request.match_info["destination"])
    return json_response(found)


async def destination_rooms(request: web.Request) -> web.Response:
    return json_response(
        await homeserver(request).admin_destinations.rooms(
            request.match_info["destination"],
            ascending=query_ascending(request),
            offset=query_int(request, "from", 0),
            limit=query_int(request, "limit", 100),
        )
    )


async def reset_connection(request: web.Request) -> web.Response:
    await homeserver(request).admin_destinations.reset_connection(request.match_info["destination"])
    return json_response({})


def register(app: web.Application) -> None:
    one = PREFIX + "/{destination}"
    app.router.add_get(PREFIX, list_destinations)
    app.router.add_get(one, get_destination)
    app.router.add_get(f"{one}/rooms", destination_rooms)
    app.router.add_post(f"{one}/reset_connection", reset_connection)

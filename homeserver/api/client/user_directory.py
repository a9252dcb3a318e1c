"""`POST /user_directory/search`."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.auth import require_user
from homeserver.api.context import homeserver
from homeserver.api.errors import json_response
from homeserver.api.http import read_json_object
from homeserver.api.routes import add_client_route


async def post_search(request: web.Request) -> web.Response:
    requester = await require_user(request)
    body = await read_json_object(request)
    result = await homeserver(request).directory_users.search(
        requester.user_id, body.get("search_term"), body.get("limit")
    )
    return json_response(result)


def register(app: web.Application) -> None:
    add_client_route(app, "POST", "/user_directory/search", post_search)
